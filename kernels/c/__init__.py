"""perfjax.kernels.c: generated C11 + OpenMP CSR SpMV / SpMM kernels, run out of process.

``spmv`` / ``spmm`` execute an explicit ``perfjax.schedulers.partition.Partition`` (each worker
an OpenMP thread walking its merge-path segments, Merrill & Garland carry-out fix-up; see
``emit``) or a plain ``#pragma omp for schedule(kind, chunk)`` over the rows, and return a
``Measurement``: output, per-repetition kernel times and, instrumented, per-worker row / nonzero
counters (equal to ``Partition.work()``) and time spans. Programs are compiled once into a
content-addressed cache (``build``) and run in a subprocess, so crashes, hangs and wrong answers
become failed measurements instead of exceptions; bad arguments raise ``KernelError``.
"""

from perfjax.kernels.c.build import BuildError, build, cache_dir
from perfjax.kernels.c.emit import KernelError, KernelSpec, emit_source
from perfjax.kernels.c.run import Measurement, spmm, spmv

__all__ = ["BuildError", "KernelError", "KernelSpec", "Measurement", "build", "cache_dir",
           "emit_source", "spmm", "spmv"]
