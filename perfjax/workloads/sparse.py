"""Sparse tensors: reading, explicit formats, statistics for the models, and generators.

Formats are named in the type, never guessed (scipy.sparse style): CSR/CSC/COO matrices are
scipy's ``csr_array``/``csc_array``/``coo_array``; ``DCSR`` (doubly compressed rows) and ``CSF``
(compressed sparse fibers, 3-tensors) are perfjax's own, built explicitly from the others.
``SparseStats`` is the pytree the performance models consume.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
import scipy.io
import scipy.sparse as sp

from perfjax.errors import WorkloadError, check_integer

# ------------------------------------------------------------------------------------ reading


def read_matrix(path: str | Path, *, allow_empty: bool = False) -> sp.csr_array:
    """A MatrixMarket file as CSR (float64; pattern matrices get ones). Duplicates are summed.

    Raises WorkloadError naming the file when it is missing, malformed or (unless
    ``allow_empty``) has no nonzero.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"matrix file {path}: no such file")
    _check_header(path)
    try:
        loaded = scipy.io.mmread(path)
    except Exception as exc:  # scipy raises ValueError, IndexError, ... on malformed files
        raise WorkloadError(f"matrix file {path}: not a readable MatrixMarket matrix "
                            f"({type(exc).__name__}: {exc})") from None
    matrix = sp.csr_array(loaded, dtype=np.float64) if not sp.issparse(loaded) \
        else sp.csr_array(loaded.astype(np.float64))
    matrix.sum_duplicates()
    matrix.sort_indices()
    if matrix.ndim != 2 or min(matrix.shape) == 0:
        raise WorkloadError(f"matrix file {path}: shape {matrix.shape} has no rows or columns")
    if matrix.nnz == 0 and not allow_empty:
        raise WorkloadError(f"matrix file {path}: the matrix has no nonzero")
    if not np.isfinite(matrix.data).all():
        bad = int(np.count_nonzero(~np.isfinite(matrix.data)))
        raise WorkloadError(f"matrix file {path}: {bad} value(s) are NaN or infinite")
    return matrix


MAX_DIMENSION = 2**31 - 1  # rows / columns: the generated kernels index with 32-bit integers


def _check_header(path: Path) -> None:
    """Refuse, before reading the entries, what no kernel here can take: complex values, a
    symmetric header on a non-square matrix, dimensions beyond 32-bit indices."""
    try:
        rows, cols, _, _, field, symmetry = scipy.io.mminfo(path)
    except Exception as exc:  # a malformed banner or size line
        raise WorkloadError(f"matrix file {path}: not a readable MatrixMarket matrix "
                            f"({type(exc).__name__}: {exc})") from None
    if field == "complex":
        raise WorkloadError(f"matrix file {path}: complex values are not supported (real, "
                            f"integer or pattern matrices only)")
    if symmetry != "general" and rows != cols:
        raise WorkloadError(f"matrix file {path}: declared {symmetry} but not square "
                            f"({rows} x {cols})")
    if max(rows, cols) > MAX_DIMENSION:
        raise WorkloadError(f"matrix file {path}: {rows} x {cols} exceeds the largest supported "
                            f"dimension ({MAX_DIMENSION})")


@dataclass(frozen=True)
class COO3:
    """A 3-tensor in coordinate format: ``coords`` [nnz, 3] (0-based, lexicographically sorted)."""

    shape: tuple[int, int, int]
    coords: np.ndarray
    values: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.values)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape)
        np.add.at(dense, tuple(self.coords.T), self.values)
        return dense


