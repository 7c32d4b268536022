"""Load-balance model: per-worker work and time of a partitioned sparse kernel, in pure JAX.

Given a matrix's row lengths (``SparseStats``), a partition strategy, a worker count and a chunk
size, ``worker_work`` computes exactly what each worker processes on the merge path (rows, i.e.
row ends, and nonzeros), how many segments it starts, how many binary-search steps it spends
finding its split and whether it must fix up a row cut by its split. These are the same counters
the partitioners in ``perfjax.schedulers.partition`` produce and the instrumented kernels count.
Given per-row predicted misses (``perfjax.workloads.row_misses``: the dense operand's gathers
that miss the L1 cache, row ends whose loop exit the branch predictor gets wrong, and gathers
that miss the L2 cache too), it also sums each worker's misses of every kind (prorated inside a
row cut by a split). ``predict`` turns them into per-worker times with a ``BalanceCost`` pytree
whose every term can be calibrated (and differentiated). Everything is jit- and vmap-friendly:
strategies, worker counts and matrices batch together (row lengths padded with zeros;
``max_workers`` static).

``relaxed_work`` is the differentiable variant: continuous split diagonals in, piecewise-linear
work out, for gradient search over split points.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from perfjax.errors import WorkloadError, check_integer

STRATEGY_CODES = {"row_blocks": 0, "static_chunks": 1, "dynamic_chunks": 2, "nnz_split": 3,
                  "merge_path": 4}


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BalanceCost:
    """Seconds per counted item; every field is a leaf a calibration can fit."""

    per_nnz: Any = 1e-9
    per_row: Any = 1e-9
    per_segment: Any = 0.0
    per_search: Any = 0.0
    fixup: Any = 0.0
    launch: Any = 0.0
    per_miss: Any = 0.0  # per gather of the dense operand that misses the L1 cache
    per_branch_miss: Any = 0.0  # per row end whose loop exit is mispredicted
    per_l2_miss: Any = 0.0  # per gather that misses the L2 cache too (on top of per_miss)

    def __post_init__(self) -> None:
        # Leaves may be tracers, arrays or (as vmap axis specs) None / ints: only values that can
        # never be a cost are refused here, where a raw error would surface much later.
        for term in COST_TERMS:
            value = getattr(self, term)
            if isinstance(value, (str, bytes, complex)) or (
                    isinstance(value, (float, np.floating)) and not math.isfinite(value)):
                raise WorkloadError(f"BalanceCost.{term} must be a finite number of seconds, "
                                    f"got {value!r}")

    @staticmethod
    def from_vector(v: Any) -> "BalanceCost":
        return BalanceCost(*[v[i] for i in range(len(COST_TERMS))])

    def vector(self) -> jax.Array:
        return jnp.stack([jnp.asarray(getattr(self, term), dtype=float) for term in COST_TERMS])


COST_TERMS = ("per_nnz", "per_row", "per_segment", "per_search", "fixup", "launch", "per_miss",
              "per_branch_miss", "per_l2_miss")
"""BalanceCost's fields in ``vector`` order, the columns of ``WorkerWork.features``."""
MISS_KINDS = 3  # columns of row misses: L1-missing gathers, mispredicted row ends, L2-missing
# gathers (``row_misses`` of two columns, without the last, are taken with it zero)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class WorkerWork:
    """Per-worker counters, [max_workers] each (workers >= P hold zeros)."""

    rows: Any
    nnz: Any
    segments: Any
    searches: Any
    partial: Any
    misses: Any  # float [..., MISS_KINDS]: predicted cache and branch misses (0 unless given)
    active: Any  # bool: p < P

    def features(self) -> jax.Array:
        """[max_workers, len(COST_TERMS)] counters in BalanceCost's order (launch counts 1 per
        active worker)."""
        counters = jnp.stack([self.nnz, self.rows, self.segments, self.searches, self.partial,
                              self.active], axis=-1).astype(float)
        return jnp.concatenate([counters, jnp.asarray(self.misses, dtype=float)], axis=-1)


def _log2_ceil(x: jax.Array) -> jax.Array:
    return jnp.ceil(jnp.log2(jnp.maximum(x, 1).astype(float) + 1.0))


def _miss_tables(row_misses: Any, padded: int, batched: bool = False) -> tuple[Any, Any]:
    """(prefix sums [..., padded+1, K], per-row misses with a zero row appended [..., padded+1,
    K]) from row misses [..., rows] (L1 cache misses only), [..., rows, 2] (no L2 misses) or
    [..., rows, K]; (None, None) without them: the miss counters are then zeros and cost
    nothing."""
    if row_misses is None:
        return None, None
    row_misses = jnp.asarray(row_misses, dtype=float)
    if row_misses.ndim == 1 + batched:
        row_misses = row_misses[..., None]
    if row_misses.ndim == 2 + batched and row_misses.shape[-1] < MISS_KINDS:
        row_misses = jnp.concatenate([row_misses, jnp.zeros(
            row_misses.shape[:-1] + (MISS_KINDS - row_misses.shape[-1],))], axis=-1)
    if row_misses.shape[-1] != MISS_KINDS:
        raise WorkloadError(f"row misses need {MISS_KINDS} columns, got shape "
                            f"{row_misses.shape}")
    if row_misses.ndim != 2 + batched or row_misses.shape[-2] > padded:
        raise WorkloadError(f"row misses must be [{'matrices, ' * batched}rows] or "
                            f"[{'matrices, ' * batched}rows, {MISS_KINDS}] with at most {padded} "
                            f"rows (those of the row lengths), got shape {row_misses.shape}")
    pad = [(0, 0)] * (row_misses.ndim - 2) + [(0, padded + 1 - row_misses.shape[-2]), (0, 0)]
    row_misses = jnp.pad(row_misses, pad)
    prefix = jnp.concatenate([jnp.zeros(row_misses.shape[:-2] + (1, MISS_KINDS)),
                              jnp.cumsum(row_misses[..., :-1, :], axis=-2)], axis=-2)
    return prefix, row_misses


