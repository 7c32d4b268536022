"""Fit a linear cost pytree to measured times.

A model whose time is ``features @ cost`` (``BalanceCost`` with ``WorkerWork.features``) is
calibrated by non-negative least squares on *relative* error: each measured time t and its
feature row f give the equation ``(f / t) @ cost = 1``, so a 10 us worker counts as much as a
10 ms one. Negative costs would mean an item makes a kernel faster, so they are excluded.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from perfjax.errors import PerfjaxError


def fit_linear_cost(features: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Non-negative cost vector c minimizing sum(((features @ c) - seconds) / seconds) ** 2."""
    features = np.asarray(features, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    if features.ndim != 2 or seconds.shape != (features.shape[0],):
        raise PerfjaxError(f"calibration: {features.shape} features do not match {seconds.shape} times")
    keep = np.isfinite(seconds) & (seconds > 0) & np.all(np.isfinite(features), axis=1)
    if keep.sum() < features.shape[1]:
        raise PerfjaxError(f"calibration: {int(keep.sum())} usable measurements for "
                           f"{features.shape[1]} cost terms")
    return scaled_nnls(features[keep] / seconds[keep, None], np.ones(keep.sum()))


def scaled_nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimizing |a x - b|, with a's columns scaled to unit maximum before the solve
    (cost terms differ by orders of magnitude: nonzeros against launches)."""
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
    solution, _ = scipy.optimize.nnls(a / scale, b)
    return solution / scale


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return float(100.0 * np.mean(np.abs(predicted - measured) / measured))
