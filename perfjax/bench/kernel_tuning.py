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
  ``perfjax.kernels.c.loop_order``;
* ``bin_rows`` (SpMV, "omp" only; 0: off): row-length binning, rows of up to that many nonzeros
  run in per-length bins with constant trip counts (``perfjax.kernels.c`` ``bin_rows``); the
  bins replace TACO's row chunks, so the loop deals ``chunk_size * omp_chunk_size`` rows of a bin
  at a time.

``KernelObjective(kernel, matrix)`` is the tuner's objective: it builds (cached) and runs the
kernel out of process, checks the answer against scipy / numpy, and returns the median seconds of
the timed repetitions, or an invalid result whose ``error`` says why (wrong answer, crash,
timeout, a partition the matrix cannot take). A user's scenario may use any subset of the
parameter names (the rest keep the built-in defaults); another name is a ``SpaceError``.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import scipy.sparse as sp

from perfjax import scenarios
from perfjax.errors import PerfjaxError, SpaceError
from perfjax.kernels.c.emit import MAX_BIN_ROWS
from perfjax.space import Space

KERNELS = ("spmm", "spmv", "sddmm")
PARTITIONS = ("omp", "row_blocks", "static_chunks", "dynamic_chunks", "nnz_split", "merge_path")
SCHEDULES = ("static", "dynamic", "guided")
UNROLLS = (1, 2, 4, 8)
BIN_ROWS = (0, *range(1, MAX_BIN_ROWS + 1))  # 0: rows in order
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


MAX_THREADS = 1024  # OpenMP threads per run: libgomp crashes creating ~1e5 (measured: SIGSEGV)


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
               "partition": PARTITIONS, "bin_rows": BIN_ROWS}
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
        values = [param.from_entry(v) if param.kind == "categorical" else
                  v.item() if isinstance(v, np.generic) else v for v in values]
        if name in allowed:
            bad = [v for v in values if v not in allowed[name]]
        else:  # chunk sizes and thread counts
            bad = [v for v in values if float(v) != int(v) or int(v) < 1
                   or name == "omp_num_threads" and int(v) > MAX_THREADS]
        if bad:
            limit = f"1..{MAX_THREADS}" if name == "omp_num_threads" else None
            raise SpaceError(f"scenario {space.name!r}: parameter {name} has value(s) "
                             f"{', '.join(map(repr, bad))} the {kernel} kernel cannot run "
                             f"(allowed: {limit or _allowed_text(allowed.get(name))})")


def _allowed_text(allowed: tuple | None) -> str:
    if allowed is None:
        return "positive integers"
    if allowed == BIN_ROWS:
        return f"0 (off) or 1..{MAX_BIN_ROWS}"
    return ", ".join(map(repr, allowed))


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
        binned = int(full.get("bin_rows", 0))
        if binned and full["partition"] != "omp":
            raise SpaceError("bin_rows applies to the omp partition only")
        if binned:
            knobs.update(schedule=full["omp_scheduling_type"], bin_rows=binned,
                         chunk=int(full["chunk_size"]) * int(full["omp_chunk_size"]))
        elif full["partition"] == "omp":
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


def default_result(space: Space, objective: KernelObjective, records: list) -> dict:
    """The default schedule's result: its evaluation among ``records`` (a tuning run's, where BO
    evaluates it first) when there is a valid one, so that best and default come from the same
    kind of measurement, else a measurement now. A dict with ``value`` and ``valid``."""
    # one normalization for all (plain values: lists vs tuples, numpy vs Python numbers)
    default, *configs = space.to_dicts(space.from_dicts(
        [objective.default_config()] + [record.config for record in records]))
    for record, config in zip(records, configs):
        if record.valid and config == default:
            return {"value": record.values.get("value"), "valid": True}
    return objective(objective.default_config())


@functools.partial(jax.jit, static_argnums=(6,))
def _price_all(row_lengths, n_rows, strategies, threads, chunks, cost, max_workers, row_misses):
    """Per-worker predicted seconds [configs, max_workers] of many (strategy, P, chunk) rows."""
    from perfjax.models import balance

    def one(strategy, workers, chunk):
        work = balance.worker_work(row_lengths, n_rows, strategy, workers, chunk, max_workers,
                                   row_misses)
        return balance.predict(cost, work)["times"]

    return jax.vmap(one)(strategies, threads, chunks)


