"""Feasible sampling: count, feasibility by an independent Python reference, determinism, hard
spaces (RISE/ELEVATE-like divisibility constraints, a 1-in-40320 permutation space), the
feasible-fraction estimate against exact counts, uniformity where constraints are unary, and
SpaceError on spaces without feasible points."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conftest import (batch_to_rows, brute_force, config_to_row, domain_values,
                      log_uniform_integer_mass, ref_feasible, row_key)
from perfjax import Categorical, Integer, Ordinal, Permutation, Real, Space, SpaceError
from perfjax.space.space import COMPARE_ALL, _search

SCENARIOS = Path(__file__).parent / "scenarios"

# ------------------------------------------------------------------------ a mixed space

MIXED_PARAMS = {
    "t": Ordinal([8, 16, 32, 64, 128]), "u": Integer(1, 16), "w": Real(0.0, 1.0),
    "g": Real(1e-3, 1.0, log=True), "k": Categorical(["static", "dynamic", "guided"]),
    "L": Permutation(4),
}
MIXED_CONSTRAINTS = [  # (text, reference text)
    ("u <= t // 4", "u <= t // 4"),
    ("w + g <= 1.2", "w + g <= 1.2"),
    ("t * u % 64 == 0 or k == 'guided'", "t * u % 64 == 0 or k == 2"),
    ("L_i0 < L_i3", "L_i0 < L_i3"),
    ("(k != 'static') | (L_0 != 2)", "(k != 0) | (L_0 != 2)"),
]
MIXED = Space(MIXED_PARAMS, [t for t, _ in MIXED_CONSTRAINTS])
MIXED_REF = [r for _, r in MIXED_CONSTRAINTS]


def _check_batch(space, params, ref, batch, n):
    for name, p in params.items():
        column = np.asarray(batch[name])
        assert column.shape == ((n, p.n) if isinstance(p, Permutation) else (n,)), name
    configs = space.to_dicts(batch)
    assert len(configs) == n
    bad = [c for c in configs if not ref_feasible(params, ref, config_to_row(params, c))]
    assert not bad, bad[:3]


@settings(max_examples=8, deadline=None)
@given(n=st.sampled_from([0, 1, 7, 64, 65, 300]), seed=st.integers(0, 2**31 - 1))
def test_sample_count_feasibility_and_determinism(n, seed):
    first = MIXED.sample(n, seed=seed)
    _check_batch(MIXED, MIXED_PARAMS, MIXED_REF, first, n)
    again = MIXED.sample(n, seed=seed)
    for name in MIXED_PARAMS:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(again[name]))
    if n >= 7:
        other = MIXED.sample(n, seed=seed + 1)
        assert any(not np.array_equal(np.asarray(first[k]), np.asarray(other[k])) for k in MIXED_PARAMS)


def test_sample_accepts_a_prng_key_deterministically():
    a = MIXED.sample(20, seed=jax.random.PRNGKey(5))
    b = MIXED.sample(20, seed=jax.random.PRNGKey(5))
    _check_batch(MIXED, MIXED_PARAMS, MIXED_REF, a, 20)
    for name in MIXED_PARAMS:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


def test_one_sampler_program_serves_every_request_size_and_proposal():
    """Small and large samples, prior draws and the feasible-fraction estimate all run the one
    compiled draw of a space (each compile takes seconds), and stay feasible."""
    space = Space(MIXED_PARAMS, [t for t, _ in MIXED_CONSTRAINTS])
    for n in (1, 70, 5000):
        _check_batch(space, MIXED_PARAMS, MIXED_REF, space.sample(n, seed=n), n)
    space.sample(30, seed=1, use_prior=True)
    space.estimate_feasible_fraction(draws=20_000)
    assert len(space._draw_cache) == 1


@pytest.mark.parametrize("width", [1, 5, COMPARE_ALL, COMPARE_ALL + 1, 3 * COMPARE_ALL])
def test_value_search_equals_numpy_searchsorted(width):
    """The sampler's value lookup (compare-all for small domains, binary search for large ones)
    is numpy's searchsorted(side="right"), ties and zero masses included."""
    rng = np.random.default_rng(width)
    masses = rng.integers(0, 4, width) / 2  # zeros: ties in the cumulative masses
    cumulative = np.cumsum(masses)
    thresholds = np.concatenate([rng.uniform(0, cumulative[-1] + 1, 64), cumulative,
                                 [0.0, -1.0]])
    got = np.asarray(_search(jax.numpy.asarray(cumulative), jax.numpy.asarray(thresholds)))
    np.testing.assert_array_equal(got, np.searchsorted(cumulative, thresholds, side="right"))


@pytest.mark.parametrize("n", [-1, 2.5, True, "3"])
def test_sample_rejects_bad_counts(n):
    with pytest.raises(SpaceError):
        MIXED.sample(n, seed=0)


