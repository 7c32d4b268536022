"""Real-kernel tuning: the BaCO TACO benchmark rebuilt on perfjax's own generated C kernels.

A configuration of the scenarios ``builtin:kernel-spmm``, ``builtin:kernel-spmv`` and
``builtin:kernel-sddmm`` (``perfjax.scenarios``) is a schedule of a generated C/OpenMP kernel:

* ``partition``: "omp" runs TACO's loop, ``#pragma omp for schedule(omp_scheduling_type,
  omp_chunk_size)`` over chunks of ``chunk_size`` rows; any other value runs the explicit
  partition of that strategy (``perfjax.schedulers.partition``) with one worker per thread:
  "row_blocks", "static_chunks" / "dynamic_chunks" (chunks of ``chunk_size * omp_chunk_size``
  rows, TACO's omp chunk counting chunks of rows), "nnz_split" and "merge_path";
* ``omp_num_threads``: the threads (workers) of the run;
* ``unroll_factor``: the lanes of the dense j loop (SpMM, SDDMM) or SpMV's partial sums;
* ``permutation`` (SpMM, SDDMM): the loop order over (i0, i1, k, j0, j1), see
  ``perfjax.kernels.c.loop_order``.

``KernelObjective(kernel, matrix)`` is the tuner's objective: it builds (cached) and runs the
kernel out of process, checks the answer against scipy / numpy, and returns the median seconds of
the timed repetitions, or an invalid result whose ``error`` says why (wrong answer, crash,
timeout, a partition the matrix cannot take). A user's scenario may use any subset of the
parameter names (the rest keep the built-in defaults); another name is a ``SpaceError``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from perfjax import scenarios
from perfjax.errors import PerfjaxError, SpaceError
from perfjax.space import Space

KERNELS = ("spmm", "spmv", "sddmm")
PARTITIONS = ("omp", "row_blocks", "static_chunks", "dynamic_chunks", "nnz_split", "merge_path")
SCHEDULES = ("static", "dynamic", "guided")
UNROLLS = (1, 2, 4, 8)
DEFAULT_WIDTH = 32  # K, the dense operand's columns (SpMM, SDDMM)
WARMUP = 1  # repetitions run before the timed ones (first touch, cold caches)
STATISTICS = ("median", "min")  # what an evaluation's value is of its timed repetitions


def scenario(kernel: str) -> dict:
    """The built-in BaCO-format scenario of ``kernel`` (one of KERNELS) as a dict."""
    _check_kernel(kernel)
    return scenarios.scenario(f"kernel-{kernel}")


def space(kernel: str) -> Space:
    """The built-in search space of ``kernel``."""
    return Space.from_baco_json(scenario(kernel))


def _check_kernel(kernel: Any) -> str:
    if kernel not in KERNELS:
        raise SpaceError(f"unknown kernel {kernel!r} (known: {', '.join(KERNELS)})")
    return kernel


def check_space(kernel: str, space: Space) -> None:
    """SpaceError unless every parameter of ``space`` is one ``kernel``'s objective knows and
    every value it can take is one the kernel can run."""
    known = scenario(kernel)["input_parameters"]
    unknown = [name for name in space.names if name not in known]
    if unknown:
        raise SpaceError(f"scenario {space.name!r}: unknown parameter(s) {', '.join(unknown)} for "
                         f"the {kernel} kernel (known: {', '.join(known)})")
    allowed = {"unroll_factor": UNROLLS, "omp_scheduling_type": SCHEDULES,
               "partition": PARTITIONS}
    for name, param in space.params.items():
        if name == "permutation":
            if param.kind != "permutation" or param.n != 5:
                raise SpaceError(f"scenario {space.name!r}: parameter permutation must be a "
                                 f"permutation of 5 loops (i0, i1, k, j0, j1), got {param!r}")
            continue
        values = param.values_array()
        if values is None or param.kind == "real":
            raise SpaceError(f"scenario {space.name!r}: parameter {name} must have a finite set "
                             f"of values, got a {param.kind} parameter")
        values = [param.from_entry(v) if param.kind == "categorical" else v for v in values]
        if name in allowed:
            bad = [v for v in values if v not in allowed[name]]
        else:  # chunk sizes and thread counts
            bad = [v for v in values if float(v) != int(v) or int(v) < 1]
        if bad:
            raise SpaceError(f"scenario {space.name!r}: parameter {name} has value(s) "
                             f"{', '.join(map(repr, bad))} the {kernel} kernel cannot run "
                             f"(allowed: {allowed.get(name, 'positive integers')})")


class KernelObjective:
    """config -> ``{"value": median seconds, "valid": bool, "error": why not}`` of one kernel on
    one matrix, measured out of process.

    ``matrix``: a scipy sparse matrix or a MatrixMarket path. ``width``: K of the dense operands
    (SpMM's X [ncols, K]; SDDMM's X [nrows, K], Y [ncols, K]). ``repeats``: timed repetitions
    per evaluation (after WARMUP more); the value is their median, or with ``statistic="min"``
    the fastest (robust on a shared machine, where preemption only ever adds time). ``space``: the
    scenario the configurations come from (default the built-in one); its parameters must be
    known (``check_space``); those it lacks take the built-in defaults.
    """

    def __init__(self, kernel: str, matrix: Any, *, space: Space | None = None,
                 width: int = DEFAULT_WIDTH, repeats: int = 9, timeout: float = 30.0,
                 seed: int = 0, statistic: str = "median"):
        self.kernel = _check_kernel(kernel)
        if statistic not in STATISTICS:
            raise PerfjaxError(f"statistic must be one of {', '.join(STATISTICS)}, "
                               f"got {statistic!r}")
        self.statistic = statistic
        if isinstance(matrix, (str, Path)):
            from perfjax.workloads.sparse import read_matrix
            matrix = read_matrix(matrix)
        if not sp.issparse(matrix):
            raise PerfjaxError(f"matrix must be a scipy sparse matrix or a MatrixMarket path, "
                               f"got {type(matrix).__name__}")
        self.matrix = sp.csr_array(matrix, dtype=np.float64)
        self.matrix.sum_duplicates()
        for name, value in (("width", width), ("repeats", repeats)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise PerfjaxError(f"{name} must be a positive integer, got {value!r}")
        self.width, self.repeats, self.timeout = int(width), int(repeats), float(timeout)
        builtin = Space.from_baco_json(scenario(kernel))
        self.space = builtin if space is None else space
        check_space(kernel, self.space)
        self.defaults = builtin.default()
        rng = np.random.default_rng(seed)
        m, n = self.matrix.shape
        if kernel == "spmv":
            self.operands = (rng.standard_normal(n),)
        elif kernel == "spmm":
            self.operands = (rng.standard_normal((n, self.width)),)
        else:
            self.operands = (rng.standard_normal((m, self.width)),
                             rng.standard_normal((n, self.width)))
        self._partitions: dict[tuple, Any] = {}

    def default_config(self) -> dict:
        """The default configuration of ``space`` (plain dict)."""
        return self.space.default()

    def full_config(self, config: Mapping[str, Any]) -> dict:
        """``config`` completed with the built-in defaults of the parameters it lacks."""
        unknown = [name for name in config if name not in self.defaults]
        if unknown:
            raise SpaceError(f"configuration has unknown parameter(s) {', '.join(unknown)} for "
                             f"the {self.kernel} kernel")
        return {**self.defaults, **dict(config)}

    def measure(self, config: Mapping[str, Any]):
        """The kernel's ``Measurement`` for ``config`` (``KernelError`` / ``WorkloadError`` for a
        configuration the kernel or the partitioner rejects)."""
        from perfjax.kernels import c as kernels

        full = self.full_config(config)
        threads = int(full["omp_num_threads"])
        knobs: dict[str, Any] = dict(unroll=int(full["unroll_factor"]), threads=threads,
                                     repeats=self.repeats + WARMUP, timeout=self.timeout)
        if self.kernel != "spmv":
            knobs["loop_order"] = tuple(int(v) for v in full["permutation"])
        partition = None
        if full["partition"] == "omp":
            knobs.update(schedule=full["omp_scheduling_type"], chunk=int(full["omp_chunk_size"]),
                         chunk_size=int(full["chunk_size"]))
        else:
            partition = self._partition(full["partition"], threads,
                                        int(full["chunk_size"]) * int(full["omp_chunk_size"]))
        run = {"spmv": kernels.spmv, "spmm": kernels.spmm, "sddmm": kernels.sddmm}[self.kernel]
        return run(self.matrix, *self.operands, partition, **knobs)

    def _partition(self, strategy: str, workers: int, chunk: int):
        key = (strategy, workers, chunk)
        if key not in self._partitions:
            from perfjax.schedulers.partition import partition
            self._partitions[key] = partition(strategy, self.matrix, workers, chunk)
        return self._partitions[key]

    def __call__(self, config: Mapping[str, Any]) -> dict:
        """``{"value": seconds, "valid": True}``, or ``{"value": nan, "valid": False, "error":
        reason}`` when the configuration cannot run or its run failed."""
        try:
            result = self.measure(config)
        except PerfjaxError as exc:  # a schedule the kernel or the partitioner rejects
            return {"value": math.nan, "valid": False, "error": " ".join(str(exc).split())}
        if not result.ok:
            return {"value": math.nan, "valid": False, "error": result.reason}
        timed = result.seconds[WARMUP:]
        value = np.median(timed) if self.statistic == "median" else min(timed)
        return {"value": float(value), "valid": True, "best_seconds": min(timed)}


def _main() -> None:  # pragma: no cover - a quick manual check: python -m perfjax.bench.kernel_tuning
    from perfjax.workloads.sparse import powerlaw_rows
    objective = KernelObjective("spmm", powerlaw_rows(4000, 4000, 40000, seed=0))
    print(objective(objective.default_config()))


if __name__ == "__main__":  # pragma: no cover
    _main()
