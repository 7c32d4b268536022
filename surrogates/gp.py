"""Exact Gaussian-process surrogate over a Space's features, with permutation-aware kernels.

Kernel: ``amplitude * Matern52(ARD over numeric features) * prod_p exp(-scale_p * d_p)`` where each
permutation parameter p contributes a distance d_p in [0, 1] that is one of

* ``spearman``: squared distance of the items' positions (Spearman's footrule squared, normalized),
* ``kendall``: the fraction of discordant item pairs (the Mallows kernel),
* ``hamming``: the fraction of positions holding different items.

Each is exp(-scale * c * ||a - b||^2) over the group's feature vector (positions, pairwise-order
bits or one-hot positions), hence positive definite. Ordinals are encoded by rank in [0, 1],
integers and reals in [0, 1] (log scale where asked), categoricals one-hot.

Hyperparameters maximize the log marginal likelihood plus gamma log-priors on the lengthscales,
permutation scales, amplitude and noise (L-BFGS-B from several starts, warm-started from the
last optimum as data arrive).
Observations are padded to a bucket size (64, 128, ...) with a mask so a growing data set reuses
one compiled fit (compiling costs seconds; a step at 64 rows instead of 16 costs microseconds). Linear algebra is a plain Cholesky: at n <= a few hundred a
library GP (tinygp) adds a dependency but no solver we need, and masking padded rows is simpler
by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import cho_solve
from scipy.optimize import minimize

from perfjax.arrays import bucket
from perfjax.errors import SpaceError

PERMUTATION_KERNELS = ("spearman", "kendall", "hamming")
JITTER = 1e-8


@dataclass(frozen=True)
class FeatureLayout:
    """Which feature columns are numeric (Matern ARD) and which belong to each permutation."""

    numeric: int                                    # columns [0, numeric) are numeric
    permutations: tuple[tuple[int, int, float], ...]  # (start, stop, normalizer) per permutation

    @property
    def width(self) -> int:
        return self.permutations[-1][1] if self.permutations else self.numeric


def feature_layout(space, permutation_kernel: str = "spearman") -> FeatureLayout:
    """The layout of :func:`features` for ``space``."""
    if permutation_kernel not in PERMUTATION_KERNELS:
        raise SpaceError(f"unknown permutation kernel {permutation_kernel!r} "
                         f"(known: {', '.join(PERMUTATION_KERNELS)})")
    numeric = 0
    for param in space.params.values():
        if param.kind == "categorical":
            numeric += len(param.values)
        elif param.kind != "permutation":
            numeric += 1
    perms, start = [], numeric
    for param in space.params.values():
        if param.kind != "permutation":
            continue
        n = param.n
        width, norm = {
            # max sum of squared normalized position differences is n(n^2-1)/(3(n-1)^2)
            "spearman": (n, 3.0 * max(n - 1, 1) ** 2 / max(n * (n * n - 1), 1)),
            "kendall": (n * (n - 1) // 2, 1.0 / max(n * (n - 1) // 2, 1)),
            "hamming": (n * n, 0.5 / n),
        }[permutation_kernel]
        perms.append((start, start + width, norm))
        start += width
    return FeatureLayout(numeric, tuple(perms))


def features(space, batch: Mapping[str, Any], permutation_kernel: str = "spearman") -> np.ndarray:
    """Feature matrix [N, F] (numeric columns first, then each permutation's block)."""
    numeric, perms = [], []
    for name, param in space.params.items():
        column = np.asarray(batch[name])
        if param.kind == "ordinal":
            k = len(param.values)
            numeric.append(np.searchsorted(param.values_array(), column) / max(k - 1, 1))
        elif param.kind == "categorical":
            numeric.extend(np.eye(len(param.values))[column.astype(np.int64)].T)
        elif param.kind == "permutation":
            n = param.n
            position = np.argsort(column, axis=1)
            if permutation_kernel == "spearman":
                perms.append(position / max(n - 1, 1))
            elif permutation_kernel == "kendall":
                i, j = np.triu_indices(n, k=1)
                perms.append((position[:, i] < position[:, j]).astype(float))
            else:
                perms.append(np.eye(n)[position].reshape(len(column), n * n))
        else:
            lo, hi = param.bounds()
            x = column.astype(float)
            if getattr(param, "log", False):
                x, lo, hi = np.log(x), math.log(lo), math.log(hi)
            numeric.append((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x))
    n = len(np.asarray(batch[space.names[0]]))
    cols = [np.asarray(c, dtype=float).reshape(n, -1) for c in numeric] + perms
    return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))


