"""Exception classes shared by every part of perfjax.

Every error a user can cause by giving perfjax bad input is one of these; its message names the
input (file, parameter, constraint, record) and the problem. The CLI prints the message on one
line and exits with status 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PerfjaxError(Exception):
    """Base class of every error perfjax raises on bad input."""


class SpaceError(PerfjaxError, ValueError):
    """A search space, scenario file, parameter, constraint or configuration is invalid."""


class StudyError(PerfjaxError):
    """A study log cannot be opened, read or written."""


class PerfjaxWarning(UserWarning):
    """Base class of perfjax's warnings."""


class StudyWarning(PerfjaxWarning):
    """A study log held something that was skipped (for instance a record half-written by a crash)."""


class WorkloadError(PerfjaxError, ValueError):
    """A workload (matrix or tensor file, generator argument, routing trace) is invalid."""


class HardwareError(PerfjaxError, ValueError):
    """A hardware specification (a rate, size or device name) is invalid."""


def check_integer(value: Any, what: str, minimum: int | None = 0, limit: int | None = None,
                  error: type[PerfjaxError] = SpaceError) -> int:
    """An integer argument (Python or numpy; not a bool) as an int in [minimum, limit] (either
    bound None: open), else ``error`` naming it: the one check of counts, sizes and options."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            minimum is not None and value < minimum):
        kind = {None: "an integer", 0: "a non-negative integer",
                1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise error(f"{what} must be {kind}, got {value!r}")
    if limit is not None and value > limit:
        raise error(f"{what} {value} is more than the limit {limit}")
    return int(value)


def check_executor(executor: Any, what: str, error: type[PerfjaxError] = SpaceError) -> Any:
    """``executor`` if it is None or has ``submit`` (a ``concurrent.futures.Executor``), else
    ``error`` naming ``what``."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise error(f"{what} must be a concurrent.futures.Executor (with submit), "
                    f"got {type(executor).__name__}")
    return executor