def read_tns(path: str | Path) -> COO3:
    """A FROSTT ``.tns`` file (1-based ``i j k value`` lines, ``#`` comments) as a 3-tensor."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"tensor file {path}: no such file")
    rows = []
    with path.open() as handle:
        for lineno, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            try:
                if len(parts) != 4:
                    raise ValueError(f"expected 4 fields, got {len(parts)}")
                i, j, k = (int(p) for p in parts[:3])
                value = float(parts[3])
                if min(i, j, k) < 1:
                    raise ValueError("indices are 1-based")
            except ValueError as exc:
                raise WorkloadError(f"tensor file {path}: line {lineno}: {exc}") from None
            rows.append((i - 1, j - 1, k - 1, value))
    if not rows:
        raise WorkloadError(f"tensor file {path}: the tensor has no nonzero")
    data = np.asarray(rows)
    coords = data[:, :3].astype(np.int64)
    shape = tuple(int(v) for v in coords.max(axis=0) + 1)
    return coo3(shape, coords, data[:, 3])


def coo3(shape: tuple[int, int, int], coords: np.ndarray, values: np.ndarray) -> COO3:
    """Build a COO3, summing duplicates and sorting coordinates lexicographically."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(coords) != len(values):
        raise WorkloadError(f"3-tensor: {len(coords)} coordinates but {len(values)} values")
    if len(coords) and ((coords < 0).any() or (coords >= np.asarray(shape)).any()):
        raise WorkloadError(f"3-tensor: a coordinate lies outside shape {tuple(shape)}")
    key = np.ravel_multi_index(coords.T, shape) if len(coords) else np.zeros(0, np.int64)
    unique, inverse = np.unique(key, return_inverse=True)
    summed = np.zeros(len(unique))
    np.add.at(summed, inverse, values)
    return COO3(tuple(int(s) for s in shape), np.stack(np.unravel_index(unique, shape), axis=1),
                summed)


# ------------------------------------------------------------------------------------ formats


@dataclass(frozen=True)
class DCSR:
    """Doubly compressed rows: only non-empty rows are stored.

    ``row_ids[q]`` is the q-th non-empty row; its entries are ``indptr[q]:indptr[q+1]``.
    """

    shape: tuple[int, int]
    row_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @staticmethod
    def from_csr(matrix: sp.csr_array) -> "DCSR":
        lengths = np.diff(matrix.indptr)
        rows = np.nonzero(lengths)[0]
        indptr = np.concatenate([[0], np.cumsum(lengths[rows])]).astype(np.int64)
        return DCSR(tuple(matrix.shape), rows.astype(np.int64), indptr,
                    matrix.indices.astype(np.int64), matrix.data.astype(np.float64))

    def to_csr(self) -> sp.csr_array:
        full = np.zeros(self.shape[0] + 1, dtype=np.int64)
        full[self.row_ids + 1] = np.diff(self.indptr)
        return sp.csr_array((self.data, self.indices, np.cumsum(full)), shape=self.shape)

    @property
    def nnz(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class CSF:
    """Compressed sparse fibers of a 3-tensor (i -> j -> k).

    Level 0: ``ids[0]`` the non-empty i; ``ptr[0]`` splits level-1 fibers among them.
    Level 1: ``ids[1]`` the j of each (i, j) fiber; ``ptr[1]`` splits the nonzeros among fibers.
    Level 2: ``ids[2]`` the k of each nonzero, ``values`` its value.
    """

    shape: tuple[int, int, int]
    ids: tuple[np.ndarray, np.ndarray, np.ndarray]
    ptr: tuple[np.ndarray, np.ndarray]
    values: np.ndarray

    @staticmethod
    def from_coo3(tensor: COO3) -> "CSF":
        c = tensor.coords
        if len(c) == 0:
            raise WorkloadError("CSF: the tensor has no nonzero")
        new_i = np.concatenate([[True], c[1:, 0] != c[:-1, 0]])
        new_ij = new_i | np.concatenate([[True], c[1:, 1] != c[:-1, 1]])
        fiber_starts = np.nonzero(new_ij)[0]
        slice_starts = np.nonzero(new_i[fiber_starts])[0]
        ptr1 = np.concatenate([fiber_starts, [len(c)]]).astype(np.int64)
        ptr0 = np.concatenate([slice_starts, [len(fiber_starts)]]).astype(np.int64)
        return CSF(tensor.shape, (c[new_i, 0], c[fiber_starts, 1], c[:, 2]), (ptr0, ptr1),
                   tensor.values)

    @property
    def nnz(self) -> int:
        return len(self.values)

    def fiber_lengths(self) -> np.ndarray:
        return np.diff(self.ptr[1])


# ---------------------------------------------------------------------------------- statistics


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SparseStats:
    """What the load-balance models need to know about a matrix, as a pytree of arrays.

    ``row_lengths`` is padded with zeros to a fixed length so statistics of different matrices
    stack into one batch (``stack_stats``); ``n_rows`` says how many entries are real.
    """

    n_rows: Any
    n_cols: Any
    nnz: Any
    row_lengths: Any  # int64 [padded rows]
    quantiles: Any  # row length at QUANTILES
    name: str = field(default="", metadata=dict(static=True))


QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def stats(matrix: sp.csr_array | sp.csr_matrix, name: str = "", pad_to: int | None = None) -> SparseStats:
    """Statistics of a CSR matrix, row lengths padded to ``pad_to`` (default: no padding)."""
    what = f"stats of {name or 'matrix'}"
    try:
        matrix = sp.csr_array(matrix)
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{what}: expected a 2-D sparse or dense matrix, got "
                            f"{type(matrix).__name__} ({exc})") from None
    lengths = np.diff(matrix.indptr).astype(np.int64)
    n = len(lengths)
    if n == 0:
        raise WorkloadError(f"{what}: shape {matrix.shape} has no rows")
    pad_to = n if pad_to is None else pad_to
    check_integer(pad_to, f"{what}: pad_to", None, error=WorkloadError)
    if pad_to < n:
        raise WorkloadError(f"stats of {name or 'matrix'}: cannot pad {n} rows to {pad_to}")
    padded = np.zeros(pad_to, dtype=np.int64)
    padded[:n] = lengths
    return SparseStats(np.int64(n), np.int64(matrix.shape[1]), np.int64(matrix.nnz), padded,
                       np.quantile(lengths, QUANTILES), name)


