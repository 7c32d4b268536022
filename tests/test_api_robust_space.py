"""Bad and extreme input to the search-space API: every case raises a SpaceError naming the input,
or gives a result checked against an independent expectation (scipy.stats, brute force)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from perfjax import Categorical, Integer, Ordinal, Permutation, Real, Space
from perfjax.errors import SpaceError


def _small_space() -> Space:
    return Space({"a": Integer(1, 8), "c": Categorical(["x", "y", "z"]), "p": Permutation(3),
                  "r": Real(0.0, 1.0), "o": Ordinal([1, 2, 4])})


def _good_batch(space: Space) -> dict:
    return {k: np.asarray(v) for k, v in
            space.from_dicts([{"a": 3, "c": "y", "p": [2, 0, 1], "r": 0.5, "o": 4}]).items()}


# ----------------------------------------------------------------------- 1. gaussian priors

@pytest.mark.parametrize("mean", [1.5, -0.5])
def test_gaussian_prior_centred_outside_a_real_range_matches_scipy_truncnorm(mean):
    lo, hi, std = 0.0, 1.0, 0.05
    space = Space({"x": Real(lo, hi, prior="gaussian", prior_parameters=[mean, std])})
    x = np.asarray(space.sample(4000, seed=3, use_prior=True)["x"])
    reference = scipy.stats.truncnorm((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)
    assert x.min() >= lo and x.max() <= hi
    assert abs(x.mean() - reference.mean()) < 5 * reference.std() / math.sqrt(len(x))
    assert x.std() == pytest.approx(reference.std(), rel=0.1)
    assert scipy.stats.kstest(x, reference.cdf).pvalue > 1e-4


def test_gaussian_prior_far_beyond_an_integer_range_lands_on_the_nearest_bound():
    lo, hi, mean, std = 0, 100_000, 2e5, 100.0
    space = Space({"k": Integer(lo, hi, prior="gaussian", prior_parameters=[mean, std])})
    k = np.asarray(space.sample(4000, seed=0, use_prior=True)["k"])
    # Continuous truncated normal on [lo, hi] rounded to integers: P(k = hi) is the mass of
    # [hi - 1/2, hi], from scipy's log survival function (exact this far in the tail).
    a, b = (mean - hi) / std, (mean - hi + 0.5) / std  # mirrored: the upper tail of a normal
    p_hi = -math.expm1(scipy.stats.norm.logsf(b) - scipy.stats.norm.logsf(a))
    assert set(np.unique(k)) <= {hi - 1, hi}
    share = (k == hi).mean()
    assert abs(share - p_hi) < 5 * math.sqrt(p_hi * (1 - p_hi) / len(k)) + 1e-3


def test_gaussian_prior_far_beyond_an_enumerated_range_weights_the_nearest_values():
    space = Space({"k": Integer(0, 100, prior="gaussian", prior_parameters=[200.0, 1.0])})
    k = np.asarray(space.sample(500, seed=1, use_prior=True)["k"])
    # Normal density ratio of 99 to 100 at mean 200, std 1: exp(-(101^2 - 100^2) / 2) ~ 1e-44.
    assert (k == 100).all()


def test_gaussian_prior_inside_the_range_still_matches_scipy():
    space = Space({"x": Real(0.0, 10.0, prior="gaussian", prior_parameters=[9.0, 2.0])})
    x = np.asarray(space.sample(4000, seed=5, use_prior=True)["x"])
    reference = scipy.stats.truncnorm((0 - 9.0) / 2.0, (10 - 9.0) / 2.0, loc=9.0, scale=2.0)
    assert scipy.stats.kstest(x, reference.cdf).pvalue > 1e-4


@pytest.mark.parametrize("bad", [[float("nan"), 1.0], [0.5, float("inf")], ["a", "b"], 5, "ab",
                                 [0.5, 0.0], [0.5, -1.0], [0.5], {"mean": 0.5}])
def test_bad_gaussian_prior_parameters_raise_space_error_naming_the_parameter(bad):
    with pytest.raises(SpaceError, match="prior"):
        Real(0.0, 1.0, prior="gaussian", prior_parameters=bad, name="x")
    with pytest.raises(SpaceError, match="'x'"):
        Real(0.0, 1.0, prior="gaussian", prior_parameters=bad, name="x")


# ----------------------------------------------------------------------- 2. batch domains

@pytest.mark.parametrize("column,value", [("c", -1), ("c", 1.7), ("c", 7), ("a", 99), ("a", 2.5),
                                          ("p", [0, 0, 0]), ("r", float("nan")), ("r", 1.5),
                                          ("o", 3)])
def test_to_dicts_refuses_out_of_domain_entries_naming_parameter_and_row(column, value):
    space = _small_space()
    good = _good_batch(space)
    batch = {k: np.concatenate([v, v]) for k, v in good.items()}
    batch[column] = batch[column].astype(float if np.ndim(value) == 0 else np.int64)
    batch[column][1] = value
    with pytest.raises(SpaceError, match=rf"row 1.*'{column}'"):
        space.to_dicts(batch)
    assert not bool(np.asarray(space.feasible(batch))[1])
    assert bool(np.asarray(space.feasible(batch))[0])


def test_feasible_agrees_with_a_brute_force_domain_check_on_float_columns():
    space = Space({"a": Integer(1, 8), "c": Categorical(["x", "y", "z"])}, ["a + c <= 8"])
    values_a = np.array([0, 1, 2.5, 8, 8.0, 9, -1, 4.25, float("nan")])
    values_c = np.array([0, 1, 2, 1.5, -1, 3, 0.0, 2.0])
    a, c = (g.ravel() for g in np.meshgrid(values_a, values_c))
    expected = [not math.isnan(ai) and ai == int(ai) and 1 <= ai <= 8 and ci == int(ci)
                and 0 <= ci <= 2 and ai + ci <= 8 for ai, ci in zip(a, c)]
    assert np.asarray(space.feasible({"a": a, "c": c})).tolist() == expected


def test_to_dicts_accepts_in_domain_float_and_int_columns_alike():
    space = Space({"a": Integer(1, 8), "c": Categorical(["x", "y", "z"])})
    assert space.to_dicts({"a": np.array([3.0]), "c": np.array([2.0])}) == [{"a": 3, "c": "z"}]


def test_non_numeric_batch_columns_raise_space_error():
    space = _small_space()
    batch = _good_batch(space)
    with pytest.raises(SpaceError, match="'c'"):
        space.to_dicts({**batch, "c": np.array(["y"])})
    with pytest.raises(SpaceError, match="'c'"):
        space.feasible({**batch, "c": np.array([object()], dtype=object)})


def test_from_dicts_of_none_raises_space_error():
    with pytest.raises(SpaceError, match="list of dicts"):
        _small_space().from_dicts(None)


# ----------------------------------------------------------------------- 3. real range width

def test_real_range_whose_width_overflows_is_refused():
    with pytest.raises(SpaceError, match="'x'.*too wide"):
        Real(-1e308, 1e308, name="x")
    with pytest.raises(SpaceError, match="too wide"):
        Space({"x": Real(-1e308, 1e308)})


def test_real_range_wide_but_finite_samples_across_the_range():
    x = np.asarray(Space({"x": Real(-1e307, 1e307)}).sample(2000, seed=0)["x"])
    # Uniform on [-1e307, 1e307]: each tenth of the range holds about 200 of 2000 draws.
    counts = np.histogram(x, bins=10, range=(-1e307, 1e307))[0]
    assert scipy.stats.chisquare(counts).pvalue > 1e-4


# ----------------------------------------------------------------------- 4. sizes and counts

def test_huge_sample_size_is_refused_quickly_naming_the_count():
    space = _small_space()
    with pytest.raises(SpaceError, match="1000000000"):
        space.sample(10**9)
    assert space.sample_limit() < 10**9
    assert len(np.asarray(space.sample(5, seed=0)["a"])) == 5


@pytest.mark.parametrize("bad", [0, -5, 2.5, "3", None])
def test_enumerate_chunk_must_be_a_positive_integer(bad):
    with pytest.raises(SpaceError, match="chunk"):
        list(Space({"a": Integer(1, 4)}).enumerate(chunk=bad))


def test_enumerate_with_a_small_chunk_matches_brute_force():
    space = Space({"a": Integer(1, 5), "b": Integer(1, 5)}, ["a < b"])
    rows = sorted((int(a), int(b)) for part in space.enumerate(chunk=3)
                  for a, b in zip(np.asarray(part["a"]), np.asarray(part["b"])))
    assert rows == [(a, b) for a in range(1, 6) for b in range(1, 6) if a < b]


@pytest.mark.parametrize("bad", [0, -5, 1.5])
def test_estimate_feasible_fraction_needs_a_positive_draw_count(bad):
    with pytest.raises(SpaceError, match="draws"):
        Space({"a": Integer(1, 4)}).estimate_feasible_fraction(draws=bad)


def test_too_large_permutation_is_refused_at_construction():
    with pytest.raises(SpaceError, match="'p'.*513"):
        Permutation(513, name="p")
    with pytest.raises(SpaceError, match="too large"):
        Permutation(10**6)


def test_large_permutation_samples_valid_permutations():
    space = Space({"p": Permutation(300)})
    perms = np.asarray(space.sample(3, seed=0)["p"])
    assert perms.shape == (3, 300)
    assert all(sorted(row) == list(range(300)) for row in perms.tolist())
    bad = perms.copy()
    bad[0, 0] = bad[0, 1]
    assert np.asarray(space.feasible({"p": bad})).tolist() == [False, True, True]


# ----------------------------------------------------------------------- 5. constraints argument

def test_constraints_given_as_a_bare_string_are_refused():
    with pytest.raises(SpaceError, match="list"):
        Space({"a": Integer(1, 4), "b": Integer(1, 4)}, constraints="a <= b")


def test_constraints_none_means_no_constraints():
    space = Space({"a": Integer(1, 4), "b": Integer(1, 4)}, constraints=None)
    assert space.constraints == ()
    assert len(list(space.enumerate()))  # every one of the 16 configurations
    assert sum(len(np.asarray(p["a"])) for p in space.enumerate()) == 16


# ----------------------------------------------------------------------- 6. seeds

@pytest.mark.parametrize("seed", [1.5, "abc", 2**70, -1, True, np.random.default_rng(0),
                                  np.zeros(3, dtype=np.uint32)])
def test_bad_seeds_raise_space_error_naming_the_seed(seed):
    with pytest.raises(SpaceError, match="seed"):
        _small_space().sample(2, seed=seed)


def test_numpy_integer_seeds_and_jax_keys_are_accepted():
    space = _small_space()
    by_int = space.sample(4, seed=7)
    by_numpy = space.sample(4, seed=np.int64(7))
    assert all(np.array_equal(by_int[k], by_numpy[k]) for k in space.names)
    assert len(space.sample(4, seed=jax.random.PRNGKey(7))["a"]) == 4
    assert len(space.sample(4, seed=jax.random.key(7))["a"]) == 4


# ----------------------------------------------------------------------- 7. round / unembed

def _valid_rows(space: Space, batch: dict) -> bool:
    """Independent domain check of every row (plain Python, not perfjax's own check)."""
    for a, c, p, r, o in zip(*(np.asarray(batch[k]).tolist() for k in ("a", "c", "p", "r", "o"))):
        if not (a == int(a) and 1 <= a <= 8 and c in (0, 1, 2) and sorted(p) == [0, 1, 2]
                and 0.0 <= r <= 1.0 and o in (1, 2, 4)):
            return False
    return True


def test_round_and_unembed_refuse_nan():
    space = _small_space()
    relaxed = space.relax(_good_batch(space))
    for name in space.names:
        bad = {**relaxed, name: jnp.full_like(relaxed[name], jnp.nan)}
        with pytest.raises(SpaceError, match=f"'{name}'.*NaN"):
            space.round(bad)
    features = np.array(space.embed(_good_batch(space)))
    features[0, 0] = np.nan
    with pytest.raises(SpaceError, match="NaN"):
        space.unembed(features)


def test_round_of_infinite_values_gives_valid_configurations():
    space = _small_space()
    relaxed = space.relax(_good_batch(space))
    for fill in (np.inf, -np.inf):
        out = space.round({k: jnp.full_like(v, fill) for k, v in relaxed.items()})
        assert _valid_rows(space, out)


@pytest.mark.parametrize("features", [np.zeros((1, 50)), np.zeros((2, 3)), np.zeros(9),
                                      np.zeros((1, 1, 9)), "abc"])
def test_unembed_refuses_wrong_shapes(features):
    space = _small_space()
    assert np.asarray(space.embed(_good_batch(space))).shape == (1, 9)  # the width expected
    with pytest.raises(SpaceError, match="unembed"):
        space.unembed(features)


def test_unembed_of_an_embedding_round_trips():
    space = _small_space()
    batch = {k: np.asarray(v) for k, v in space.sample(20, seed=4).items()}
    back = space.unembed(space.embed(batch))
    assert all(np.allclose(np.asarray(back[k]), batch[k]) for k in space.names)


@pytest.mark.parametrize("name,value", [("c", np.zeros((1, 5))), ("p", np.zeros((1, 2, 2))),
                                        ("a", np.zeros((1, 2))), ("o", np.zeros(1))])
def test_round_refuses_relaxed_values_of_the_wrong_shape(name, value):
    space = _small_space()
    relaxed = space.relax(_good_batch(space))
    with pytest.raises(SpaceError, match=f"'{name}'.*shape"):
        space.round({**relaxed, name: value})


def test_round_refuses_missing_keys():
    space = _small_space()
    relaxed = dict(space.relax(_good_batch(space)))
    del relaxed["r"]
    with pytest.raises(SpaceError, match="missing.*'r'"):
        space.round(relaxed)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_soften_refuses_non_positive_temperature(temperature):
    space = _small_space()
    with pytest.raises(SpaceError, match="temperature"):
        space.soften(space.relax(_good_batch(space)), temperature=temperature)


def test_soften_accepts_an_int_key_and_refuses_a_bad_one():
    space = _small_space()
    relaxed = space.relax(_good_batch(space))
    soft = space.soften(relaxed, key=0)
    assert np.allclose(np.asarray(soft["c"]).sum(axis=-1), 1.0)
    with pytest.raises(SpaceError, match="seed"):
        space.soften(relaxed, key="x")


@pytest.mark.parametrize("step", ["a", float("nan"), -0.5, 0.0, 2.0])
def test_neighbors_refuses_a_bad_real_step(step):
    space = _small_space()
    with pytest.raises(SpaceError, match="real_step"):
        space.neighbors(_good_batch(space), real_step=step)


# ----------------------------------------------------------------------- 8. priors and ordinals

@pytest.mark.parametrize("prior", [["a", "b"], {"a": 1}, 5, [0.5, float("nan")], [1.0]])
def test_bad_list_priors_raise_space_error_naming_the_parameter(prior):
    with pytest.raises(SpaceError, match="'o'.*prior"):
        Ordinal([1, 2], prior=prior, name="o")
    with pytest.raises(SpaceError, match="'c'.*prior"):
        Categorical(["u", "v"], prior=prior, name="c")


def test_ordinal_integers_beyond_64_bits_are_refused():
    with pytest.raises(SpaceError, match="'o'"):
        Ordinal([1, 2**70], name="o")
    with pytest.raises(SpaceError, match="2\\^62"):
        Space({"o": Ordinal([-(2**63), 0])})


def test_ordinal_of_huge_whole_floats_stays_float_and_samples():
    space = Space({"o": Ordinal([1.0, 1e30])})
    values = set(np.asarray(space.sample(50, seed=0)["o"]).tolist())
    assert values == {1.0, 1e30}


# ----------------------------------------------------------------------- 9. deep constraints

@pytest.mark.parametrize("terms", [150, 5000, 100_000])
def test_deeply_nested_constraint_raises_space_error_with_a_short_message(terms):
    text = " + ".join(["a"] * terms) + " <= b"
    with pytest.raises(SpaceError, match="nested") as info:
        Space({"a": Integer(0, 3), "b": Integer(0, 10**6)}, [text])
    assert "a + a" in str(info.value) and len(str(info.value)) < 300


def test_moderately_long_constraint_is_evaluated_like_python():
    text = " + ".join(["a"] * 60) + " <= b"
    space = Space({"a": Integer(0, 3), "b": Integer(0, 200)}, [text])
    batch = {"a": np.repeat(np.arange(4), 201), "b": np.tile(np.arange(201), 4)}
    expected = [60 * a <= b for a, b in zip(batch["a"].tolist(), batch["b"].tolist())]
    assert np.asarray(space.feasible(batch)).tolist() == expected


@pytest.mark.parametrize("strategy", ["exhaustive", "random"])
def test_categorical_values_equal_in_python_are_all_tuned(strategy):
    """0 and False (1 and 1.0) are distinct categories; de-duplication compared them as equal,
    so exhaustive search evaluated two of three configurations."""
    import perfjax

    seen = []
    space = Space({"c": Categorical([0, False, "off"])})
    perfjax.tune(space, lambda c: seen.append(c["c"]) or 1.0, strategy=strategy, budget=3, seed=0)
    assert sorted(map(repr, seen)) == ["'off'", "0", "False"]


def test_parameter_named_like_a_permutation_item_is_refused():
    """'p_0' meant the Integer, not item 0 of p, in constraints: silently ambiguous."""
    with pytest.raises(SpaceError, match="'p_0'.*permutation 'p'"):
        Space({"p": Permutation(3), "p_0": Integer(0, 5)}, ["p_0 < 1"])
    with pytest.raises(SpaceError, match="'p_i2'"):
        Space({"p_i2": Integer(0, 5), "p": Permutation(3)})
    Space({"p": Permutation(3), "q_0": Integer(0, 5), "p_x": Integer(0, 1)})  # no clash


def test_baco_scenario_with_a_repeated_key_is_refused():
    text = ('{"application_name": "x", "optimization_objectives": ["t"], "input_parameters": '
            '{"a": {"parameter_type": "integer", "values": [1, 4]}, '
            '"a": {"parameter_type": "integer", "values": [1, 8]}}}')
    with pytest.raises(SpaceError, match="key 'a' appears twice"):
        Space.from_baco_json(text)
