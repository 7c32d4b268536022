"""GP surrogate against independent references: brute-force permutation distances, numpy linear
algebra, scipy's multivariate normal, and a smooth function it must learn."""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from perfjax import Categorical, Integer, Ordinal, Permutation, Real, Space
from perfjax.surrogates.gp import (GaussianProcess, GPParams, bucket, feature_layout, features,
                                   kernel_matrix, log_marginal_likelihood)


def brute_distances(p: tuple, q: tuple) -> dict[str, float]:
    """Permutation distances by counting, straight from their definitions."""
    n = len(p)
    pos_p = {item: i for i, item in enumerate(p)}
    pos_q = {item: i for i, item in enumerate(q)}
    discordant = sum(1 for a, b in itertools.combinations(range(n), 2)
                     if (pos_p[a] < pos_p[b]) != (pos_q[a] < pos_q[b]))
    squared = sum((pos_p[i] - pos_q[i]) ** 2 for i in range(n))
    max_squared = sum((2 * i - (n - 1)) ** 2 for i in range(n))  # full reversal
    return {"kendall": discordant / (n * (n - 1) / 2), "spearman": squared / max_squared,
            "hamming": sum(a != b for a, b in zip(p, q)) / n}


@pytest.mark.parametrize("kind", ["spearman", "kendall", "hamming"])
def test_permutation_kernels_match_brute_force_counts(kind):
    space = Space({"order": Permutation(6)})
    rng = np.random.default_rng(1)
    perms = np.stack([rng.permutation(6) for _ in range(12)])
    x = jnp.asarray(features(space, {"order": perms}, kind))
    layout = feature_layout(space, kind)
    scale = 1.7
    params = GPParams(jnp.log(2.0), jnp.zeros(0), jnp.log(jnp.asarray([scale])), jnp.log(0.1))
    k = np.asarray(kernel_matrix(layout, params, x, x))
    expected = np.array([[2.0 * math.exp(-scale * brute_distances(tuple(a), tuple(b))[kind])
                          for b in perms] for a in perms])
    np.testing.assert_allclose(k, expected, rtol=1e-10, atol=1e-12)


def mixed_space() -> Space:
    return Space({"tile": Ordinal([4, 8, 16, 32, 64]), "unroll": Integer(1, 8),
                  "alpha": Real(0.1, 10.0, log=True), "kind": Categorical(["static", "dynamic", "guided"]),
                  "order": Permutation(4)})


def random_params(layout, rng) -> GPParams:
    return GPParams(jnp.asarray(math.log(1.3)), jnp.log(jnp.asarray(rng.uniform(0.2, 1.0, layout.numeric))),
                    jnp.log(jnp.asarray(rng.uniform(0.5, 3.0, len(layout.permutations)))),
                    jnp.asarray(math.log(0.05)))


@pytest.mark.parametrize("kind", ["spearman", "kendall", "hamming"])
def test_kernel_matrices_are_positive_definite(kind):
    space = mixed_space()
    x = features(space, space.sample(60, seed=2), kind)
    layout = feature_layout(space, kind)
    k = np.asarray(kernel_matrix(layout, random_params(layout, np.random.default_rng(0)), x, x))
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    assert np.linalg.eigvalsh(k).min() > -1e-9


def matern52_numpy(xa, xb, ls, amplitude):
    r = np.sqrt((((xa[:, None, :] - xb[None, :, :]) / ls) ** 2).sum(-1)) * math.sqrt(5)
    return amplitude * (1 + r + r * r / 3) * np.exp(-r)


