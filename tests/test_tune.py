"""perfjax.tune and the model-free strategies, against brute force over small spaces."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import perfjax
from perfjax import Categorical, Integer, Ordinal, Permutation, Space, SpaceError
from perfjax.errors import PerfjaxError, StudyError
from perfjax.schedulers import Strategy, make_strategy
from perfjax.study import Study

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tune_kill_worker  # noqa: E402


def small_space() -> Space:
    return tune_kill_worker.space()


def brute_force(space: Space, objective) -> tuple[float, int]:
    """Minimum of the objective and the number of feasible configurations, by plain Python."""
    best, count = math.inf, 0
    for tile, unroll, order in itertools.product(space.params["tile"].values,
                                                 space.params["unroll"].values,
                                                 itertools.permutations(range(3))):
        if unroll <= tile:
            count += 1
            best = min(best, objective({"tile": tile, "unroll": unroll, "order": order}))
    return best, count


def test_exhaustive_visits_every_feasible_config_once_and_finds_brute_force_best():
    space = small_space()
    best, count = brute_force(space, tune_kill_worker.objective)
    result = perfjax.tune(space, tune_kill_worker.objective, strategy="exhaustive", budget=count + 5)
    keys = {(r.config["tile"], r.config["unroll"], tuple(r.config["order"])) for r in result.records}
    assert len(result.records) == count == len(keys)  # stops when the space is exhausted
    assert all(u <= t for t, u, _ in keys)
    assert result.exhausted and result.best_value == best
    assert tune_kill_worker.objective(result.best_config) == best


@pytest.mark.parametrize("strategy", ["random", "bo"])
def test_random_and_bo_stop_when_a_small_constrained_space_is_exhausted(strategy):
    """Budget beyond the space: every feasible configuration once (brute-force count), then
    tune stops and says so; before, both strategies spent the rest of the budget on repeats.
    BO runs with a lighter model fit and fewer candidates (what is checked is how it runs out of
    configurations, not how well it searches): 114 suggestions took 22 s with the defaults."""
    space = small_space()
    best, count = brute_force(space, tune_kill_worker.objective)
    options = {"initial": 4, "gp_restarts": 1, "candidates": 1000, "local_candidates": 256,
               "density_candidates": 256} if strategy == "bo" else {}
    result = perfjax.tune(space, tune_kill_worker.objective, strategy=strategy, budget=count + 7,
                          seed=1, batch=3, **options)
    keys = {(r.config["tile"], r.config["unroll"], tuple(r.config["order"])) for r in result.records}
    assert len(result.records) == count == len(keys)
    assert all(u <= t for t, u, _ in keys)
    assert result.exhausted and result.best_value == best
    spent = perfjax.tune(space, tune_kill_worker.objective, strategy=strategy, budget=5, seed=1)
    assert not spent.exhausted and len(spent.records) == 5


def test_exhaustive_refuses_a_large_space_naming_its_size():
    space = Space({"order": Permutation(12), "x": Integer(1, 10)})
    with pytest.raises(SpaceError, match=r"4\.79e\+09 configurations"):
        make_strategy("exhaustive", space)


def test_random_search_is_feasible_does_not_repeat_and_speaks_the_protocol():
    space = small_space()
    strategy = make_strategy("random", space, seed=3)
    assert isinstance(strategy, Strategy)
    configs = strategy.ask(40)
    keys = {(c["tile"], c["unroll"], c["order"]) for c in configs}
    assert len(keys) == 40
    assert all(isinstance(c["order"], tuple) and sorted(c["order"]) == [0, 1, 2] for c in configs)
    assert all(c["unroll"] <= c["tile"] for c in configs)
    strategy.tell(configs, [{"value": 1.0, "valid": True}] * 40)
    more = strategy.ask(20)
    assert not keys & {(c["tile"], c["unroll"], c["order"]) for c in more}


def test_random_search_last_resort_draws_follow_the_prior_and_are_remembered(monkeypatch):
    """A space too large to enumerate whose draws keep repeating (here: enumeration switched
    off on a two-value space with a prior all but certain of one value) still answers ask(n)
    with n configurations, drawn with use_prior, each remembered as asked."""
    import perfjax.schedulers.search as search

    monkeypatch.setattr(search, "untried_configs", lambda space, tried: None)
    space = Space({"k": Integer(0, 1, prior="gaussian", prior_parameters=[200.0, 1.0])})
    strategy = make_strategy("random", space, seed=0, use_prior=True)
    first = strategy.ask(1)
    assert first == [{"k": 1}]  # the prior's value (density ratio ~1e-87 to the other)
    again = strategy.ask(3)  # every draw repeats {k: 1}: the last resort
    assert again == [{"k": 1}] * 3
    assert strategy._seen == {search.config_key(space, {"k": 1})}
    plain = make_strategy("random", space, seed=0)  # without the prior both values come up
    assert {c["k"] for c in plain.ask(2) + plain.ask(30)} == {0, 1}


def test_unknown_strategy_and_options_are_named():
    with pytest.raises(SpaceError, match="unknown strategy 'annealing'"):
        make_strategy("annealing", small_space())
    with pytest.raises(SpaceError, match=r"unknown options \['temperature'\]"):
        make_strategy("random", small_space(), temperature=3)


def test_failed_evaluations_are_recorded_with_their_message_and_the_run_goes_on(tmp_path):
    space = Space({"x": Integer(0, 9), "kind": Categorical(["a", "b"])})
    calls = []

    def objective(config):
        calls.append(config)
        i = len(calls)
        if i % 5 == 1:
            raise RuntimeError(f"crash at call {i}")
        if i % 5 == 2:
            return math.nan
        if i % 5 == 3:
            return {"value": math.inf, "valid": True}
        if i % 5 == 4:
            return {"value": 2.0, "valid": False, "error": "wrong result", "checksum": 7}
        return {"value": float(config["x"]), "runs": 3}

    seen = []
    result = perfjax.tune(space, objective, strategy="random", budget=15, study=tmp_path / "s.jsonl",
                          callback=seen.append)
    assert len(calls) == 15 and [p.evaluation for p in seen] == list(range(1, 16))
    stored = Study(tmp_path / "s.jsonl", read_only=True).records
    assert len(stored) == 15
    for i, record in enumerate(stored):
        kind = (i + 1) % 5
        assert record.valid == (kind == 0)
        if kind == 1:
            assert record.error == f"RuntimeError: crash at call {i + 1}"
        elif kind in (2, 3):
            assert record.error == f"objective returned {'nan' if kind == 2 else 'inf'}"
        elif kind == 4:
            assert record.error == "wrong result" and record.values["checksum"] == 7.0
        else:
            assert record.error is None and record.values == {"value": record.config["x"], "runs": 3.0}
    valid_values = [r.values["value"] for r in stored if r.valid]
    assert result.best_value == min(valid_values)
    assert seen[-1].best_value == min(valid_values)


def test_maximize_and_callback_progress():
    space = small_space()
    seen = []
    result = perfjax.tune(space, tune_kill_worker.objective, strategy="exhaustive", budget=1000,
                          minimize=False, callback=seen.append)
    values = [r.values["value"] for r in result.records]
    assert result.best_value == max(values)
    running = np.maximum.accumulate(values)
    assert [p.best_value for p in seen] == list(running)
    assert all(p.seconds >= 0 and p.suggest_seconds >= 0 and p.budget == 1000 for p in seen)


def test_a_study_of_another_space_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    perfjax.tune(small_space(), tune_kill_worker.objective, strategy="random", budget=2, study=path)
    other = Space({"x": Integer(0, 3)})
    with pytest.raises(StudyError, match="differs from the space stored"):
        perfjax.tune(other, lambda c: 1.0, strategy="random", budget=4, study=path)


def test_a_killed_run_resumes_from_its_study_with_nothing_lost_or_repeated(tmp_path):
    path = tmp_path / "study.jsonl"
    budget = 30
    worker = subprocess.Popen([sys.executable, str(HERE / "tune_kill_worker.py"), str(path),
                               str(budget)], stdout=subprocess.PIPE, text=True)
    confirmed = []
    for line in worker.stdout:
        confirmed.append(int(line))
        if len(confirmed) == 7:
            worker.kill()
            break
    worker.wait()
    before = Study(path, read_only=True).records
    assert len(before) >= 7 and len(before) < budget  # killed mid-run
    resumed_calls = []
    result = perfjax.tune(small_space(), lambda c: resumed_calls.append(c) or
                          tune_kill_worker.objective(c), strategy="random", budget=budget,
                          study=path, seed=1)
    after = Study(path, read_only=True).records
    assert [r.id for r in after] == list(range(budget))
    assert after[:len(before)] == before  # nothing lost
    assert len(resumed_calls) == budget - len(before)  # finished ones are not rerun
    keys = [(r.config["tile"], r.config["unroll"], tuple(r.config["order"])) for r in after]
    assert len(set(keys)) == budget  # the replayed strategy does not repeat them either
    assert result.best_value == min(tune_kill_worker.objective(r.config) for r in after)


def test_tell_takes_plain_numbers_like_tune_objectives_return():
    from perfjax.schedulers.base import check_tell

    configs = [{}] * 4
    assert check_tell(configs, [1.5, {"value": 2.0}, float("nan"), np.float32(3.0)])[:2] == [
        (1.5, True), (2.0, True)]
    value, valid = check_tell(configs, [1.5, 2.0, float("nan"), 3.0])[2]
    assert math.isnan(value) and not valid
    with pytest.raises(SpaceError, match="result 0 must be a number or a dict"):
        check_tell([{}], ["fast"])
    with pytest.raises(SpaceError, match="result 0: 'value' must be a number"):
        check_tell([{}], [{"value": "fast"}])
    with pytest.raises(SpaceError, match="result 0 must be a number"):
        check_tell([{}], [True])


def test_executor_runs_a_batch_at_once_and_records_each_as_it_completes(tmp_path):
    space = small_space()
    arrived = threading.Barrier(4, timeout=20)  # passes only if 4 evaluations run at once
    finished = []
    batch = make_strategy("random", space, seed=3).ask(4)
    first = batch[0]

    def key(config):
        return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                            for k, v in config.items()))

    # the first batch completes in a known order, 0.15 s apart (the batch's first: last)
    delay = {key(c): d for c, d in zip(batch, (0.45, 0.0, 0.15, 0.3))}

    def objective(config):
        arrived.wait()
        time.sleep(delay.get(key(config), 0.0))
        finished.append(dict(config))
        return tune_kill_worker.objective(config)

    told = []

    class Recorder(Strategy):  # random search that keeps what tune tells it
        def __init__(self):
            self.inner = make_strategy("random", space, seed=3)

        def ask(self, n):
            return self.inner.ask(n)

        def tell(self, configs, results):
            told.append((list(configs), list(results)))
            self.inner.tell(configs, results)

    with ThreadPoolExecutor(4) as pool:
        result = perfjax.tune(space, objective, strategy=Recorder(), budget=8, batch=4,
                              study=tmp_path / "s.jsonl", executor=pool)
    assert len(result.records) == 8 and all(r.valid for r in result.records)
    # the study holds the evaluations in the order they completed ...
    stored = [dict(r.config) for r in Study(tmp_path / "s.jsonl").records]
    assert stored[:4] == [{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()}
                          for c in finished[:4]]
    assert key(Study(tmp_path / "s.jsonl").records[3].config) == key(first)
    # ... and the strategy hears each batch in the order it asked, values matching the configs
    configs, results = told[0]
    assert configs[0]["tile"] == first["tile"]
    for config, res in zip(configs, results):
        assert res["value"] == tune_kill_worker.objective(config)
    serial = perfjax.tune(space, tune_kill_worker.objective, strategy="random", seed=3, budget=8,
                          batch=4)
    assert [r.values["value"] for r in serial.records] == [res["value"] for c, r in told for res in r]


def test_process_pool_worker_death_is_a_failed_evaluation_and_the_study_resumes(tmp_path):
    space = Space({"tile": Ordinal([1, 2, 4, 8, 16, 32]), "unroll": Ordinal([1, 2, 3, 4]),
                   "order": Permutation(3)}, constraints=["unroll <= tile"])
    path = tmp_path / "s.jsonl"
    spawn = multiprocessing.get_context("spawn")  # JAX's threads make fork unsafe
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        result = perfjax.tune(space, tune_kill_worker.objective, strategy="random", seed=5,
                              budget=6, batch=3, executor=pool)
        assert [r.values["value"] for r in result.records] == [
            tune_kill_worker.objective(r.config) for r in result.records]
        with pytest.raises(PerfjaxError, match="could not send the objective.*module-level"):
            perfjax.tune(space, lambda c: 1.0, strategy="random", budget=2, batch=2,
                         executor=pool)
    # a worker that dies fails its batch's evaluations (the pool breaks); the next batch
    # cannot be submitted: a clear error, and what completed is in the study
    strategy = make_strategy("random", space, seed=7)
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        with pytest.raises(PerfjaxError, match="executor took no more work"):
            perfjax.tune(space, tune_kill_worker.dies_on_tile_16, strategy="random", seed=2,
                         budget=40, batch=4, study=path, executor=pool)
    kept = Study(path).records
    assert kept and any(r.config["tile"] == 16 for r in kept)
    for r in kept:
        if r.valid:
            assert r.values["value"] == tune_kill_worker.objective(r.config)
        else:
            assert r.error.startswith("executor: BrokenProcessPool")
    # rerun with a working objective: the study resumes to the budget with nothing lost
    again = perfjax.tune(space, tune_kill_worker.objective, strategy=strategy, budget=len(kept) + 4,
                         study=path)
    assert [r.id for r in again.records[:len(kept)]] == [r.id for r in kept]
    assert len(again.records) == len(kept) + 4


def test_executor_must_submit():
    with pytest.raises(SpaceError, match="executor must be a concurrent.futures.Executor"):
        perfjax.tune(small_space(), tune_kill_worker.objective, budget=2, executor=object())
