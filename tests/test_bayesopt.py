"""Bayesian optimization and the feasibility classifier, against brute force and random search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import perfjax
from perfjax import Integer, Ordinal, Permutation, Real, Space, SpaceError
from perfjax.schedulers import make_strategy
from perfjax.surrogates.feasibility import FeasibilityClassifier
from perfjax.surrogates.gp import features

TARGET = (2, 0, 3, 1)
SMALL = dict(candidates=1000, gp_restarts=2, gp_steps=60, local_search_steps=4)  # quick tests


def discordant(p, q) -> int:
    pos_p = {item: i for i, item in enumerate(p)}
    pos_q = {item: i for i, item in enumerate(q)}
    return sum((pos_p[a] < pos_p[b]) != (pos_q[a] < pos_q[b])
               for a, b in itertools.combinations(range(len(p)), 2))


def objective(config) -> float:
    return (1.0 + (config["x"] - 20) ** 2 / 50 + (np.log2(config["y"]) - 3) ** 2 / 2
            + discordant(config["order"], TARGET))


@pytest.fixture(scope="module")
def space() -> Space:
    return Space({"x": Integer(0, 31), "y": Ordinal([1, 2, 4, 8, 16, 32, 64]),
                  "order": Permutation(4, parametrization="kendall")})


@pytest.fixture(scope="module")
def optimum(space) -> float:
    return min(objective({"x": x, "y": y, "order": o}) for x in range(32)
               for y in space.params["y"].values for o in itertools.permutations(range(4)))


def best_after(space, strategy, budget, seed, **options) -> list[float]:
    result = perfjax.tune(space, objective, strategy=strategy, budget=budget, seed=seed, **options)
    return [r.values["value"] for r in result.records]


def test_bo_finds_the_brute_force_optimum_sooner_than_random(space, optimum):
    bo = [min(best_after(space, "bo", 30, seed, **SMALL)) for seed in range(3)]
    rnd = [min(best_after(space, "random", 30, seed)) for seed in range(3)]
    assert np.median(bo) <= optimum + 0.1  # within 0.1 of the exact minimum 1.0
    assert np.median(bo) < np.median(rnd)


def test_a_cost_model_as_prior_mean_speeds_convergence(space, optimum):
    def cost_model(batch):  # a differentiable-model stand-in: right shape, wrong scale
        order = np.asarray(batch["order"])
        return 3.0 * np.array([objective({"x": x, "y": y, "order": tuple(o)})
                               for x, y, o in zip(np.asarray(batch["x"]), np.asarray(batch["y"]), order)])
    plain = [min(best_after(space, "bo", 14, seed, **SMALL)) for seed in range(3)]
    informed = [min(best_after(space, "bo", 14, seed, prior_mean=cost_model, **SMALL))
                for seed in range(3)]
    assert np.median(informed) == pytest.approx(optimum)
    assert np.median(informed) < np.median(plain)


def test_batch_suggestions_are_distinct_feasible_and_new(space):
    bo = make_strategy("bo", space, seed=1, initial=6, **SMALL)
    first = bo.ask(6)
    assert first[0] == {**space.default(), "order": (0, 1, 2, 3)}  # the default comes first
    bo.tell(first, [{"value": objective(c), "valid": True} for c in first])
    batch = bo.ask(4)
    keys = {(c["x"], c["y"], c["order"]) for c in first + batch}
    assert len(keys) == 10
    assert all(sorted(c["order"]) == [0, 1, 2, 3] and 0 <= c["x"] <= 31 for c in batch)


def test_hidden_constraint_failures_are_avoided(space):
    def guarded(config):
        if config["x"] >= 24 or config["y"] >= 32:
            raise RuntimeError("kernel crashed")
        return objective(config)
    runs = {}
    for name, options in (("bo", SMALL), ("random", {})):
        failed = []
        for seed in range(2):
            result = perfjax.tune(space, guarded, strategy=name, budget=30, seed=seed, **options)
            failed.append(sum(not r.valid for r in result.records[10:]))
        runs[name] = np.mean(failed)
    # Random search fails on 1 - (24/32)(5/7) = 46% of its draws; BO learns the region.
    assert runs["bo"] / 20 < 0.3 and runs["bo"] < runs["random"]


def test_local_every_k_th_suggestion_draws_no_global_candidates(space):
    from perfjax.schedulers.bayesopt import BayesOpt

    assert BayesOpt(space).local_every == 2  # the default: every second suggestion searches locally
    for every, expected in ((2, [True, False, True, False]), (0, [True] * 4),
                            (1, [False] * 4), (3, [True, True, False, True])):
        options = dict(SMALL, candidates=777)  # the global draw's size, told apart below
        bo = BayesOpt(space, seed=3, initial=5, local_every=every, **options)
        design = bo.ask(5)
        bo.tell(design, [{"value": objective(c), "valid": True} for c in design])
        drawn = []
        sample = bo._sample
        bo._sample = lambda count: (drawn.append(count), sample(count))[1]
        global_draws = []
        for _ in range(4):
            drawn.clear()
            config = bo.ask(1)
            bo.tell(config, [{"value": objective(c), "valid": True} for c in config])
            global_draws.append(777 in drawn)
        assert global_draws == expected, every
    with pytest.raises(SpaceError, match="local_every"):
        BayesOpt(space, local_every=-1)


def test_user_prior_steers_early_suggestions(space):
    def prior(batch):  # "x = 5 is good" (pi-BO: a user's belief, whatever the objective says)
        return np.where(np.asarray(batch["x"]) == 5, 1.0, 1e-3)
    counts = {}
    for label, options in (("prior", {"prior": prior, "prior_weight": 20.0}), ("none", {})):
        bo = make_strategy("bo", space, seed=2, initial=5, **SMALL, **options)
        design = bo.ask(5)
        bo.tell(design, [{"value": objective(c), "valid": True} for c in design])
        counts[label] = sum(c["x"] == 5 for c in bo.ask(4))
    assert counts["prior"] >= 3 and counts["none"] <= 1


def test_feasibility_classifier_is_calibrated_on_a_synthetic_hidden_constraint():
    space = Space({"a": Real(0.0, 1.0), "b": Real(0.0, 1.0)})
    rng = np.random.default_rng(0)

    def p_valid(x):  # the true probability that an evaluation succeeds
        return 1 / (1 + np.exp(-12 * (1.1 - x[:, 0] - x[:, 1])))
    train = features(space, space.sample(400, seed=1))
    labels = rng.uniform(size=len(train)) < p_valid(train)
    test = features(space, space.sample(4000, seed=2))
    truth = rng.uniform(size=len(test)) < p_valid(test)
    predicted = FeasibilityClassifier().fit(train, labels).predict(test)
    bins = np.clip((predicted * 5).astype(int), 0, 4)
    gaps = np.array([abs(predicted[bins == b].mean() - truth[bins == b].mean()) for b in range(5)])
    shares = np.array([np.mean(bins == b) for b in range(5)])
    # reliability: predicted probability ~ observed frequency, per bin and on average
    assert gaps.max() < 0.15 and (gaps * shares).sum() < 0.05
    log_loss = -np.mean(np.where(truth, np.log(predicted), np.log(1 - predicted)))
    rate = labels.mean()
    constant = -np.mean(np.where(truth, np.log(rate), np.log(1 - rate)))
    assert log_loss < 0.7 * constant


def test_a_constrained_permutation_of_ten_tunes_without_enumeration():
    target = (3, 0, 1, 7, 2, 9, 4, 5, 8, 6)  # meets both constraints below
    space = Space({"order": Permutation(10, parametrization="kendall")},
                  constraints=["order_i0 < order_i1", "order_i4 < order_i5"])

    def distance(config):
        assert list(config["order"]).index(0) < list(config["order"]).index(1)
        return float(discordant(config["order"], target))
    bo = [perfjax.tune(space, distance, strategy="bo", budget=40, seed=s, **SMALL).best_value
          for s in range(2)]
    rnd = [perfjax.tune(space, distance, strategy="random", budget=40, seed=s).best_value
           for s in range(2)]
    assert space._enumerated is None  # 10! orders were never listed
    assert max(bo) < min(rnd)


def test_bad_options_are_named(space):
    with pytest.raises(SpaceError, match="unknown acquisition 'pi'"):
        make_strategy("bo", space, acquisition="pi")
    with pytest.raises(SpaceError, match="unknown permutation kernel 'cayley'"):
        make_strategy("bo", space, permutation_kernel="cayley")
    for name in ("prior", "prior_mean"):  # e.g. a number from a JSON options file
        with pytest.raises(SpaceError, match=f"{name} must be a callable .* got float"):
            make_strategy("bo", space, **{name: 0.5})


def test_improvement_margin_lowers_the_ei_threshold_below_the_incumbent(space):
    from perfjax.schedulers.bayesopt import BayesOpt
    from perfjax.schedulers.base import batch_to_configs
    rows = space.sample(12, seed=3)
    told = batch_to_configs(space, {k: np.asarray(v) for k, v in rows.items()})
    results = [{"value": objective(c), "valid": True} for c in told]
    thresholds = {}
    for margin in (0.0, 0.3):
        bo = BayesOpt(space, seed=0, improvement_margin=margin, **SMALL)
        bo.tell(told, results)
        bo._fit_models()
        incumbent = float(np.min(bo._gp.transform([r["value"] for r in results])))
        thresholds[margin] = bo._best_z - incumbent
    assert thresholds[0.0] == pytest.approx(0.0, abs=1e-12)
    assert thresholds[0.3] == pytest.approx(-0.3, abs=1e-12)
    with pytest.raises(SpaceError, match="improvement_margin"):
        make_strategy("bo", space, improvement_margin=-1.0)


def test_density_candidates_are_feasible_and_concentrate_near_the_best_observations(space):
    from perfjax.schedulers.base import batch_to_configs
    from perfjax.schedulers.bayesopt import BayesOpt
    told = batch_to_configs(space, {k: np.asarray(v) for k, v in space.sample(40, seed=5).items()})
    results = [{"value": objective(c), "valid": True} for c in told]
    bo = BayesOpt(space, seed=0, **SMALL)
    bo.tell(told, results)
    bo._fit_models()
    drawn = bo._density_sample(2000)
    assert len(drawn["x"]) == 2000 and np.asarray(space.feasible(drawn)).all()
    uniform = bo._sample(2000)
    # Good observations' values dominate: the draws' objective is far better than uniform's.
    mean = {name: np.mean([objective(c) for c in batch_to_configs(space, batch)])
            for name, batch in (("density", drawn), ("uniform", uniform))}
    assert mean["density"] < 0.8 * mean["uniform"]


def test_quadratic_mean_keeps_suggestions_off_the_corners_of_an_interior_bowl():
    """8 ordinals with the optimum inside the box: with a constant-mean GP, EI proposes
    parameters at their smallest or largest value far more often than the optimum warrants;
    the fitted quadratic mean (on by default without a cost model) does not, and finds a better
    configuration in the same budget."""
    from perfjax.schedulers.bayesopt import BayesOpt
    values = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    bowl_space = Space({f"p{i}": Ordinal(values) for i in range(8)})

    def bowl(config) -> float:
        r = np.array([values.index(config[f"p{i}"]) for i in range(8)]) / 8
        return float(np.exp(2 * np.sum((r - 0.4) ** 2)) + 0.1 * np.sum(r))

    assert BayesOpt(bowl_space).quadratic_mean
    assert not BayesOpt(bowl_space, prior_mean=lambda b: np.ones(len(b["p0"]))).quadratic_mean
    extreme, best = {}, {}
    for on in (False, True):
        runs = [perfjax.tune(bowl_space, bowl, strategy="bo", budget=25, seed=seed,
                             quadratic_mean=on, **SMALL) for seed in range(2)]
        extreme[on] = np.mean([np.mean([r.config[f"p{i}"] in (1, 256) for i in range(8)])
                               for run in runs for r in run.records[10:]])
        best[on] = np.mean([run.best_value for run in runs])
    assert extreme[True] < 0.5 * extreme[False]
    assert best[True] < best[False]


def test_tie_plateaus_keep_suggestions_out_of_flat_regions_against_brute_force():
    """Observations that return exactly the same value mark a plateau (a table's nearest row):
    a point whose nearest observation is one of them, within the group's diameter, is not
    suggested. The rule checked point by point over the whole 16 x 16 grid in plain Python."""
    from perfjax.schedulers.base import batch_to_configs
    from perfjax.schedulers.bayesopt import BayesOpt
    grid = Space({"x": Ordinal(list(range(16))), "y": Ordinal(list(range(16)))})
    anchors = [(2, 3, 5.0), (9, 12, 2.0), (13, 4, 1.0), (6, 8, 3.0)]  # rows of a "table"

    def table(config):  # nearest anchor's value, L1 over ranks (the tabular protocol)
        x, y = config["x"], config["y"]
        return min(anchors, key=lambda a: abs(a[0] - x) + abs(a[1] - y))[2]

    rows = grid.sample(14, seed=5)
    told = batch_to_configs(grid, {k: np.asarray(v) for k, v in rows.items()})
    results = [{"value": table(c), "valid": True} for c in told]
    assert len({r["value"] for r in results}) < len(results)  # some observations tie
    with pytest.raises(SpaceError, match="tie_plateaus"):
        make_strategy("bo", grid, tie_plateaus="yes")
    bo = BayesOpt(grid, seed=0, tie_plateaus=True, **SMALL)
    bo.tell(told, results)
    bo._fit_models()
    every = [{"x": x, "y": y} for x in range(16) for y in range(16)]

    def inside(point) -> bool:
        dist = [(abs(point["x"] - c["x"]) + abs(point["y"] - c["y"])) / 15 for c in told]
        for value in {r["value"] for r in results}:
            members = [i for i, r in enumerate(results) if r["value"] == value]
            if len(members) < 2:
                continue
            diameter = max((abs(told[i]["x"] - told[j]["x"]) + abs(told[i]["y"] - told[j]["y"]))
                           / 15 for i in members for j in members)
            near = min(dist[i] for i in members)
            if near <= min(dist) + 1e-12 and near <= diameter + 1e-12:
                return True
        return False

    expected = np.array([inside(p) for p in every])
    batch = {k: np.array([p[k] for p in every]) for k in ("x", "y")}
    assert 0 < expected.sum() < len(every)
    np.testing.assert_array_equal(bo._inside_plateau(features(grid, batch)), expected)
    for config in bo.ask(4):  # kriging believer batch: none of them inside a plateau
        assert not inside(config)
    plain = BayesOpt(grid, seed=0, tie_plateaus=False, **SMALL)
    plain.tell(told, results)
    plain._fit_models()
    assert not plain._inside_plateau(features(grid, batch)).any()
