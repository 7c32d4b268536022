"""Validate the load-balance model against instrumented generated kernels.

For every matrix x kernel x strategy x worker count: partition the matrix, run the generated
C kernel in *sequential* instrumented mode (each worker's segments timed alone on one core, so P
workers are validated on a machine with fewer cores; the makespan is the slowest worker), and
compare with the model: work counters must be equal, predicted and measured makespans are
compared by Spearman rank correlation and MAPE per matrix. P ranges over the worker counts every
strategy can split the matrix among (``check_workers``: a small matrix is validated at fewer).
Each configuration runs in ``Settings.processes`` processes (2), each worker's time the fastest.
For P no larger than the machine's cores the kernel also runs truly in parallel and that wall
time is reported beside.

The model's cost terms are calibrated on generated matrices (``calibration_matrices``), never on
the matrices being scored. Besides the work counters, three predicted miss counts per worker
enter the model as cost terms (``perfjax.workloads.row_misses``): gathers of the dense operand
that miss this CPU's L1 (irregular column access into an operand larger than L1 costs several
times more per nonzero than a band's), row ends whose loop exit the branch predictor gets wrong
(rows of varied lengths, in matrices whose sequence of row lengths holds more information than
the predictor learns over repeated runs: ``sparse.length_information``, the compressed size of
that sequence, against a capacity the calibration picks from ``PREDICTOR_BYTES``), and gathers
that miss the L2 as well.

Matrices whose data overflow the L2 by far (``footprint`` beyond ``regime_boundary``, about 8 MB
for SpMV and 23 MB for SpMM here) are priced by a second cost vector, the memory regime, fitted
on larger generated matrices (``memory_calibration_matrices``), which ``validate`` measures only
when a scored matrix needs it (``Calibration.regime``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.sparse
import scipy.stats

from perfjax.errors import PerfjaxError, PerfjaxWarning, WorkloadError, check_integer
from perfjax.models import balance
from perfjax.models.calibrate import fit_linear_cost, mape, scaled_nnls
from perfjax.study import _mend_last_line, _write_line  # the study log's line writing
from perfjax.workloads import sparse

KERNELS = ("spmv", "spmm")
STRATEGIES = tuple(balance.STRATEGY_CODES)
DEFAULT_WORKERS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Settings:
    kernels: tuple[str, ...] = KERNELS
    workers: tuple[int, ...] = DEFAULT_WORKERS
    strategies: tuple[str, ...] = STRATEGIES
    chunk: int = 16  # rows per chunk for static/dynamic chunking (TACO's default chunk size)
    spmm_width: int = 16  # dense columns K of SpMM
    repeats: int = 5
    timeout: float = 60.0
    # each configuration's instrumented run in this many processes, each worker's time the
    # fastest of them: on this shared 2-core machine a burst of other work can slow one whole
    # process by 30-90%; two identical runs of every configuration of the 13 calibration and
    # 15 real matrices differed by 0.68-1.60x (5-95%), and the minimum of two halved the
    # calibration's residual (0.031 -> 0.016) and cut the median MAPE from 14.8/13.8% to 11.2%
    processes: int = 2


PREDICTOR_BYTES = (0, 250, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 8_000, 16_000)
"""Candidate capacities of the branch predictor, in bytes of compressed row lengths
(``sparse.length_information``, ``sparse.row_misses``), the calibration picks from. Measured on
this project's 2-core Xeon: matrices of up to ~1 kB of length information (a few thousand rows
of random lengths, or many more in a repeated pattern) mispredict almost no row end after the
first run; ~10 kB and more, nearly every change."""


def calibration_matrices(seed: int = 0) -> dict:
    """Generated matrices the costs are fitted on: skewed, graph-like, regular and random, each
    small (cache-resident, where fixed per-worker costs dominate) and large; a wide band (41
    nonzeros in every row: the others average 3-10, so long rows' per-nonzero cost was an
    extrapolation, 25% too high on the 32-nonzero rows of a sparse DNN); plus rows of varied
    lengths reading the dense operand in order, at three sizes, and equal-length rows with random
    columns, so that cache misses and mispredicted row ends are told apart and the branch
    predictor's capacity can be located."""
    return {
        "gen-powerlaw-s": sparse.powerlaw_rows(2_000, 2_000, 12_000, alpha=1.1, seed=seed),
        "gen-powerlaw-l": sparse.powerlaw_rows(20_000, 20_000, 200_000, alpha=1.1, seed=seed),
        "gen-rmat-s": sparse.rmat(10, 8, seed=seed),
        "gen-rmat-l": sparse.rmat(14, 8, seed=seed),
        "gen-banded-s": sparse.banded(1_500, 2, seed=seed),
        "gen-banded-l": sparse.banded(30_000, 3, seed=seed),
        "gen-banded-wide": sparse.banded(5_000, 20, seed=seed),
        "gen-uniform-s": sparse.uniform_random(3_000, 3_000, 1e-3, seed=seed),
        "gen-uniform-l": sparse.uniform_random(10_000, 10_000, 8e-4, seed=seed),
        **{f"gen-varlen-local-{size}": sparse.powerlaw_rows(n, n, 10 * n, alpha=1.1, seed=seed,
                                                            columns="local")
           for size, n in (("s", 2_000), ("m", 8_000), ("l", 30_000))},
        "gen-regular-random-l": sparse.powerlaw_rows(30_000, 30_000, 300_000, alpha=0.0,
                                                     seed=seed),
    }


