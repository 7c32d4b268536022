"""Shared inputs and helpers of the C kernel tests (test_kernels_c.py, test_kernels_c_more.py).

Each test module does ``pytestmark = needs_cc``. Built programs go to the run's own kernel
cache (``PERFJAX_CACHE``, set by conftest.py), never ~/.cache.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from perfjax.errors import PerfjaxError, WorkloadError
from perfjax.kernels.c import KernelError
from perfjax.schedulers.partition import Partition

needs_cc = pytest.mark.skipif(
    not any(shutil.which(name) for name in (os.environ.get("CC") or "cc", "gcc")),
    reason="no C compiler (cc or gcc) on PATH: the C kernels cannot be built")

RTOL = 1e-10
WORKERS = (1, 2, 3, 8)

# The failure hooks that kill the program before it writes anything, and the words their
# failed Measurement's reason holds.
CRASH_HOOKS = [("segv", "signal SIGSEGV"), ("abort", "signal SIGABRT"),
               ("exit", "exited with status 3: debug hook")]


def _empty_rows() -> sp.csr_array:
    """Empty first and last rows, runs of empty rows, one long row."""
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((60, 40)) * (rng.random((60, 40)) < 0.3)
    dense[[0, 1, 2, 20, 21, 22, 23, 40, 58, 59]] = 0.0
    dense[30] = rng.standard_normal(40)
    return sp.csr_array(dense)


def _single_dense_row() -> sp.csr_array:
    """All nonzeros in one row among empty ones: every nonzero-splitting strategy cuts it."""
    dense = np.zeros((25, 300))
    dense[11] = np.random.default_rng(6).standard_normal(300)
    return sp.csr_array(dense)


# The edge cases every module's MATRICES ends with (after its own sized random matrices).
EDGE_MATRICES = {
    "empty-rows": _empty_rows,
    "dense-row": _single_dense_row,
    "1x1": lambda: sp.csr_array(np.array([[2.5]])),
    "all-empty": lambda: sp.csr_array((30, 7)),
}


def partition_grid(make, strategies, chunks=(1, 5), chunked=("static_chunks", "dynamic_chunks")):
    """Every (strategy, P, chunk) partition ``make(strategy, P, chunk)`` accepts, P in WORKERS
    and chunk in ``chunks`` for the ``chunked`` strategies (too many workers: skipped)."""
    for strategy in strategies:
        for workers in WORKERS:
            for chunk in (chunks if strategy in chunked else (1,)):
                try:
                    yield make(strategy, workers, chunk)
                except WorkloadError:  # more workers than rows / nonzeros to split
                    continue


def corrupt(part: Partition, **changes) -> Partition:
    """``part`` with some of its fields replaced."""
    fields = dict(strategy=part.strategy, workers=part.workers, start=part.start.copy(),
                  end=part.end.copy(), owner=part.owner.copy())
    fields.update(changes)
    return Partition(**fields)


def assert_kernel_errors(cases) -> None:
    """Every (call, words) of ``cases``: call() raises a KernelError (a PerfjaxError) whose
    message holds ``words``."""
    for call, words in cases:
        with pytest.raises(PerfjaxError) as info:
            call()
        assert isinstance(info.value, KernelError) and words in str(info.value), \
            (words, str(info.value))
