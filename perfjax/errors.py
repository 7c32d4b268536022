"""Exception classes shared by every part of perfjax.

Every error a user can cause by giving perfjax bad input is one of these; its message names the
input (file, parameter, constraint, record) and the problem. The CLI prints the message on one
line and exits with status 2.
"""

from __future__ import annotations


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