# ------------------------------------------------------------- RISE/ELEVATE (rs_cot_1024)

def _rs_cot_space():
    data = json.loads((SCENARIOS / "hypermapper_rs_cot_1024.json").read_text())
    names = list(data["input_parameters"])
    constraints = [c for spec in data["input_parameters"].values() for c in spec.get("constraints", [])]
    params = {n: Integer(1, 1024) for n in names}
    return params, constraints, Space(params, constraints)


RS_PARAMS, RS_CONSTRAINTS, RS_SPACE = _rs_cot_space()


def _rs_cot_exact_fraction() -> float:
    """Count the feasible points of rs_cot_1024 by hand: the (gs, ls) and (v3..v8) groups are
    independent; within each, loop over the divisors of 1024 and count the free divisors."""
    divisors = [d for d in range(1, 1025) if 1024 % d == 0]
    every = range(1, 1025)
    gs_ls = 0
    for g0, g1 in itertools.product(divisors, divisors):
        for l0 in (x for x in every if g0 % x == 0):
            gs_ls += sum(1 for l1 in every if g1 % l1 == 0 and l0 * l1 <= 1024)
    v = 0
    for v5 in divisors:
        if v5 % 4 or 49152 - v5 * 4 - v5 * 4 - 4 < 0:
            continue
        n4 = sum(1 for x in every if v5 % x == 0)
        for v7 in divisors:
            if v7 % 4 or 49152 - v5 * v7 * 4 - v5 * 4 - 4 * v7 < 0:
                continue
            n3 = sum(1 for x in every if x % 4 == 0 and v7 % x == 0)
            for v8 in divisors:
                if 49152 - v5 * v7 * 4 - v5 * v8 * 4 - 4 * v7 * v8 < 0:
                    continue
                v += n3 * n4 * sum(1 for x in every if x % 4 == 0 and (v5 * v8) % x == 0)
    return gs_ls * v / 1024.0 ** 10


def test_rise_elevate_space_samples_1000_feasible_points():
    start = time.perf_counter()
    batch = RS_SPACE.sample(1000, seed=3)
    elapsed = time.perf_counter() - start
    rows = batch_to_rows(RS_PARAMS, batch)
    assert len(rows) == 1000
    assert all(ref_feasible(RS_PARAMS, RS_CONSTRAINTS, r) for r in rows)
    assert len({row_key(RS_PARAMS, r) for r in rows}) > 900  # not one point repeated
    for name in RS_PARAMS:
        assert len({r[name] for r in rows}) >= 3, name
    assert elapsed < 30, elapsed


def test_rise_elevate_feasible_fraction_matches_exact_count():
    exact = _rs_cot_exact_fraction()
    assert 1e-23 < exact < 1e-21  # a needle in a haystack: rejection sampling would never work
    estimate, stderr = RS_SPACE.estimate_feasible_fraction(16384, seed=1)
    assert stderr > 0
    assert abs(estimate - exact) <= 4 * stderr + 0.02 * exact, (estimate, stderr, exact)


# ------------------------------------------------------------------- permutation of 12

PERM12 = Space({"P": Permutation(12)}, [f"P_i{k} < P_i{k + 1}" for k in range(7)])
PERM12_REF = [f"P_i{k} < P_i{k + 1}" for k in range(7)]


def test_permutation_of_12_with_ordering_constraints_samples_quickly():
    start = time.perf_counter()
    batch = PERM12.sample(500, seed=0)
    elapsed = time.perf_counter() - start
    perms = np.asarray(batch["P"])
    assert perms.shape == (500, 12)
    for row in batch_to_rows(PERM12.params, batch):
        assert ref_feasible(PERM12.params, PERM12_REF, row)
        positions = [row["P"].index(k) for k in range(8)]
        assert positions == sorted(positions)
    # 11880 orders are feasible. Sampling is sequential with forward checking, so it is not
    # uniform over them (item 0 leads about 1/5 of the time instead of 8/12); only ask for variety.
    assert len({tuple(p) for p in perms.tolist()}) > 250
    assert elapsed < 20, elapsed
    estimate, stderr = PERM12.estimate_feasible_fraction(2048, seed=2)
    exact = 1 / math.factorial(8)
    assert abs(estimate - exact) <= 4 * stderr + 0.02 * exact, (estimate, stderr, exact)


# ---------------------------------------------------- small finite space: exact reference

TINY_PARAMS = {"a": Integer(1, 6), "b": Ordinal([1, 2, 4, 8]), "c": Categorical(["x", "y", "z"]),
               "P": Permutation(4)}