class GPParams(NamedTuple):
    """Unconstrained (log) hyperparameters."""

    log_amplitude: jax.Array
    log_lengthscales: jax.Array   # [numeric features]
    log_scales: jax.Array         # [permutations]
    log_noise: jax.Array


# Gamma priors (concentration, rate): lengthscales on the unit cube with mean 0.5 sqrt(D) for D
# numeric features (longer in more dimensions, after Hvarfner et al. 2024, "Vanilla Bayesian
# optimization performs great in high dimensions": short ones make BO explore blindly there);
# permutation scales mean 3 (a full reversal decorrelates to ~5%); amplitude and noise variance
# of standardized outputs as BoTorch's defaults.


def lengthscale_prior(dimensions: int) -> tuple[float, float]:
    return 3.0, 6.0 / math.sqrt(max(dimensions, 1))


SCALE_PRIOR = (2.0, 0.67)
AMPLITUDE_PRIOR = (2.0, 0.15)
NOISE_PRIOR = (1.1, 0.05)
MIN_NOISE = 1e-6


def _gamma_logpdf(x: jax.Array, prior: tuple[float, float]) -> jax.Array:
    a, b = prior
    return a * math.log(b) - math.lgamma(a) + (a - 1) * jnp.log(x) - b * x


def kernel_matrix(layout: FeatureLayout, params: GPParams, xa: jax.Array, xb: jax.Array) -> jax.Array:
    """Covariance between feature rows ``xa`` [A, F] and ``xb`` [B, F] (no noise)."""
    out = jnp.exp(params.log_amplitude) * jnp.ones((xa.shape[0], xb.shape[0]))
    if layout.numeric:
        ls = jnp.exp(params.log_lengthscales)
        a, b = xa[:, :layout.numeric] / ls, xb[:, :layout.numeric] / ls
        r2 = jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)
        r = jnp.sqrt(r2 + 1e-30) * math.sqrt(5.0)
        out = out * (1.0 + r + r * r / 3.0) * jnp.exp(-r)
    for p, (start, stop, norm) in enumerate(layout.permutations):
        a, b = xa[:, start:stop], xb[:, start:stop]
        d2 = jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)
        out = out * jnp.exp(-jnp.exp(params.log_scales[p]) * norm * d2)
    return out


def _masked_cholesky(layout, params, x, mask):
    """Cholesky factor of K + noise I over the observed rows; padded rows are identity."""
    noise = jnp.exp(params.log_noise) + MIN_NOISE
    k = kernel_matrix(layout, params, x, x) * (mask[:, None] * mask[None, :])
    k = k + jnp.diag(jnp.where(mask, noise + JITTER, 1.0))
    return jnp.linalg.cholesky(k)


def log_marginal_likelihood(layout, params, x, y, mask) -> jax.Array:
    """log p(y | x, params) over the rows where ``mask`` is set (``y`` is the residual after the
    mean; padded entries must be 0)."""
    chol = _masked_cholesky(layout, params, x, mask)
    alpha = jax.scipy.linalg.cho_solve((chol, True), y)
    n = jnp.sum(mask)
    return (-0.5 * y @ alpha - jnp.sum(jnp.log(jnp.diag(chol)))
            - 0.5 * n * math.log(2 * math.pi))


def log_prior(params: GPParams) -> jax.Array:
    prior = lengthscale_prior(int(np.shape(params.log_lengthscales)[0]))
    return (jnp.sum(_gamma_logpdf(jnp.exp(params.log_lengthscales), prior))
            + jnp.sum(_gamma_logpdf(jnp.exp(params.log_scales), SCALE_PRIOR))
            + _gamma_logpdf(jnp.exp(params.log_amplitude), AMPLITUDE_PRIOR)
            + _gamma_logpdf(jnp.exp(params.log_noise), NOISE_PRIOR))


def _sample_from_priors(layout: FeatureLayout, rng: np.random.Generator) -> np.ndarray:
    """A random start for the fit: every hyperparameter drawn from its prior (flat log vector)."""
    def draw(prior, size):
        a, b = prior
        return np.log(rng.gamma(a, 1.0 / b, size))
    return np.concatenate([draw(AMPLITUDE_PRIOR, 1), draw(lengthscale_prior(layout.numeric), layout.numeric),
                           draw(SCALE_PRIOR, len(layout.permutations)), draw(NOISE_PRIOR, 1)])