def _misses_at(prefix: Any, row_misses: Any, indptr: jax.Array, rows: jax.Array,
               position: jax.Array) -> jax.Array:
    """Misses before nonzero ``position`` lying in row ``rows``: whole rows before it, plus the
    row's misses prorated by the share of its nonzeros before the position (0 without misses)."""
    if prefix is None:
        return jnp.zeros(rows.shape + (MISS_KINDS,))
    # rows may be the one past the last (the appended zero row): its next boundary is the last
    following = indptr[jnp.minimum(rows + 1, indptr.shape[-1] - 1)]
    done = (position - indptr[rows]) / jnp.maximum(following - indptr[rows], 1)
    return prefix[rows] + row_misses[rows] * jnp.clip(done, 0.0, 1.0)[..., None]


def worker_work(row_lengths: jax.Array, n_rows: jax.Array, strategy: jax.Array, workers: jax.Array,
                chunk: jax.Array, max_workers: int, row_misses: Any = None) -> WorkerWork:
    """Exact per-worker counters for one (matrix, strategy, P, chunk); see module docstring.
    ``row_misses`` ([rows] L1 cache misses, [rows, 2] with branch misses too, or [rows, 3] with
    L2 cache misses as well, from ``perfjax.workloads.row_misses``; rows padded like
    ``row_lengths``) adds each worker's predicted misses; without it they are 0.

    Preconditions (this function is traced under jit and vmap, so it cannot check values; the
    eager ``evaluate`` and ``evaluate_grid`` do): 1 <= ``workers`` <= ``max_workers``,
    ``strategy`` a code of STRATEGY_CODES (a traced code out of range is clamped), ``chunk`` >= 1,
    ``n_rows`` <= len(row_lengths) with zero lengths past it, ``row_misses`` covering the n_rows
    rows."""
    row_lengths = jnp.asarray(row_lengths, dtype=jnp.int64)
    padded = row_lengths.shape[0]
    indptr = jnp.concatenate([jnp.zeros(1, jnp.int64), jnp.cumsum(row_lengths)])
    miss_prefix, miss_rows = _miss_tables(row_misses, padded)
    nnz = indptr[-1]
    n = jnp.asarray(n_rows, jnp.int64)
    P = jnp.asarray(workers, jnp.int64)
    p = jnp.arange(max_workers + 1, dtype=jnp.int64)
    active = p[:-1] < P
    ends = indptr[1:] + jnp.arange(padded)  # merge-path position of each row end

    def contiguous(rows_at, nnz_at, searches, partial):
        rows_at, nnz_at = rows_at.astype(jnp.int64), nnz_at.astype(jnp.int64)
        rows_at = jnp.where(p <= P, rows_at, rows_at[jnp.minimum(P, max_workers)])
        nnz_at = jnp.where(p <= P, nnz_at, nnz_at[jnp.minimum(P, max_workers)])
        zero = jnp.zeros(max_workers, jnp.int64)
        misses = _misses_at(miss_prefix, miss_rows, indptr, rows_at, nnz_at)
        return (jnp.diff(rows_at), jnp.diff(nnz_at), active.astype(jnp.int64),
                jnp.where(active, searches, zero), jnp.where(active, partial, zero),
                jnp.diff(misses, axis=0))

    def row_blocks():
        bounds = jnp.minimum(p, P) * n // P
        return contiguous(bounds, indptr[bounds], jnp.zeros(max_workers, jnp.int64),
                          jnp.zeros(max_workers, jnp.int64))

    def nnz_split():
        cuts = jnp.minimum(p, P) * nnz // P
        rows = jnp.minimum(jnp.searchsorted(indptr[1:], cuts, side="right").astype(jnp.int64), n)
        rows = jnp.where(cuts >= nnz, n, jnp.where(p == 0, 0, rows))  # leading empty rows: worker 0
        partial = (cuts[:-1] > indptr[rows[:-1]]).astype(jnp.int64)
        return contiguous(rows, cuts, jnp.broadcast_to(_log2_ceil(n).astype(jnp.int64), (max_workers,)),
                          partial)

    def merge_path():
        diagonals = jnp.minimum(p, P) * (n + nnz) // P
        rows = jnp.searchsorted(ends, diagonals, side="left").astype(jnp.int64)
        cols = diagonals - rows
        partial = (cols[:-1] > indptr[rows[:-1]]).astype(jnp.int64)
        return contiguous(rows, cols, jnp.broadcast_to(_log2_ceil(n).astype(jnp.int64), (max_workers,)),
                          partial)

    chunk = jnp.maximum(jnp.asarray(chunk, jnp.int64), 1)
    k = jnp.arange(padded, dtype=jnp.int64)  # chunk index (at most one chunk per row)
    start = jnp.minimum(k * chunk, n)
    stop = jnp.minimum((k + 1) * chunk, n)
    chunk_rows = stop - start
    chunk_nnz = indptr[stop] - indptr[start]
    chunk_misses = (jnp.zeros(stop.shape + (MISS_KINDS,)) if miss_prefix is None
                    else miss_prefix[stop] - miss_prefix[start])
    nonempty = chunk_rows > 0

    def owned(owner):
        def total(x):
            keep = nonempty.reshape(nonempty.shape + (1,) * (x.ndim - 1))
            return jax.ops.segment_sum(jnp.where(keep, x, 0), owner, num_segments=max_workers)
        zero = jnp.zeros(max_workers, jnp.int64)
        return (total(chunk_rows), total(chunk_nnz), total(jnp.ones_like(chunk_rows)), zero, zero,
                total(chunk_misses))

    def static_chunks():
        return owned(k % P)

    def dynamic_chunks():
        size = chunk_rows + chunk_nnz
        big = jnp.iinfo(jnp.int64).max

        def step(loads, i):
            target = jnp.argmin(loads)
            take = nonempty[i]
            loads = loads.at[target].add(jnp.where(take, size[i], 0))
            return loads, target

        loads0 = jnp.where(active, 0, big)
        _, owner = jax.lax.scan(step, loads0, k)
        return owned(owner)

    branches = [row_blocks, static_chunks, dynamic_chunks, nnz_split, merge_path]
    if isinstance(strategy, str):
        strategy = _strategy_code(strategy)
    if isinstance(strategy, int):  # known when tracing: build only that strategy's graph
        counters = branches[_check_code(strategy)]()
    else:
        counters = jax.lax.switch(jnp.asarray(strategy), branches)
    return WorkerWork(*counters, active)


