"""Sparse matrix kernels in Pallas: merge-path CSR SpMV / SpMM and block-sparse (BSR) SpMM.

Merge path (Merrill & Garland): the CSR merge path walks each row's nonzeros and then one
"row end" item; ``perfjax.schedulers.partition.merge_path`` cuts it into P segments of equal
length, and grid axis 0 of the kernel is the segment. Each program walks its segment item by item
for a static ``segment = ceil((n + nnz) / P)`` steps (masked past the segment's end, which is at
most one step short of that), accumulating a row of ``y`` and storing it at the row's end. The row
still open when the segment ends is the *carry*: its row is the segment's end row, known from the
split points, and the kernel emits its partial value; a scatter-add outside the kernel adds the
carries into ``y``. Every row end lies in exactly one segment, so every row of ``y`` is written by
exactly one program and programs never race. SpMV is SpMM with one column.

Block-sparse: grid axis 0 is the block row; each program loops over its block row's stored blocks
(``indptr[r]:indptr[r + 1]``, read inside the kernel) doing dense block matmuls.

What this JAX version's Pallas imposes (jax 0.10):

* ``pallas_call`` on GPU defaults to the Mosaic GPU backend, which deprecates it and whose TMA
  copies reject float64; the kernels ask for the Triton backend explicitly
  (``pallas.triton.CompilerParams``).
* The Triton backend has no scalar prefetch, so the sparse structure (row ends, column indices,
  split points, block pointers) is an ordinary input, read with scalar loads inside the kernel.
* Triton needs every array a kernel loads or stores to have a power-of-two size: the column block
  of ``X`` (``block_k``) and BSR blocks are powers of two, and ``X`` is padded to whole blocks.
* Triton's float64 ``dot`` needs tiles of at least 16 x 16 by 16 x 8 (16 everywhere for the other
  dtypes); smaller BSR blocks are multiplied by a broadcast multiply-and-sum instead.
* Off GPU, ``pallas_call`` runs only with ``interpret=True`` (a jitted loop over the grid), which
  also fills never-written outputs with NaN - a free check that the walk writes every row.

Shapes, worker counts and block sizes are static: each combination is traced and compiled once
and cached by ``jax.jit``; the matrix's values and structure are ordinary device arrays, so
matrices of equal shape and nonzero count share one compiled kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from perfjax.errors import WorkloadError
from perfjax.schedulers.partition import merge_path

ITEMS_PER_WORKER = 128
"""Merge-path items per worker when ``workers`` is not given: short enough that a GPU gets
thousands of programs on a large matrix (each program's walk is sequential). On an H100 (1e6- and
5e5-nonzero matrices, SpMV and 32-column SpMM, one run) 128 was within 15% of the best of 32-512
items per worker in all four cases, and 512 was 35-75% slower than the best."""

BLOCK_K = 32
"""Default width of the column block of ``X`` one program computes (a power of two)."""

_INDEX = np.int32  # GPU-native index width; inputs with 2^31 or more items are refused


# ------------------------------------------------------------------------------- validation


def _is_power_of_two(value) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            and value & (value - 1) == 0)


def _resolve_interpret(interpret: bool | None) -> bool:
    """``None``: interpret off GPU (the only way Pallas runs on CPU), compile on GPU."""
    if interpret is None:
        return jax.default_backend() != "gpu"
    if not isinstance(interpret, bool):
        raise WorkloadError(f"interpret must be True, False or None, got {interpret!r}")
    return interpret


def _sparse_matrix(matrix, what: str):
    if not sp.issparse(matrix):
        raise WorkloadError(f"{what}: expected a scipy.sparse matrix, got {type(matrix).__name__}")
    if matrix.ndim != 2 or min(matrix.shape) == 0:
        raise WorkloadError(f"{what}: the matrix shape {matrix.shape} has no rows or columns")
    if matrix.dtype.kind not in "biuf":
        raise WorkloadError(f"{what}: matrix dtype {matrix.dtype} is not real")
    return matrix


def _value_dtype(*dtypes) -> np.dtype:
    """The floating dtype the kernels compute in: the operands' promotion (JAX's rules), at
    least float32."""
    return np.dtype(functools.reduce(jnp.promote_types, dtypes, jnp.float32))


def _dense_operand(X, n_cols: int, ndims: tuple[int, ...], what: str) -> jax.Array:
    """``X`` as a device array with ``n_cols`` rows and one of ``ndims`` dimensions; only shapes
    and dtypes are checked, so the kernels stay traceable under ``jax.jit``."""
    X = jnp.asarray(X)
    if X.ndim not in ndims:
        raise WorkloadError(f"{what}: the dense operand must have {' or '.join(map(str, ndims))} "
                            f"dimension(s), got shape {X.shape}")
    if X.shape[0] != n_cols:
        raise WorkloadError(f"{what}: the matrix has {n_cols} columns but the dense operand has "
                            f"{X.shape[0]} rows")
    if X.size == 0:
        raise WorkloadError(f"{what}: the dense operand has no columns")
    if X.dtype.kind not in "biuf":
        raise WorkloadError(f"{what}: dense operand dtype {X.dtype} is not real")
    return X


def _check_block_k(block_k) -> None:
    if not _is_power_of_two(block_k):
        raise WorkloadError(f"block_k must be a power of two (Triton loads power-of-two arrays), "
                            f"got {block_k!r}")


def _column_blocks(X: jax.Array, block_k: int) -> tuple[jax.Array, int]:
    """``X`` padded with zero columns to whole column blocks, and the block width: ``block_k``,
    or the smallest power of two holding all of ``X``'s columns if that is narrower."""
    k = X.shape[1]
    width = min(block_k, pl.next_power_of_2(k))
    padded = pl.cdiv(k, width) * width
    return jnp.pad(X, ((0, 0), (0, padded - k))), width