def cache_bytes(level: int, default: int) -> int:
    """This CPU's data (or unified) cache of ``level`` per core, from Linux sysfs (``default``
    where unreadable)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if ((index / "level").read_text().strip() == str(level)
                    and (index / "type").read_text().strip() in ("Data", "Unified")):
                text = (index / "size").read_text().strip().upper()
                scale = {"K": 1024, "M": 1024 ** 2}.get(text[-1:], 1)
                return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return default


def l1_data_cache_bytes(default: int = 32 * 1024) -> int:
    """This CPU's level-1 data cache per core, from Linux sysfs (``default`` where unreadable)."""
    return cache_bytes(1, default)


def l2_cache_bytes(default: int = 1024 * 1024) -> int:
    """This CPU's level-2 cache per core, from Linux sysfs (``default`` where unreadable)."""
    return cache_bytes(2, default)


def gather_misses(matrix, width: int = 1, cache_bytes: int | Sequence[int] | None = None
                  ) -> np.ndarray:
    """Per row, how many of its gathers of the dense operand are predicted to miss the cache.

    The kernels read ``x[col]`` (SpMV, ``width`` 1) or ``X[col, 0:width]`` (SpMM) for every
    nonzero in CSR order. A gather misses when the cache line(s) it needs were last touched more
    than ``cache_bytes`` worth of lines ago in that stream (a reuse-distance estimate of an LRU
    cache, by access count; first touches miss). Default cache: the L1 data cache. Returns float64
    [n_rows]; its sum over a worker's nonzeros is the load-balance model's ``misses`` counter.
    A sequence of cache sizes gives [n_rows, len(cache_bytes)], one column per cache (the reuse
    distances computed once).
    """
    matrix = sp.csr_array(matrix)
    if width < 1:
        raise WorkloadError(f"gather_misses: width must be >= 1, got {width}")
    single = cache_bytes is None or np.ndim(cache_bytes) == 0
    sizes = [l1_data_cache_bytes() if cache_bytes is None else int(cache_bytes)] if single else \
        [int(c) for c in cache_bytes]
    row_bytes = 8 * width
    lines_per_gather = -(-row_bytes // 64)
    cols = matrix.indices.astype(np.int64)
    line = cols // max(1, 64 // row_bytes) if row_bytes < 64 else cols * lines_per_gather
    count = len(line)
    order = np.lexsort((np.arange(count), line))  # by line, then by position in the stream
    previous = np.full(count, -np.inf)
    same = line[order[1:]] == line[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    distance = np.arange(count) - previous
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    out = np.stack([np.bincount(rows, weights=(distance * lines_per_gather > size // 64)
                                .astype(np.float64), minlength=matrix.shape[0])
                    for size in sizes], axis=1)
    return out[:, 0] if single else out


def length_changes(matrix) -> np.ndarray:
    """Per row, 1.0 where its length differs from the previous row's (the first row: 1.0): the
    row ends whose inner-loop exit a branch predictor cannot guess from the last trip count."""
    lengths = np.diff(sp.csr_array(matrix).indptr)
    return np.concatenate([[1.0], (lengths[1:] != lengths[:-1]).astype(float)])[:len(lengths)]


def length_information(matrix) -> int:
    """Bytes of the zlib-compressed (level 6) sequence of row lengths (little-endian uint16,
    lengths above 65535 clipped): the information a branch predictor must hold to learn where
    every row's inner loop exits. A pattern (alternating, periodic, a few lengths in a repeated
    structure) compresses to little and is learned over repeated runs; lengths drawn at random
    compress to about their entropy and are not (measured per CPU by the calibration)."""
    lengths = np.diff(sp.csr_array(matrix).indptr)
    return len(zlib.compress(np.minimum(lengths, 65535).astype("<u2").tobytes(), 6))


def unlearned_share(information: float, predictor_bytes: float) -> float:
    """The share of row-length changes a predictor of ``predictor_bytes`` capacity mispredicts on
    a matrix whose row lengths hold ``information`` bytes (``length_information``): max(0, 1 -
    capacity / information)."""
    return max(0.0, 1.0 - float(predictor_bytes) / max(float(information), 1.0))


def row_misses(matrix, width: int = 1, cache_bytes: int | None = None,
               predictor_bytes: float = 0.0, l2_bytes: int | None = None) -> np.ndarray:
    """[n_rows, 3] per-row predicted misses for the load-balance model: column 0 the dense
    operand's gathers that miss the L1 cache (``gather_misses``; ``cache_bytes``, default this
    CPU's L1 data cache), column 1 the mispredicted row ends: ``length_changes`` scaled by
    ``unlearned_share(length_information(matrix), predictor_bytes)``, a predictor that learns a
    sequence of loop exits holding up to ``predictor_bytes`` of information (a calibrated,
    per-CPU constant), column 2 the gathers that miss the L2 cache too (``l2_bytes``, default
    this CPU's L2: operands larger than it cost several times more per gather, measured)."""
    matrix = sp.csr_array(matrix)
    if not predictor_bytes >= 0:
        raise WorkloadError(f"row_misses: predictor_bytes must be >= 0, got {predictor_bytes}")
    unlearned = (unlearned_share(length_information(matrix), predictor_bytes)
                 if predictor_bytes else 1.0)
    l1 = l1_data_cache_bytes() if cache_bytes is None else int(cache_bytes)
    l2 = l2_cache_bytes() if l2_bytes is None else int(l2_bytes)
    gathers = gather_misses(matrix, width, [l1, l2])
    return np.stack([gathers[:, 0], length_changes(matrix) * unlearned, gathers[:, 1]], axis=1)


def stack_stats(items: list[SparseStats]) -> SparseStats:
    """Stack statistics of several matrices into one batched pytree (rows padded to the longest)."""
    items = list(items)
    if not items:
        raise WorkloadError("stack_stats: no statistics to stack (pass a non-empty list of "
                            "SparseStats)")
    wrong = [type(s).__name__ for s in items if not isinstance(s, SparseStats)]
    if wrong:
        raise WorkloadError(f"stack_stats: expected SparseStats (from stats()), got {wrong[0]}")
    width = max(len(s.row_lengths) for s in items)
    padded = [SparseStats(s.n_rows, s.n_cols, s.nnz,
                          np.pad(np.asarray(s.row_lengths), (0, width - len(s.row_lengths))),
                          s.quantiles, "") for s in items]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *padded)


# ---------------------------------------------------------------------------------- generators


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        check_integer(value, f"generator argument {name}", 1, error=WorkloadError)


MAX_NNZ = 2**31 - 1  # generated nonzeros: the kernels' 32-bit row pointers


def _available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; physical pages elsewhere)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def check_generated_size(what: str, nbytes: float, **sizes: Any) -> None:
    """WorkloadError naming ``what`` and its sizes when a row or column count or a nonzero count
    in ``sizes`` exceeds 2^31 - 1, or the generator's estimated allocation ``nbytes`` exceeds the
    memory available (instead of numpy's MemoryError part way through)."""
    for name, value in sizes.items():
        if value > MAX_NNZ:
            raise WorkloadError(f"{what}: {name}={value} exceeds the largest supported size "
                                f"({MAX_NNZ})")
    available = _available_memory()
    if nbytes > available:
        described = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise WorkloadError(f"{what}: {described} needs about {nbytes / 2**30:.3g} GiB, more than "
                            f"the {available / 2**30:.3g} GiB of memory available")


def check_alpha(alpha: Any, what: str, non_negative: bool = False) -> float:
    """A power-law exponent as a float: a finite number (>= 0 with ``non_negative``), else a
    WorkloadError naming ``what``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not math.isfinite(alpha) or (non_negative and alpha < 0):
        kind = "a non-negative number" if non_negative else "a finite number"
        raise WorkloadError(f"{what}: alpha must be {kind}, got {alpha!r}")
    return float(alpha)


def generator_rng(seed: Any, what: str) -> np.random.Generator:
    """``np.random.default_rng(seed)``, or a WorkloadError naming ``what`` for a seed it refuses
    (negative, fractional, not a number)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{what}: seed must be a non-negative integer, got {seed!r} "
                            f"({exc})") from None


