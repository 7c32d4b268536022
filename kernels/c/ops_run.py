"""Run the generated SDDMM, SpAdd / SpMul and CSF TTV / MTTKRP programs out of process.

Same contract as ``run`` (SpMV / SpMM): bad arguments raise ``KernelError`` before anything is
built; a build failure, crash, hang, malformed output, NaN or (with ``check``) a wrong answer is
a ``Measurement(ok=False, reason=...)``. Outputs are checked against numpy / scipy references:

* ``sddmm``: out[k] within ``rtol * |val[k]| * (|X[row]| . |Y[col]|)`` of the numpy value;
* ``spadd`` / ``spmul``: the output CSR must have exactly the pattern of the structural union
  (intersection) of the operands, in canonical order, and values within
  ``rtol * (sum of the |operands|)`` (``|a b|`` for the product) of the numpy sums;
* ``ttv`` / ``mttkrp``: per fiber / slice within ``rtol`` times the sum of the absolute terms.

Instrumented runs fill ``Measurement.worker_work`` ([P, D], equal to ``Partition.work()``),
``worker_rows`` (its first column: rows, or slices) and ``worker_nnz`` (nonzeros consumed, summed
over the operands for co-iteration).

Partitions: SDDMM takes the SpMV partitions (``perfjax.schedulers.partition.partition``);
co-iteration takes ``coiteration_partition`` (``merge_path_nway``, or row strategies lifted to
the N-way path); CSF takes ``csf_partition`` (hierarchical ``merge_path``, ``nnz_split`` or slice
strategies).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from perfjax.kernels.c.build import build
from perfjax.kernels.c.emit import DEBUG_HOOKS, KernelError
from perfjax.kernels.c.ops import (
    COITERATION, DIMS, INPUT_HEADER, INPUT_MAGIC, INPUTS, KINDS, NDIMS, OPS, OUTPUT_MAGIC,
    OUTPUTS, FORMAT_VERSION, OpSpec, ndim)
from perfjax.kernels.c.run import (
    Measurement, _as_csr, _build_and_run, _csr_path, _dense, _grouped, _layout, _run_arguments,
    _share, _verdict)
from perfjax.schedulers import partition as _partition
from perfjax.schedulers.partition import Partition
from perfjax.workloads.sparse import COO3, CSF

COITERATION_STRATEGIES = ("row_blocks", "static_chunks", "dynamic_chunks", "merge_path_nway")
CSF_STRATEGIES = ("slice_blocks", "static_chunks", "dynamic_chunks", "nnz_split", "merge_path")


# ----------------------------------------------------------------------------------- partitions


def coiteration_partition(strategy: str, operands: Sequence, workers: int,
                          chunk: int = 1) -> Partition:
    """A partition of the N-way co-iteration path of ``operands`` (points: rows, nnz of each).

    ``merge_path_nway`` splits at joint coordinates; ``row_blocks``, ``static_chunks`` and
    ``dynamic_chunks`` split at row boundaries (chunk sizes and the dynamic greedy weigh a row by
    its N-way items: 1 + the operands' nonzeros in it) and are lifted to N-way points.
    """
    csrs = [_canonical(op, f"operand {q}") for q, op in enumerate(operands)]
    if strategy == "merge_path_nway":
        return _partition.merge_path_nway(csrs, workers)
    if strategy not in COITERATION_STRATEGIES:
        raise KernelError(f"unknown co-iteration strategy {strategy!r} (known: "
                          f"{', '.join(COITERATION_STRATEGIES)})")
    ptrs = [c.indptr.astype(np.int64) for c in csrs]
    row_part = _partition.partition(strategy, sum(ptrs), workers, chunk)
    return _lift(row_part, lambda rows: [rows, *(p[rows] for p in ptrs)])


def csf_partition(strategy: str, tensor, workers: int, chunk: int = 1) -> Partition:
    """A partition of a CSF tensor's path (points: slices, fibers, nonzeros).

    ``merge_path``: the hierarchical merge path ``merge_path([ptr[0], ptr[1]], P)``; ``nnz_split``:
    nonzeros [p nnz / P, (p+1) nnz / P) with the fiber and slice ends inside them (fibers and
    slices are cut wherever the nonzeros are); ``slice_blocks``, ``static_chunks``,
    ``dynamic_chunks``: whole slices (uniform count, round-robin chunks, greedy chunks weighted by
    the slice's items 1 + fibers + nonzeros).
    """
    csf = _as_csf(tensor)
    ptr0, ptr1 = (np.asarray(p, np.int64) for p in csf.ptr)
    if strategy == "merge_path":
        return _partition.merge_path([ptr0, ptr1], workers)
    if strategy == "nnz_split":
        nnz = int(ptr1[-1])
        _partition._check_workers(workers, nnz, "nonzeros")
        cuts = np.arange(workers + 1, dtype=np.int64) * nnz // workers
        fibers = np.searchsorted(ptr1[1:], cuts, side="right")
        slices = np.searchsorted(ptr0[1:], fibers, side="right")
        points = np.stack([slices, fibers, cuts], axis=1)
        return Partition("nnz_split", workers, points[:-1], points[1:], np.arange(workers))
    if strategy not in CSF_STRATEGIES:
        raise KernelError(f"unknown CSF strategy {strategy!r} (known: {', '.join(CSF_STRATEGIES)})")
    items = ptr0 + ptr1[ptr0]  # fibers + nonzeros before each slice: a slice "indptr"
    row_strategy = "row_blocks" if strategy == "slice_blocks" else strategy
    part = _lift(_partition.partition(row_strategy, items, workers, chunk),
                 lambda s: [s, ptr0[s], ptr1[ptr0[s]]])
    return replace(part, strategy=strategy)


def _lift(part: Partition, points) -> Partition:
    """A row partition (points: rows, whatever) with its points recomputed from the rows."""
    start = np.stack(points(part.start[:, 0]), axis=1).astype(np.int64)
    end = np.stack(points(part.end[:, 0]), axis=1).astype(np.int64)
    return Partition(part.strategy, part.workers, start, end, np.asarray(part.owner))


# ----------------------------------------------------------------------------------- kernels


def sddmm(matrix, X, Y, partition: Partition | None = None, *, threads: int | None = None,
          unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
          chunk_size: int | None = None, repeats: int = 1, instrument: bool = False,
          worker: int | None = None, sequential: bool = False, timeout: float = 30.0,
          check: bool = True, rtol: float = 1e-10, _debug: str | None = None,
          loop_order: tuple[int, ...] | None = None) -> Measurement:
    """out = A .* (X @ Y.T) on A's pattern: ``output`` is the [nnz] values array in A's CSR order.

    ``partition``: an SpMV partition of A (rows, nonzeros); modes (partition / single worker /
    sequential / OpenMP schedule with ``chunk_size`` row chunks) as ``perfjax.kernels.c.spmv``.
    ``unroll`` unrolls the K loop of the dot products. Single-worker mode: the nonzeros of other
    workers are 0. ``loop_order``: an order of the loops (i0, i1, k, j0, j1) with j the K loop
    (``perfjax.kernels.c.loop_order``); None is the default i0 i1 k j0 j1 nest.
    """
    csr = _canonical(matrix, "matrix")
    m, n = csr.shape
    X = _dense("X", X, 2, (m, None), f"(m, K) = ({m}, K) with K >= 1")
    Y = _dense("Y", Y, 2, (n, X.shape[1]), f"(n, K) = ({n}, {X.shape[1]})")
    indptr = csr.indptr.astype(np.int64)
    dims = dict(nrows=m, ncols=n, nnz=csr.nnz, width=X.shape[1])
    arrays = dict(indptr=indptr, col=csr.indices.astype(np.int64), val=csr.data, X=X, Y=Y)

    def judge(outputs, segments, single):
        val = csr.data * _mask(csr.nnz, segments, single, 1)
        rows = np.repeat(np.arange(m), np.diff(indptr))
        xr, yc = X[rows], Y[csr.indices]
        expected = val * np.einsum("ij,ij->i", xr, yc)
        bound = rtol * np.abs(val) * np.einsum("ij,ij->i", np.abs(xr), np.abs(yc))
        return outputs["out"], _verdict(outputs["out"], check, lambda: (expected, bound))

    return _measure("sddmm", dims, arrays, lambda p: _csr_segments(p, indptr), judge, partition,
                    threads, unroll, schedule, chunk, chunk_size, repeats, instrument, worker,
                    sequential, timeout, rtol, _debug, loop_order)


def spadd(operands: Sequence, partition: Partition | None = None, *, threads: int | None = None,
          schedule: str | None = None, chunk: int | None = None, chunk_size: int | None = None,
          repeats: int = 1, instrument: bool = False, worker: int | None = None,
          sequential: bool = False, timeout: float = 30.0, check: bool = True,
          rtol: float = 1e-12, _debug: str | None = None) -> Measurement:
    """C = A + B (+ D) for 2 or 3 CSR operands of one shape; ``output`` is a canonical csr_array
    holding the structural union (an entry that cancels to 0 is kept).

    ``partition``: from ``coiteration_partition`` (points: rows, nnz of each operand); single-
    worker mode returns the part of C whose coordinates lie in that worker's segments.
    """
    if isinstance(operands, (str, bytes)) or not hasattr(operands, "__len__") or \
            len(operands) not in (2, 3):
        raise KernelError("spadd takes a sequence of 2 or 3 CSR operands")
    return _coiterate(f"spadd{len(operands)}", list(operands), partition, threads, schedule,
                      chunk, chunk_size, repeats, instrument, worker, sequential, timeout, check,
                      rtol, _debug)


def spmul(a, b, partition: Partition | None = None, *, threads: int | None = None,
          schedule: str | None = None, chunk: int | None = None, chunk_size: int | None = None,
          repeats: int = 1, instrument: bool = False, worker: int | None = None,
          sequential: bool = False, timeout: float = 30.0, check: bool = True,
          rtol: float = 1e-12, _debug: str | None = None) -> Measurement:
    """C = A .* B (elementwise) of two CSR operands: the structural intersection, as ``spadd``."""
    return _coiterate("spmul2", [a, b], partition, threads, schedule, chunk, chunk_size, repeats,
                      instrument, worker, sequential, timeout, check, rtol, _debug)


def ttv(tensor, v, partition: Partition | None = None, *, threads: int | None = None,
        unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
        chunk_size: int | None = None, repeats: int = 1, instrument: bool = False,
        worker: int | None = None, sequential: bool = False, timeout: float = 30.0,
        check: bool = True, rtol: float = 1e-10, _debug: str | None = None) -> Measurement:
    """Z(i, j) = sum_k T(i, j, k) v(k) over a CSF tensor (or a COO3, converted).

    ``output`` is Z as a csr_array of shape (I, J) whose pattern is the tensor's fibers (its
    ``data`` is in fiber order). ``partition``: from ``csf_partition``; schedule mode shares the
    slices out. ``unroll`` unrolls the nonzero loop of a fiber (partial sums).
    """
    csf = _as_csf(tensor)
    v = _dense("v", v, 1, (csf.shape[2],), f"({csf.shape[2]},)")
    ptr0, ptr1 = (np.asarray(p, np.int64) for p in csf.ptr)
    kidx = np.asarray(csf.ids[2], np.int64)
    val = np.asarray(csf.values, np.float64)
    nslices, nfibers = len(ptr0) - 1, len(ptr1) - 1
    dims = dict(nslices=nslices, nfibers=nfibers, nnz=csf.nnz, klen=csf.shape[2])
    arrays = dict(ptr0=ptr0, ptr1=ptr1, kidx=kidx, val=val, v=v)
    fiber_of = np.repeat(np.arange(nfibers), np.diff(ptr1))

    def judge(outputs, segments, single):
        terms = val * _mask(csf.nnz, segments, single, 2) * v[kidx]
        expected = np.bincount(fiber_of, weights=terms, minlength=nfibers)
        bound = rtol * np.bincount(fiber_of, weights=np.abs(terms), minlength=nfibers)
        z = outputs["out"]
        slice_of_fiber = np.repeat(np.asarray(csf.ids[0], np.int64), np.diff(ptr0))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(slice_of_fiber,
                                                            minlength=csf.shape[0]))])
        matrix = sp.csr_array((z, np.asarray(csf.ids[1], np.int64), indptr),
                              shape=csf.shape[:2])
        return matrix, _verdict(z, check, lambda: (expected, bound))

    return _measure("ttv", dims, arrays, lambda p: _csf_segments(p, ptr0, ptr1), judge,
                    partition, threads, unroll, schedule, chunk, chunk_size, repeats, instrument,
                    worker, sequential, timeout, rtol, _debug)


def mttkrp(tensor, B, C, partition: Partition | None = None, *, threads: int | None = None,
           unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
           chunk_size: int | None = None, repeats: int = 1, instrument: bool = False,
           worker: int | None = None, sequential: bool = False, timeout: float = 30.0,
           check: bool = True, rtol: float = 1e-10, _debug: str | None = None) -> Measurement:
    """M(i, r) = sum_{j,k} T(i, j, k) B(j, r) C(k, r) over a CSF tensor: ``output`` is dense
    [I, R] (rows of empty slices are 0). ``unroll`` unrolls the rank loop."""
    csf = _as_csf(tensor)
    B = _dense("B", B, 2, (csf.shape[1], None), f"(J, R) = ({csf.shape[1]}, R) with R >= 1")
    C = _dense("C", C, 2, (csf.shape[2], B.shape[1]), f"(K, R) = ({csf.shape[2]}, {B.shape[1]})")
    ptr0, ptr1 = (np.asarray(p, np.int64) for p in csf.ptr)
    jidx, kidx = (np.asarray(ids, np.int64) for ids in csf.ids[1:])
    val = np.asarray(csf.values, np.float64)
    nslices, nfibers, rank = len(ptr0) - 1, len(ptr1) - 1, B.shape[1]
    dims = dict(nslices=nslices, nfibers=nfibers, nnz=csf.nnz, jlen=csf.shape[1],
                klen=csf.shape[2], rank=rank)
    arrays = dict(ptr0=ptr0, ptr1=ptr1, jidx=jidx, kidx=kidx, val=val, B=B, C=C)
    fiber_of = np.repeat(np.arange(nfibers), np.diff(ptr1))
    slice_of = np.repeat(np.repeat(np.arange(nslices), np.diff(ptr0)), np.diff(ptr1))

    def judge(outputs, segments, single):
        terms = (val * _mask(csf.nnz, segments, single, 2))[:, None] * B[jidx[fiber_of]] * C[kidx]
        expected = np.zeros((nslices, rank))
        bound = np.zeros((nslices, rank))
        np.add.at(expected, slice_of, terms)
        np.add.at(bound, slice_of, np.abs(terms))
        rows = outputs["out"].reshape(nslices, rank)
        dense = np.zeros((csf.shape[0], rank))
        dense[np.asarray(csf.ids[0], np.int64)] = rows
        return dense, _verdict(rows, check, lambda: (expected, rtol * bound))

    return _measure("mttkrp", dims, arrays, lambda p: _csf_segments(p, ptr0, ptr1), judge,
                    partition, threads, unroll, schedule, chunk, chunk_size, repeats, instrument,
                    worker, sequential, timeout, rtol, _debug)


def _coiterate(op, operands, partition, threads, schedule, chunk, chunk_size, repeats,
               instrument, worker, sequential, timeout, check, rtol, debug) -> Measurement:
    kind, n = COITERATION[op]
    csrs = [_canonical(a, f"operand {q}") for q, a in enumerate(operands)]
    shapes = {c.shape for c in csrs}
    if len(shapes) != 1:
        raise KernelError(f"{op}: the operands have different shapes {sorted(shapes)}")
    nrows, ncols = csrs[0].shape
    ptrs = [c.indptr.astype(np.int64) for c in csrs]
    cols = [c.indices.astype(np.int64) for c in csrs]
    dims = dict(nrows=nrows, ncols=ncols, **{f"nnz{q}": c.nnz for q, c in enumerate(csrs)})
    arrays = {}
    for q, c in enumerate(csrs):
        arrays.update({f"ip{q}": ptrs[q], f"ic{q}": cols[q], f"iv{q}": c.data})
    ref_ptr, ref_col, ref_val, ref_bound = _structural(kind, csrs)

    def judge(outputs, segments, single):
        out_ptr, out_col, out_val = outputs["out_ptr"], outputs["out_col"], outputs["out_val"]
        ptr, col, val, bound = ref_ptr, ref_col, ref_val, ref_bound
        if single is not None:  # the coordinates of C that lie in this worker's segments
            keep = np.zeros(len(col), bool)
            seg_ptr, start, end, _ = segments
            for s in range(seg_ptr[single], seg_ptr[single + 1]):
                keep[_before(kind, start[s], ref_ptr, ptrs, cols):
                     _before(kind, end[s], ref_ptr, ptrs, cols)] = True
            rows = np.repeat(np.arange(nrows), np.diff(ref_ptr))
            ptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=nrows))])
            col, val, bound = col[keep], val[keep], bound[keep]
        if len(out_ptr) != nrows + 1 or out_ptr[0] != 0 or (np.diff(out_ptr) < 0).any() or \
                out_ptr[-1] != len(out_col):
            return None, "the output row pointers are not a valid CSR indptr " \
                         f"(first entries {out_ptr[:5].tolist()}, last {out_ptr[-1:].tolist()})"
        if (out_col < 0).any() or (out_col >= ncols).any():
            return None, "the output has a column index outside 0.." f"{ncols - 1}" \
                         " (an entry the kernel never wrote?)"
        matrix = sp.csr_array((out_val, out_col, out_ptr), shape=(nrows, ncols))
        if not check:
            return matrix, _verdict(out_val, False, None)
        if not np.array_equal(out_ptr, ptr):
            row = int(np.argmax(np.diff(out_ptr) != np.diff(ptr)))
            return matrix, f"wrong pattern: row {row} has {int(out_ptr[row + 1] - out_ptr[row])} " \
                           f"entries, the structural {'union' if kind == 'add' else 'intersection'}" \
                           f" has {int(ptr[row + 1] - ptr[row])}"
        if not np.array_equal(out_col, col):
            q = int(np.argmax(out_col != col))
            return matrix, f"wrong pattern: entry {q} has column {int(out_col[q])}, expected " \
                           f"{int(col[q])}"
        return matrix, _verdict(out_val, True, lambda: (val, rtol * bound))

    return _measure(op, dims, arrays, lambda p: _nway_segments(p, ptrs, cols), judge, partition,
                    threads, 1, schedule, chunk, chunk_size, repeats, instrument, worker,
                    sequential, timeout, rtol, debug)


# ----------------------------------------------------------------------------------- arguments


def _canonical(matrix, name: str) -> sp.csr_array:
    """A canonical (sorted, duplicate-free) float64 CSR copy, or KernelError."""
    try:
        csr = _as_csr(matrix)
    except KernelError as exc:
        raise KernelError(f"{name}: {exc}") from None
    csr = sp.csr_array(csr, dtype=np.float64, copy=True)
    if not csr.has_canonical_format:
        csr.sum_duplicates()
    return csr


def _as_csf(tensor) -> CSF:
    if isinstance(tensor, COO3):
        if tensor.nnz == 0:
            raise KernelError("tensor has no nonzero")
        tensor = CSF.from_coo3(tensor)
    if not isinstance(tensor, CSF):
        raise KernelError(f"tensor must be a perfjax CSF (or COO3), got {type(tensor).__name__}")
    if np.iscomplexobj(tensor.values):
        raise KernelError("tensor has complex values; the C kernels compute in double")
    return tensor


def _csr_segments(partition, indptr):
    """SDDMM's points (i, j): the CSR merge path of SpMV (``run._csr_path``)."""
    return _grouped(partition, *_csr_path(indptr))


def _nway_segments(partition, ptrs, cols):
    """Points (i, j_1 .. j_N): on every operand's row-i path, and a *joint* cut: every consumed
    coordinate of row i lies before every unconsumed one."""
    n = len(ptrs[0]) - 1
    nnz = [int(p[-1]) for p in ptrs]

    def on_path(points):
        i = points[:, 0]
        ok = (i >= 0) & (i <= n)
        ic = np.clip(i, 0, n)
        last_taken = np.full(len(points), -1, np.int64)
        first_left = np.full(len(points), np.iinfo(np.int64).max)
        for q, (ptr, col) in enumerate(zip(ptrs, cols)):
            j = points[:, q + 1]
            lo, hi = ptr[ic], ptr[np.clip(i + 1, 0, n)]
            ok &= (j >= lo) & (j <= hi)
            if len(col):
                top = len(col) - 1
                before = np.where(ok & (j > lo), col[np.clip(j - 1, 0, top)], -1)
                after = np.where(ok & (j < hi), col[np.clip(j, 0, top)], first_left)
                last_taken = np.maximum(last_taken, before)
                first_left = np.minimum(first_left, after)
        return ok & (last_taken < first_left)
    return _grouped(partition, len(ptrs) + 1, on_path, (n, *nnz),
                    f"these {len(ptrs)} operands ({n} rows, nonzeros {nnz}): points must be "
                    f"(rows, nnz of each operand) at joint coordinates")


def _csf_segments(partition, ptr0, ptr1):
    """Points (s, f, k): ptr0[s] <= f <= ptr0[s+1], ptr1[f] <= k <= ptr1[f+1], and nothing of the
    next slice before slice s's end (f == ptr0[s+1] forces k == ptr1[f])."""
    S, F, nnz = len(ptr0) - 1, len(ptr1) - 1, int(ptr1[-1])

    def on_path(points):
        s, f, k = points[:, 0], points[:, 1], points[:, 2]
        ok = (s >= 0) & (s <= S)
        fhi = ptr0[np.clip(s + 1, 0, S)]
        ok &= (f >= ptr0[np.clip(s, 0, S)]) & (f <= fhi)
        fc = np.clip(f, 0, F)
        ok &= (k >= ptr1[fc]) & (k <= ptr1[np.clip(f + 1, 0, F)])
        ok &= (f < fhi) | (s == S) | (k == ptr1[fc])
        return ok
    return _grouped(partition, 3, on_path, (S, F, nnz),
                    f"this CSF tensor ({S} slices, {F} fibers, {nnz} nonzeros)")


def _mask(count: int, segments, single, column: int) -> np.ndarray:
    """1 for the nonzeros single-worker mode runs (those in the worker's segments, coordinate
    ``column`` of their points), else all 1."""
    if single is None:
        return np.ones(count)
    seg_ptr, start, end, _ = segments
    return _share(count, seg_ptr, start[:, column], end[:, column], single)


def _structural(kind: str, csrs) -> tuple[np.ndarray, ...]:
    """Reference C = structural union (sum) or intersection (product) of canonical operands:
    (indptr, indices, values, sum of the absolute terms)."""
    nrows, ncols = csrs[0].shape
    keys, vals = [], []
    for c in csrs:
        rows = np.repeat(np.arange(nrows, dtype=np.int64), np.diff(c.indptr))
        keys.append(rows * ncols + c.indices.astype(np.int64))
        vals.append(c.data.astype(np.float64))
    if kind == "add":
        key = np.concatenate(keys)
        value = np.concatenate(vals)
        order = np.argsort(key, kind="stable")  # operand order within a coordinate
        key, value = key[order], value[order]
        unique, first = np.unique(key, return_index=True)
        total = np.zeros(len(unique))
        bound = np.zeros(len(unique))
        for step in range(len(csrs)):  # sequential sums in operand order, as the kernel does
            at = first + step
            live = at < np.append(first[1:], len(key))
            total[live] += value[at[live]]
            bound[live] += np.abs(value[at[live]])
    else:
        unique, ia, ib = np.intersect1d(keys[0], keys[1], assume_unique=True,
                                        return_indices=True)
        total = vals[0][ia] * vals[1][ib]
        bound = np.abs(total)
    rows = unique // ncols
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=nrows))]).astype(np.int64)
    return ptr, (unique % ncols).astype(np.int64), total, bound


