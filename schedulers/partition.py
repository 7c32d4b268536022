"""Partition strategies for sparse tensor algebra: exact split points for P workers.

Work is counted on the *merge path* of a compressed tensor: the sequence a kernel walks, in which
every stored nonzero is one item and the end of every compressed unit (a row of CSR, a row of
DCSR, a slice and a fiber of CSF) is one item. A partition is a list of segments of that path,
each owned by one worker; a segment runs from one path point to another, and a path point holds
how many ends of each level and how many nonzeros lie before it:

* CSR / DCSR: points are (rows, nonzeros);
* CSF: points are (slices, fibers, nonzeros);
* N-way co-iteration of N CSR operands: points are (rows, nonzeros of operand 1, ..., of N).

A worker's work counters are the sums of its segments' coordinate differences; the generated
kernels count exactly the same items at run time, and the load-balance model predicts them.

Strategies: ``row_blocks`` (uniform coordinate), ``static_chunks`` and ``dynamic_chunks``
(OpenMP schedule(static|dynamic, c); dynamic simulated as greedy assignment to the least-loaded
worker), ``nnz_split`` (TACO ``pos`` split), ``merge_path`` (Merrill & Garland, for any number of
compressed levels), ``weighted_merge_path`` (equal predicted cost instead of equal items) and
``merge_path_nway`` (N sparse operands split at one joint coordinate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from perfjax.errors import WorkloadError

STRATEGIES = ("row_blocks", "static_chunks", "dynamic_chunks", "nnz_split", "merge_path")


@dataclass(frozen=True)
class Partition:
    """Segments of the merge path and their owners. ``start``/``end`` are [S, D] path points."""

    strategy: str
    workers: int
    start: np.ndarray
    end: np.ndarray
    owner: np.ndarray

    def work(self) -> np.ndarray:
        """[P, D] work counters: per worker, items of each coordinate (level ends..., nonzeros)."""
        out = np.zeros((self.workers, self.start.shape[1]), dtype=np.int64)
        np.add.at(out, self.owner, self.end - self.start)
        return out

    def items(self) -> np.ndarray:
        """[P] total path items per worker (the merged work)."""
        return self.work().sum(axis=1)

    def imbalance(self) -> float:
        """max / mean merged work over the workers."""
        items = self.items()
        return float(items.max() / items.mean()) if items.mean() > 0 else 1.0

    def segments_of(self, worker: int) -> tuple[np.ndarray, np.ndarray]:
        mine = self.owner == worker
        return self.start[mine], self.end[mine]


def _check_workers(workers: int, total: int, what: str) -> None:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise WorkloadError(f"workers must be a positive integer, got {workers!r}")
    if workers > total:
        raise WorkloadError(f"workers={workers} exceeds the {total} {what} there are to split")


def _check_ptr(ptr, what: str = "indptr") -> np.ndarray:
    """``ptr`` as int64, or a WorkloadError unless it is a 1-D integer array that starts at 0 and
    never decreases (a compressed level's pointers)."""
    ptr = np.asarray(ptr)
    if ptr.ndim != 1 or len(ptr) < 1:
        raise WorkloadError(f"{what} must be a non-empty 1-D array, got shape {ptr.shape}")
    if not np.issubdtype(ptr.dtype, np.integer):
        raise WorkloadError(f"{what} must hold integers, got dtype {ptr.dtype}")
    if ptr[0] != 0 or (len(ptr) > 1 and (np.diff(ptr) < 0).any()):
        raise WorkloadError(f"{what} must start at 0 and never decrease, got "
                            f"{ptr[:8].tolist()}{' ...' if len(ptr) > 8 else ''}")
    return ptr.astype(np.int64)


def _indptr(matrix) -> np.ndarray:
    """Row pointers of a matrix: scipy sparse matrices of any format are read as CSR (a CSC
    matrix's indptr would be its columns), a 2-D ndarray as a dense matrix, a 1-D one as the
    row pointers themselves; a DCSR's own (non-empty row) pointers."""
    if sp.issparse(matrix):
        if matrix.ndim != 2:
            raise WorkloadError(f"expected a 2-D sparse matrix, got shape {matrix.shape}")
        matrix = matrix if matrix.format == "csr" else sp.csr_array(matrix)
        return _check_ptr(matrix.indptr)
    if isinstance(matrix, np.ndarray):
        if matrix.ndim == 2:
            return _check_ptr(sp.csr_array(matrix).indptr)
        return _check_ptr(matrix)
    if hasattr(matrix, "indptr"):
        return _check_ptr(matrix.indptr)
    raise WorkloadError(f"expected a CSR/DCSR matrix or an indptr array, got {type(matrix).__name__}")


def _contiguous(strategy: str, points: np.ndarray) -> Partition:
    workers = len(points) - 1
    return Partition(strategy, workers, points[:-1], points[1:], np.arange(workers))


def _row_points(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.stack([rows, indptr[rows]], axis=1)


def row_blocks(matrix, workers: int) -> Partition:
    """Worker p gets rows [p*n//P, (p+1)*n//P): equal row counts, whatever they hold."""
    indptr = _indptr(matrix)
    n = len(indptr) - 1
    _check_workers(workers, n, "rows")
    bounds = np.arange(workers + 1, dtype=np.int64) * n // workers
    return _contiguous("row_blocks", _row_points(indptr, bounds))


def _chunk_bounds(n: int, chunk: int) -> np.ndarray:
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise WorkloadError(f"chunk must be a positive integer, got {chunk!r}")
    return np.minimum(np.arange(0, n + chunk, chunk, dtype=np.int64), n)


def static_chunks(matrix, workers: int, chunk: int) -> Partition:
    """OpenMP schedule(static, chunk): chunk k of ``chunk`` rows goes to worker k mod P."""
    indptr = _indptr(matrix)
    n = len(indptr) - 1
    _check_workers(workers, n, "rows")
    bounds = _chunk_bounds(n, chunk)
    points = _row_points(indptr, bounds)
    owner = np.arange(len(bounds) - 1) % workers
    return Partition("static_chunks", workers, points[:-1], points[1:], owner)


def dynamic_chunks(matrix, workers: int, chunk: int) -> Partition:
    """OpenMP schedule(dynamic, chunk), simulated: chunks in order, each to the worker with the
    least merged work so far (lowest id on ties) - what dynamic scheduling does when every item
    costs the same."""
    indptr = _indptr(matrix)
    n = len(indptr) - 1
    _check_workers(workers, n, "rows")
    bounds = _chunk_bounds(n, chunk)
    points = _row_points(indptr, bounds)
    sizes = (points[1:] - points[:-1]).sum(axis=1)
    loads = np.zeros(workers, dtype=np.int64)
    owner = np.empty(len(sizes), dtype=np.int64)
    for k, size in enumerate(sizes):
        p = int(np.argmin(loads))
        owner[k] = p
        loads[p] += size
    return Partition("dynamic_chunks", workers, points[:-1], points[1:], owner)


def nnz_split(matrix, workers: int) -> Partition:
    """TACO ``pos`` split: worker p gets nonzeros [p*nnz//P, (p+1)*nnz//P) and the ends of the
    rows that finish inside them (rows are cut wherever the nonzeros are)."""
    indptr = _indptr(matrix)
    nnz = int(indptr[-1])
    _check_workers(workers, nnz, "nonzeros")
    cuts = np.arange(workers + 1, dtype=np.int64) * nnz // workers
    rows = np.searchsorted(indptr[1:], cuts, side="right")  # rows whose last nonzero is before
    rows[0], rows[-1] = 0, len(indptr) - 1  # worker 0 also owns the ends of leading empty rows
    return _contiguous("nnz_split", np.stack([rows, cuts], axis=1))


def _level_end_positions(ptrs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Merge-path position of every unit end, per level (top level first).

    The path walks units depth first; a unit's end comes after all its descendants. The end of
    unit u at level l sits after: the leaves of units 0..u, the ends of all deeper units inside
    units 0..u, the ends of the units 0..u-1 of level l, and the ends of the ancestor levels'
    units that closed before u's ancestor.
    """
    levels = len(ptrs)
    # descend[l][u]: how many level-m units (m > l) and leaves lie inside units 0..u-1 of level l
    positions = []
    for level in range(levels):
        count = len(ptrs[level]) - 1
        boundary = np.arange(count + 1, dtype=np.int64)  # unit boundaries at this level
        deeper = np.zeros(count + 1, dtype=np.int64)
        index = boundary
        for m in range(level, levels):
            index = ptrs[m][index]  # boundaries at level m + 1 (or leaves)
            deeper += index
        # deeper now counts units of levels level+1..L-1 plus leaves before each boundary
        ancestors = np.zeros(count, dtype=np.int64)
        below = np.arange(count, dtype=np.int64)
        for m in range(level - 1, -1, -1):
            below = np.searchsorted(ptrs[m], below, side="right") - 1  # ancestor unit index
            ancestors += below
        positions.append(deeper[1:] + np.arange(count) + ancestors)
    return positions


def merge_path(matrix_or_ptrs, workers: int) -> Partition:
    """Equal merged work per worker: split the merge path at diagonals p * total // P.

    Accepts a CSR/DCSR matrix (one level of rows) or a list of pointer arrays from the top level
    down (``[csf.ptr[0], csf.ptr[1]]`` for CSF): the hierarchical generalization that splits
    every compressed level at once.
    """
    if isinstance(matrix_or_ptrs, (list, tuple)):
        ptrs = [_check_ptr(p, f"pointer array {level}") for level, p in enumerate(matrix_or_ptrs)]
        if not ptrs:
            raise WorkloadError("merge_path: the list of pointer arrays is empty")
        for level in range(len(ptrs) - 1):
            if ptrs[level][-1] != len(ptrs[level + 1]) - 1:
                raise WorkloadError(f"merge_path: pointer array {level} ends at "
                                    f"{int(ptrs[level][-1])} but level {level + 1} has "
                                    f"{len(ptrs[level + 1]) - 1} units")
    else:
        ptrs = [_indptr(matrix_or_ptrs)]
    ends = _level_end_positions(ptrs)
    leaves = int(ptrs[-1][ptrs[-2][-1]] if len(ptrs) > 1 else ptrs[-1][-1])
    total = leaves + sum(len(e) for e in ends)
    _check_workers(workers, total, "merge-path items")
    diagonals = np.arange(workers + 1, dtype=np.int64) * total // workers
    counts = [np.searchsorted(e, diagonals, side="left") for e in ends]
    points = np.stack([*counts, diagonals - sum(counts)], axis=1)
    return _contiguous("merge_path", points)


def weighted_merge_path(matrix, workers: int, nonzero_weights, row_end_weights) -> Partition:
    """Merge path split into equal *weighted* shares: each nonzero and each row end carries its
    own (predicted) cost, e.g. from the load-balance model
    (``perfjax.validate.balance.Calibration.path_weights``), so that workers
    get equal predicted time rather than equal item counts. Segments, counters and kernels are
    those of ``merge_path``; with unit weights the two coincide."""
    indptr = _indptr(matrix)
    n, nnz = len(indptr) - 1, int(indptr[-1])
    try:
        nonzero_weights = np.broadcast_to(np.asarray(nonzero_weights, dtype=float), (nnz,))
        row_end_weights = np.broadcast_to(np.asarray(row_end_weights, dtype=float), (n,))
    except (TypeError, ValueError):
        raise WorkloadError(f"weighted_merge_path: nonzero_weights must be a number or {nnz} "
                            f"numbers (one per nonzero) and row_end_weights a number or {n} "
                            f"(one per row), got shapes {np.shape(nonzero_weights)} and "
                            f"{np.shape(row_end_weights)}") from None
    if not (np.all(np.isfinite(nonzero_weights)) and np.all(np.isfinite(row_end_weights))
            and nonzero_weights.min(initial=0.0) >= 0 and row_end_weights.min(initial=0.0) >= 0):
        raise WorkloadError("weighted_merge_path: weights must be finite and non-negative")
    _check_workers(workers, n + nnz, "merge-path items")
    ends = _level_end_positions([indptr])[0]  # path position of each row end
    path = np.empty(n + nnz)
    is_end = np.zeros(n + nnz, dtype=bool)
    is_end[ends] = True
    path[is_end] = row_end_weights
    path[~is_end] = nonzero_weights
    prefix = np.concatenate([[0.0], np.cumsum(path)])
    if prefix[-1] <= 0:
        raise WorkloadError("weighted_merge_path: the weights sum to zero")
    targets = np.arange(workers + 1) * prefix[-1] / workers
    # the last path point whose weight before it does not exceed the target (for unit weights,
    # merge_path's floor(p * total / P))
    diagonals = np.maximum(np.searchsorted(prefix, targets * (1 + 1e-12), side="right") - 1,
                           0).astype(np.int64)
    diagonals[0], diagonals[-1] = 0, n + nnz
    rows = np.searchsorted(ends, diagonals, side="left")
    points = np.stack([rows, diagonals - rows], axis=1)
    return _contiguous("weighted_merge_path", points)


def merge_path_nway(operands: Sequence, workers: int) -> Partition:
    """Co-iteration of N CSR operands of one shape (SpAdd, SpMul) split at joint coordinates.

    The joint path visits, row by row, the union of the operands' coordinates in column order
    (every operand's nonzero is one item) and then the row's end. A split is a coordinate
    (row, column): everything strictly before it goes left, so all operands are cut at the same
    place and each worker co-iterates whole coordinates. Found by binary search on the
    linearized coordinate so every worker gets p * total // P items, up to N - 1 extra where
    operands share a coordinate at the cut.
    """
    if len(operands) < 1:
        raise WorkloadError("merge_path_nway needs at least one operand")
    shapes = {tuple(op.shape) for op in operands}
    if len(shapes) != 1:
        raise WorkloadError(f"merge_path_nway: operands have different shapes {sorted(shapes)}")
    n_rows, n_cols = shapes.pop()
    keys = []
    for op in operands:
        csr = sp.csr_array(op)
        csr.sort_indices()
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
        keys.append(2 * (rows * n_cols + csr.indices.astype(np.int64)))
    row_end_keys = 2 * (np.arange(1, n_rows + 1, dtype=np.int64) * n_cols) - 1
    total = sum(len(k) for k in keys) + n_rows
    _check_workers(workers, total, "co-iteration items")
    targets = np.arange(workers + 1, dtype=np.int64) * total // workers

    def before(x: np.ndarray) -> np.ndarray:
        return sum(np.searchsorted(k, x, side="left") for k in keys) + \
            np.searchsorted(row_end_keys, x, side="left")

    lo = np.zeros(len(targets), dtype=np.int64)  # smallest key x with before(x) >= target
    hi = np.full(len(targets), 2 * n_rows * n_cols, dtype=np.int64)
    while (lo < hi).any():
        mid = (lo + hi) // 2
        enough = before(mid) >= targets
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    points = np.stack([np.searchsorted(row_end_keys, lo, side="left"),
                       *[np.searchsorted(k, lo, side="left") for k in keys]], axis=1)
    return _contiguous("merge_path_nway", points)


def partition(strategy: str, matrix, workers: int, chunk: int = 1) -> Partition:
    """Dispatch by name (one of STRATEGIES); ``chunk`` is used by the chunked strategies."""
    if strategy == "row_blocks":
        return row_blocks(matrix, workers)
    if strategy == "static_chunks":
        return static_chunks(matrix, workers, chunk)
    if strategy == "dynamic_chunks":
        return dynamic_chunks(matrix, workers, chunk)
    if strategy == "nnz_split":
        return nnz_split(matrix, workers)
    if strategy == "merge_path":
        return merge_path(matrix, workers)
    raise WorkloadError(f"unknown partition strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