def powerlaw_rows(n_rows: int, n_cols: int, nnz: int, alpha: float = 1.5, seed: int = 0,
                  columns: str = "random") -> sp.csr_array:
    """Rows whose lengths follow a Zipf law (row of rank r gets weight r^-alpha), shuffled, with
    distinct uniformly random columns: the skew of web and social graphs. ``alpha=0`` gives
    (nearly) equal lengths; ``columns="local"`` puts row i's entries in the consecutive columns
    from i on (wrapping), so the dense operand is read in order whatever the lengths."""
    _check_positive(n_rows=n_rows, n_cols=n_cols, nnz=nnz)
    if columns not in ("random", "local"):
        raise WorkloadError(f"powerlaw_rows: columns must be 'random' or 'local', got {columns!r}")
    if nnz > n_rows * n_cols:
        raise WorkloadError(f"powerlaw_rows: nnz {nnz} exceeds {n_rows} x {n_cols} entries")
    alpha = check_alpha(alpha, "powerlaw_rows")
    check_generated_size("powerlaw_rows", 32.0 * n_rows + 24.0 * nnz, n_rows=n_rows,
                         n_cols=n_cols, nnz=nnz)
    rng = generator_rng(seed, "powerlaw_rows")
    weights = np.arange(1, n_rows + 1, dtype=float) ** -alpha
    lengths = np.minimum(np.floor(weights / weights.sum() * nnz).astype(np.int64), n_cols)
    deficit = nnz - lengths.sum()
    while deficit > 0:  # hand out the rounding remainder to rows that still have room
        room = np.nonzero(lengths < n_cols)[0][:deficit]
        lengths[room] += 1
        deficit = nnz - lengths.sum()
    lengths = rng.permutation(lengths)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    if columns == "local":
        # row i holds columns (i + j) % n_cols for j < k, sorted: those that wrapped past the
        # last column (0 .. w-1) first, then the rest (i % n_cols on)
        row = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
        start = row % n_cols
        wrapped = np.maximum(start + lengths[row] - n_cols, 0)
        t = np.arange(nnz, dtype=np.int64) - indptr[row]
        indices = np.where(t < wrapped, t, start + t - wrapped)
    else:
        indices = np.concatenate([np.sort(rng.choice(n_cols, size=k, replace=False)) if k else
                                  np.zeros(0, np.int64) for k in lengths])
    return sp.csr_array((rng.standard_normal(nnz), indices, indptr), shape=(n_rows, n_cols))


