"""perfjax.kernels.c: generated C11 + OpenMP sparse kernels, run out of process.

``spmv`` / ``spmm`` execute an explicit ``perfjax.schedulers.partition.Partition`` (each worker
an OpenMP thread walking its merge-path segments, Merrill & Garland carry-out fix-up; see
``emit``) or a plain ``#pragma omp for schedule(kind, chunk)`` over the rows, and return a
``Measurement``: output, per-repetition kernel times and, instrumented, per-worker row / nonzero
counters (equal to ``Partition.work()``) and time spans. Programs are compiled once into a
content-addressed cache (``build``) and run in a subprocess, so crashes, hangs and wrong answers
become failed measurements instead of exceptions; bad arguments raise ``KernelError``.

SpMM and SDDMM also take a ``loop_order`` over TACO's split loops (i0, i1, k, j0, j1): the dense
j loop inside the nonzero loop, register-blocked around it, or outside it (``loop_order``).

The same design covers ``sddmm``, ``spadd`` (2 or 3 operands) and ``spmul`` (co-iteration over
``coiteration_partition``), and ``ttv`` / ``mttkrp`` over CSF (``csf_partition``); see ``ops``
and ``ops_run``. ``hls`` emits SpMV / SpMM as Vitis-HLS-style C++ dataflow designs, runs their C
simulation (g++, ``hls_stream.h``) and estimates their cycle counts (``hls_spmv``, ``hls_spmm``,
``estimate_cycles``).
"""

from perfjax.kernels.c.build import BuildError, build, cache_dir
from perfjax.kernels.c.emit import KernelError, KernelSpec, emit_source
from perfjax.kernels.c.hls import (
    CycleEstimate, HlsMeasurement, HlsSpec, emit_hls, estimate_cycles, hls_spmm, hls_spmv)
from perfjax.kernels.c.ops import OpSpec, emit_op_source
from perfjax.kernels.c.ops_run import (
    COITERATION_STRATEGIES, CSF_STRATEGIES, coiteration_partition, csf_partition, mttkrp,
    sddmm, spadd, spmul, ttv)
from perfjax.kernels.c.run import Measurement, spmm, spmv

__all__ = ["BuildError", "COITERATION_STRATEGIES", "CSF_STRATEGIES", "CycleEstimate",
           "HlsMeasurement", "HlsSpec", "KernelError", "KernelSpec", "Measurement", "OpSpec",
           "build", "cache_dir", "coiteration_partition", "csf_partition", "emit_hls",
           "emit_op_source", "emit_source", "estimate_cycles", "hls_spmm", "hls_spmv", "mttkrp",
           "sddmm", "spadd", "spmm", "spmul", "spmv", "ttv"]
