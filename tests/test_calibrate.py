"""Cost calibration recovers known costs (scipy's NNLS on relative error as the engine)."""

import numpy as np
import pytest

from perfjax.errors import PerfjaxError
from perfjax.models.calibrate import fit_linear_cost, mape


def test_recovers_known_costs_from_noisy_times():
    rng = np.random.default_rng(0)
    features = np.column_stack([rng.integers(100, 100_000, 400), rng.integers(10, 5000, 400),
                                rng.integers(1, 50, 400), np.ones(400)]).astype(float)
    truth = np.array([2e-9, 5e-9, 1e-7, 3e-6])
    seconds = features @ truth * rng.lognormal(0.0, 0.02, 400)
    fitted = fit_linear_cost(features, seconds)
    assert np.allclose(fitted, truth, rtol=0.1)
    assert mape(features @ fitted, seconds) < 3.0


def test_costs_stay_non_negative_and_bad_input_is_named():
    features = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    seconds = np.array([1.0, 2.0, 2.5])  # the second feature "speeds up": clamp it at zero
    fitted = fit_linear_cost(features, seconds)
    assert (fitted >= 0).all() and fitted[1] == 0.0
    with pytest.raises(PerfjaxError, match="usable measurements"):
        fit_linear_cost(features[:1], seconds[:1])
    with pytest.raises(PerfjaxError, match="do not match"):
        fit_linear_cost(features, seconds[:2])