def _before(kind: str, point, ref_ptr, ptrs, cols) -> int:
    """Coordinates of C lying before the joint path point (i, j_1 .. j_N)."""
    i = int(point[0])
    if i >= len(ref_ptr) - 1:
        return int(ref_ptr[-1])
    taken = [col[ptr[i]:j] for ptr, col, j in zip(ptrs, cols, point[1:])]
    if kind == "add":
        inside = len(np.unique(np.concatenate(taken)))
    else:
        inside = len(np.intersect1d(taken[0], taken[1]))
    return int(ref_ptr[i]) + inside


# ----------------------------------------------------------------------------------- running


def _measure(op, dims, arrays, segments_of, judge, partition, threads, unroll, schedule, chunk,
             chunk_size, repeats, instrument, worker, sequential, timeout, rtol, debug,
             loop_order=None):
    """Validate everything (KernelError), then build, run and judge (``judge(outputs, segments,
    single)`` gives the output and why it is unacceptable)."""
    repeats, timeout, rtol = _run_arguments(repeats, timeout, rtol, debug)
    d = ndim(op)
    layout = _layout(partition, schedule, threads, worker, sequential, segments_of,
                     lambda workers: (np.zeros(workers + 1, np.int64), np.zeros((0, d), np.int64),
                                      np.zeros((0, d), np.int64), np.zeros(0, np.int64)))
    segments, workers = layout.segments, layout.workers
    spec = OpSpec(op, unroll, layout.schedule, chunk, chunk_size, instrument, loop_order)
    header = dict(magic=INPUT_MAGIC, version=FORMAT_VERSION, opcode=OPS.index(op),
                  workers=workers, worker=layout.worker, repeats=repeats,
                  debug=DEBUG_HOOKS.get(debug, 0), nseg=len(segments[1]), ndim=d)
    dim_values = [dims[name] for name in DIMS[op]] + [0] * (NDIMS - len(DIMS[op]))
    inputs = [np.array([header[k] for k in INPUT_HEADER] + dim_values, np.int64), segments[0],
              segments[1].reshape(-1), segments[2].reshape(-1), segments[3]]
    for name, kind, count in INPUTS[op]:
        array = np.ascontiguousarray(arrays[name], np.int64 if kind == "i64" else np.float64)
        assert array.size == eval(count, {}, dict(dims)), (op, name)  # a runner bug otherwise
        inputs.append(array.reshape(-1))
    raw, failure, digest = _build_and_run(spec, build, tuple(inputs), layout.team, timeout)
    if raw is None:
        return Measurement(False, failure, source_hash=digest)
    parsed, reason = _read(op, raw, dims, workers, repeats, d)
    if parsed is None:
        return Measurement(False, reason, source_hash=digest)
    outputs, seconds, work, worker_seconds = parsed
    single = None if worker is None else int(worker)
    counters = {}
    if instrument:
        counters = dict(worker_rows=work[:, 0].copy(), worker_nnz=work[:, 1:].sum(axis=1),
                        worker_seconds=worker_seconds, worker_work=work)
    output, reason = judge(outputs, segments, single)
    return Measurement(not reason, reason, output, seconds, source_hash=digest, **counters)