worker_work_jit = jax.jit(worker_work, static_argnames=("max_workers",))
"""``worker_work`` compiled; pass ``strategy`` as an array (one graph for every strategy)."""


def predict(cost: BalanceCost, work: WorkerWork) -> dict:
    """Per-worker times, makespan (the slowest active worker) and imbalance of merged work."""
    if not isinstance(cost, BalanceCost) or not isinstance(work, WorkerWork):
        raise WorkloadError(f"predict takes a BalanceCost and a WorkerWork (from worker_work), got "
                            f"{type(cost).__name__} and {type(work).__name__}")
    # term by term: one fused elementwise loop (a [workers, 9] @ [9] product is a slow small
    # reduction on the CPU)
    counters = (work.nnz, work.rows, work.segments, work.searches, work.partial, work.active)
    misses = jnp.asarray(work.misses, dtype=float)
    times = sum(jnp.asarray(x, dtype=float) * jnp.asarray(getattr(cost, term), dtype=float)
                for x, term in zip(counters + tuple(misses[..., k] for k in range(MISS_KINDS)),
                                   COST_TERMS))
    times = jnp.where(work.active, times, 0.0)
    items = (work.rows + work.nnz).astype(float)
    count = jnp.maximum(work.active.sum(), 1)
    mean_items = jnp.sum(jnp.where(work.active, items, 0.0)) / count
    return {"times": times, "makespan": jnp.max(times),
            "imbalance": jnp.max(items) / jnp.maximum(mean_items, 1e-30)}