def memory_calibration_matrices(seed: int = 0) -> dict:
    """Generated matrices for the memory regime (``Calibration.memory``): 0.75-3.5 million
    nonzeros whose data (14-56 MB for SpMV, 44-216 MB for SpMM) overflow the L2 cache by far:
    random columns over a vector larger than the L2 (every gather misses it), power-law rows,
    R-MAT, and bands streaming in order. About two minutes of measurement on this 2-core
    machine, so ``validate`` adds them only when a scored matrix needs them."""
    return dict(_memory_matrices(seed))


@functools.lru_cache(maxsize=2)
def _memory_matrices(seed: int) -> dict:
    """Generated once per seed (1-2 s): ``validate`` sizes them up on every call."""
    return {
        "gen-uniform-xl": sparse.uniform_random(500_000, 500_000, 3e-6, seed=seed),
        "gen-powerlaw-xl": sparse.powerlaw_rows(300_000, 300_000, 1_500_000, alpha=1.1,
                                                seed=seed),
        "gen-banded-xl": sparse.banded(150_000, 3, seed=seed),
        "gen-rmat-xl": sparse.rmat(17, 8, seed=seed),
        "gen-banded-xxl": sparse.banded(700_000, 2, seed=seed),
    }


def regime_boundary(cache: dict, memory: dict, settings: "Settings") -> dict:
    """Per kernel, the footprint above which the memory regime prices a matrix: the geometric
    mean of the largest cache-regime and the smallest memory-regime calibration footprint (a
    matrix goes to the regime whose calibration matrices are nearer in log size)."""
    out = {}
    for kernel in settings.kernels:
        small = max(footprint(m, kernel, settings.spmm_width) for m in cache.values())
        large = min(footprint(m, kernel, settings.spmm_width) for m in memory.values())
        out[kernel] = float(math.sqrt(small * max(large, small)))
    return out


def _operand(kernel: str, matrix, settings: Settings) -> np.ndarray:
    """The dense operand of every validation run of ``kernel`` on ``matrix`` (a fixed seed)."""
    rng = np.random.default_rng(0)
    if kernel == "spmv":
        return rng.standard_normal(matrix.shape[1])
    return rng.standard_normal((matrix.shape[1], settings.spmm_width))


def _run_kernel(kernel: str, matrix, operand: np.ndarray, partition, settings: Settings,
                **mode):
    from perfjax.kernels import c as ckernels  # the top floor: validation may use kernels

    run = ckernels.spmv if kernel == "spmv" else ckernels.spmm
    return run(matrix, operand, partition, repeats=settings.repeats, timeout=settings.timeout,
               **mode)


