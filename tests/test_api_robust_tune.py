"""Robustness of perfjax.tune, the ask/tell strategies and the study log against bad input:
stripped newlines, tuple-valued categoricals on resume, foreign studies, objectives returning
huge numbers or unencodable text, bad arguments and bad ``tell`` calls."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import perfjax
from perfjax import Categorical, Integer, Space, SpaceError
from perfjax.errors import StudyError, StudyWarning
from perfjax.schedulers import make_strategy
from perfjax.schedulers.bayesopt import BayesOpt
from perfjax.study import Study, load

TILES = [(8, 8), (16, 4)]
FAST_BO = {"candidates": 64, "local_candidates": 16, "density_candidates": 16, "gp_restarts": 1,
           "gp_steps": 10, "local_search_steps": 1, "initial": 2}


def small() -> Space:
    return Space({"a": Integer(1, 4), "c": Categorical(["x", "y"])})


def objective(config: dict) -> float:
    return 10.0 * config["a"] + (0.5 if config["c"] == "y" else 0.0)


def tuple_space() -> Space:
    return Space({"tile": Categorical(TILES), "a": Integer(1, 4)})


def tuple_objective(config: dict) -> float:
    return config["tile"][0] / config["tile"][1] + config["a"]


def lines(path: Path) -> list[dict]:
    """Every line as strict JSON (no NaN literals); the file must be UTF-8 ending in a newline."""
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n")

    def reject(literal: str) -> None:
        raise AssertionError(f"non-standard JSON literal {literal}")

    return [json.loads(line, parse_constant=reject) for line in text.splitlines()]


def no_warnings(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call(*args, **kwargs)


# -- 1. a complete last record without its newline is data, not a half-written line ---------


def test_a_complete_last_record_without_newline_is_kept_by_writer_and_reader(tmp_path):
    path = tmp_path / "s.jsonl"
    with Study(path) as study:
        for i in range(3):
            study.append({"i": i}, float(i))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # an editor stripped the final newline
    stripped = path.read_bytes()

    assert [r.config for r in no_warnings(load, path)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert path.read_bytes() == stripped  # a reader changes nothing
    with no_warnings(Study, path) as study:
        assert study.append({"i": 3}, 3.0).id == 3
    assert [(line["id"], line["config"]) for line in lines(path)[1:]] == [
        (i, {"i": i}) for i in range(4)]


def test_a_header_without_newline_is_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    Study(path, metadata={"m": 1}).close()
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with no_warnings(Study, path) as study:
        assert study.header["metadata"] == {"m": 1}
        study.append({"i": 0}, 0.0)
    assert [line.get("id") for line in lines(path)] == [None, 0]


def test_a_truly_partial_last_line_is_still_cut(tmp_path):
    path = tmp_path / "s.jsonl"
    with Study(path) as study:
        study.append({"i": 0}, 0.0)
    full = path.read_bytes()
    path.write_bytes(full + b'{"id": 1, "config": {"i"')
    with pytest.warns(StudyWarning, match="line 3: incomplete last line"):
        study = Study(path)
    assert path.read_bytes() == full
    with study:
        assert study.append({"i": 1}, 1.0).id == 1


def test_tune_resumes_a_study_whose_final_newline_was_stripped_without_losing_a_record(tmp_path):
    path = tmp_path / "s.jsonl"
    perfjax.tune(small(), objective, strategy="random", budget=4, study=path)
    before = load(path).records
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    calls = []
    result = no_warnings(perfjax.tune, small(), lambda c: calls.append(c) or objective(c),
                         strategy="random", budget=6, study=path, seed=1)
    after = load(path).records
    assert [r.id for r in after] == list(range(6))
    assert after[:4] == before
    assert len(calls) == 2
    assert len({(r.config["a"], r.config["c"]) for r in after}) == 6
    assert result.best_value == min(objective(r.config) for r in after)


# -- 2. tuple-valued categoricals survive the JSON round trip on resume -----------------------


@pytest.mark.parametrize("strategy", ["random", "exhaustive", "bo"])
def test_a_study_with_tuple_categoricals_resumes(tmp_path, strategy):
    path = tmp_path / "t.jsonl"
    options = FAST_BO if strategy == "bo" else {}
    perfjax.tune(tuple_space(), tuple_objective, strategy=strategy, budget=3, study=path, **options)
    before = load(path).records
    assert all(isinstance(r.config["tile"], list) for r in before)  # as JSON stores them
    result = perfjax.tune(tuple_space(), tuple_objective, strategy=strategy, budget=5, study=path,
                          seed=1, **options)
    after = load(path).records
    assert after[:3] == before and [r.id for r in after] == list(range(5))
    keys = [(tuple(r.config["tile"]), r.config["a"]) for r in after]
    assert all(tile in TILES and 1 <= a <= 4 for tile, a in keys)
    if strategy != "bo":
        assert len(set(keys)) == 5  # the replayed configurations are not asked again
    # Best by plain Python over what is on disk; best_config holds the space's own tuple.
    expected = min(tile[0] / tile[1] + a for tile, a in keys)
    assert result.best_value == expected
    assert result.best_config["tile"] in TILES and isinstance(result.best_config["tile"], tuple)
    assert tuple_objective(result.best_config) == expected


@pytest.mark.parametrize("strategy", ["random", "exhaustive", "bo"])
def test_tell_accepts_tuple_categoricals_as_lists(strategy):
    space = tuple_space()
    options = FAST_BO if strategy == "bo" else {}
    search = make_strategy(strategy, space, **options)
    search.tell([{"tile": [8, 8], "a": 1}, {"tile": [16, 4], "a": 2}], [1.0, 2.0])
    if strategy != "bo":
        every = {(t, a) for t, a in itertools.product(TILES, range(1, 5))}
        asked = {(c["tile"], c["a"]) for c in search.ask(6)}
        assert asked == every - {((8, 8), 1), ((16, 4), 2)}


# -- 3. a Study object gets the same checks as a path ---------------------------------------


def test_a_study_object_with_an_out_of_domain_record_is_refused_naming_file_and_record(tmp_path):
    path = tmp_path / "o.jsonl"
    with Study(path) as study:
        study.append({"a": 2, "c": "x"}, 5.0)
        study.append({"a": 99, "c": "x"}, 1.0)  # outside Integer(1, 4)
    calls = []
    for strategy in ("random", "bo"):
        with Study(path) as study, pytest.raises(SpaceError) as info:
            perfjax.tune(small(), calls.append, strategy=strategy, budget=4, study=study)
        message = str(info.value)
        assert str(path) in message and "record 1" in message and "99" in message
    assert calls == [] and len(load(path)) == 2


def test_a_study_object_of_another_space_is_refused(tmp_path):
    path = tmp_path / "o.jsonl"
    other = Space({"a": Integer(1, 9), "c": Categorical(["x", "y"])})
    Study(path, space=other.to_baco_json()).close()
    with Study(path) as study, pytest.raises(StudyError, match="differs from the space stored"):
        perfjax.tune(small(), objective, strategy="random", budget=2, study=study)


def test_a_study_object_of_this_space_resumes(tmp_path):
    path = tmp_path / "o.jsonl"
    perfjax.tune(small(), objective, strategy="random", budget=2, study=path)
    with Study(path) as study:
        result = perfjax.tune(small(), objective, strategy="random", budget=3, study=study, seed=4)
    assert [r.id for r in load(path)] == [0, 1, 2]
    assert result.best_value == min(objective(r.config) for r in load(path))


# -- 4. records without the objective tune reads -------------------------------------------


def test_records_without_a_value_objective_are_refused_naming_what_they_hold(tmp_path):
    path = tmp_path / "r.jsonl"
    with Study(path, space=small().to_baco_json()) as study:  # the README's Study example
        study.append({"a": 1, "c": "x"}, {"compute_time": 0.001})
        study.append({"a": 2, "c": "x"}, {"compute_time": 0.002})
    calls = []
    with pytest.raises(StudyError) as info:
        perfjax.tune(small(), calls.append, strategy="random", budget=3, study=path)
    message = str(info.value)
    assert str(path) in message and "'compute_time'" in message and "tune reads 'value'" in message
    assert calls == [] and len(load(path)) == 2


def test_failed_records_without_a_value_are_replayed_as_failures(tmp_path):
    path = tmp_path / "r.jsonl"
    with Study(path, space=small().to_baco_json()) as study:
        study.append({"a": 1, "c": "x"}, {}, valid=False, error="crashed")
    result = perfjax.tune(small(), objective, strategy="random", budget=3, study=path)
    records = load(path).records
    assert len(records) == 3 and not records[0].valid
    assert result.best_value == min(objective(r.config) for r in records[1:])


# -- 5. numbers too large for a float ----------------------------------------------------------


def test_an_objective_returning_a_huge_integer_is_a_failed_evaluation(tmp_path):
    path = tmp_path / "big.jsonl"
    returns = iter([10**400, {"value": 1.0, "count": 10**400}, 3.0])
    result = perfjax.tune(small(), lambda c: next(returns), strategy="random", budget=3, study=path)
    records = load(path).records
    assert [r.valid for r in records] == [False, False, True]
    assert "too large for a float" in records[0].error and "401 digits" in records[0].error
    assert "'count'" in records[1].error and "too large for a float" in records[1].error
    assert result.best_value == 3.0


def test_study_append_of_a_huge_integer_raises_study_error_and_writes_nothing(tmp_path):
    path = tmp_path / "big.jsonl"
    with Study(path) as study:
        with pytest.raises(StudyError, match="values.*too large for a float"):
            study.append({"a": 1}, 10**400)
        with pytest.raises(StudyError, match=r"values\['t'\].*too large"):
            study.append({"a": 1}, {"t": 10**400})
        assert study.append({"a": 1}, 2.0).id == 0
    assert [line.get("id") for line in lines(path)] == [None, 0]


# -- 6. strings with lone surrogates -----------------------------------------------------------


def test_lone_surrogates_in_errors_and_metadata_are_stored_and_the_run_goes_on(tmp_path):
    path = tmp_path / "sur.jsonl"
    bad = b"bad bytes \xff".decode("utf-8", "surrogateescape")
    outcomes = iter(["raise", "meta", "plain"])

    def f(config):
        kind = next(outcomes)
        if kind == "raise":
            raise RuntimeError(bad)
        return {"value": 1.0, "log": bad} if kind == "meta" else 2.0

    result = perfjax.tune(small(), f, strategy="random", budget=3, study=path)
    stored = lines(path)[1:]  # valid UTF-8 and strict JSON
    assert [line["id"] for line in stored] == [0, 1, 2]
    records = load(path).records
    assert records[0].error == f"RuntimeError: {bad}" and not records[0].valid
    assert records[1].metadata == {"log": bad} and records[1].valid
    assert records == result.records
    with Study(path) as study:  # and the writer reopens it and keeps appending
        study.append({"a": 1, "c": bad}, 1.0, error=bad)
    assert load(path).records[-1].config == {"a": 1, "c": bad}


# -- 7. tune's arguments are checked before any evaluation ----------------------------------


@pytest.mark.parametrize("kwargs, name", [
    ({"objective": None}, "objective"),
    ({"objective": 5}, "objective"),
    ({"callback": 5}, "callback"),
    ({"seed": -1}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"budget": np.float64(3)}, "budget"),
    ({"batch": np.int64(0)}, "batch"),
])
def test_bad_tune_arguments_are_refused_before_any_evaluation(tmp_path, kwargs, name):
    calls = []
    args = {"objective": calls.append, "strategy": "random", "budget": 3,
            "study": tmp_path / "s.jsonl", **kwargs}
    fn = args.pop("objective")
    with pytest.raises(SpaceError, match=rf"tune: {name} must be"):
        perfjax.tune(small(), fn, **args)
    assert calls == []
    assert not (tmp_path / "s.jsonl").exists() or len(load(tmp_path / "s.jsonl")) == 0


def test_numpy_integers_are_accepted_for_budget_batch_and_seed():
    plain = perfjax.tune(small(), objective, strategy="random", budget=5, batch=2, seed=3)
    numpy = perfjax.tune(small(), objective, strategy="random", budget=np.int64(5),
                         batch=np.int32(2), seed=np.int64(3))
    assert len(numpy.records) == 5
    assert [r.config for r in numpy.records] == [r.config for r in plain.records]


def test_a_strategy_asking_malformed_configurations_is_named():
    class Bad:
        def __init__(self, out):
            self.out = out

        def ask(self, n):
            return self.out

        def tell(self, configs, results):
            pass

    with pytest.raises(SpaceError, match="strategy.ask returned NoneType"):
        perfjax.tune(small(), objective, strategy=Bad(None), budget=2)
    with pytest.raises(SpaceError, match=r"configuration 0 has no parameter 'c'"):
        perfjax.tune(small(), objective, strategy=Bad([{"a": 1}]), budget=2)


# -- 8. BayesOpt options -----------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("gp_restarts", 0), ("local_search_starts", 0), ("local_candidates", -1),
    ("candidates", -1), ("density_candidates", -2), ("initial", -1), ("gp_steps", 1.5),
    ("good_fraction", 0.0), ("good_fraction", -1.0), ("good_fraction", 1.5),
    ("good_fraction", math.nan), ("ucb_beta", math.nan), ("ucb_beta", -1.0),
    ("ucb_beta", math.inf), ("prior_weight", math.nan), ("prior_weight", -2.0),
    ("quadratic_mean", "yes"), ("quadratic_mean", 1),
])
def test_bad_bayesopt_options_are_refused_naming_the_option(option, value):
    with pytest.raises(SpaceError, match=rf"^{option} must be"):
        BayesOpt(small(), **{option: value})
    with pytest.raises(SpaceError, match=rf"^{option} must be"):
        perfjax.tune(small(), objective, strategy="bo", budget=2, **{option: value})


def test_edge_bayesopt_options_are_accepted_and_run():
    result = perfjax.tune(small(), objective, strategy="bo", budget=5, initial=0, candidates=0,
                          local_candidates=0, density_candidates=0, good_fraction=1.0,
                          ucb_beta=0.0, prior_weight=0.0, gp_restarts=1, gp_steps=5,
                          local_search_starts=1)
    assert len(result.records) == 5
    assert result.best_value == min(objective(r.config) for r in result.records)


# -- 9. tell with malformed configurations -----------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "exhaustive", "bo"])
def test_tell_with_malformed_configurations_names_the_index_and_key(strategy):
    search = make_strategy(strategy, small())
    good = {"a": 1, "c": "x"}
    with pytest.raises(SpaceError, match=r"tell: configuration 1 has no parameter 'c'"):
        search.tell([good, {"a": 3}], [1.0, 2.0])
    with pytest.raises(SpaceError, match=r"tell: configuration 0 must be a dict"):
        search.tell([[3, "x"]], [1.0])
    with pytest.raises(SpaceError, match="tell: configurations must be a list"):
        search.tell(None, [1.0])
    with pytest.raises(SpaceError, match="tell: results must be a list"):
        search.tell([good], None)
    search.tell([good], [1.0])  # a well-formed call still works afterwards
    if strategy != "bo":
        assert (1, "x") not in {(c["a"], c["c"]) for c in search.ask(7)}


def test_a_stored_tuple_the_categorical_does_not_hold_is_named(tmp_path):
    path = tmp_path / "t.jsonl"
    with Study(path) as study:
        study.append({"tile": [9, 9], "a": 1}, 1.0)
    for strategy in ("random", "exhaustive"):
        with Study(path) as study, pytest.raises(SpaceError, match=r"record 0 .*\(9, 9\)"):
            perfjax.tune(tuple_space(), tuple_objective, strategy=strategy, budget=2, study=study)


@pytest.mark.parametrize("name", ["value", "valid", "timestamp"])
def test_tune_refuses_parameter_names_that_clash_with_study_columns(tmp_path, name):
    """A parameter called like a study column tuned fine, then Study.to_pandas always failed."""
    space = Space({name: Integer(1, 3), "b": Integer(1, 2)})
    path = tmp_path / "s.jsonl"
    with pytest.raises(SpaceError, match=f"parameter name '{name}'"):
        perfjax.tune(space, lambda c: 1.0, strategy="random", budget=2, study=path)
    assert not path.exists()