def _unflatten(layout: FeatureLayout, theta: np.ndarray) -> GPParams:
    d, p = layout.numeric, len(layout.permutations)
    return GPParams(theta[0], theta[1:1 + d], theta[1 + d:1 + d + p], theta[1 + d + p])


def _flatten(params: GPParams) -> np.ndarray:
    return np.concatenate([np.atleast_1d(np.asarray(v, dtype=float)) for v in params])


class _Objective:
    """Negative log posterior of the hyperparameters and its analytic gradient, in numpy.

    The fit runs here rather than under jax.grad: on this 2-core CPU a jitted value_and_grad of
    the 64-point likelihood measured 30-50 ms per call against ~0.3 ms for this numpy version
    (XLA's per-op overhead dominates matrices this small); prediction over large candidate
    batches stays jitted."""

    def __init__(self, layout: FeatureLayout, x: np.ndarray, z: np.ndarray):
        self.layout, self.z, self.n = layout, z, len(x)
        xn = x[:, :layout.numeric]
        self.sq = (xn[:, None, :] - xn[None, :, :]) ** 2                 # [n, n, D]
        self.perm_d2 = [norm * ((x[:, None, a:b] - x[None, :, a:b]) ** 2).sum(-1)
                        for a, b, norm in layout.permutations]           # normalized distances

    def covariance(self, theta: np.ndarray) -> np.ndarray:
        """K + (noise + jitter) I at these hyperparameters."""
        return self._parts(theta)[0]

    def _parts(self, theta: np.ndarray):
        layout, n = self.layout, self.n
        d, p = layout.numeric, len(layout.permutations)
        amp, ls = math.exp(theta[0]), np.exp(theta[1:1 + d])
        scales, noise = np.exp(theta[1 + d:1 + d + p]), math.exp(theta[-1]) + MIN_NOISE
        perm = np.ones((n, n))
        for scale, d2 in zip(scales, self.perm_d2):
            perm = perm * np.exp(-scale * d2)
        if d:
            scaled = self.sq / ls ** 2                                    # [n, n, D]
            r = np.sqrt(5.0 * scaled.sum(-1))
            decay = np.exp(-r)
            matern = (1.0 + r + r * r / 3.0) * decay
        else:
            matern = np.ones((n, n))
        k = amp * matern * perm
        cov = k + (noise + JITTER) * np.eye(n)
        return cov, k, perm, amp, scales, noise, (r, decay, scaled) if d else None

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        layout, n = self.layout, self.n
        d, p = layout.numeric, len(layout.permutations)
        cov, k, perm, amp, scales, noise, numeric = self._parts(theta)
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve((chol, True), self.z)
        mll = -0.5 * self.z @ alpha - np.log(np.diag(chol)).sum() - 0.5 * n * math.log(2 * math.pi)
        inverse = cho_solve((chol, True), np.eye(n))
        w = 0.5 * (np.outer(alpha, alpha) - inverse)                      # d mll / d cov
        grad = np.zeros_like(theta)
        grad[0] = (w * k).sum()
        if d:
            r, decay, scaled = numeric
            # d matern / d log l_d = (5/3) (1 + r) e^-r * (dx_d / l_d)^2
            common = amp * perm * (5.0 / 3.0) * (1.0 + r) * decay
            grad[1:1 + d] = np.einsum("ij,ijd->d", w * common, scaled)
        for i, d2 in enumerate(self.perm_d2):
            grad[1 + d + i] = -(w * k * d2).sum() * scales[i]
        grad[-1] = np.trace(w) * (noise - MIN_NOISE)
        # gamma log priors on the positive values (x = e^theta): (a - 1) log x - b x
        log_prior, prior_grad = 0.0, np.zeros_like(theta)
        for sl, prior in ((slice(0, 1), AMPLITUDE_PRIOR), (slice(1, 1 + d), lengthscale_prior(d)),
                          (slice(1 + d, 1 + d + p), SCALE_PRIOR), (slice(-1, None), NOISE_PRIOR)):
            a, b = prior
            value = np.exp(theta[sl])
            log_prior += ((a - 1) * theta[sl] - b * value).sum()
            prior_grad[sl] = (a - 1) - b * value
        return -(mll + log_prior), -(grad + prior_grad)


