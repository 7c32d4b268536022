"""P(feasible) for hidden constraints: a kernel Beta-Bernoulli classifier of evaluation validity.

Failed evaluations (crashes, timeouts, wrong results, NaN) mark the configurations around them as
likely infeasible. At a query x the classifier counts valid and failed neighbours with Gaussian
kernel weights w_i = exp(-||x - x_i||^2 / (2 l^2)) on top of a Beta prior centred on the overall
valid rate:

    P(valid | x) = (a + sum_i w_i v_i) / (a + b + sum_i w_i),   a = s * rate, b = s * (1 - rate)

Far from every observation it returns the overall rate; next to many observations it returns
their local frequency. The lengthscale is the one of a small grid with the best leave-one-out log
loss (each point predicted from the others). Smoothing flattens a sharp boundary, so the
leave-one-out predictions also fit a Platt recalibration sigmoid(a logit(p) + b), which is what
makes the probabilities calibrated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from perfjax.arrays import bucket
from perfjax.errors import SpaceError

LENGTHSCALES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0)
PRIOR_STRENGTH = 2.0


@jax.jit
def _loo_predictions(x, valid, mask, lengthscales, prior_a, prior_b):
    """Leave-one-out P(valid) of every point, per candidate lengthscale: [lengthscales, n]."""
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)

    def one(ls):
        w = jnp.exp(-d2 / (2 * ls * ls)) * (mask[:, None] * mask[None, :])
        w = w * (1.0 - jnp.eye(len(x)))  # leave the point itself out
        return jnp.clip((prior_a + w @ valid) / (prior_a + prior_b + w.sum(axis=1)), 1e-6, 1 - 1e-6)

    return jax.vmap(one)(lengthscales)


def _platt(p: np.ndarray, labels: np.ndarray, iterations: int = 25) -> tuple[float, float]:
    """(a, b) of sigmoid(a logit(p) + b) maximizing the likelihood of ``labels``; Newton's method
    with a weak Gaussian prior around the identity (a=1, b=0) so a few points cannot overfit."""
    z = np.log(p) - np.log1p(-p)
    features = np.stack([z, np.ones_like(z)], axis=1)
    theta, prior_precision = np.array([1.0, 0.0]), 1.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(features @ theta)))
        grad = features.T @ (labels - q) - prior_precision * (theta - [1.0, 0.0])
        hess = features.T @ (features * (q * (1 - q))[:, None]) + prior_precision * np.eye(2)
        theta = theta + np.linalg.solve(hess, grad)
    return float(max(theta[0], 0.0)), float(theta[1])


@jax.jit
def _predict(x, valid, mask, lengthscale, prior_a, prior_b, xq):
    d2 = (jnp.sum(xq * xq, 1)[:, None] + jnp.sum(x * x, 1)[None, :] - 2 * xq @ x.T)
    w = jnp.exp(-jnp.maximum(d2, 0.0) / (2 * lengthscale ** 2)) * mask[None, :]
    return (prior_a + w @ valid) / (prior_a + prior_b + w.sum(axis=1))


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, *rows.shape[1:]))
    out[:len(rows)] = rows
    return out


class FeasibilityClassifier:
    """Calibrated probability that an evaluation at a feature row succeeds."""

    def __init__(self, lengthscales: tuple[float, ...] = LENGTHSCALES,
                 prior_strength: float = PRIOR_STRENGTH):
        self.lengthscales = np.asarray(lengthscales, dtype=float)
        self.prior_strength = prior_strength
        self.lengthscale: float | None = None

    def fit(self, x: np.ndarray, valid: np.ndarray) -> "FeasibilityClassifier":
        """Learn from feature rows ``x`` [n, F] and their validity ``valid`` [n] (bool)."""
        x = np.asarray(x, dtype=float)
        valid = np.asarray(valid, dtype=float)
        if len(x) == 0 or len(x) != len(valid):
            raise SpaceError(f"feasibility fit needs matching non-empty data, got {len(x)} rows "
                             f"and {len(valid)} labels")
        size = bucket(len(x))
        # Beta prior around the overall valid rate (with one pseudo-observation each way).
        rate = (valid.sum() + 1.0) / (len(valid) + 2.0)
        self._a, self._b = self.prior_strength * rate, self.prior_strength * (1 - rate)
        self._x, self._valid = _pad(x, size), _pad(valid, size)
        self._mask = np.zeros(size, dtype=bool)
        self._mask[:len(x)] = True
        self._platt = (1.0, 0.0)
        if valid.min() == valid.max():  # one class only: nothing local to learn
            self.lengthscale = float(self.lengthscales[len(self.lengthscales) // 2])
            return self
        loo = np.asarray(_loo_predictions(self._x, self._valid, self._mask, self.lengthscales,
                                          self._a, self._b))[:, :len(x)]
        losses = -(valid * np.log(loo) + (1 - valid) * np.log1p(-loo)).sum(axis=1)
        best = int(np.argmin(losses))
        self.lengthscale = float(self.lengthscales[best])
        self._platt = _platt(loo[best], valid)
        return self

    def predict(self, xq: np.ndarray) -> np.ndarray:
        """P(valid) at feature rows ``xq`` [m, F]."""
        xq = np.asarray(xq, dtype=float)
        padded = _pad(xq, bucket(len(xq), 1024))
        p = np.clip(np.asarray(_predict(self._x, self._valid, self._mask, self.lengthscale,
                                        self._a, self._b, padded))[:len(xq)], 1e-6, 1 - 1e-6)
        a, b = self._platt
        return 1 / (1 + np.exp(-(a * (np.log(p) - np.log1p(-p)) + b)))


__all__ = ["FeasibilityClassifier"]