def test_posterior_and_likelihood_match_a_direct_numpy_solve():
    rng = np.random.default_rng(3)
    space = Space({"a": Real(0.0, 1.0), "b": Real(0.0, 1.0), "c": Ordinal([1, 2, 4, 8])})
    batch = space.sample(23, seed=4)
    x = features(space, batch)
    y = np.exp(np.sin(4 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.05 * rng.normal(size=len(x)))
    gp = GaussianProcess(feature_layout(space), restarts=2, steps=40).fit(x, y)
    xq = features(space, space.sample(9, seed=5))
    mean, var = gp.predict(xq)
    # The same posterior by hand: log outputs, standardize, numpy kernel and solve.
    z = (np.log(y) - np.log(y).mean()) / np.log(y).std()
    p = gp.params
    ls, amp, noise = np.exp(np.asarray(p.log_lengthscales)), float(np.exp(p.log_amplitude)), gp.noise
    k = matern52_numpy(x, x, ls, amp) + (noise + 1e-8) * np.eye(len(x))
    kq = matern52_numpy(xq, x, ls, amp)
    np.testing.assert_allclose(mean, kq @ np.linalg.solve(k, z), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(var, amp - np.einsum("ij,ji->i", kq, np.linalg.solve(k, kq.T)),
                               rtol=1e-5, atol=1e-8)
    # The masked (padded) likelihood equals scipy's density of the unpadded data.
    size = 32
    xp, yp, mask = np.zeros((size, x.shape[1])), np.zeros(size), np.zeros(size, dtype=bool)
    xp[:len(x)], yp[:len(x)], mask[:len(x)] = x, z, True
    mll = float(log_marginal_likelihood(gp.layout, p, xp, yp, mask))
    assert mll == pytest.approx(multivariate_normal(np.zeros(len(x)), k).logpdf(z), rel=1e-8)


def test_fitted_gp_learns_a_smooth_function_with_a_permutation():
    space = Space({"x": Real(0.0, 1.0), "order": Permutation(4)})
    def f(batch):
        b = {k: np.asarray(v) for k, v in batch.items()}
        return 2.0 + np.sin(6 * b["x"]) + 0.5 * (b["order"][:, 0] == 0)
    train, test = space.sample(60, seed=6), space.sample(200, seed=7)
    for kind in ("kendall",):  # one kernel: compiling a fit per layout is slow; values tested above
        gp = GaussianProcess(feature_layout(space, kind), log_outputs=False).fit(
            features(space, train, kind), f(train))
        mean, var = gp.predict(features(space, test, kind))
        predicted = gp.untransform(mean)
        truth = f(test)
        r2 = 1 - ((predicted - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
        assert r2 > 0.9, (kind, r2)
        # The predictive sd covers most errors (standardized scale: |error| / sd mostly < 3).
        z_err = np.abs(gp.transform(truth) - mean) / np.sqrt(var)
        assert np.mean(z_err < 3) > 0.9


def test_a_good_prior_mean_improves_predictions_far_from_data():
    space = Space({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)})
    def f(x):
        return np.exp(1.0 + 2.0 * x[:, 0] - x[:, 1])
    train = features(space, space.sample(8, seed=8))
    test = features(space, space.sample(300, seed=9))
    layout = feature_layout(space)
    plain = GaussianProcess(layout).fit(train, f(train))
    informed = GaussianProcess(layout).fit(train, f(train), prior=3.0 * f(train))  # off by 3x
    err = {}
    for name, gp, prior in (("plain", plain, None), ("informed", informed, 3.0 * f(test))):
        mean, _ = gp.predict(test, prior=prior)
        err[name] = np.sqrt(np.mean((gp.untransform(mean) - f(test)) ** 2))
    assert err["informed"] < 0.3 * err["plain"]


def _bowl_data(sign: float):
    space = Space({f"x{i}": Real(0.0, 1.0) for i in range(6)})
    rng = np.random.default_rng(3)
    train = rng.uniform(0.25, 0.75, (24, 6))  # data only in the middle of the box
    corners = rng.integers(0, 2, (200, 6)).astype(float)  # where EI goes looking

    def f(x):
        return np.exp(sign * 3.0 * np.sum((x - 0.5) ** 2, axis=1))
    return feature_layout(space), train, corners, f


def test_quadratic_mean_predicts_the_rise_towards_the_corners_of_a_bowl():
    """Against the true function at the box's corners, far from every observation: the plain GP
    reverts to the data's average there; the fitted bowl extrapolates the rise."""
    layout, train, corners, f = _bowl_data(+1.0)
    truth = np.log(f(corners))
    err = {}
    for bowl in (False, True):
        gp = GaussianProcess(layout, quadratic_mean=bowl, seed=0).fit(train, f(train))
        mean, _ = gp.predict(corners)
        err[bowl] = np.sqrt(np.mean((np.log(gp.untransform(mean)) - truth) ** 2))
    assert err[True] < 0.5 * err[False]


def test_quadratic_mean_switches_itself_off_when_the_corners_are_better():
    layout, train, corners, f = _bowl_data(-1.0)  # an inverted bowl: the slope clamps at 0
    plain = GaussianProcess(layout, seed=0).fit(train, f(train))
    bowl = GaussianProcess(layout, quadratic_mean=True, seed=0).fit(train, f(train))
    assert bowl._bowl_slope == 0.0
    np.testing.assert_allclose(bowl.predict(corners)[0], plain.predict(corners)[0], atol=1e-6)


def test_analytic_gradient_of_the_fit_objective_matches_jax_autodiff():
    import jax

    from perfjax.surrogates.gp import _flatten, _Objective, _unflatten, log_prior
    space = mixed_space()
    layout = feature_layout(space, "kendall")
    x = features(space, space.sample(20, seed=11), "kendall")
    z = np.random.default_rng(4).normal(size=20)
    theta = _flatten(random_params(layout, np.random.default_rng(5)))
    mask = np.ones(20, dtype=bool)

    def loss(t):
        params = _unflatten(layout, t)
        return -(log_marginal_likelihood(layout, params, x, z, mask) + log_prior(params))
    _, grad = _Objective(layout, x, z)(theta)
    np.testing.assert_allclose(grad, np.asarray(jax.grad(loss)(jnp.asarray(theta))), rtol=1e-6,
                               atol=1e-8)


def test_bucket_is_the_smallest_power_of_two_that_holds_n():
    for smallest in (1, 64, 1024):
        for n in range(1, 5000):
            expected = next(2 ** k for k in range(40) if 2 ** k >= n and 2 ** k >= smallest)
            assert bucket(n, smallest) == expected, (n, smallest)
    assert bucket(1) == 64 and bucket(2 ** 20 + 1) == 2 ** 21