def fit_hyperparameters(layout: FeatureLayout, x: np.ndarray, z: np.ndarray, starts: np.ndarray,
                        max_iterations: int) -> GPParams:
    """MAP hyperparameters: L-BFGS-B from every start (rows of ``starts``), the best wins."""
    objective = _Objective(layout, x, z)
    best, best_value = starts[0], np.inf
    bounds = [(-12.0, 8.0)] * starts.shape[1]  # a sane box; guards against diverging starts
    for start in starts:
        result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": max_iterations})
        if np.isfinite(result.fun) and result.fun < best_value:
            best, best_value = result.x, result.fun
    return _unflatten(layout, np.asarray(best, dtype=float))


@partial(jax.jit, static_argnums=(0,))
def _predict(layout, params, x, mask, chol, alpha, xq):
    kq = kernel_matrix(layout, params, xq, x) * mask[None, :]
    mean = kq @ alpha
    v = jax.scipy.linalg.solve_triangular(chol, kq.T, lower=True)
    var = jnp.exp(params.log_amplitude) - jnp.sum(v * v, axis=0)
    return mean, jnp.maximum(var, 1e-12)


class GaussianProcess:
    """Exact GP regression on feature rows, with optional output log transform and prior mean.

    >>> gp = GaussianProcess(layout).fit(x, y)          # y raw objective values
    >>> mean, var = gp.predict(xq)                        # in the transformed (standardized) scale

    ``log_outputs`` ("auto": when every y > 0) models log(y); outputs are then standardized.
    A prior mean (e.g. a perfjax cost model's predictions, in the objective's raw units) is
    given as values: ``fit(x, y, prior=m(x))`` and ``predict(xq, prior=m(xq))``; the GP models
    the residual after an affine fit of the transformed prior mean to the data (a cost model
    that is right up to a factor still helps).

    ``quadratic_mean``: the prior mean also rises quadratically away from the centre of the
    numeric features' unit box (a "bowl", Snoek et al. 2015), its slope fitted by least squares
    on the data (after any cost-model prior) and clamped at >= 0, so the data can switch it off.
    Far from the data a constant-mean GP predicts the average there with its largest variance,
    and in many dimensions EI then keeps proposing the box's corners (the boundary
    over-exploration of Siivola et al. 2018): every parameter at its smallest or largest value.
    """

    def __init__(self, layout: FeatureLayout, *, log_outputs: bool | str = "auto",
                 restarts: int = 4, steps: int = 100, warm_steps: int = 40, seed: int = 0,
                 quadratic_mean: bool = False):
        self.layout = layout
        self.quadratic_mean = quadratic_mean
        self._bowl_slope, self._bowl_offset = 0.0, 0.0
        self.log_outputs = log_outputs
        self.warm_steps = warm_steps
        self.restarts = restarts
        self.steps = steps
        self._rng = np.random.default_rng(seed)
        self.params: GPParams | None = None

    # output transform --------------------------------------------------------------------
    def transform(self, y: np.ndarray) -> np.ndarray:
        """Raw values -> the standardized scale the GP models."""
        y = np.asarray(y, dtype=float)
        return ((np.log(y) if self._log else y) - self._shift) / self._scale

    def untransform(self, z: np.ndarray) -> np.ndarray:
        """The standardized scale -> raw values."""
        t = np.asarray(z, dtype=float) * self._scale + self._shift
        return np.exp(t) if self._log else t

    def _prior_transformed(self, prior: np.ndarray | None, n: int) -> np.ndarray:
        if prior is None or self._mean_slope is None:
            return np.zeros(n)
        raw = np.asarray(prior, dtype=float).reshape(n)
        if self._log:
            raw = np.log(np.maximum(raw, 1e-300))
        return self._mean_slope * ((raw - self._shift) / self._scale) + self._mean_offset

    def _bowl(self, x: np.ndarray) -> np.ndarray:
        """4 x the mean squared distance of the numeric features from the box centre: 0 at the
        centre, 1 at a corner."""
        numeric = np.asarray(x, dtype=float)[:, :self.layout.numeric]
        if not numeric.shape[1]:
            return np.zeros(len(numeric))
        return 4.0 * np.mean((numeric - 0.5) ** 2, axis=1)

    def _bowl_mean(self, x: np.ndarray) -> np.ndarray:
        if not self._bowl_slope and not self._bowl_offset:
            return np.zeros(len(x))
        return self._bowl_slope * self._bowl(x) + self._bowl_offset

    def fit(self, x: np.ndarray, y: np.ndarray, *, prior: np.ndarray | None = None,
            refit: bool = True) -> "GaussianProcess":
        """Condition on rows ``x`` [n, F] with raw values ``y`` [n] (and raw prior-mean values
        ``prior`` [n]); ``refit`` re-optimizes the hyperparameters (warm-started from the last
        fit), else only the data change."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if len(x) == 0 or len(x) != len(y) or not np.isfinite(y).all():
            raise SpaceError(f"GP fit needs matching non-empty finite data, got {len(x)} rows and "
                             f"{len(y)} values")
        self._log = bool(self.log_outputs is True or (self.log_outputs == "auto" and (y > 0).all()))
        t = np.log(y) if self._log else y
        self._shift, self._scale = float(t.mean()), float(t.std()) or 1.0
        z = (t - self._shift) / self._scale
        self._mean_slope, self._mean_offset = None, 0.0
        if prior is not None:
            raw = np.asarray(prior, dtype=float).reshape(len(x))
            m = ((np.log(np.maximum(raw, 1e-300)) if self._log else raw) - self._shift) / self._scale
            if len(x) >= 2 and m.std() > 0:  # affine calibration: the model may be off by a factor
                slope = float(np.cov(m, z, bias=True)[0, 1] / m.var())
                self._mean_slope = max(slope, 0.0)
            else:
                self._mean_slope = 1.0
            self._mean_offset = float(np.mean(z - self._mean_slope * m))
        residual = z - self._prior_transformed(prior, len(x))
        self._bowl_slope, self._bowl_offset = 0.0, 0.0
        if self.quadratic_mean and len(x) >= 2:
            q = self._bowl(x)
            if q.std() > 0:
                self._bowl_slope = max(float(np.cov(q, residual, bias=True)[0, 1] / q.var()), 0.0)
                self._bowl_offset = float(np.mean(residual - self._bowl_slope * q))
            residual = residual - self._bowl_mean(x)
        size = bucket(len(x))
        self._n = len(x)
        self._x = np.zeros((size, self.layout.width))
        self._x[:len(x)] = x
        self._mask = np.zeros(size, dtype=bool)
        self._mask[:len(x)] = True
        self._y = np.zeros(size)
        self._y[:len(x)] = residual
        if refit or self.params is None:
            # Cold: several random starts. Warm: the last optimum (a few iterations follow it as
            # data arrive) plus one random start in case the landscape changed.
            count = self.restarts if self.params is None else 2
            starts = np.stack([_sample_from_priors(self.layout, self._rng) for _ in range(count)])
            steps = self.steps
            if self.params is not None:
                starts[0] = _flatten(self.params)
                steps = self.warm_steps
            self.params = fit_hyperparameters(self.layout, x, residual, starts, steps)
        # The posterior factor in numpy too (see _Objective), padded with identity rows.
        cov = _Objective(self.layout, x, residual).covariance(_flatten(self.params))
        self._chol = np.eye(size)
        self._chol[:len(x), :len(x)] = np.linalg.cholesky(cov)
        self._alpha = np.zeros(size)
        self._alpha[:len(x)] = cho_solve((self._chol[:len(x), :len(x)], True), residual)
        return self

    def predict(self, xq: np.ndarray, *, prior: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the standardized output at rows ``xq`` (padded
        internally to a power of two >= 1024 so candidate batches of any size reuse a couple of
        compilations);
        ``prior`` holds the raw prior-mean values at ``xq`` when the fit had a prior."""
        xq = np.asarray(xq, dtype=float)
        size = bucket(len(xq), 1024)
        padded = np.zeros((size, self.layout.width))
        padded[:len(xq)] = xq
        mean, var = _predict(self.layout, self.params, self._x, self._mask, self._chol,
                             self._alpha, padded)
        mean = (np.asarray(mean)[:len(xq)] + self._prior_transformed(prior, len(xq))
                + self._bowl_mean(xq))
        return mean, np.asarray(var)[:len(xq)]

    @property
    def noise(self) -> float:
        return float(np.exp(self.params.log_noise) + MIN_NOISE)


__all__ = ["GaussianProcess", "GPParams", "FeatureLayout", "feature_layout", "features",
           "kernel_matrix", "log_marginal_likelihood", "PERMUTATION_KERNELS", "bucket"]