TINY_CONSTRAINTS = [
    ("a * b <= 12", "a * b <= 12"),
    ("(a + P_3) % 3 != 0", "(a + P_3) % 3 != 0"),
    ("P_i0 < P_i3 or c == 'z'", "P_i0 < P_i3 or c == 2"),
    ("P_0 + a >= 3", "P_0 + a >= 3"),
    ("b // a >= 1 or P_i1 > 1", "b // a >= 1 or P_i1 > 1"),
    ("abs(P_i1 - P_i2) <= b - 1", "abs(P_i1 - P_i2) <= b - 1"),
    ("where(c == 'y', a >= 3, b <= 4)", "where(c == 1, a >= 3, b <= 4)"),
    ("(P_2 + a) % 2 == 0 or c != 'x'", "(P_2 + a) % 2 == 0 or c != 0"),
    ("max(a, P_1) - min(b, P_2) ** 2 < 5", "max(a, P_1) - min(b, P_2) ** 2 < 5"),
]
TINY = Space(TINY_PARAMS, [t for t, _ in TINY_CONSTRAINTS])
TINY_REF = [r for _, r in TINY_CONSTRAINTS]
TINY_FEASIBLE = {row_key(TINY_PARAMS, r) for r in brute_force(TINY_PARAMS, TINY_REF)}
TINY_TOTAL = math.prod(len(domain_values(p)) for p in TINY_PARAMS.values())


def test_tiny_space_reference_is_nontrivial():
    assert 50 < len(TINY_FEASIBLE) < TINY_TOTAL // 2


def test_estimate_feasible_fraction_matches_brute_force():
    exact = len(TINY_FEASIBLE) / TINY_TOTAL
    estimate, stderr = TINY.estimate_feasible_fraction(16384, seed=4)
    assert abs(estimate - exact) <= 4 * stderr + 0.003, (estimate, stderr, exact)