def _whole(shape: tuple[int, ...]) -> pl.BlockSpec:
    """A block that is the whole array, for any grid: what scalar-indexed inputs need."""
    return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


# ------------------------------------------------------------------------------- merge path


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["row_end", "indices", "data", "split_rows", "split_nnz"],
                   meta_fields=["shape", "workers", "segment"])
@dataclass(frozen=True)
class MergePathCSR:
    """A CSR matrix cut into merge-path segments, as the kernel reads it (device arrays).

    ``row_end`` [n + 1] is ``indptr[1:]`` plus a sentinel ``nnz``, and ``indices`` / ``data``
    [nnz + 1] end with one zero entry: every step of the walk loads at its current row and
    nonzero, also on row-end and masked steps, where they may be one past the end. ``split_rows``
    / ``split_nnz`` [P + 1] are the path points between segments. ``segment`` is the static trip
    count of every program, ``ceil((n + nnz) / P)``.

    Build it once with ``merge_path_csr`` to time or reuse the kernel without redoing the
    host-side split; it is a pytree, so it can be passed through ``jax.jit``.
    """

    row_end: jax.Array
    indices: jax.Array
    data: jax.Array
    split_rows: jax.Array
    split_nnz: jax.Array
    shape: tuple[int, int]
    workers: int
    segment: int