def relaxed_work(row_lengths: jax.Array, diagonals: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rows and nonzeros per worker for continuous merge-path diagonals (sorted, 0 .. n+nnz).

    Row ends and nonzeros before a diagonal are interpolated linearly between the path's row-end
    positions, so work is differentiable in the diagonals (exact where a diagonal sits just after
    a row end).
    """
    row_lengths = jnp.asarray(row_lengths, dtype=float)
    n = row_lengths.shape[0]
    ends = jnp.cumsum(row_lengths) + jnp.arange(n)  # position of each row end
    knots = jnp.concatenate([jnp.zeros(1), ends + 1.0])
    rows_before = jnp.interp(diagonals, knots, jnp.arange(n + 1, dtype=float))
    nnz_before = diagonals - rows_before
    return jnp.diff(rows_before), jnp.diff(nnz_before)


def _strategy_code(name: str) -> int:
    if name not in STRATEGY_CODES:
        raise WorkloadError(f"unknown strategy {name!r} (known: {', '.join(STRATEGY_CODES)})")
    return STRATEGY_CODES[name]


def _check_code(code: int) -> int:
    """``code`` unless it is no strategy code (WorkloadError listing them)."""
    if not 0 <= code < len(STRATEGY_CODES):
        raise WorkloadError(f"strategy code {code} is out of range (0..{len(STRATEGY_CODES) - 1}: "
                            f"{', '.join(STRATEGY_CODES)})")
    return code


def _check_max_workers(max_workers: Any) -> None:
    check_integer(max_workers, "max_workers", 1, error=WorkloadError)


def _concrete_int(value: Any, what: str) -> int | None:
    """``value`` as an int when concrete (None when traced), or a WorkloadError naming ``what``
    unless it is an integer scalar (bools and floats such as 2.7 are refused, not truncated)."""
    if isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    if array.ndim != 0 or not np.issubdtype(array.dtype, np.integer):
        raise WorkloadError(f"{what} must be an integer, got {value!r}")
    return int(array)


def _check_config(row_lengths, n_rows, strategy, workers, chunk, max_workers, row_misses) -> Any:
    """The checks ``worker_work`` cannot do under jit, on whichever arguments are concrete
    (traced ones, as in ``evaluate_batch``, are the caller's responsibility). Returns the
    strategy, a name mapped to its code."""
    _check_max_workers(max_workers)
    if isinstance(strategy, str):
        strategy = _strategy_code(strategy)
    code = _concrete_int(strategy, "strategy")
    if code is not None:
        _check_code(code)
    P = _concrete_int(workers, "workers")
    if P is not None and not 1 <= P <= max_workers:
        raise WorkloadError(f"workers={P} must lie in [1, max_workers={max_workers}]")
    c = _concrete_int(chunk, "chunk")
    if c is not None and c < 1:
        raise WorkloadError(f"chunk must be >= 1, got {c}")
    n = _concrete_int(n_rows, "n_rows")
    lengths = None if isinstance(row_lengths, jax.core.Tracer) else np.asarray(row_lengths)
    if lengths is not None:
        if lengths.ndim != 1:
            raise WorkloadError(f"row_lengths must be 1-D, got shape {lengths.shape}")
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        # a traced n_rows: check the lengths only (every row counts)
        _check_rows(lengths[None], indptr[None], np.array([len(lengths) if n is None else n]))
    if row_misses is not None and not isinstance(row_misses, jax.core.Tracer):
        rows = np.shape(row_misses)[0] if np.ndim(row_misses) else 0
        if n is not None and rows < n:
            raise WorkloadError(f"row_misses has {rows} rows but the matrix has n_rows={n}")
    return strategy


def evaluate(row_lengths, n_rows, strategy, workers, chunk, cost: BalanceCost, max_workers: int,
             row_misses: Any = None) -> dict:
    """worker_work + predict for one configuration (vmap it over batches).

    Concrete arguments are checked (WorkloadError): 1 <= workers <= max_workers, strategy a code
    or name of STRATEGY_CODES, integer workers and chunk >= 1, n_rows consistent with the row
    lengths, row misses covering its rows. Traced ones (``evaluate_batch``) are not: see
    ``worker_work``'s preconditions."""
    strategy = _check_config(row_lengths, n_rows, strategy, workers, chunk, max_workers,
                             row_misses)
    work = worker_work(row_lengths, n_rows, strategy, workers, chunk, max_workers, row_misses)
    return {**predict(cost, work), "work": work}


evaluate_batch = jax.jit(
    jax.vmap(evaluate, in_axes=(0, 0, 0, 0, 0, None, None, 0)), static_argnums=(6,))
"""``evaluate`` over a batch of (row_lengths, n_rows, strategy, workers, chunk, row_misses) rows
(``row_misses`` an array batch, or None for no miss term)."""


class GridInput(NamedTuple):
    """Per-matrix prefix sums the grid evaluation reads (``prepare``): computed once per matrix
    set and reused by every strategy, worker count, chunk and cost vector evaluated on it."""

    indptr: jax.Array  # int64 [matrices, padded rows + 1]
    ends: jax.Array  # int64 [matrices, padded rows]: merge-path position of each row end
    n_rows: jax.Array  # int64 [matrices]
    miss_prefix: Any  # float [matrices, padded rows + 1, 2]: misses before a row; or None
    row_misses: Any  # float [matrices, padded rows + 1, 2]: per row (a zero row appended)
    max_work: int = -1  # the largest matrix's rows + nonzeros (merged work); -1: unknown


def prepare(stats, row_misses: Any = None) -> GridInput:
    """Prefix sums of a (batched or single) SparseStats' row lengths, for ``evaluate_grid``;
    ``row_misses`` ([matrices, rows] or [matrices, rows, MISS_KINDS], rows padded with zeros,
    from ``perfjax.workloads.row_misses``) enables the miss terms."""
    if isinstance(stats, (list, tuple)) or not (hasattr(stats, "row_lengths")
                                                and hasattr(stats, "n_rows")):
        raise WorkloadError(f"expected SparseStats (perfjax.workloads.sparse.stats, several "
                            f"stacked with stack_stats), got {type(stats).__name__}")
    lengths = np.asarray(stats.row_lengths, dtype=np.int64)
    if lengths.ndim not in (1, 2):
        raise WorkloadError(f"row_lengths must be [rows] or [matrices, rows], got shape "
                            f"{lengths.shape}")
    single = lengths.ndim == 1
    lengths = lengths[None] if single else lengths
    indptr = np.zeros((lengths.shape[0], lengths.shape[1] + 1), dtype=np.int64)
    np.cumsum(lengths, axis=1, out=indptr[:, 1:])
    n_rows = np.atleast_1d(np.asarray(stats.n_rows, np.int64))
    _check_rows(lengths, indptr, n_rows)
    ends = indptr[:, 1:] + np.arange(lengths.shape[1], dtype=np.int64)
    if row_misses is not None:
        row_misses = np.asarray(row_misses, dtype=float)
        row_misses = row_misses[None] if single else row_misses
        if row_misses.ndim < 2 or row_misses.shape[0] != lengths.shape[0] \
                or row_misses.shape[1] < n_rows.max():
            raise WorkloadError(f"row_misses must cover the {lengths.shape[0]} matrices' rows "
                                f"(at least {int(n_rows.max())}), got shape {row_misses.shape}")
        # rows past a matrix's end hold no work: no misses either (chunk sums read past it)
        inside = np.arange(row_misses.shape[1])[None, :] < n_rows[:, None]
        row_misses = row_misses * inside.reshape(inside.shape + (1,) * (row_misses.ndim - 2))
    prefix, per_row = _miss_tables(row_misses, lengths.shape[1], batched=True)
    return GridInput(jnp.asarray(indptr), jnp.asarray(ends), jnp.asarray(n_rows), prefix, per_row,
                     int(np.max(indptr[:, -1] + n_rows)))


def _check_rows(lengths: np.ndarray, indptr: np.ndarray, n_rows: np.ndarray) -> None:
    """WorkloadError unless every matrix's n_rows fits its padded row lengths [matrices, rows],
    which hold no nonzero past it, and no length is negative (one pass for the sign, then
    O(matrices) on the prefix sums)."""
    if n_rows.shape != (lengths.shape[0],):
        raise WorkloadError(f"n_rows has shape {n_rows.shape} for {lengths.shape[0]} matrices")
    if lengths.size and lengths.min() < 0:
        raise WorkloadError(f"row lengths must be non-negative, found {lengths.min()}")

    def where(m: int) -> str:
        return f"matrix {m}: " if lengths.shape[0] > 1 else ""

    bad = np.nonzero((n_rows < 0) | (n_rows > lengths.shape[1]))[0]
    if len(bad):
        raise WorkloadError(f"{where(bad[0])}n_rows={n_rows[bad[0]]} does not fit the "
                            f"{lengths.shape[1]} row lengths")
    past = np.nonzero(np.take_along_axis(indptr, n_rows[:, None], axis=1)[:, 0]
                      != indptr[:, -1])[0]
    if len(past):
        n = n_rows[past[0]]
        raise WorkloadError(f"{where(past[0])}n_rows={n} but the row lengths hold nonzero "
                            f"lengths past row {n}")


def _int_tuple(values: Any, what: str) -> tuple:
    """A tuple of ints from a scalar or 1-D sequence of integers (2.7, nan, 'a' are refused)."""
    if isinstance(values, (list, tuple)) and all(type(v) is int for v in values):
        return tuple(values)  # the common case, without numpy's conversions (~20 us a call)
    array = np.atleast_1d(np.asarray(values))
    if array.size == 0:
        return ()
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise WorkloadError(f"{what} must be integers, got {values!r}")
    return tuple(int(v) for v in array)


def evaluate_grid(stats, strategies, workers, chunks, cost: BalanceCost, max_workers: int = 64) -> dict:
    """Every (matrix, strategy, worker count, chunk) combination at once.

    ``stats`` is a batched SparseStats (``perfjax.workloads.stack_stats``) or its ``prepare``d
    prefix sums (pass those when evaluating the same matrices many times); ``strategies`` names
    from STRATEGY_CODES; ``workers`` and ``chunks`` integers (compile-time constants: one
    compiled program per distinct tuple). Returns arrays shaped [matrices, strategies, workers,
    chunks]: ``makespan``, ``imbalance``, and ``times`` with a trailing [max_workers] axis. The
    counters equal ``worker_work``'s exactly; the computation is organized for throughput: the
    split diagonals of all worker counts go through one binary search per matrix, chunks are
    read off the prefix sums by strided slices, static chunks are strided sums (one pass folded
    for every worker count when their lcm is small), and dynamic chunks one greedy scan for all
    matrices and worker counts together, the matrices' chunk sequences packed end to end into a
    few lanes (int32 keys when the matrices are small enough: ``prepare`` records their size).
    The strategies asked for share one compiled program (strategy names, worker counts and
    chunk sizes are part of its cache key).
    ``cost=None`` returns the counters unpriced instead (``grid_features``).
    """
    if isinstance(strategies, str):
        raise WorkloadError(f"strategies must be a list of names, got the string {strategies!r} "
                            f"(pass [{strategies!r}])")
    try:
        names = list(strategies)
    except TypeError:
        raise WorkloadError(f"strategies must be a list of names, got {strategies!r}") from None
    if not names:
        raise WorkloadError(f"strategies is empty (known: {', '.join(STRATEGY_CODES)})")
    unknown = [n for n in names if not isinstance(n, str) or n not in STRATEGY_CODES]
    if unknown:
        raise WorkloadError(f"unknown strategies {unknown} (known: {', '.join(STRATEGY_CODES)})")
    _check_max_workers(max_workers)
    workers_t = _int_tuple(workers, "worker counts")
    chunks_t = _int_tuple(chunks, "chunk sizes")
    if not workers_t or min(workers_t) < 1:
        raise WorkloadError(f"worker counts must be >= 1, got {list(workers_t)}")
    if max(workers_t) > max_workers:
        raise WorkloadError(f"worker count {max(workers_t)} exceeds max_workers={max_workers}")
    if not chunks_t or min(chunks_t) < 1:
        raise WorkloadError(f"chunk sizes must be >= 1, got {list(chunks_t)}")
    grid = stats if isinstance(stats, GridInput) else prepare(stats)
    codes = tuple(STRATEGY_CODES[n] for n in names)
    bits = _key_bits(grid.max_work, max_workers)
    # One compiled program for the strategies asked for: measured on 15 real matrices x 7 worker
    # counts, all five in one program took 2.4 ms (3.0 ms with the miss terms), five programs
    # joined by a concatenation 3.2 ms (4.2 ms).
    lanes, packs = 0, ()
    if STRATEGY_CODES["dynamic_chunks"] in codes:
        rows = tuple(int(r) for r in np.asarray(grid.n_rows))
        lanes, packs = _lane_packing(rows, grid.indptr.shape[1] - 1, chunks_t)
    return _grid_program(codes, workers_t, chunks_t, max_workers, cost is None, bits, lanes)(
        grid.indptr, grid.ends, grid.n_rows, grid.miss_prefix, grid.row_misses, cost, packs)


@functools.lru_cache(maxsize=64)
def _lane_packing(rows: tuple, padded: int, chunks: tuple) -> tuple[int, tuple]:
    """How dynamic chunks' greedy scan packs the matrices' chunk sequences end to end into
    ``lanes`` lanes (first fit, largest matrix first, each lane holding at most ``padded`` rows),
    so the scan runs ceil(padded / chunk) + matrices steps over a few lanes instead of one lane
    per matrix. Per chunk size: (matrix [S, lanes], chunk [S, lanes], step in use [S, lanes], keys
    reset [S, lanes], step of each matrix's chunk k [matrices, K], lane of each matrix
    [matrices]) as jax index arrays (built once per matrix set: cached by row counts). Steps past
    a lane's last chunk carry empty chunks."""
    order = sorted(range(len(rows)), key=lambda m: -rows[m])
    bins: list[list[int]] = []
    room: list[int] = []
    for m in order:
        for b, free in enumerate(room):
            if rows[m] <= free:
                bins[b].append(m)
                room[b] -= rows[m]
                break
        else:
            bins.append([m])
            room.append(padded - rows[m])
    lane_of = np.zeros(len(rows), np.int64)
    for b, members in enumerate(bins):
        lane_of[members] = b
    packs = []
    for chunk in chunks:
        count = -(-padded // chunk)  # chunks per matrix in the unpacked layout (K)
        steps = count + len(rows)  # >= sum over a lane of ceil(rows / chunk)
        matrix = np.zeros((steps, len(bins)), np.int64)
        index = np.zeros((steps, len(bins)), np.int64)
        used = np.zeros((steps, len(bins)), bool)
        reset = np.zeros((steps, len(bins)), bool)
        step_of = np.zeros((len(rows), count), np.int64)
        for b, members in enumerate(bins):
            t = 0
            for m in members:
                k = -(-rows[m] // chunk)
                matrix[t:t + k, b], index[t:t + k, b], used[t:t + k, b] = m, np.arange(k), True
                reset[t, b] = True
                step_of[m, :k] = np.arange(t, t + k)  # chunks past the end: empty, any step
                t += k
        packs.append(tuple(jnp.asarray(a) for a in (matrix, index, used, reset, step_of,
                                                     lane_of)))
    return len(bins), tuple(packs)


def _idle_load(key_bits: int, max_workers: int) -> int:
    """The load given to workers beyond P in dynamic chunks' greedy keys (load * max_workers +
    id): above any real load, with its key still inside the key type."""
    return 2 ** 30 // max_workers if key_bits == 32 else 2 ** 56


def _key_bits(max_work: int, max_workers: int) -> int:
    """32 when every active worker's key stays below an idle worker's in int32 (loads up to the
    largest matrix's merged work ``max_work``; -1 when unknown), else 64."""
    return 32 if 0 <= max_work < _idle_load(32, max_workers) - 1 else 64


def grid_features(stats, strategies, workers, chunks, max_workers: int = 64) -> jax.Array:
    """The counters ``evaluate_grid`` prices, as features [matrices, strategies, workers, chunks,
    max_workers, len(COST_TERMS)] (zero rows for workers >= P): the partitions do not depend on
    the cost, so a calibration, a sensitivity study or a gradient search over cost terms computes
    them once and prices them with ``price_grid`` for every cost vector."""
    return evaluate_grid(stats, strategies, workers, chunks, None, max_workers)


@jax.jit
def price_grid(features: jax.Array, costs: jax.Array) -> jax.Array:
    """Makespans [..., K] of ``grid_features`` output under K cost vectors ([K, len(COST_TERMS)],
    rows in ``BalanceCost.vector`` order): each configuration's slowest worker per cost vector.
    Equals ``evaluate_grid(...)["makespan"]`` for each cost; linear (and differentiable) in it."""
    costs = jnp.asarray(costs)
    if costs.ndim != 2 or costs.shape[1] != features.shape[-1]:  # shapes: checked when tracing
        raise WorkloadError(f"price_grid: costs must be [K, {features.shape[-1]}] (cost vectors in "
                            f"BalanceCost.vector order), got shape {costs.shape}")
    times = jnp.einsum("...pf,kf->...pk", features, jnp.asarray(costs, dtype=features.dtype))
    return jnp.max(times, axis=-2)  # idle workers have zero features: time 0, as in predict


def _chunk_sizes(indptr: jax.Array, n_rows: jax.Array, miss_prefix: Any, chunk: int) -> tuple:
    """Rows, nonzeros and misses (None without them) of each of the ceil(padded / chunk) chunks
    of ``chunk`` rows of matrices [..., padded + 1] prefix sums with ``n_rows`` rows ([...] ->
    [..., chunks]; chunks past a matrix's end are empty). The prefix sums are read at every
    chunk-th row by a strided slice, not a gather: they are flat past ``n_rows`` (``prepare``
    leaves no work there), so the slice's last chunk boundaries need no clamping."""
    padded = indptr.shape[-1] - 1
    count = -(-padded // chunk)

    def bounds(table):  # table at rows 0, chunk, ..., count * chunk (the last row past the end)
        strided = table[..., ::chunk] if table.ndim == indptr.ndim else table[..., ::chunk, :]
        # materialized before use: fused into its consumers (the differences below), the
        # strided read ran 2x slower (measured in isolation)
        strided = jax.lax.optimization_barrier(strided)
        if strided.shape[indptr.ndim - 1] < count + 1:
            last = table[..., -1:] if table.ndim == indptr.ndim else table[..., -1:, :]
            strided = jnp.concatenate([strided, last], axis=indptr.ndim - 1)
        return strided

    k = jnp.arange(count + 1, dtype=jnp.int64)
    row_at = jnp.minimum(k * chunk, jnp.asarray(n_rows)[..., None])
    nnz_at = bounds(indptr)
    misses = None
    if miss_prefix is not None:
        at = bounds(miss_prefix)
        misses = at[..., 1:, :] - at[..., :-1, :]
    return jnp.diff(row_at, axis=-1), jnp.diff(nnz_at, axis=-1), misses


def _lcm_groups(workers: tuple, bound: int) -> list[tuple[int, list[int]]]:
    """Worker counts grouped so that each group's lcm (its period) stays <= ``bound`` where it
    can: greedily, largest count first, each joining the first group it keeps within the bound.
    Static chunks' strided sums then take one pass over the chunks per group ((1, 2, 4, ..., 64):
    one group; 1..64: a handful instead of 64)."""
    groups: list[tuple[int, list[int]]] = []
    for w in sorted(set(workers), reverse=True):
        for g, (period, members) in enumerate(groups):
            joined = math.lcm(period, w)
            if joined <= bound:
                groups[g] = (joined, members + [w])
                break
        else:
            groups.append((w, [w]))
    return groups


def _greedy_heads(add: jax.Array, restart_next: jax.Array, keys0: jax.Array) -> jax.Array:
    """The greedy chain of dynamic chunks: lanes of sorted keys [lanes, workers] (load *
    workers + id, ascending; ``keys0`` at a matrix's start); step t pops each lane's first key
    (its least loaded worker), adds ``add[t]`` (the chunk's work times the worker count) and
    inserts it back in order, then resets the lanes flagged in ``restart_next[t]`` to
    ``keys0``. Returns the popped keys [steps, lanes] (owner = key % workers)."""
    top = jnp.asarray(jnp.iinfo(keys0.dtype).max, keys0.dtype)

    def step(keys, inputs):
        chunk_add, restart = inputs
        head = keys[:, :1]
        pushed = head + chunk_add[:, None]
        rest = keys[:, 1:]
        below = jnp.concatenate([rest, jnp.broadcast_to(top, head.shape)], axis=1)
        above = jnp.concatenate([jnp.broadcast_to(-top, head.shape), rest], axis=1)
        keys = jnp.maximum(above, jnp.minimum(below, pushed))  # the sorted insert
        return jnp.where(restart[:, None], keys0, keys), head[:, 0]

    return jax.lax.scan(step, keys0, (add, restart_next))[1]


# One program per strategy tuple x worker tuple x chunk tuple x key width.
@functools.lru_cache(maxsize=128)
def _grid_program(codes: tuple, workers: tuple, chunks: tuple, max_workers: int,
                  counters_only: bool = False, key_bits: int = 64, lanes: int = 0):
    P = np.asarray(workers, dtype=np.int64)  # [W]
    W, C = len(workers), len(chunks)
    p = np.arange(max_workers + 1, dtype=np.int64)
    clamped = np.minimum(p[None, :], P[:, None])  # [W, maxP+1]: boundaries past P repeat P's
    active = p[None, :-1] < P[:, None]  # [W, maxP]
    # One flat, static list of the distinct split diagonals of every worker count.
    offsets = np.concatenate([[0], np.cumsum(P + 1)[:-1]])
    flat_p = np.concatenate([np.arange(w + 1) for w in workers])
    flat_P = np.repeat(P, P + 1)
    expand = offsets[:, None] + clamped  # [W, maxP+1] index into the flat list
    zero = jnp.zeros((W, max_workers), jnp.int64)

    dynamic_chunk_sizes = chunks if 2 in codes else ()

    def greedy_totals(indptr, n_rows, miss_prefix, packs):
        """Dynamic chunks' per-worker totals for every chunk size: ([matrices, W, max_workers,
        3] rows, nonzeros and chunks taken; [matrices, W, max_workers, MISS_KINDS] misses or
        None), all matrices and worker counts in one greedy scan per chunk size: chunks in
        order, each to the least loaded worker (lowest id on ties). Loads and worker id share
        one key (load * max_workers + id, unique per worker). Each lane, a (worker count,
        packed lane) pair, keeps its keys sorted, [lanes, max_workers]: a step pops the first
        (the least loaded worker, the chunk's owner) and inserts it back with the chunk's work
        added by a branch-free sorted insert (a max of a min against the neighbours), all
        elementwise, so the step is one fused loop with no reduction (3x faster than a min over
        unsorted keys, measured). A packed lane runs several matrices' chunk sequences one after
        another (``_lane_packing``; the keys reset where a matrix starts), so the scan's length
        follows the matrices' total rows, not their count times the largest (15 real matrices:
        4 lanes instead of 15). Each chunk's rows, nonzeros and misses are then added to its
        owner's totals by one segment sum. int32 keys where ``key_bits`` allows."""
        kd = jnp.int32 if key_bits == 32 else jnp.int64
        M = indptr.shape[0]
        idle = _idle_load(key_bits, max_workers)  # workers beyond P: never the minimum
        ids = np.arange(max_workers)[None, :]
        keys0 = np.where(active, 0, idle) * max_workers + ids  # [W, maxP], sorted per row
        keys0 = jnp.asarray(np.repeat(keys0, lanes, axis=0), dtype=kd)  # lane w * lanes + b
        totals = []
        for chunk, (matrix, index, used, reset, _, _) in zip(dynamic_chunk_sizes, packs):
            chunk_rows, chunk_nnz, chunk_misses = _chunk_sizes(indptr, n_rows, miss_prefix, chunk)
            rows = jnp.where(used, chunk_rows[matrix, index], 0)  # [steps, lanes]
            nnz = jnp.where(used, chunk_nnz[matrix, index], 0)
            size = jnp.tile((rows + nnz).astype(kd) * max_workers, (1, W))  # [steps, W * lanes]
            # A lane whose next step starts a matrix resets its keys at the end of this step
            # (resetting at the start of the step, before the insert, made it 10x slower).
            fresh = jnp.tile(jnp.concatenate([reset[1:], jnp.zeros_like(reset[:1])]), (1, W))

            heads = _greedy_heads(size, fresh, keys0)  # [steps, W * lanes]
            # 32-bit segment ids and counts where the keys are (every total < 2^24) and the ids
            # fit: the scatter below moves half the bytes
            sd = kd if M * W * max_workers < 2 ** 31 else jnp.int64
            owner = (heads % max_workers).reshape(-1, W, lanes)
            taken = used[:, None, :] & (rows[:, None, :] > 0)  # [steps, 1, lanes]
            first = ((matrix.astype(sd) * W)[:, None, :] + jnp.arange(W, dtype=sd)[None, :, None])
            segment = jnp.where(taken, first * max_workers + owner.astype(sd),
                                M * W * max_workers).ravel()
            quantities = jnp.stack([rows, nnz, (rows > 0).astype(rows.dtype)], axis=-1).astype(kd)
            quantities = jnp.broadcast_to(quantities[:, None], (rows.shape[0], W, lanes, 3))
            counters = jax.ops.segment_sum(quantities.reshape(-1, 3), segment,
                                           num_segments=M * W * max_workers).astype(jnp.int64)
            misses = None
            if miss_prefix is not None:
                chunk_misses = chunk_misses[matrix, index]
                chunk_misses = jnp.broadcast_to(chunk_misses[:, None],
                                                (rows.shape[0], W, lanes, MISS_KINDS))
                misses = jax.ops.segment_sum(chunk_misses.reshape(-1, MISS_KINDS), segment,
                                             num_segments=M * W * max_workers).reshape(
                                                 M, W, max_workers, MISS_KINDS)
            totals.append((counters.reshape(M, W, max_workers, 3), misses))
        return tuple(totals)

    def one_matrix(indptr, ends, n, miss_prefix, row_misses, cost, dynamic_totals):
        nnz = indptr[-1]

        def contiguous(rows_flat, nnz_flat, searches, partial_flat):
            rows_at, nnz_at = rows_flat[expand], nnz_flat[expand]
            partial = jnp.where(active, partial_flat[expand[:, :-1]], 0)
            misses = _misses_at(miss_prefix, row_misses, indptr, rows_flat, nnz_flat)[expand]
            # [W, maxP+1, K]
            return (jnp.diff(rows_at, axis=1), jnp.diff(nnz_at, axis=1),
                    jnp.asarray(active, jnp.int64), jnp.where(active, searches, 0), partial,
                    jnp.diff(misses, axis=1))
        searches = _log2_ceil(n).astype(jnp.int64)
        results = {}

        def row_blocks():
            bounds = flat_p * n // flat_P
            return contiguous(bounds, indptr[bounds], 0, jnp.zeros_like(bounds))

        def nnz_split():
            cuts = flat_p * nnz // flat_P
            # rows whose end lies at or before the cut: searched in indptr itself (indptr[0] =
            # 0 counts once too many), as a slice indptr[1:] would copy every row under vmap
            ended = jnp.searchsorted(indptr, cuts, side="right").astype(jnp.int64) - 1
            rows = jnp.minimum(ended, n)
            rows = jnp.where(cuts >= nnz, n, jnp.where(flat_p == 0, 0, rows))
            return contiguous(rows, cuts, searches, (cuts > indptr[rows]).astype(jnp.int64))

        def merge_path():
            diagonals = flat_p * (n + nnz) // flat_P
            rows = jnp.searchsorted(ends, diagonals, side="left").astype(jnp.int64)
            cols = diagonals - rows
            return contiguous(rows, cols, searches, (cols > indptr[rows]).astype(jnp.int64))

        def chunk_sizes(chunk):
            rows, nnz_c, misses = _chunk_sizes(indptr, n, miss_prefix, chunk)
            return rows, nnz_c, (jnp.zeros(rows.shape + (MISS_KINDS,)) if misses is None
                                 else misses)

        def static_chunks(chunk):
            chunk_rows, chunk_nnz, chunk_misses = chunk_sizes(chunk)

            def round_robin(counts):  # worker q of w owns chunks q, q+w, ...: strided sums
                F, K = counts.shape
                by_count = {}
                # one pass over the chunks per group of worker counts (sums per residue mod the
                # group's lcm), folded for each count of the group
                for period, members in _lcm_groups(workers, max(K, 4096)):
                    width = -(-K // period) * period
                    residues = jnp.pad(counts, ((0, 0), (0, width - K))).reshape(
                        F, -1, period).sum(1)
                    for w in members:
                        by_count[w] = residues.reshape(F, period // w, w).sum(1)
                return jnp.stack([jnp.pad(by_count[w], ((0, 0), (0, max_workers - w)))
                                  for w in workers], axis=1)

            rows, nnz_w, segments = round_robin(
                jnp.stack([chunk_rows, chunk_nnz, (chunk_rows > 0).astype(jnp.int64)]))
            misses = (jnp.zeros((W, max_workers, MISS_KINDS)) if miss_prefix is None
                      else jnp.moveaxis(round_robin(chunk_misses.T), 0, -1))
            return rows, nnz_w, segments, zero, zero, misses

        def dynamic_chunks(chunk):
            totals, misses = dynamic_totals[dynamic_chunk_sizes.index(chunk)]  # greedy_totals
            if misses is None:
                misses = jnp.zeros((W, max_workers, MISS_KINDS))
            return totals[..., 0], totals[..., 1], totals[..., 2], zero, zero, misses

        predict_each = jax.vmap(predict, in_axes=(None, 0))  # over worker counts
        for code in codes:
            for c, chunk in enumerate(chunks):
                if code in (1, 2):
                    counters = (static_chunks if code == 1 else dynamic_chunks)(chunk)
                elif c == 0:
                    counters = (row_blocks, None, None, nnz_split, merge_path)[code]()
                else:  # chunk size does not change a contiguous split
                    counters = results[(code, 0)]
                results[(code, c)] = counters
        if counters_only:
            return jnp.stack([jnp.stack([WorkerWork(*results[(code, c)], jnp.asarray(active))
                                         .features() for c in range(C)], axis=1)
                              for code in codes])  # [S, W, C, maxP, terms]
        out = {"makespan": [], "imbalance": [], "times": []}
        for code in codes:
            per_chunk = [predict_each(cost, WorkerWork(*results[(code, c)], jnp.asarray(active)))
                         for c in range(C)]
            for key in out:
                out[key].append(jnp.stack([r[key] for r in per_chunk], axis=1))  # [W, C, ...]
        return {key: jnp.stack(v) for key, v in out.items()}  # [S, W, C, ...]

    per_matrix = jax.vmap(one_matrix, in_axes=(0, 0, 0, 0, 0, None, 0))  # None misses: no axis

    def program(indptr, ends, n_rows, miss_prefix, row_misses, cost, packs):
        totals = greedy_totals(indptr, n_rows, miss_prefix, packs)
        return per_matrix(indptr, ends, n_rows, miss_prefix, row_misses, cost, totals)

    return jax.jit(program)
