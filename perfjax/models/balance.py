"""Load-balance model: per-worker work and time of a partitioned sparse kernel, in pure JAX.

Given a matrix's row lengths (``SparseStats``), a partition strategy, a worker count and a chunk
size, ``worker_work`` computes exactly what each worker processes on the merge path (rows, i.e.
row ends, and nonzeros), how many segments it starts, how many binary-search steps it spends
finding its split and whether it must fix up a row cut by its split. These are the same counters
the partitioners in ``perfjax.schedulers.partition`` produce and the instrumented kernels count.
``predict`` turns them into per-worker times with a ``BalanceCost`` pytree whose every term can be
calibrated (and differentiated). Everything is jit- and vmap-friendly: strategies, worker counts
and matrices batch together (row lengths padded with zeros; ``max_workers`` static).

``relaxed_work`` is the differentiable variant: continuous split diagonals in, piecewise-linear
work out, for gradient search over split points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

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

    @staticmethod
    def from_vector(v: Any) -> "BalanceCost":
        return BalanceCost(*[v[i] for i in range(6)])

    def vector(self) -> jax.Array:
        return jnp.stack([jnp.asarray(x, dtype=float) for x in (
            self.per_nnz, self.per_row, self.per_segment, self.per_search, self.fixup, self.launch)])


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class WorkerWork:
    """Per-worker counters, [max_workers] each (workers >= P hold zeros)."""

    rows: Any
    nnz: Any
    segments: Any
    searches: Any
    partial: Any
    active: Any  # bool: p < P

    def features(self) -> jax.Array:
        """[max_workers, 6] counters in BalanceCost's order (launch counts 1 per active worker)."""
        return jnp.stack([self.nnz, self.rows, self.segments, self.searches, self.partial,
                          self.active], axis=-1).astype(float)


def _log2_ceil(x: jax.Array) -> jax.Array:
    return jnp.ceil(jnp.log2(jnp.maximum(x, 1).astype(float) + 1.0))


def worker_work(row_lengths: jax.Array, n_rows: jax.Array, strategy: jax.Array, workers: jax.Array,
                chunk: jax.Array, max_workers: int) -> WorkerWork:
    """Exact per-worker counters for one (matrix, strategy, P, chunk); see module docstring."""
    row_lengths = jnp.asarray(row_lengths, dtype=jnp.int64)
    padded = row_lengths.shape[0]
    indptr = jnp.concatenate([jnp.zeros(1, jnp.int64), jnp.cumsum(row_lengths)])
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
        return (jnp.diff(rows_at), jnp.diff(nnz_at), active.astype(jnp.int64),
                jnp.where(active, searches, zero), jnp.where(active, partial, zero))

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
    nonempty = chunk_rows > 0

    def owned(owner):
        def total(x):
            return jax.ops.segment_sum(jnp.where(nonempty, x, 0), owner, num_segments=max_workers)
        zero = jnp.zeros(max_workers, jnp.int64)
        return (total(chunk_rows), total(chunk_nnz), total(jnp.ones_like(chunk_rows)), zero, zero)

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
    if isinstance(strategy, int):  # known when tracing: build only that strategy's graph
        rows, nnz_w, segments, searches, partial = branches[strategy]()
    else:
        rows, nnz_w, segments, searches, partial = jax.lax.switch(jnp.asarray(strategy), branches)
    return WorkerWork(rows, nnz_w, segments, searches, partial, active)


worker_work_jit = jax.jit(worker_work, static_argnames=("max_workers",))
"""``worker_work`` compiled; pass ``strategy`` as an array (one graph for every strategy)."""


def predict(cost: BalanceCost, work: WorkerWork) -> dict:
    """Per-worker times, makespan (the slowest active worker) and imbalance of merged work."""
    times = work.features() @ cost.vector()
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


def evaluate(row_lengths, n_rows, strategy, workers, chunk, cost: BalanceCost, max_workers: int) -> dict:
    """worker_work + predict for one configuration (vmap it over batches)."""
    work = worker_work(row_lengths, n_rows, strategy, workers, chunk, max_workers)
    return {**predict(cost, work), "work": work}


evaluate_batch = jax.jit(
    jax.vmap(evaluate, in_axes=(0, 0, 0, 0, 0, None, None)), static_argnums=(6,))
"""``evaluate`` over a batch of (row_lengths, n_rows, strategy, workers, chunk) rows."""


def evaluate_grid(stats, strategies, workers, chunks, cost: BalanceCost, max_workers: int = 64) -> dict:
    """Every (matrix, strategy, worker count, chunk) combination at once.

    ``stats`` is a batched SparseStats (``perfjax.workloads.stack_stats``); ``strategies`` names
    from STRATEGY_CODES; ``workers`` and ``chunks`` integer arrays. Returns arrays shaped
    [matrices, strategies, workers, chunks]: ``makespan``, ``imbalance``, and ``times`` with a
    trailing [max_workers] axis. Each strategy compiles once; the per-matrix prefix sums are
    shared by every worker count and chunk.
    """
    names = list(strategies)
    unknown = [n for n in names if n not in STRATEGY_CODES]
    if unknown:
        from perfjax.errors import WorkloadError
        raise WorkloadError(f"unknown strategies {unknown} (known: {', '.join(STRATEGY_CODES)})")
    workers = jnp.asarray(workers, jnp.int64)
    chunks = jnp.asarray(chunks, jnp.int64)
    if int(workers.max()) > max_workers:
        from perfjax.errors import WorkloadError
        raise WorkloadError(f"worker count {int(workers.max())} exceeds max_workers={max_workers}")
    results = [_grid_fn(STRATEGY_CODES[n], max_workers)(stats.row_lengths, stats.n_rows, workers,
                                                        chunks, cost) for n in names]
    return {key: jnp.stack([r[key] for r in results], axis=1) for key in results[0]}


_GRID_CACHE: dict = {}


def _grid_fn(code: int, max_workers: int):
    if (code, max_workers) not in _GRID_CACHE:
        def one(row_lengths, n_rows, workers, chunk, cost):
            out = predict(cost, worker_work(row_lengths, n_rows, code, workers, chunk, max_workers))
            return {"makespan": out["makespan"], "imbalance": out["imbalance"], "times": out["times"]}
        over_chunks = jax.vmap(one, in_axes=(None, None, None, 0, None))
        over_workers = jax.vmap(over_chunks, in_axes=(None, None, 0, None, None))
        over_matrices = jax.vmap(over_workers, in_axes=(0, 0, None, None, None))
        _GRID_CACHE[(code, max_workers)] = jax.jit(over_matrices)
    return _GRID_CACHE[(code, max_workers)]