def _read(op, raw: np.ndarray, dims, workers, repeats, d):
    """Parse the output file: ((outputs, seconds, work, worker_seconds), "") or (None, why)."""
    words = len(raw) // 8
    if len(raw) % 8 or words < 5:
        return None, f"the program's output file has {len(raw)} bytes, too short or misaligned"
    view = np.frombuffer(raw, np.int64)
    fview = np.frombuffer(raw, np.float64)
    head = view[:5].tolist()
    if head != [OUTPUT_MAGIC, workers, d, repeats, len(OUTPUTS[op])]:
        return None, f"the program's output header {head} does not match its input"
    at = 5
    outputs = {}
    env = dict(dims)
    for name, kind, count in OUTPUTS[op]:
        if at + 2 > words:
            return None, f"the program's output file ends before output {name!r}"
        n, code = int(view[at]), int(view[at + 1])
        at += 2
        if count == "out_nnz" and "out_nnz" not in env and n >= 0:
            env["out_nnz"] = n
        expected = eval(count, {}, env)
        if n != expected or code != KINDS[kind] or at + n > words:
            return None, f"the program's output {name!r} has {n} entries of kind {code}, " \
                         f"expected {expected} of kind {KINDS[kind]}"
        outputs[name] = (view if kind == "i64" else fview)[at:at + n].copy()
        at += n
    if words != at + repeats + workers * d + workers:
        return None, f"the program's output file has {words} words, expected " \
                     f"{at + repeats + workers * d + workers}"
    seconds = [float(s) for s in fview[at:at + repeats]]
    at += repeats
    work = view[at:at + workers * d].reshape(workers, d).copy()
    at += workers * d
    return (outputs, seconds, work, fview[at:at + workers].copy()), ""