def test_enumerate_yields_exactly_the_brute_force_feasible_set():
    rows = [r for batch in TINY.enumerate() for r in batch_to_rows(TINY_PARAMS, batch)]
    keys = [row_key(TINY_PARAMS, r) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == TINY_FEASIBLE


def test_sampling_reaches_every_feasible_point_and_nothing_else():
    # Each feasible point has probability >= 1 / TINY_TOTAL per draw, so 40000 draws miss one
    # with probability below 1e-8.
    batch = TINY.sample(40000, seed=5)
    keys = {row_key(TINY_PARAMS, r) for r in batch_to_rows(TINY_PARAMS, batch)}
    assert keys <= TINY_FEASIBLE
    assert keys == TINY_FEASIBLE, f"{len(TINY_FEASIBLE - keys)} feasible points never sampled"


# ------------------------------------------ unary constraints only: uniform, exact fraction

UNI_PARAMS = {
    "a": Integer(1, 10), "o": Ordinal([2, 4, 8, 16, 32]), "c": Categorical(["p", "q", "r", "s"]),
    "P": Permutation(3), "d": Integer(1, 16, log=True), "x": Real(-1.0, 1.0),
    "z": Real(0.1, 10.0, log=True),
}
UNI = Space(UNI_PARAMS, ["a % 3 != 0", "o != 8", "c != 's'", "d != 2", "x < 0.5", "z <= 1"])


def _chi2_ok(observed_counter, values, probabilities, n):
    observed = np.array([observed_counter.get(v, 0) for v in values], dtype=float)
    assert observed.sum() == n, "values outside the allowed set were sampled"
    expected = np.asarray(probabilities, dtype=float) * n
    p = stats.chisquare(observed, expected).pvalue
    assert p > 1e-4, (observed, expected, p)


def test_sampling_is_uniform_when_only_unary_constraints_apply():
    n = 6000
    batch = {k: np.asarray(v) for k, v in UNI.sample(n, seed=11).items()}
    _chi2_ok(Counter(batch["a"].tolist()), [1, 2, 4, 5, 7, 8, 10], [1 / 7] * 7, n)
    _chi2_ok(Counter(batch["o"].tolist()), [2, 4, 16, 32], [1 / 4] * 4, n)
    _chi2_ok(Counter(batch["c"].tolist()), [0, 1, 2], [1 / 3] * 3, n)
    perms = list(itertools.permutations(range(3)))
    _chi2_ok(Counter(map(tuple, batch["P"].tolist())), perms, [1 / 6] * 6, n)
    mass = log_uniform_integer_mass(1, 16)
    keep = [k for k in range(1, 17) if k != 2]
    _chi2_ok(Counter(batch["d"].tolist()), keep, mass[[k - 1 for k in keep]] / mass[[k - 1 for k in keep]].sum(), n)
    # joint (a, c) cells are uniform too (independence)
    joint = Counter(zip(batch["a"].tolist(), batch["c"].tolist()))
    cells = list(itertools.product([1, 2, 4, 5, 7, 8, 10], [0, 1, 2]))
    _chi2_ok(joint, cells, [1 / len(cells)] * len(cells), n)
    assert stats.kstest(batch["x"], stats.uniform(loc=-1.0, scale=1.5).cdf).pvalue > 1e-4
    assert batch["x"].max() < 0.5
    assert stats.kstest(np.log10(batch["z"]), stats.uniform(loc=-1.0, scale=1.0).cdf).pvalue > 1e-4
    assert batch["z"].max() <= 1.0


def test_estimate_under_unary_constraints_is_the_uniform_measure_share():
    # The estimate is the feasible share under the uniform measure (counts; lengths for reals),
    # whatever ``log`` says about sampling: d != 2 keeps 15 of 16 values, z <= 1 keeps 0.9 of 9.9.
    exact = (7 / 10) * (4 / 5) * (3 / 4) * (15 / 16) * 0.75 * (0.9 / 9.9)
    estimate, stderr = UNI.estimate_feasible_fraction(8192, seed=3)
    assert abs(estimate - exact) <= 4 * stderr + 1e-3, (estimate, stderr, exact)


# ------------------------------------------------------------------- infeasible spaces

def test_space_without_feasible_point_raises_on_sample():
    space = Space({"a": Integer(1, 10), "b": Integer(1, 10)}, ["a + b > 100"])
    with pytest.raises(SpaceError) as info:
        space.sample(5, seed=0)
    assert "a + b > 100" in str(info.value)


@pytest.mark.parametrize("param, constraints", [
    (Integer(1, 10), ["v > 20"]),
    (Integer(1, 10), ["v > 5", "v < 3"]),
    (Ordinal([2, 4, 8]), ["v % 2 == 1"]),
    (Categorical(["lo", "hi"]), ["v == 'lo'", "v != 0"]),
])
def test_unary_constraint_leaving_no_value_fails_at_construction(param, constraints):
    with pytest.raises(SpaceError) as info:
        Space({"w": Integer(0, 3), "v": param}, ["w <= 3", *constraints])
    message = str(info.value)
    assert "'v'" in message
    assert any(c in message for c in constraints)


def test_use_prior_follows_the_prior_among_allowed_values():
    space = Space({"o": Ordinal([1, 2, 4, 8], prior=[0.4, 0.3, 0.2, 0.1]),
                   "c": Categorical(["a", "b"], prior=[0.9, 0.1]),
                   "x": Real(0.0, 10.0, prior="gaussian", prior_parameters=[2.0, 1.0])}, ["o != 2"])
    n = 6000
    batch = {k: np.asarray(v) for k, v in space.sample(n, seed=2, use_prior=True).items()}
    _chi2_ok(Counter(batch["o"].tolist()), [1, 4, 8], np.array([0.4, 0.2, 0.1]) / 0.7, n)
    _chi2_ok(Counter(batch["c"].tolist()), [0, 1], [0.9, 0.1], n)
    truncated = stats.truncnorm((0.0 - 2.0) / 1.0, (10.0 - 2.0) / 1.0, loc=2.0, scale=1.0)
    assert stats.kstest(batch["x"], truncated.cdf).pvalue > 1e-4


def test_free_parameters_drawn_together_equal_drawing_them_one_at_a_time():
    """The sampler draws every enumerated parameter that no constraint checks in one vectorized
    step (``_draw_free``); each must be exactly what the one-parameter path (``_draw_scalar``)
    gives from the same uniforms: value, log weight and drawability, under every proposal."""
    space = Space({"a": Ordinal([1, 2, 4, 8]), "b": Ordinal([0.5, 1.5, 2.5]),
                   "c": Categorical(["x", "y", "z"], prior=[0.2, 0.5, 0.3]),
                   "d": Integer(1, 100), "e": Ordinal([3, 5, 7, 9, 11, 13, 15]),
                   "f": Ordinal([2, 4], prior=[0.9, 0.1])}, ["d >= a"])
    n = 257
    uniforms = jax.random.uniform(jax.random.key(3), (len(space._steps), n))
    row_of = {i: i for i in range(len(space._steps))}
    for proposal in ("base", "prior", "uniform"):
        masses = {name: (np.full(len(domain), 1 / space.params[name].size())
                         if proposal == "uniform" else
                         {"prior": space._prior_mass, "base": space._base_mass}[proposal][name])
                  for name, domain in space._domain.items()}
        together = space._draw_free(uniforms, row_of, n, masses)
        assert set(together) == {"b", "c", "e", "f"}  # a and d are checked against each other
        for i, step in enumerate(space._steps):
            if step.name not in together:
                continue
            alone = space._draw_scalar(step, uniforms[i], None, {}, {}, n, masses,
                                       space._PROPOSALS.index(proposal))
            for got, want in zip(together[step.name], alone):
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