def rmat(scale: int, edge_factor: int = 16, a: float = 0.57, b: float = 0.19, c: float = 0.19,
         seed: int = 0) -> sp.csr_array:
    """R-MAT graph (Chakrabarti et al.) with 2^scale vertices and edge_factor * 2^scale edge draws
    (duplicates merged), the Graph500 default probabilities."""
    _check_positive(scale=scale, edge_factor=edge_factor)
    if not (0 < a and 0 <= b and 0 <= c and a + b + c < 1):
        raise WorkloadError(f"rmat: probabilities a={a}, b={b}, c={c} must be >= 0 with a + b + c < 1")
    n, edges = 1 << min(scale, 64), edge_factor << min(scale, 64)
    check_generated_size("rmat", 40.0 * edges, vertices=n, edges=edges)
    rng = generator_rng(seed, "rmat")
    rows = np.zeros(edges, dtype=np.int64)
    cols = np.zeros(edges, dtype=np.int64)
    for bit in range(scale):
        u = rng.random(edges)
        down = u >= a + b  # quadrants c and d set the row bit
        right = ((u >= a) & (u < a + b)) | (u >= a + b + c)  # quadrants b and d set the column bit
        rows |= down.astype(np.int64) << bit
        cols |= right.astype(np.int64) << bit
    matrix = sp.coo_array((np.ones(edges), (rows, cols)), shape=(n, n)).tocsr()
    matrix.sum_duplicates()
    matrix.data = rng.standard_normal(matrix.nnz)
    return sp.csr_array(matrix)