def measure_matrix(name: str, matrix, settings: Settings,
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Instrumented sequential runs of every (kernel, strategy, P) on one matrix, P over the
    worker counts every strategy can split it among (``matrix_workers``)."""
    from perfjax.schedulers import partition as partitioner
    from perfjax.arrays import bucket, pad_rows

    counts = matrix_workers(matrix, settings)
    # rows and the worker axis padded to powers of two, rows to at least 32768: the model
    # compiles once for every matrix of the calibration sets and once per larger size bucket, not
    # once per matrix (padded rows are empty and padded workers idle: they count for nothing)
    padded = bucket(matrix.shape[0], 32768)
    stats = sparse.stats(matrix, pad_to=padded)
    max_workers = bucket(max(settings.workers), 64)
    length_bytes = sparse.length_information(matrix)
    rows = []
    cores = os.cpu_count() or 1
    for kernel in settings.kernels:
        # the dense operand's gathers that miss this CPU's L1 (SpMV: x, SpMM: rows of X), every
        # row-length change (scaled by the share the branch predictor does not learn, at
        # calibration: length_bytes) and the gathers that miss its L2 too
        row_misses = sparse.row_misses(matrix, 1 if kernel == "spmv" else settings.spmm_width)
        row_misses = pad_rows(row_misses, padded)
        operand = _operand(kernel, matrix, settings)
        for strategy in settings.strategies:
            for workers in counts:
                part = partitioner.partition(strategy, matrix, workers, chunk=settings.chunk)
                seconds = []
                for _ in range(settings.processes):  # the fastest of a few processes
                    result = _run_kernel(kernel, matrix, operand, part, settings, sequential=True,
                                         instrument=True)
                    if not result.ok:
                        raise PerfjaxError(f"matrix {name}: {kernel} {strategy} P={workers} "
                                           f"failed: {result.reason}")
                    seconds.append(np.asarray(result.worker_seconds, dtype=float))
                work = balance.worker_work_jit(stats.row_lengths, stats.n_rows,
                                               jnp.asarray(balance.STRATEGY_CODES[strategy]),
                                               workers, settings.chunk,
                                               max_workers=max_workers,
                                               row_misses=row_misses)
                features = np.asarray(work.features())[:workers]
                exact = bool((np.asarray(work.rows)[:workers] == result.worker_rows).all()
                             and (np.asarray(work.nnz)[:workers] == result.worker_nnz).all()
                             and (part.work()[:, 0] == result.worker_rows).all())
                parallel = None
                if workers <= cores and workers > 1:
                    wall = _run_kernel(kernel, matrix, operand, part, settings)
                    parallel = wall.best if wall.ok else None
                rows.append(dict(matrix=name, kernel=kernel, strategy=strategy, workers=workers,
                                 features=features, n_rows=int(matrix.shape[0]),
                                 footprint=footprint(matrix, kernel, settings.spmm_width),
                                 length_bytes=length_bytes,
                                 worker_seconds=np.min(seconds, axis=0),
                                 work_exact=exact, imbalance=float(
                                     (result.worker_rows + result.worker_nnz).max()
                                     / (result.worker_rows + result.worker_nnz).mean()),
                                 parallel_seconds=parallel))
                if progress:
                    progress(f"{name} {kernel} {strategy} P={workers}")
    return rows


def _features(row: dict, predictor_bytes: float) -> np.ndarray:
    """A measured row's per-worker features with its length changes scaled to branch misses."""
    features = np.array(row["features"], dtype=float)
    features[:, BRANCH_COLUMN] *= sparse.unlearned_share(row["length_bytes"], predictor_bytes)
    return features


BRANCH_COLUMN = balance.COST_TERMS.index("per_branch_miss")


def footprint(matrix, kernel: str, width: int = 16) -> int:
    """Bytes a kernel's run touches: the CSR matrix (8-byte values, 4-byte column indices,
    8-byte row pointers), the dense operand and the output (``width`` columns for SpMM). Which
    calibration regime prices a matrix (``Calibration.regime``) follows from it."""
    rows, cols = matrix.shape
    columns = 1 if kernel == "spmv" else int(width)
    return int(matrix.nnz * 12 + (rows + 1) * 8 + (rows + cols) * 8 * columns)


BINNING_CANDIDATES = (2, 4, 8)
"""The bin sizes whose runs calibrate ``BinningCost`` (and ``Calibration.bin_rows`` picks from)."""


@dataclass(frozen=True)
class BinningCost:
    """What row-length binning (``perfjax.kernels.c`` ``bin_rows``) changes in a single-thread
    SpMV, in seconds, fitted on binned runs of the generated calibration matrices
    (``calibrate_on(..., binning=True)``): each predicted mispredicted row end among the binned
    rows saves ``per_change``; each binned row costs ``per_binned_row`` (its bin's extra index
    load) and every row ``per_row`` (the kernel walks the rows through the bins' permutation)."""

    per_change: float
    per_binned_row: float
    per_row: float


@dataclass(frozen=True)
class Calibration:
    """Fitted costs per kernel (``calibration["spmv"]``), the branch predictor's capacity
    (bytes of compressed row lengths it learns, ``sparse.row_misses``) and, when measured, what
    row-length binning saves and costs (``binning``; None: the a-priori rule of
    ``binned_misses``).

    ``memory``: when calibrated (``calibrate_on(..., memory=True)``), a second Calibration fitted
    on generated matrices whose data overflow this CPU's L2 by far
    (``memory_calibration_matrices``); it prices every matrix whose ``footprint`` for a kernel
    exceeds ``boundary[kernel]`` (``regime``). One linear cost vector does not fit both sizes:
    with the small matrices' costs, generated matrices of 1-5 million nonzeros were predicted 1.4-
    3.1x too fast (MAPE 36-61%), and one vector fitted on both sizes lost accuracy on the small
    real matrices. ``largest``: per kernel, the largest footprint this regime was fitted on: beyond
    twice that a prediction is an extrapolation (``extrapolated``)."""

    costs: dict
    predictor_bytes: float
    residual: float  # the fit's mean squared relative error over every calibration worker
    binning: BinningCost | None = None
    memory: "Calibration | None" = None
    boundary: dict | None = None
    largest: dict | None = None

    def __getitem__(self, kernel: str) -> balance.BalanceCost:
        return self.costs[kernel]

    def _cost(self, kernel: str) -> balance.BalanceCost:
        if kernel not in self.costs:
            raise WorkloadError(f"no calibrated costs for kernel {kernel!r} (calibrated: "
                                f"{', '.join(sorted(self.costs))})")
        return self.costs[kernel]

    def regime(self, kernel: str, footprint_bytes: float) -> "Calibration":
        """The calibration that prices a run of ``kernel`` touching ``footprint_bytes``
        (``footprint``): ``memory`` beyond ``boundary[kernel]``, else this one."""
        boundary = (self.boundary or {}).get(kernel, math.inf)
        if self.memory is not None and footprint_bytes > boundary:
            return self.memory
        return self

    def regime_name(self, kernel: str, footprint_bytes: float) -> str:
        return "memory" if self.regime(kernel, footprint_bytes) is not self else "cache"

    def extrapolated(self, kernel: str, footprint_bytes: float) -> bool:
        """Whether this run touches over twice the bytes of the largest run the regime pricing
        it was fitted on (a prediction far outside what the calibration saw)."""
        largest = (self.regime(kernel, footprint_bytes).largest or {}).get(kernel)
        return largest is not None and footprint_bytes > 2 * largest

    def for_matrix(self, matrix, kernel: str, width: int = 1) -> "Calibration":
        """The calibration that prices ``kernel`` on ``matrix`` (``width`` dense columns for
        SpMM): ``regime`` at the matrix's ``footprint``."""
        return self.regime(kernel, footprint(matrix, kernel, width))

    def predict(self, row: dict) -> np.ndarray:
        """Predicted seconds of each worker of a ``measure_matrix`` row."""
        chosen = self.regime(row["kernel"], row.get("footprint", 0))
        return (_features(row, chosen.predictor_bytes)
                @ np.asarray(chosen._cost(row["kernel"]).vector()))

    def _row_misses(self, matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(row lengths, predicted misses per row [rows, 3]) of ``matrix`` at this predictor
        capacity."""
        matrix = scipy.sparse.csr_array(matrix)
        return np.diff(matrix.indptr), sparse.row_misses(matrix, width,
                                                         predictor_bytes=self.predictor_bytes)

    def path_weights(self, matrix, kernel: str, width: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Predicted seconds of each nonzero and each row end of ``matrix`` under ``kernel``
        (its cache and branch misses included), for ``partition.weighted_merge_path``."""
        chosen = self.for_matrix(matrix, kernel, width)
        return _path_weights(chosen._cost(kernel), *chosen._row_misses(matrix, width))

    def single_thread_time(self, matrix, kernel: str, width: int = 1, bin_rows: int = 0
                           ) -> float:
        """Predicted seconds of one worker running all of ``matrix`` under ``kernel``, with the
        rows of up to ``bin_rows`` nonzeros binned by length (0: plain rows; see ``bin_rows``).
        WorkloadError for a kernel this calibration has no costs for or a negative bin_rows."""
        chosen = self.for_matrix(matrix, kernel, width)
        cost = chosen._cost(kernel)
        bin_rows = check_integer(bin_rows, "bin_rows", 0, error=WorkloadError)
        return _single_thread_time(cost, *chosen._row_misses(matrix, width), bin_rows,
                                   chosen.binning_for(kernel))

    def binning_for(self, kernel: str) -> BinningCost | None:
        """The measured binning costs where they apply (SpMV, whose binned runs they were fitted
        on), else None (the a-priori rule)."""
        return self.binning if kernel == "spmv" else None

    def bin_rows(self, matrix, kernel: str, width: int = 1,
                 candidates: Sequence[int] = BINNING_CANDIDATES, min_saving: float = 0.10
                 ) -> int | None:
        """The row-length binning (``perfjax.kernels.c`` ``bin_rows``) the model predicts pays
        most for ``matrix`` under ``kernel``, or None (plain rows), priced by ``binned_misses``:
        with measured ``binning`` costs (``calibrate_on(..., binning=True)``) a saving per
        predicted mispredicted end among the binned rows against an overhead per binned row and
        per row (measured on SpMV: SpMM, and a calibration without them, use the a-priori
        rule: each binned row's mispredict saved in full, one nonzero's cost added). A saving
        under ``min_saving`` of the predicted single-thread time, about the model's own error on
        real matrices (the validation's MAPE, 10-13%), is not worth the reordering (None).

        The a-priori rule promises too much: binning saves 7.8-8.2 ns per short-row length change
        on generated power-law matrices with rows of 5 nonzeros on average, but 1.2-3.8 ns where
        long rows are interleaved or the matrix streams from memory
        (``benchmarks/branch_binning.py``), and on small real matrices whose row lengths the
        predictor learns it made SpMV 10-20% slower; the measured costs pick plain rows there."""
        regime = self.for_matrix(matrix, kernel, width)
        cost = regime._cost(kernel)
        lengths, misses = regime._row_misses(matrix, width)  # once: the cache model is the cost
        plain = _single_thread_time(cost, lengths, misses, 0)
        best, chosen = min_saving * plain, None
        for top in candidates:
            gain = plain - _single_thread_time(cost, lengths, misses, top,
                                               regime.binning_for(kernel))
            if gain > best:
                best, chosen = gain, int(top)
        return chosen


def _single_thread_time(cost: balance.BalanceCost, lengths: np.ndarray, misses: np.ndarray,
                        bin_rows: int, binning: BinningCost | None = None) -> float:
    """One worker over every row: launch plus each nonzero's and row end's predicted seconds,
    rows of up to ``bin_rows`` nonzeros binned (0: none)."""
    per_nonzero, per_end = _path_weights(cost, lengths,
                                         binned_misses(misses, lengths, bin_rows, cost, binning))
    return float(cost.launch) + float(per_nonzero.sum() + per_end.sum())


def _path_weights(cost: balance.BalanceCost, lengths: np.ndarray, misses: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted seconds of each nonzero and each row end, from the row lengths and per-row
    misses: a row's cache misses (both levels) spread over its nonzeros, its branch misses on its
    end."""
    gathers = float(cost.per_miss) * misses[:, 0] + float(cost.per_l2_miss) * misses[:, 2]
    per_nonzero = float(cost.per_nnz) + np.repeat(gathers / np.maximum(lengths, 1), lengths)
    return per_nonzero, float(cost.per_row) + float(cost.per_branch_miss) * misses[:, 1]


def binned_misses(misses: np.ndarray, lengths: np.ndarray, top: int,
                  cost: balance.BalanceCost, binning: BinningCost | None = None) -> np.ndarray:
    """Per-row misses ([rows, 3], ``sparse.row_misses``) of the kernel with the rows of up to
    ``top`` nonzeros binned by length (``top`` 0: not binned), written in branch misses (seconds
    / per_branch_miss) so that every model user prices binning with the usual terms (unchanged
    when mispredicts cost nothing). With measured ``binning`` costs: a binned row keeps its
    predicted misses m as m (1 - per_change / per_branch_miss) plus per_binned_row /
    per_branch_miss, and every row gains per_row / per_branch_miss. Without (the a-priori rule):
    a binned row's mispredicted exit is gone and its extra index load costs one nonzero."""
    out = np.array(misses, dtype=float, copy=True)
    per_miss = float(cost.per_branch_miss)
    if not top or per_miss <= 0:
        return out
    short = lengths <= top
    if binning is None:
        out[short, 1] = float(cost.per_nnz) / per_miss
        return out
    out[short, 1] = (out[short, 1] * (1.0 - binning.per_change / per_miss)
                     + binning.per_binned_row / per_miss)
    out[:, 1] += binning.per_row / per_miss
    return out


def measure_binning(matrices: dict, settings: Settings = Settings(),
                    candidates: Sequence[int] = BINNING_CANDIDATES, repeats: int = 50
                    ) -> list[dict]:
    """Single-thread SpMV of every matrix plain and with rows of up to B nonzeros binned, for
    each candidate B (best of ``repeats`` runs each: the differences are a few microseconds on
    small matrices): one row per (matrix, B) with the plain and binned seconds and what
    ``fit_binning`` needs (row lengths, length information)."""
    out = []
    for name, matrix in matrices.items():
        matrix = scipy.sparse.csr_array(matrix)
        x = _operand("spmv", matrix, settings)

        def best(**mode) -> float:
            from perfjax.kernels import c as ckernels  # the top floor, as in _run_kernel
            result = ckernels.spmv(matrix, x, repeats=repeats, timeout=settings.timeout,
                                   **mode)
            if not result.ok:
                raise PerfjaxError(f"matrix {name}: spmv binning run failed: {result.reason}")
            return result.best

        plain = best()
        shared = dict(matrix=name, plain=plain, lengths=np.diff(matrix.indptr),
                      changes=sparse.length_changes(matrix),
                      length_bytes=sparse.length_information(matrix))
        for top in candidates:
            out.append(dict(shared, bin_rows=int(top), binned=best(bin_rows=int(top))))
    return out


def fit_binning(rows: Sequence[dict], predictor_bytes: float) -> BinningCost:
    """BinningCost by non-negative relative least squares: binned - plain = - per_change x
    (predicted mispredicted ends among the binned rows, at ``predictor_bytes``) +
    per_binned_row x (binned rows) + per_row x (rows), each (matrix, B) weighted by 1 / plain."""
    columns, target = [], []
    for r in rows:
        short = r["lengths"] <= r["bin_rows"]
        unlearned = sparse.unlearned_share(r["length_bytes"], predictor_bytes)
        columns.append([-float(r["changes"][short].sum()) * unlearned, float(short.sum()),
                        float(len(r["lengths"]))])
        target.append(r["binned"] / r["plain"] - 1.0)
    a = np.asarray(columns) / np.asarray([r["plain"] for r in rows])[:, None]
    return BinningCost(*(float(v) for v in scaled_nnls(a, np.asarray(target))))


def calibrate(rows: Iterable[dict], predictor_bytes: Sequence[float] = PREDICTOR_BYTES
              ) -> Calibration:
    """One BalanceCost per kernel, fitted on every worker of every calibration run (relative
    least squares, ``fit_linear_cost``), with the branch predictor's capacity chosen from
    ``predictor_bytes`` by the smallest residual of those fits."""
    rows = list(rows)
    largest = {kernel: max(r.get("footprint", 0) for r in rows if r["kernel"] == kernel)
               for kernel in {r["kernel"] for r in rows}}  # rows without one: unknown, no flag
    largest = {kernel: size for kernel, size in largest.items() if size > 0} or None
    best = None
    for capacity in predictor_bytes:
        costs, squared, count = {}, 0.0, 0
        for kernel in sorted({r["kernel"] for r in rows}):
            mine = [r for r in rows if r["kernel"] == kernel]
            features = np.concatenate([_features(r, capacity) for r in mine])
            seconds = np.concatenate([r["worker_seconds"] for r in mine])
            vector = fit_linear_cost(features, seconds)
            costs[kernel] = balance.BalanceCost.from_vector(vector)
            keep = seconds > 0
            squared += float(np.sum(((features[keep] @ vector) / seconds[keep] - 1.0) ** 2))
            count += int(keep.sum())
        candidate = Calibration(costs, float(capacity), squared / max(count, 1), largest=largest)
        if best is None or candidate.residual < best.residual:
            best = candidate
    return best


RECORD_FORMAT = 3  # 2: rows carry length_bytes (sparse.length_information); 3: L2 misses, footprint


class MeasurementLog:
    """The measured rows of each matrix of a validation, one fsync'ed JSON line per matrix, so
    an interrupted ``perfjax validate balance`` resumes: a matrix measured before with the same
    settings, content and role (calibration or scored) is read back instead of run again. A
    torn last line (a kill mid-write) is dropped, a complete one missing only its newline kept;
    any other unreadable line is an error naming the file and line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._rows: dict[str, list[dict]] = {}
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        *lines, tail = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if line.strip():
                self._read(line, number)
        if tail.strip():  # a last line without its newline: the next record must start on a
            try:          # line of its own
                self._read(tail, len(lines) + 1)
                complete = True  # a complete record whose newline was stripped: kept
            except PerfjaxError:  # torn by a kill: cut off
                complete = False
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                _mend_last_line(fd, len(data), tail, complete)
            finally:
                os.close(fd)

    def _read(self, line: bytes, number: int) -> None:
        try:
            entry = json.loads(line)
            key, rows = entry["key"], [self._restore(r) for r in entry["rows"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise PerfjaxError(f"{self.path}: line {number} is not a measurement record "
                               f"({type(exc).__name__}: {exc}); delete the file to measure "
                               "again") from None
        self._rows[key] = rows

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def key(role: str, name: str, matrix, settings: Settings) -> str:
        """What a matrix's measurements depend on: role, name, settings and the matrix itself
        (and the record's format: rows measured before ``length_bytes`` are measured again)."""
        m = scipy.sparse.csr_array(matrix)
        digest = hashlib.sha256(repr((RECORD_FORMAT, role, name, settings, m.shape)).encode())
        for array in (m.indptr, m.indices, m.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def get(self, key: str) -> list[dict] | None:
        return self._rows.get(key)

    def put(self, key: str, rows: list[dict]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # the study log's writer: the whole line (os.write may write part), then fsync
            _write_line(fd, {"key": key, "rows": [self._plain(r) for r in rows]})
        finally:
            os.close(fd)
        self._rows[key] = rows

    @staticmethod
    def _plain(row: dict) -> dict:
        return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                for k, v in row.items()}

    @staticmethod
    def _restore(row: dict) -> dict:
        row = dict(row)
        row["features"] = np.asarray(row["features"], dtype=float)
        row["worker_seconds"] = np.asarray(row["worker_seconds"], dtype=float)
        return row


def _measure(role: str, name: str, matrix, settings: Settings,
             progress: Callable[[str], None] | None, log: MeasurementLog | None) -> list[dict]:
    """``measure_matrix``, read back from ``log`` when it holds this matrix, else appended."""
    if log is None:
        return measure_matrix(name, matrix, settings, progress)
    key = log.key(role, name, matrix, settings)
    rows = log.get(key)
    if rows is None:
        rows = measure_matrix(name, matrix, settings, progress)
        log.put(key, rows)
    elif progress:
        for row in rows:
            progress(f"{name} {row['kernel']} {row['strategy']} P={row['workers']} (measured "
                     "before)")
    return rows


def calibrate_on(matrices: dict | None = None, settings: Settings = Settings(),
                 progress: Callable[[str], None] | None = None,
                 log: MeasurementLog | None = None, binning: bool = False,
                 memory: bool | dict = False) -> Calibration:
    """Measure ``matrices`` (default ``calibration_matrices()``) with ``settings`` and calibrate
    on them: the fit every model user of generated matrices shares. ``log``: a
    ``MeasurementLog`` that keeps (and supplies) each matrix's measurements. ``binning``: also
    run single-thread SpMV plain and row-length binned on them and fit ``BinningCost`` (what
    ``Calibration.bin_rows`` and binned pricing then use; a few seconds more). ``memory``: True
    (``memory_calibration_matrices()``) or a dict of matrices also measured and fitted as the
    memory regime (``Calibration.memory``, about two minutes more)."""
    matrices = calibration_matrices() if matrices is None else matrices
    fitted = calibrate(r for name, m in matrices.items()
                       for r in _measure("calibration", name, m, settings, progress, log))
    if binning:
        fitted = replace(fitted, binning=fit_binning(measure_binning(matrices, settings),
                                                     fitted.predictor_bytes))
    if memory is not False and memory is not None:
        large = memory_calibration_matrices() if memory is True else dict(memory)
        overlap = set(large) & set(matrices)
        if overlap:
            raise PerfjaxError(f"cache and memory calibration matrices overlap: {sorted(overlap)}")
        fitted_memory = calibrate(r for name, m in large.items()
                                  for r in _measure("calibration", name, m, settings, progress,
                                                    log))
        # binning is measured on the small matrices only: the same measured costs apply
        fitted = replace(fitted, memory=replace(fitted_memory, binning=fitted.binning),
                         boundary=regime_boundary(matrices, large, settings))
    return fitted


def score(rows: Sequence[dict], calibration: Calibration) -> dict:
    """Per matrix: Spearman and MAPE of predicted vs measured makespan over its configurations,
    exactness of the work counters, and measured imbalance per strategy at the largest P."""
    report = {}
    for name in dict.fromkeys(r["matrix"] for r in rows):
        mine = [r for r in rows if r["matrix"] == name]
        predicted = np.array([calibration.predict(r).max() for r in mine])
        measured = np.array([r["worker_seconds"].max() for r in mine])
        workers = sorted({r["workers"] for r in mine})  # small matrices: fewer (check_workers)
        top = workers[-1]
        sizes = {r["kernel"]: r.get("footprint", 0) for r in mine}
        report[name] = {
            "spearman": float(scipy.stats.spearmanr(predicted, measured).statistic),
            "mape": mape(predicted, measured),
            "work_exact": all(r["work_exact"] for r in mine),
            "imbalance": {r["strategy"]: r["imbalance"] for r in mine
                          if r["workers"] == top and r["kernel"] == mine[0]["kernel"]},
            "configs": len(mine),
            "workers": workers,  # the counts it was validated at; ``imbalance`` is at the largest
            # which calibration priced each kernel, and whether it was fitted on smaller runs
            "regime": {k: calibration.regime_name(k, b) for k, b in sizes.items()},
            "extrapolated": any(calibration.extrapolated(k, b) for k, b in sizes.items()),
        }
    return report


def validate(matrices: dict, settings: Settings = Settings(),
             calibration: dict | None = None,
             progress: Callable[[str], None] | None = None,
             log: str | Path | MeasurementLog | None = None,
             memory_calibration: dict | None = None, memory: bool | None = None) -> dict:
    """The whole validation: calibrate on ``calibration`` (generated by default), score
    ``matrices``. Returns the JSON-able report of ``perfjax validate balance``. ``log``: a
    ``MeasurementLog`` (or its path) that keeps every matrix's measurements as they complete,
    so a rerun after a kill measures only the matrices not done yet. ``memory``: also calibrate
    the memory regime on ``memory_calibration`` (default ``memory_calibration_matrices()``);
    None (the default) does so when some scored matrix's footprint lies beyond the regimes'
    boundary (``regime_boundary``), False never."""
    calibration = calibration_matrices() if calibration is None else calibration
    large = memory_calibration_matrices() if memory_calibration is None else memory_calibration
    for other, what in ((calibration, "calibration"), (large, "memory calibration")):
        overlap = set(other) & set(matrices)
        if overlap:
            raise PerfjaxError(f"{what} and scored matrices overlap: {sorted(overlap)}")
    check_workers(matrices, settings)
    if memory is None:
        boundary = regime_boundary(calibration, large, settings)
        memory = any(footprint(m, k, settings.spmm_width) > boundary[k]
                     for m in matrices.values() for k in settings.kernels)
    if log is not None and not isinstance(log, MeasurementLog):
        log = MeasurementLog(log)
    fitted = calibrate_on(calibration, settings, progress, log, memory=large if memory else False)
    rows = [r for name, m in matrices.items()
            for r in _measure("scored", name, m, settings, progress, log)]
    per_matrix = score(rows, fitted)
    parallel = [
        {"matrix": r["matrix"], "kernel": r["kernel"], "strategy": r["strategy"],
         "workers": r["workers"], "parallel_seconds": r["parallel_seconds"],
         "sequential_makespan": float(r["worker_seconds"].max())}
        for r in rows if r["parallel_seconds"] is not None]

    def described(fit: Calibration, names) -> dict:
        return {"matrices": sorted(names),
                "costs": {k: [float(x) for x in np.asarray(c.vector())]
                          for k, c in fit.costs.items()},
                "cost_terms": list(balance.COST_TERMS),
                "predictor_bytes": fit.predictor_bytes,
                "residual": fit.residual,
                "largest_footprint_bytes": fit.largest}

    report_calibration = described(fitted, calibration)
    report_calibration["memory"] = (None if fitted.memory is None else
                                    dict(described(fitted.memory, large),
                                         boundary_bytes=fitted.boundary))
    return {
        "matrices": per_matrix,
        "median_spearman": float(np.median([v["spearman"] for v in per_matrix.values()])),
        "median_mape": float(np.median([v["mape"] for v in per_matrix.values()])),
        "calibration": report_calibration,
        "parallel": parallel,
    }


class FewerWorkersWarning(PerfjaxWarning):
    """A scored matrix is too small for some of the requested worker counts: it is validated at
    the others (``check_workers``)."""


def matrix_workers(matrix, settings: Settings) -> tuple[int, ...]:
    """The worker counts of ``settings.workers`` at which every strategy of ``settings`` can
    split ``matrix`` (none asks for more workers than the rows or nonzeros there are), so that
    every strategy is compared at the same counts. A strategy that cannot split a matrix among
    P workers cannot among more either, so the counts are tried from the largest down."""
    counts = sorted(set(settings.workers))
    while counts and _split_failure(matrix, counts[-1], settings) is not None:
        counts.pop()
    return tuple(counts)


def _split_failure(matrix, workers: int, settings: Settings) -> str | None:
    """Why some strategy cannot split ``matrix`` among ``workers`` (None when all can)."""
    from perfjax.schedulers import partition as partitioner

    for strategy in settings.strategies:
        try:
            partitioner.partition(strategy, matrix, workers, chunk=settings.chunk)
        except WorkloadError as exc:
            return f"{strategy} cannot split it among {workers} workers ({exc})"
    return None


def check_workers(matrices: dict, settings: Settings, warn: bool = True) -> dict:
    """Before anything is measured: the worker counts each matrix is validated at
    (``matrix_workers``), by name. A matrix too small for some of ``settings.workers`` (a
    directory of real matrices can hold a 48-row one beside a 64-worker validation) is validated
    at the rest, with a ``FewerWorkersWarning`` naming it when ``warn``; one that leaves fewer
    than two of them (one where there is one) is a WorkloadError naming it. Repeats and
    processes must be positive integers."""
    check_integer(settings.repeats, "repeats", 1, error=WorkloadError)
    check_integer(settings.processes, "processes", 1, error=WorkloadError)
    requested = tuple(sorted(set(settings.workers)))
    out = {}
    for name, matrix in matrices.items():
        mine = matrix_workers(matrix, settings)
        missing = [w for w in requested if w not in mine]
        what = f"matrix {name} ({matrix.shape[0]} rows, {matrix.nnz} nonzeros)"
        if len(mine) < min(2, len(requested)):
            reason = _split_failure(matrix, missing[0], settings)
            raise WorkloadError(f"{what}: {reason}; that leaves "
                                f"{'only P=' + str(mine[0]) if mine else 'no worker count'} to "
                                f"validate it at: lower --workers or leave the matrix out")
        if missing and warn:
            warnings.warn(f"{what} is too small for P={','.join(map(str, missing))}: validated "
                          f"at P={','.join(map(str, mine))}", FewerWorkersWarning, stacklevel=2)
        out[name] = mine
    return out


def load_matrices(directory: str | Path) -> dict:
    """Every sparse ``*.mtx`` in a directory, by file stem (WorkloadError naming a bad file),
    and ``NAME/NAME.mtx`` in its subdirectories: the layout of SuiteSparse's archives unpacked
    side by side (the other files there, such as ``NAME/NAME_b.mtx``, are not the matrix). Dense
    MatrixMarket files (``array`` format: the right-hand sides and coordinates that SuiteSparse
    ships beside a matrix) are left out with a warning naming them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WorkloadError(f"matrix directory {directory}: no such directory")
    files = sorted([*directory.glob("*.mtx"),
                    *(sub / f"{sub.name}.mtx" for sub in directory.iterdir()
                      if sub.is_dir() and (sub / f"{sub.name}.mtx").is_file())],
                   key=lambda path: (path.stem, len(path.parts)))
    if not files:
        raise WorkloadError(f"matrix directory {directory}: holds no .mtx file (nor NAME/NAME.mtx "
                            "in a subdirectory)")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise WorkloadError(f"matrix directory {directory}: two matrices named {path.stem!r} "
                                f"({stems[path.stem]} and {path})")
        stems[path.stem] = path
    dense = [path for path in files if _dense_file(path)]
    if dense:
        warnings.warn(f"matrix directory {directory}: left out {len(dense)} dense (array format) "
                      f"file(s), not sparse matrices: {', '.join(p.name for p in dense)}",
                      PerfjaxWarning, stacklevel=2)
    files = [path for path in files if path not in dense]
    if not files:
        raise WorkloadError(f"matrix directory {directory}: holds no sparse .mtx file (only "
                            "dense, array-format ones)")
    return {path.stem: sparse.read_matrix(path) for path in files}


def _dense_file(path: Path) -> bool:
    """Whether a MatrixMarket header says ``array`` (dense); a file whose header cannot be read
    is left to ``sparse.read_matrix``, which names what is wrong with it."""
    try:
        return scipy.io.mminfo(path)[3] == "array"
    except Exception:
        return False