def merge_path_csr(matrix, workers: int | None = None) -> MergePathCSR:
    """Convert a scipy sparse matrix to CSR and split its merge path among ``workers`` programs
    (default: one per ``ITEMS_PER_WORKER`` path items).

    Raises WorkloadError for a non-sparse or non-real matrix, a bad worker count (more workers
    than path items included) or a matrix too large for 32-bit indices.
    """
    csr = sp.csr_array(_sparse_matrix(matrix, "merge_path_csr"))
    (n_rows, n_cols), nnz = csr.shape, csr.nnz
    total = n_rows + nnz
    if max(total, n_cols) >= np.iinfo(_INDEX).max:
        raise WorkloadError(f"merge_path_csr: {total} merge-path items or {n_cols} columns do not "
                            "fit 32-bit indices")
    if workers is None:
        workers = max(1, -(-total // ITEMS_PER_WORKER))
    points = merge_path(csr, workers)  # validates workers
    splits = np.concatenate([points.start, points.end[-1:]]).astype(_INDEX)
    indptr = csr.indptr.astype(_INDEX)
    return MergePathCSR(
        row_end=jnp.asarray(np.append(indptr[1:], nnz).astype(_INDEX)),
        indices=jnp.asarray(np.append(csr.indices, 0).astype(_INDEX)),
        data=jnp.asarray(np.append(csr.data, 0).astype(_value_dtype(csr.dtype))),
        split_rows=jnp.asarray(splits[:, 0]),
        split_nnz=jnp.asarray(splits[:, 1]),
        shape=(int(n_rows), int(n_cols)),
        workers=int(workers),
        segment=-(-total // workers),
    )


def _merge_path_kernel(row_end_ref, indices_ref, data_ref, split_rows_ref, split_nnz_ref, x_ref,
                       y_ref, carry_ref, *, segment: int):
    """One program: walk merge-path segment ``program_id(0)`` for one column block of ``X``.

    A step at path point (row, nz) consumes nonzero ``nz`` if it lies before the row's end, else
    the row's end (store the row, start the next); steps past the segment's end do neither.
    """
    p = pl.program_id(0)
    stop = split_rows_ref[p + 1] + split_nnz_ref[p + 1]  # diagonal of the segment's end point

    def step(_, state):
        row, nz, acc = state
        inside = row + nz < stop
        take_nonzero = inside & (nz < row_end_ref[row])
        end_row = inside & ~take_nonzero
        acc = acc + jnp.where(take_nonzero, data_ref[nz] * x_ref[indices_ref[nz], :], 0)

        @pl.when(end_row)
        def _():
            y_ref[row, :] = acc

        return (row + end_row.astype(row.dtype), nz + take_nonzero.astype(nz.dtype),
                jnp.where(end_row, 0, acc))

    start = (split_rows_ref[p], split_nnz_ref[p], jnp.zeros(y_ref.shape[1:], y_ref.dtype))
    _, _, carry = lax.fori_loop(0, segment, step, start)
    carry_ref[p, :] = carry


@functools.partial(jax.jit, static_argnames=("block_k", "interpret"))
def _merge_path_spmm(plan: MergePathCSR, X: jax.Array, block_k: int, interpret: bool) -> jax.Array:
    """Kernel plus carry fix-up, jitted: traced once per shape, worker count and block size."""
    n_rows, _ = plan.shape
    dtype = _value_dtype(plan.data.dtype, X.dtype)
    X, width = _column_blocks(X.astype(dtype), block_k)
    grid = (plan.workers, X.shape[1] // width)
    structure = (plan.row_end, plan.indices, plan.data.astype(dtype), plan.split_rows,
                 plan.split_nnz)
    y, carry = pl.pallas_call(
        functools.partial(_merge_path_kernel, segment=plan.segment),
        grid=grid,
        in_specs=[*(_whole(a.shape) for a in structure),
                  pl.BlockSpec((X.shape[0], width), lambda p, k: (0, k))],
        out_specs=[pl.BlockSpec((n_rows, width), lambda p, k: (0, k)),
                   pl.BlockSpec((plan.workers, width), lambda p, k: (0, k))],
        out_shape=[jax.ShapeDtypeStruct((n_rows, X.shape[1]), dtype),
                   jax.ShapeDtypeStruct((plan.workers, X.shape[1]), dtype)],
        interpret=interpret,
        # A program's walk is scalar control flow over vectors of at most `width` lanes.
        compiler_params=pltriton.CompilerParams(num_warps=max(1, min(4, width // 32)),
                                                num_stages=1),
        name="merge_path_spmm",
    )(*structure, X)
    # Segment p's carry belongs to its end row; the last segment ends at row n (dropped: its
    # carry is zero, every row being closed).
    return y.at[plan.split_rows[1:]].add(carry, mode="drop")


def _merge_path_plan(matrix, workers, what: str) -> MergePathCSR:
    if isinstance(matrix, MergePathCSR):
        if workers is not None and workers != matrix.workers:
            raise WorkloadError(f"{what}: the MergePathCSR is split for {matrix.workers} workers, "
                                f"not {workers}")
        return matrix
    return merge_path_csr(matrix, workers)


def spmm_merge_path(matrix, X, *, workers: int | None = None, block_k: int = BLOCK_K,
                    interpret: bool | None = None) -> jax.Array:
    """``matrix @ X`` for a sparse ``matrix`` [n, m] and dense ``X`` [m, K], merge-path balanced.

    ``matrix`` is a scipy sparse matrix or a ``MergePathCSR`` (then ``workers`` must be None or
    match it). Grid: (workers, column blocks of ``block_k``). ``interpret=None`` interprets off
    GPU and compiles (Triton) on GPU. Returns [n, K] in the promoted floating dtype.
    """
    plan = _merge_path_plan(matrix, workers, "spmm_merge_path")
    _check_block_k(block_k)
    X = _dense_operand(X, plan.shape[1], (2,), "spmm_merge_path")
    k = X.shape[1]
    return _merge_path_spmm(plan, X, block_k, _resolve_interpret(interpret))[:, :k]


def spmv_merge_path(matrix, x, *, workers: int | None = None,
                    interpret: bool | None = None) -> jax.Array:
    """``matrix @ x`` for a sparse ``matrix`` [n, m] and a dense vector ``x`` [m]: the SpMM
    kernel with one column (one grid column, vectors of one lane). Arguments as
    ``spmm_merge_path``."""
    plan = _merge_path_plan(matrix, workers, "spmv_merge_path")
    x = _dense_operand(x, plan.shape[1], (1,), "spmv_merge_path")
    return _merge_path_spmm(plan, x[:, None], 1, _resolve_interpret(interpret))[:, 0]


# ------------------------------------------------------------------------------ block sparse


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["indptr", "indices", "data"], meta_fields=["shape", "block"])
@dataclass(frozen=True)
class BlockSparse:
    """A BSR matrix as the kernel reads it (device arrays): ``indptr`` [block rows + 1],
    ``indices`` [blocks + 1] block columns and ``data`` [blocks + 1, bm, bn], the last two ending
    with one zero block so that a matrix without blocks still has arrays to pass. ``shape`` is
    the matrix's own; the blocks cover it padded with zeros to whole blocks."""

    indptr: jax.Array
    indices: jax.Array
    data: jax.Array
    shape: tuple[int, int]
    block: tuple[int, int]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return tuple(pl.cdiv(s, b) * b for s, b in zip(self.shape, self.block))


def _check_block(block, what: str) -> tuple[int, int]:
    if (not isinstance(block, (tuple, list)) or len(block) != 2
            or not all(_is_power_of_two(b) for b in block)):
        raise WorkloadError(f"{what}: block must be two powers of two (bm, bn) - Triton loads "
                            f"power-of-two arrays - got {block!r}")
    return int(block[0]), int(block[1])


def block_sparse(matrix, block: tuple[int, int] | None = None) -> BlockSparse:
    """A scipy sparse matrix as ``BlockSparse`` with ``block`` = (bm, bn) blocks (default: the
    blocksize of a ``bsr_array``/``bsr_matrix``, which is then used as it is)."""
    matrix = _sparse_matrix(matrix, "block_sparse")
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    if block is None:
        if matrix.format != "bsr":
            raise WorkloadError("block_sparse: block=(bm, bn) is required for a matrix that is "
                                f"not BSR (got {matrix.format})")
        block = matrix.blocksize
    bm, bn = _check_block(block, "block_sparse")
    padded = (pl.cdiv(shape[0], bm) * bm, pl.cdiv(shape[1], bn) * bn)
    if max(padded) >= np.iinfo(_INDEX).max:
        raise WorkloadError(f"block_sparse: shape {shape} does not fit 32-bit indices")
    if matrix.format != "bsr" or matrix.blocksize != (bm, bn):
        csr = sp.csr_array(matrix)
        indptr = np.pad(csr.indptr, (0, padded[0] - shape[0]), mode="edge")
        matrix = sp.bsr_array(sp.csr_array((csr.data, csr.indices, indptr), shape=padded),
                              blocksize=(bm, bn))
    data = np.concatenate([matrix.data, np.zeros((1, bm, bn))])
    return BlockSparse(
        indptr=jnp.asarray(matrix.indptr.astype(_INDEX)),
        indices=jnp.asarray(np.append(matrix.indices, 0).astype(_INDEX)),
        data=jnp.asarray(data.astype(_value_dtype(matrix.dtype))),
        shape=shape,
        block=(bm, bn),
    )


def _block_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for one block pair: ``jnp.dot`` where Triton's ``dot`` takes the tile (float64:
    M >= 16, K >= 16, N >= 8; else all >= 16), a broadcast multiply-and-sum below that."""
    (m, k), n = a.shape, b.shape[1]
    min_n = 8 if a.dtype == jnp.float64 else 16
    if m >= 16 and k >= 16 and n >= min_n:
        return jnp.dot(a, b, precision=lax.Precision.HIGHEST)  # HIGHEST: IEEE, not TF32
    return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)


def _bsr_kernel(indptr_ref, indices_ref, data_ref, x_ref, y_ref):
    """One program: block row ``program_id(0)`` times one column block of ``X``."""
    r = pl.program_id(0)
    bn = data_ref.shape[2]

    def step(b, acc):
        rows_of_x = pl.ds(pl.multiple_of(indices_ref[b] * bn, bn), bn)
        return acc + _block_matmul(data_ref[b, :, :], x_ref[rows_of_x, :])

    y_ref[...] = lax.fori_loop(indptr_ref[r], indptr_ref[r + 1], step,
                               jnp.zeros(y_ref.shape, y_ref.dtype))


@functools.partial(jax.jit, static_argnames=("block_k", "interpret"))
def _bsr_spmm(plan: BlockSparse, X: jax.Array, block_k: int, interpret: bool) -> jax.Array:
    """Kernel on ``X`` padded to whole blocks, jitted: traced once per shape and block sizes."""
    (n_rows, n_cols), (bm, _) = plan.padded_shape, plan.block
    dtype = _value_dtype(plan.data.dtype, X.dtype)
    X, width = _column_blocks(jnp.pad(X.astype(dtype), ((0, n_cols - X.shape[0]), (0, 0))),
                              block_k)
    structure = (plan.indptr, plan.indices, plan.data.astype(dtype))
    Y = pl.pallas_call(
        _bsr_kernel,
        grid=(n_rows // bm, X.shape[1] // width),
        in_specs=[*(_whole(a.shape) for a in structure),
                  pl.BlockSpec((n_cols, width), lambda r, k: (0, k))],
        out_specs=pl.BlockSpec((bm, width), lambda r, k: (r, k)),
        out_shape=jax.ShapeDtypeStruct((n_rows, X.shape[1]), dtype),
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(),
        name="bsr_spmm",
    )(*structure, X)
    return Y[:plan.shape[0]]


def bsr_spmm(matrix, X, *, block: tuple[int, int] | None = None, block_k: int = BLOCK_K,
             interpret: bool | None = None) -> jax.Array:
    """``matrix @ X`` for a block-sparse ``matrix`` [n, m] and dense ``X`` [m, K] (or [m]).

    ``matrix`` is a ``BlockSparse`` or a scipy sparse matrix converted with ``block_sparse`` (a
    BSR matrix keeps its blocks unless ``block`` says otherwise). Grid: (block rows, column
    blocks of ``block_k``); each program multiplies its block row's stored blocks with ``X``.
    Returns [n, K] (or [n]) in the promoted floating dtype.
    """
    if isinstance(matrix, BlockSparse):
        if block is not None and tuple(block) != matrix.block:
            raise WorkloadError(f"bsr_spmm: the BlockSparse has {matrix.block} blocks, not {block}")
        plan = matrix
    else:
        plan = block_sparse(matrix, block)
    _check_block_k(block_k)
    X = _dense_operand(X, plan.shape[1], (1, 2), "bsr_spmm")
    vector = X.ndim == 1
    Y = _bsr_spmm(plan, X[:, None] if vector else X, block_k, _resolve_interpret(interpret))
    return Y[:, 0] if vector else Y[:, :X.shape[1]]
