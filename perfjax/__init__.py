"""perfjax: differentiable performance models, search spaces and autotuners in JAX.

perfjax switches JAX to 64-bit mode on import: constraint arithmetic over integer parameters
(``a * b * c <= 49152``) must be exact, and the surrogates need float64 linear algebra. Arrays
you create with an explicit dtype keep it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from perfjax.errors import (  # noqa: E402
    PerfjaxError, PerfjaxWarning, SpaceError, StudyError, StudyWarning, WorkloadError)
from perfjax.space import (  # noqa: E402
    Batch, Categorical, Integer, Ordinal, Parameter, Permutation, Real, Space)

__version__ = "0.1.0"

__all__ = ["Space", "Batch", "Parameter", "Real", "Integer", "Ordinal", "Categorical",
           "Permutation", "PerfjaxError", "PerfjaxWarning", "SpaceError", "StudyError",
           "StudyWarning", "WorkloadError", "__version__", "tune"]


def __getattr__(name: str):
    # perfjax.tune loads the tuner (and its surrogates) only when first used.
    if name == "tune":
        from perfjax.tuning import tune
        return tune
    raise AttributeError(f"module 'perfjax' has no attribute {name!r}")
