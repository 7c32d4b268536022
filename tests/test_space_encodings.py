"""Conversions and encodings of configurations, checked against brute-force references:
to_dicts/from_dicts, embed/unembed (spearman, kendall, hamming), relax/round/soften, project and
neighbors."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (batch_to_rows, domain_values, mutated_row_strategy, ref_constraint,
                      ref_feasible, row_strategy, rows_to_batch)
from perfjax import Categorical, Integer, Ordinal, Permutation, Real, Space, SpaceError

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Unconstrained: every parameter type, including a huge integer range (not enumerated), a
# single-item permutation and categorical values of mixed JSON types. The real bounds are ones
# where lo + 1.0 * (hi - lo) == hi exactly (test_real_at_its_bound_has_one_neighbour covers other bounds).
ENC_PARAMS = {
    "x": Real(0.0, 4.0), "y": Real(0.5, 100.0, log=True), "i": Integer(-10**6, 10**6),
    "j": Integer(1, 64, log=True), "o": Ordinal([0.25, 0.5, 1.0, 2.0, 8.0], log=True),
    "q": Ordinal([3, 5, 6, 10]), "c": Categorical(["a", 1, 2.5, None, True]),
    "P": Permutation(5, parametrization="kendall"), "Q": Permutation(1),
    "R": Permutation(3, parametrization="hamming"),
}
ENC = Space(ENC_PARAMS)

CN_PARAMS = {"o": Ordinal([1, 2, 4, 8, 16, 32]), "i": Integer(0, 12),
             "c": Categorical(["r", "g", "b", "w"]), "P": Permutation(4), "x": Real(0.0, 4.0)}
CN_CONSTRAINTS = [("o != 4", "o != 4"), ("i % 3 != 1", "i % 3 != 1"), ("o * i <= 96", "o * i <= 96"),
                  ("P_i0 < P_i2 or c == 'w'", "P_i0 < P_i2 or c == 3"), ("x <= i / 2 + 1", "x <= i / 2 + 1")]
CN = Space(CN_PARAMS, [t for t, _ in CN_CONSTRAINTS])
CN_REF = [r for _, r in CN_CONSTRAINTS]
CN_UNARY = {"o": ["o != 4"], "i": ["i % 3 != 1"]}
_CN_SAMPLE: list = []


def cn_feasible_rows():
    if not _CN_SAMPLE:
        _CN_SAMPLE.extend(batch_to_rows(CN_PARAMS, CN.sample(100, seed=1)))
    return _CN_SAMPLE


def enc_rows():
    # A fixed batch size: eager JAX ops compile once per shape, and shapes are not what is tested.
    return st.lists(row_strategy(ENC_PARAMS), min_size=6, max_size=6)


def cn_rows():
    return st.lists(st.one_of(row_strategy(CN_PARAMS), mutated_row_strategy(CN_PARAMS, cn_feasible_rows())),
                    min_size=1, max_size=6)


def assert_batches_equal(params, got, want, real_tol=0.0):
    for name, p in params.items():
        g, w = np.asarray(got[name]), np.asarray(want[name])
        assert g.shape == w.shape, name
        if isinstance(p, Real):
            scale = max(float(p.hi) - float(p.lo), 1e-300)
            assert np.allclose(g, w, rtol=real_tol, atol=real_tol * scale), (name, g, w)
        else:
            assert np.array_equal(g, w), (name, g, w)


# ----------------------------------------------------------------------- to_dicts / from_dicts

def _expected_plain(params, row):
    out = {}
    for name, p in params.items():
        v = row[name]
        if isinstance(p, Categorical):
            out[name] = p.values[v]
        elif isinstance(p, Permutation):
            out[name] = list(v)
        elif isinstance(p, Integer):
            out[name] = int(v)
        elif isinstance(p, Real):
            out[name] = float(v)
        else:
            out[name] = v
    return out


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["ENC", "CN"]))
def test_to_dicts_from_dicts_round_trip(data, which):
    params, space = (ENC_PARAMS, ENC) if which == "ENC" else (CN_PARAMS, CN)
    rows = data.draw(enc_rows() if which == "ENC" else cn_rows())
    batch = rows_to_batch(params, rows)
    dicts = space.to_dicts(batch)
    expected = [_expected_plain(params, r) for r in rows]
    assert dicts == expected
    for got, want in zip(dicts, expected):  # same types too (True stays bool, 1 stays int)
        for name in params:
            assert type(got[name]) is type(want[name]), (name, got[name], want[name])
    assert_batches_equal(params, space.from_dicts(dicts), batch)
    # through JSON text, as a study log stores them
    assert_batches_equal(params, space.from_dicts(json.loads(json.dumps(dicts))), batch)


@pytest.mark.parametrize("config, fragment", [
    ({"o": 2, "i": 3, "c": "r", "P": [0, 1, 2, 3]}, "x"),                      # missing
    ({"o": 2, "i": 3, "c": "r", "P": [0, 1, 2, 3], "x": 1.0, "zz": 1}, "zz"),  # unknown
    ({"o": 3, "i": 3, "c": "r", "P": [0, 1, 2, 3], "x": 1.0}, "'o'"),
    ({"o": 2, "i": 13, "c": "r", "P": [0, 1, 2, 3], "x": 1.0}, "'i'"),
    ({"o": 2, "i": 2.5, "c": "r", "P": [0, 1, 2, 3], "x": 1.0}, "'i'"),
    ({"o": 2, "i": 3, "c": "k", "P": [0, 1, 2, 3], "x": 1.0}, "'c'"),
    ({"o": 2, "i": 3, "c": "r", "P": [0, 1, 1, 3], "x": 1.0}, "'P'"),
    ({"o": 2, "i": 3, "c": "r", "P": [0, 1, 2], "x": 1.0}, "'P'"),
    ({"o": 2, "i": 3, "c": "r", "P": [0, 1, 2, 3], "x": 4.5}, "'x'"),
])
def test_from_dicts_rejects_bad_configurations(config, fragment):
    good = {"o": 2, "i": 3, "c": "r", "P": [0, 1, 2, 3], "x": 1.0}
    with pytest.raises(SpaceError) as info:
        CN.from_dicts([good, config])
    assert "configuration 1" in str(info.value)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------ embeddings

def _positions(perm):
    return [list(perm).index(k) for k in range(len(perm))]


def reference_features(params, row, permutation):
    feats = []
    for name, p in params.items():
        v = row[name]
        if isinstance(p, Categorical):
            feats += [1.0 if k == v else 0.0 for k in range(len(p.values))]
        elif isinstance(p, Permutation):
            enc = permutation or p.parametrization
            pos = _positions(v)
            n = p.n
            if enc == "spearman":
                feats += [q / (n - 1) if n > 1 else 0.0 for q in pos]
            elif enc == "kendall":
                feats += [1.0 if pos[a] < pos[b] else 0.0 for a, b in itertools.combinations(range(n), 2)]
            else:
                feats += [1.0 if pos[item] == q else 0.0 for item in range(n) for q in range(n)]
        else:
            lo, hi = (p.values[0], p.values[-1]) if isinstance(p, Ordinal) else (p.lo, p.hi)
            if p.log:
                feats.append((math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)))
            else:
                feats.append((v - lo) / (hi - lo))
    return feats


@SETTINGS
@given(rows=enc_rows(), permutation=st.sampled_from([None, "spearman", "kendall", "hamming"]))
def test_embed_matches_brute_force_and_unembed_inverts_it(rows, permutation):
    batch = rows_to_batch(ENC_PARAMS, rows)
    features = np.asarray(ENC.embed(batch, permutation=permutation))
    want = np.array([reference_features(ENC_PARAMS, r, permutation) for r in rows])
    assert features.shape == want.shape
    assert np.allclose(features, want, rtol=1e-12, atol=1e-12)
    assert_batches_equal(ENC_PARAMS, ENC.unembed(features, permutation=permutation), batch, real_tol=1e-9)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 7), seed=st.integers(0, 1000))
def test_kendall_and_spearman_features_of_random_permutations(n, seed):
    # a fresh tiny space per example (embed is not compiled per space, so this is cheap)
    space = Space({"P": Permutation(n)})
    perms = np.random.default_rng(seed).permuted(np.tile(np.arange(n), (12, 1)), axis=1)
    kendall = np.asarray(space.embed({"P": perms}, permutation="kendall"))
    spearman = np.asarray(space.embed({"P": perms}, permutation="spearman"))
    for row, k_row, s_row in zip(perms.tolist(), kendall, spearman):
        pos = _positions(row)
        pairs = list(itertools.combinations(range(n), 2))
        assert k_row.tolist() == [float(pos[a] < pos[b]) for a, b in pairs]
        assert np.allclose(s_row, np.array(pos) / (n - 1))
        assert int(sum(1 - b for b in k_row)) == sum(  # discordant pairs = inversions of positions
            1 for a, b in pairs if pos[a] > pos[b])
    for enc in ("spearman", "kendall", "hamming"):
        back = np.asarray(space.unembed(space.embed({"P": perms}, permutation=enc), permutation=enc)["P"])
        assert np.array_equal(back, perms)


# ----------------------------------------------------------------- relax / round / soften

@SETTINGS
@given(data=st.data(), which=st.sampled_from(["ENC", "CN"]))
def test_round_inverts_relax(data, which):
    params, space = (ENC_PARAMS, ENC) if which == "ENC" else (CN_PARAMS, CN)
    batch = rows_to_batch(params, data.draw(enc_rows() if which == "ENC" else cn_rows()))
    assert_batches_equal(params, space.round(space.relax(batch)), batch, real_tol=1e-9)


@settings(max_examples=8, deadline=None)  # soften re-traces its Sinkhorn scan on every call
@given(rows=enc_rows(), temperature=st.floats(0.05, 5.0))
def test_soften_of_relaxed_configurations(rows, temperature):
    batch = rows_to_batch(ENC_PARAMS, rows)
    soft = ENC.soften(ENC.relax(batch), temperature=temperature)
    for name, p in ENC_PARAMS.items():
        s = np.asarray(soft[name])
        v = batch[name]
        if isinstance(p, (Real, Integer)):
            slack = 1e-12 * (p.hi - p.lo)
            assert np.all((s >= p.lo - slack) & (s <= p.hi + slack))
            assert np.allclose(s, v, rtol=1e-9, atol=1e-9 * (p.hi - p.lo)), (name, s, v)
        elif isinstance(p, Permutation):
            assert s.shape == (len(rows), p.n, p.n)
            assert np.all(s >= 0)
            assert np.allclose(s.sum(axis=2), 1.0, atol=1e-6), s.sum(axis=2)
            assert np.allclose(s.sum(axis=1), 1.0, atol=1e-6), s.sum(axis=1)
            assert np.array_equal(s.argmax(axis=2), v)  # [position, item]
        else:
            index = [p.values.index(x) for x in v] if isinstance(p, Ordinal) else v
            assert s.shape == (len(rows), len(p.values))
            assert np.all(s >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-12)
            assert np.array_equal(s.argmax(axis=1), index)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 10.0), temperature=st.floats(0.05, 5.0))
def test_soften_probability_vectors_sum_to_one_for_any_logits(seed, scale, temperature):
    rng = np.random.default_rng(seed)
    relaxed = {name: rng.normal(0, scale, (4, len(p.values)) if isinstance(p, (Ordinal, Categorical))
                                else (4, p.n, p.n) if isinstance(p, Permutation) else (4,))
               for name, p in ENC_PARAMS.items()}
    soft = ENC.soften(relaxed, temperature=temperature, key=jax.random.PRNGKey(seed))
    for name, p in ENC_PARAMS.items():
        s = np.asarray(soft[name])
        if isinstance(p, (Ordinal, Categorical)):
            assert np.all(s >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-9)
        elif isinstance(p, Permutation):
            assert np.allclose(s.sum(axis=1), 1.0, atol=1e-6)  # columns (items) always normalized
        else:  # inside the range (exactness: test_soften_keeps_numerics_inside_their_range_exactly)
            slack = 1e-12 * (p.hi - p.lo)
            assert np.all((s >= p.lo - slack) & (s <= p.hi + slack)), (name, s)


def test_soften_keeps_numerics_inside_their_range_exactly():
    space = Space({"y": Real(0.5, 100.0, log=True)})
    soft = np.asarray(space.soften({"y": np.array([-40.0, 40.0])})["y"])
    assert soft[0] >= 0.5 and soft[1] <= 100.0, soft.tolist()


def test_soften_with_gumbel_noise_gives_doubly_stochastic_matrices():
    space = Space({"P": Permutation(3)})
    soft = np.asarray(space.soften(space.relax({"P": np.array([[0, 1, 2]])}), temperature=1.0,
                                   key=jax.random.PRNGKey(1))["P"])[0]
    assert np.allclose(soft.sum(axis=0), 1.0, atol=1e-6)
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6), soft.sum(axis=1)


# --------------------------------------------------------------------------------- project

def _check_project(relaxed, seed):
    rounded = batch_to_rows(CN_PARAMS, CN.round(relaxed))
    projected = batch_to_rows(CN_PARAMS, CN.project(relaxed, seed=seed))
    assert len(projected) == len(rounded)
    for before, after in zip(rounded, projected):
        assert ref_feasible(CN_PARAMS, CN_REF, after), after
        if ref_feasible(CN_PARAMS, CN_REF, before):
            assert after == before


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=cn_rows(), seed=st.integers(0, 3))
def test_project_returns_feasible_rows_and_keeps_feasible_ones(rows, seed):
    _check_project(CN.relax(rows_to_batch(CN_PARAMS, rows)), seed)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 6.0))
def test_project_of_arbitrary_relaxed_values(seed, scale):
    rng = np.random.default_rng(seed)
    relaxed = {name: rng.normal(0, scale, (6, len(p.values)) if isinstance(p, (Ordinal, Categorical))
                                else (6, p.n, p.n) if isinstance(p, Permutation) else (6,))
               for name, p in CN_PARAMS.items()}
    _check_project(relaxed, 0)


# ------------------------------------------------------------------------------- neighbors

def _allowed(params, unary):
    out = {}
    for name, p in params.items():
        if isinstance(p, (Ordinal, Integer)) and (not isinstance(p, Integer) or p.hi - p.lo < 65536):
            vals = domain_values(p)
            out[name] = [v for v in vals if all(ref_constraint(t, {name: p}, {name: v}) for t in unary.get(name, []))]
    return out


def expected_moves(params, allowed, row, real_step=0.03):
    """Every one-move neighbour of a row: (parameter, new value) pairs for discrete parameters,
    and new values of each real parameter."""
    discrete, reals = [], {}
    for name, p in params.items():
        v = row[name]
        if isinstance(p, Permutation):
            for a, b in itertools.combinations(range(p.n), 2):
                swapped = list(v)
                swapped[a], swapped[b] = swapped[b], swapped[a]
                discrete.append((name, tuple(swapped)))
        elif isinstance(p, Categorical):
            discrete += [(name, k) for k in range(len(p.values)) if k != v]
        elif isinstance(p, Real):
            lo, hi = float(p.lo), float(p.hi)
            moved = []
            for step in (-real_step, real_step):
                if p.log:
                    u = (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
                    w = min(max(u + step, 0.0), 1.0)
                    x = min(max(math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo))), lo), hi)
                else:
                    u = (v - lo) / (hi - lo) if hi > lo else 0.0
                    x = min(max(lo + min(max(u + step, 0.0), 1.0) * (hi - lo), lo), hi)
                if not (x == v or (step < 0 and v == lo) or (step > 0 and v == hi)):
                    moved.append(x)
            reals[name] = sorted(moved)
        else:
            values = allowed.get(name)
            if values is None:  # huge integer range: +-1
                discrete += [(name, w) for w in (v - 1, v + 1) if p.lo <= w <= p.hi]
            else:
                below = [w for w in values if w < v]
                above = [w for w in values if w > v]
                if below:
                    discrete.append((name, below[-1]))
                if above:
                    discrete.append((name, above[0]))
    return discrete, reals


def _check_neighbors(space, params, ref, allowed, rows, feasible_only):
    nb, parent = space.neighbors(rows_to_batch(params, rows), feasible_only=feasible_only)
    parent = np.asarray(parent)
    got_rows = batch_to_rows(params, nb)
    assert len(got_rows) == len(parent)
    for index, row in enumerate(rows):
        want_discrete, want_reals = expected_moves(params, allowed, row)
        if feasible_only:
            want_discrete = [(n, v) for n, v in want_discrete if ref_feasible(params, ref, {**row, n: v})]
        got_discrete, got_reals = [], {n: [] for n in want_reals}
        for neighbour in (got_rows[k] for k in np.nonzero(parent == index)[0]):
            changed = [n for n in params if neighbour[n] != row[n]]
            assert len(changed) == 1, (row, neighbour)
            name = changed[0]
            if feasible_only:
                assert ref_feasible(params, ref, neighbour), neighbour
            if isinstance(params[name], Real):
                got_reals[name].append(neighbour[name])
            else:
                got_discrete.append((name, neighbour[name]))
        assert Counter(got_discrete) == Counter(want_discrete), (row, got_discrete, want_discrete)
        for name, want in want_reals.items():
            got = sorted(got_reals[name])
            if feasible_only:
                assert all(ref_feasible(params, ref, {**row, name: x}) for x in got)
                want = [x for x in want if ref_feasible(params, ref, {**row, name: x})]
            assert len(got) == len(want), (name, row[name], got, want)
            assert np.allclose(got, want, rtol=1e-9, atol=1e-12), (name, got, want)


ENC_ALLOWED = _allowed(ENC_PARAMS, {})
CN_ALLOWED = _allowed(CN_PARAMS, CN_UNARY)


def _formula_count(row):
    count = 0
    for name, p in ENC_PARAMS.items():
        v = row[name]
        if isinstance(p, Permutation):
            count += p.n * (p.n - 1) // 2
        elif isinstance(p, Categorical):
            count += len(p.values) - 1
        else:
            lo, hi = (p.values[0], p.values[-1]) if isinstance(p, Ordinal) else (p.lo, p.hi)
            count += 2 - (v == lo) - (v == hi)
    return count


@SETTINGS
@given(rows=enc_rows())
def test_neighbors_of_unconstrained_space_match_reference_and_formula(rows):
    _check_neighbors(ENC, ENC_PARAMS, [], ENC_ALLOWED, rows, feasible_only=False)
    nb, parent = ENC.neighbors(rows_to_batch(ENC_PARAMS, rows), feasible_only=False)
    counts = np.bincount(np.asarray(parent), minlength=len(rows))
    assert counts.tolist() == [_formula_count(r) for r in rows]


def test_neighbor_formula_at_the_boundaries():
    row = {"x": 0.0, "y": 100.0, "i": 10**6, "j": 1, "o": 8.0, "q": 3, "c": 4, "P": (4, 3, 2, 1, 0),
           "Q": (0,), "R": (1, 0, 2)}
    nb, parent = ENC.neighbors(rows_to_batch(ENC_PARAMS, [row]), feasible_only=False)
    # 1 each for the six numerics at a bound, 4 for c, 10 + 0 + 3 for the permutations
    assert len(np.asarray(parent)) == 6 + 4 + 10 + 0 + 3 == _formula_count(row)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=cn_rows(), feasible_only=st.booleans())
def test_neighbors_of_constrained_space_match_reference(rows, feasible_only):
    _check_neighbors(CN, CN_PARAMS, CN_REF, CN_ALLOWED, rows, feasible_only)


@pytest.mark.parametrize("param, value", [(Real(-0.7, 0.1), 0.1), (Real(1.0, 1000.0, log=True), 1000.0),
                                          (Real(-100.0, 0.3), 0.3)])
def test_real_at_its_bound_has_one_neighbour(param, value):
    space = Space({"x": param})
    nb, parent = space.neighbors({"x": np.array([value])}, feasible_only=False)
    moved = np.asarray(nb["x"]).tolist()
    assert len(moved) == 1, moved  # only the step back into the range


def test_encodings_compile_once_per_row_bucket_and_trace_inline_under_jit(monkeypatch):
    """embed / relax / round of batches of 1..70 rows: one trace per power-of-two bucket (64 and
    128 rows), not one per size, each result equal to the encoding run op by op on the unpadded
    rows; inside jax.jit the encodings trace inline (no padding of tracers)."""
    from perfjax.space import encodings

    space = Space(ENC_PARAMS)  # its own compiled programs
    traces = Counter()
    for name in ("_embed", "_relax", "_round"):
        real = getattr(encodings, name)

        def counted(*args, _real=real, _name=name):
            traces[_name] += 1
            return _real(*args)
        monkeypatch.setattr(encodings, name, counted)
    batch = {k: np.asarray(v) for k, v in ENC.sample(70, seed=4).items()}  # ENC's sampler
    for n in (1, 2, 17, 64, 65, 70):
        rows = {k: v[:n] for k, v in batch.items()}
        features = space.embed(rows, permutation="kendall")
        relaxed = space.relax(rows)
        back = space.round(relaxed)
        assert features.shape[0] == n and all(np.shape(v)[0] == n for v in back.values())
        if n == 65:  # the reference: the same encoding op by op on the unpadded rows
            # (compiled, XLA may fuse the log-scale arithmetic: equal up to rounding)
            assert np.allclose(features, encodings._embed(space, rows, "kendall"),
                               rtol=1e-12, atol=1e-14)
            plain = encodings._relax(space, rows)
            assert all(np.allclose(relaxed[k], plain[k], rtol=1e-12, atol=1e-12)
                       for k in space.names)
        for k in space.names:
            assert np.array_equal(np.asarray(back[k]), rows[k]) if space.params[k].kind != "real" \
                else np.allclose(back[k], rows[k], rtol=1e-12)
    traced = {name: count for name, count in traces.items()}
    # two buckets per encoding; the op-by-op reference above adds a call to embed and relax
    assert traced == {"_embed": 2 + 1, "_relax": 2 + 1, "_round": 2}, traced
    inside = jax.jit(lambda b: space.embed(b))(batch)  # traced inline: same features
    assert np.array_equal(inside, space.embed(batch))
