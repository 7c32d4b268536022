"""P(feasible) for hidden constraints: a kernel Beta-Bernoulli classifier of evaluation validity.

Failed evaluations (crashes, timeouts, wrong results, NaN) mark the configurations around them as
likely infeasible. At a query x the classifier counts valid and failed neighbours with Gaussian
kernel weights w_i = exp(-||x - x_i||^2 / (2 l^2)) on top of a Beta prior centred on the overall
valid rate:

    P(valid | x) = (a + sum_i w_i v_i) / (a + b + sum_i w_i),   a = s * rate, b = s * (1 - rate)

Far from every observation it returns the overall rate; next to many observations it returns
their local frequency. The lengthscale is the one of a small grid with the best leave-one-out log
loss (each point predicted from the others), which is what calibrates the probabilities.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from perfjax.errors import SpaceError

LENGTHSCALES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0)
PRIOR_STRENGTH = 2.0


@partial(jax.jit, static_argnums=())
def _loo_log_loss(x, valid, mask, lengthscales, prior_a, prior_b):
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)

    def one(ls):
        w = jnp.exp(-d2 / (2 * ls * ls)) * (mask[:, None] * mask[None, :])
        w = w * (1.0 - jnp.eye(len(x)))  # leave the point itself out
        p = (prior_a + w @ valid) / (prior_a + prior_b + w.sum(axis=1))
        p = jnp.clip(p, 1e-6, 1 - 1e-6)
        loss = -(valid * jnp.log(p) + (1 - valid) * jnp.log(1 - p))
        return jnp.sum(jnp.where(mask, loss, 0.0))

    return jax.vmap(one)(lengthscales)


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
        from perfjax.surrogates.gp import bucket
        size = bucket(len(x))
        # Beta prior around the overall valid rate (with one pseudo-observation each way).
        rate = (valid.sum() + 1.0) / (len(valid) + 2.0)
        self._a, self._b = self.prior_strength * rate, self.prior_strength * (1 - rate)
        self._x, self._valid = _pad(x, size), _pad(valid, size)
        self._mask = np.zeros(size, dtype=bool)
        self._mask[:len(x)] = True
        if valid.min() == valid.max():  # one class only: nothing local to learn
            self.lengthscale = float(self.lengthscales[len(self.lengthscales) // 2])
        else:
            losses = _loo_log_loss(self._x, self._valid, self._mask, self.lengthscales, self._a,
                                   self._b)
            self.lengthscale = float(self.lengthscales[int(np.argmin(np.asarray(losses)))])
        return self

    def predict(self, xq: np.ndarray) -> np.ndarray:
        """P(valid) at feature rows ``xq`` [m, F]."""
        xq = np.asarray(xq, dtype=float)
        from perfjax.surrogates.gp import bucket
        padded = _pad(xq, bucket(len(xq), 256))
        p = _predict(self._x, self._valid, self._mask, self.lengthscale, self._a, self._b, padded)
        return np.asarray(p)[:len(xq)]


__all__ = ["FeasibilityClassifier"]