class ModelPrior:
    """The load-balance model's predicted seconds of a batch of kernel configurations: a perfjax
    cost model as the Bayesian optimizer's prior mean (``tune(..., prior_mean=ModelPrior(...))``).

    It models what the partition does to the threads' work: the strategy ("omp" static / dynamic
    / guided chunks map to static / dynamic chunks of ``chunk_size * omp_chunk_size`` rows), the
    worker count, each worker's rows, nonzeros, segments, cache and branch misses, priced by a
    ``perfjax.validate.balance.Calibration`` (fitted on generated matrices, never this one); more
    threads than ``cores`` share the cores (time >= total work / cores). Row-length binning
    (``bin_rows`` B) is priced as ``Calibration.bin_rows`` prices it (``binned_misses``: with the
    calibration's measured binning costs when it has them, else the a-priori rule); the binned
    rows' new order is not modelled (chunks are dealt in row order). Unroll and loop order
    are not modelled: the GP learns them from the measurements.
    """

    def __init__(self, objective: "KernelObjective", calibration: Any, cores: int | None = None):
        from perfjax.models import balance
        from perfjax.validate.balance import binned_misses
        from perfjax.workloads import sparse

        width = 1 if objective.kernel == "spmv" else objective.width
        # a calibration with a memory regime prices a matrix beyond the L2 with that one
        calibration = calibration.for_matrix(objective.matrix, objective.kernel, width)
        if objective.kernel not in calibration.costs:
            raise PerfjaxError(f"model prior: the calibration has no {objective.kernel} costs "
                               f"(has {', '.join(calibration.costs)})")
        self.objective = objective
        self.cost = calibration.costs[objective.kernel]
        self.binning = calibration.binning_for(objective.kernel)
        self.cores = cores or scenarios._cores()
        space = objective.space
        full = objective.full_config

        def values(name: str) -> list:
            if name in space.params:
                param = space.params[name]
                return list(param.values) if param.kind == "categorical" else \
                    [int(v) for v in np.asarray(param.values_array())]
            return [full({})[name]]

        names = ("partition", "omp_scheduling_type", "omp_num_threads", "chunk_size",
                 "omp_chunk_size") + (("bin_rows",) if "bin_rows" in full({}) else ())
        self._values = {name: values(name) for name in names}
        threads = sorted(set(self._values["omp_num_threads"]))
        chunks = sorted({c * o for c in self._values["chunk_size"]
                         for o in self._values["omp_chunk_size"]})
        matrix = objective.matrix
        stats = sparse.stats(matrix)
        misses = sparse.row_misses(matrix, width, predictor_bytes=calibration.predictor_bytes)
        # every (strategy, threads, chunk) at once: one compiled, vmapped model evaluation per
        # binning (``binned_misses``)
        combos = np.array([(code, t, c) for code in balance.STRATEGY_CODES.values()
                           for t in threads for c in chunks])
        lengths = np.diff(matrix.indptr)
        bins = sorted(set(self._values.get("bin_rows", [0])))
        tables = []
        for top in bins:
            binned = binned_misses(misses, lengths, top, self.cost, self.binning)
            times = np.asarray(_price_all(stats.row_lengths, stats.n_rows, combos[:, 0],
                                          combos[:, 1], combos[:, 2], self.cost, max(threads),
                                          binned))
            times = times.reshape(len(balance.STRATEGY_CODES), len(threads), len(chunks), -1)
            shared = times.sum(axis=-1) / np.minimum(np.asarray(threads), self.cores)[None, :, None]
            tables.append(np.maximum(times.max(axis=-1), shared))
        self._table = np.stack(tables)  # [bins, strategies, threads, chunks]
        self._bins = np.asarray(bins)
        codes = list(balance.STRATEGY_CODES)
        static, dynamic = codes.index("static_chunks"), codes.index("dynamic_chunks")
        # strategy row of the table per (partition index, schedule index): "omp" follows the
        # schedule (static -> static chunks; dynamic, guided -> dynamic chunks)
        self._strategy = np.array([[(static if schedule == "static" else dynamic)
                                    if partition == "omp" else codes.index(partition)
                                    for schedule in self._values["omp_scheduling_type"]]
                                   for partition in self._values["partition"]])
        self._threads = np.asarray(threads)
        self._chunks = np.asarray(chunks)

    def _column(self, batch: Mapping[str, Any], name: str, count: int) -> np.ndarray:
        if name in batch:
            return np.asarray(batch[name]).reshape(count)
        default = self._values[name][0]
        categorical = name in ("partition", "omp_scheduling_type")
        return np.full(count, 0 if categorical else default)

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Predicted seconds [n] of a struct-of-arrays batch of configurations."""
        count = len(np.asarray(next(iter(batch.values()))))
        col = {name: self._column(batch, name, count) for name in self._values}
        strategy = self._strategy[col["partition"].astype(int),
                                  col["omp_scheduling_type"].astype(int)]
        threads = np.searchsorted(self._threads, col["omp_num_threads"])
        chunks = np.searchsorted(self._chunks, col["chunk_size"] * col["omp_chunk_size"])
        bins = np.searchsorted(self._bins, col["bin_rows"]) if "bin_rows" in col else \
            np.zeros(count, dtype=int)
        return self._table[bins, strategy, threads, chunks]


CALIBRATION_CACHE_ENV = "PERFJAX_CALIBRATION_CACHE"


def calibration_cache_dir() -> Path | None:
    """Where ``calibrate_model`` keeps its measurements: $PERFJAX_CALIBRATION_CACHE, else
    ~/.cache/perfjax/calibrations (None when the variable says off)."""
    from perfjax.compilation_cache import user_cache_dir

    return user_cache_dir(CALIBRATION_CACHE_ENV, "calibrations")


@functools.cache
def calibration_fingerprint() -> str:
    """What the calibration measurements depend on besides their settings and matrices (which
    ``MeasurementLog`` keys already hold): this CPU, the C compiler, and the code that generates,
    runs and counts the kernels (so an upgraded perfjax measures again)."""
    import hashlib
    import importlib
    import platform

    build, emit, run, model, validation, workloads = (importlib.import_module(name) for name in (
        "perfjax.kernels.c.build", "perfjax.kernels.c.emit", "perfjax.kernels.c.run",
        "perfjax.models.balance", "perfjax.validate.balance", "perfjax.workloads.sparse"))

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    digest = hashlib.sha256(repr((validation.RECORD_FORMAT, platform.machine(), cpu,
                                  os.cpu_count(), build._version(build.compiler()))).encode())
    for module in (build, emit, run, model, validation, workloads):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def calibrate_model(kernel: str, width: int = DEFAULT_WIDTH, cache: bool = True):
    """A load-balance model ``Calibration`` for ``kernel`` (spmv / spmm) at ``width``, fitted on
    ``perfjax.validate.balance``'s generated matrices (about 20 s of kernel runs).

    ``cache``: keep the measurements in ``calibration_cache_dir()`` (one measurement log per
    ``calibration_fingerprint()``: this CPU, compiler and perfjax's kernel code), so a later call
    on this machine fits the same measurements again instead of running the kernels (SpMV's
    binning runs, a few seconds, are measured every time). False measures afresh."""
    from perfjax.validate import balance as validation

    check_model_kernel(kernel)
    settings = validation.Settings(
        kernels=(kernel,), workers=(1, 2, 8, 32), spmm_width=width,
        strategies=("row_blocks", "static_chunks", "nnz_split", "merge_path"),
        processes=1)  # a prior mean needs relative costs: one process each keeps it ~20 s
    from perfjax.compilation_cache import make_cache_dir

    directory = calibration_cache_dir() if cache else None
    if directory is not None:
        directory = make_cache_dir(directory, "calibration cache", "measuring",
                                   CALIBRATION_CACHE_ENV)
    if directory is None:
        return validation.calibrate_on(settings=settings, binning=kernel == "spmv")
    from filelock import FileLock

    path = directory / f"measurements-{calibration_fingerprint()}.jsonl"
    with FileLock(str(path) + ".lock"):  # concurrent calibrations measure once, append whole
        return validation.calibrate_on(settings=settings, binning=kernel == "spmv",
                                       log=validation.MeasurementLog(path))


def check_model_kernel(kernel: str) -> None:
    """PerfjaxError unless the load-balance model prices ``kernel`` (spmv, spmm)."""
    if _check_kernel(kernel) == "sddmm":
        raise PerfjaxError("the load-balance model prices spmv and spmm, not sddmm")


def _main() -> None:  # pragma: no cover - a quick manual check: python -m perfjax.bench.kernel_tuning
    from perfjax.workloads.sparse import powerlaw_rows
    objective = KernelObjective("spmm", powerlaw_rows(4000, 4000, 40000, seed=0))
    print(objective(objective.default_config()))


if __name__ == "__main__":  # pragma: no cover
    _main()