def banded(n: int, bandwidth: int, seed: int = 0) -> sp.csr_array:
    """An n x n matrix with every entry |i - j| <= bandwidth (regular: the balanced case)."""
    _check_positive(n=n, bandwidth=bandwidth)
    if bandwidth > n:
        raise WorkloadError(f"banded: bandwidth {bandwidth} exceeds n={n} (n - 1 already fills "
                            f"the matrix)")
    band = min(bandwidth, n - 1)
    nnz = n * (2 * band + 1) - band * (band + 1)
    check_generated_size("banded", 32.0 * nnz, n=n, nnz=nnz)
    offsets = list(range(-bandwidth, bandwidth + 1))
    matrix = sp.diags_array([np.ones(n - abs(o)) for o in offsets], offsets=offsets, shape=(n, n))
    matrix = sp.csr_array(matrix)
    matrix.data = generator_rng(seed, "banded").standard_normal(matrix.nnz)
    return matrix


def uniform_random(n_rows: int, n_cols: int, density: float, seed: int = 0) -> sp.csr_array:
    """Each entry nonzero independently with probability ``density`` (Erdos-Renyi)."""
    _check_positive(n_rows=n_rows, n_cols=n_cols)
    if isinstance(density, bool) or not isinstance(density, (int, float, np.integer, np.floating)) \
            or not 0 < density <= 1:
        raise WorkloadError(f"uniform_random: density must be in (0, 1], got {density!r}")
    entries = n_rows * n_cols
    nnz = round(density * entries)
    # numpy draws the positions from a permutation of every entry unless they are few
    drawn = 8.0 * entries if entries <= 10000 or nnz > entries / 50 else 0.0
    check_generated_size("uniform_random", drawn + 40.0 * nnz, n_rows=n_rows, n_cols=n_cols,
                         nnz=nnz)
    rng = generator_rng(seed, "uniform_random")
    data_rng = generator_rng(seed + 1 if isinstance(seed, (int, np.integer)) else seed,
                             "uniform_random")
    matrix = sp.random_array((n_rows, n_cols), density=density, format="csr",
                             rng=rng, data_sampler=data_rng.standard_normal)
    return sp.csr_array(matrix)


def random_tensor3(shape: tuple[int, int, int], nnz: int, alpha: float = 1.0, seed: int = 0) -> COO3:
    """A 3-tensor whose first-mode slices have power-law sizes (alpha = 0: uniform)."""
    if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s <= 0 for s in shape):
        raise WorkloadError(f"random_tensor3: shape must be three positive integers, got {shape}")
    _check_positive(nnz=nnz)
    alpha = check_alpha(alpha, "random_tensor3")
    if math.prod(int(s) for s in shape) > 2**63 - 1:
        raise WorkloadError(f"random_tensor3: shape {tuple(shape)} has more entries than 64-bit "
                            f"coordinates index")
    check_generated_size("random_tensor3", 16.0 * shape[0] + 120.0 * nnz, nnz=nnz)
    rng = generator_rng(seed, "random_tensor3")
    weights = np.arange(1, shape[0] + 1, dtype=float) ** -alpha
    i = rng.permutation(shape[0])[rng.choice(shape[0], size=nnz, p=weights / weights.sum())]
    coords = np.stack([i, rng.integers(0, shape[1], nnz), rng.integers(0, shape[2], nnz)], axis=1)
    return coo3(shape, coords, rng.standard_normal(nnz))


def generated(name: str, seed: int = 0) -> sp.csr_array:
    """A few named generated matrices for demos and tests (no downloaded data needed)."""
    recipes = {
        "powerlaw-4k": lambda: powerlaw_rows(4096, 4096, 65536, alpha=1.2, seed=seed),
        "rmat-12": lambda: rmat(12, 8, seed=seed),
        "banded-4k": lambda: banded(4096, 4, seed=seed),
        "uniform-4k": lambda: uniform_random(4096, 4096, 16 / 4096, seed=seed),
    }
    if name not in recipes:
        raise WorkloadError(f"unknown generated matrix {name!r} (known: {', '.join(recipes)})")
    return recipes[name]()
