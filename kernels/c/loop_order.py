"""Loop orders of the CSR kernels with a dense inner dimension (SpMM, SDDMM), as TACO schedules them.

Both kernels have the loops of TACO's split schedule: the rows ``i`` split by ``chunk_size`` into
``i0`` (chunks, the OpenMP worksharing loop) and ``i1`` (rows of a chunk), the sparse level ``k``
(a row's nonzeros) and the dense dimension ``j`` (SpMM: the K columns of X and Y; SDDMM: the K
terms of each dot product) split by ``unroll`` into ``j0`` (blocks) and ``j1`` (lanes of a block,
unrolled). A loop order is a permutation of the items ``LOOP_ITEMS`` = (i0, i1, k, j0, j1), stored
as the item at each position (``Permutation``'s convention), so (0, 1, 2, 3, 4) is TACO's default
nest ``i0 i1 k j0 j1``.

Legal orders: ``k`` runs inside ``i1`` (its bounds are the row's), ``i1`` inside ``i0``, ``j1``
inside ``j0`` and the parallel ``i0`` outermost (one worksharing loop per kernel). That leaves six
orders, in three families by where the sparse loop sits relative to the dense one:

* ``k`` outside ``j0`` (only ``i0 i1 k j0 j1``): per nonzero, a vectorizable sweep over j (SpMM
  accumulates into the output row; SDDMM's dot keeps ``unroll`` partial sums);
* ``j0`` outside ``k``, ``j1`` inside (register blocking): per block of ``unroll`` columns the
  nonzeros are walked once, ``unroll`` accumulators live in registers (SpMM) or each nonzero adds
  its block's partial dot product (SDDMM);
* ``j0`` and ``j1`` outside ``k``: one column at a time, a scalar dot over the row's nonzeros.

An explicit partition (partition mode) fixes which rows and nonzeros a worker walks, so there only
the order of ``k``, ``j0`` and ``j1`` can change: ``i1`` must precede ``j0``.

``nest_lines`` emits the nest from C names the caller binds (``Names``); the tail of j (K not a
multiple of ``unroll``) runs as blocks of one lane after the full blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from perfjax.kernels.c.emit import KernelError, _tree_sum, schedule_clause, schedule_region

LOOP_ITEMS = ("i0", "i1", "k", "j0", "j1")
IDENTITY = (0, 1, 2, 3, 4)
LOOP_ORDER_OPS = ("spmm", "sddmm")


def check_loop_order(order, *, partition_mode: bool) -> tuple[int, ...]:
    """``order`` as a tuple after checking it is a legal order of LOOP_ITEMS, else KernelError."""
    try:
        items = tuple(int(v) for v in order)
        if any(isinstance(v, bool) or float(v) != int(v) for v in order):
            raise ValueError
    except (TypeError, ValueError):
        raise KernelError(f"loop_order must be a permutation of 0..4 (items {LOOP_ITEMS}), "
                          f"got {order!r}") from None
    if sorted(items) != list(range(len(LOOP_ITEMS))):
        raise KernelError(f"loop_order must be a permutation of 0..4 (items {LOOP_ITEMS}), "
                          f"got {order!r}")
    pos = positions(items)
    broken = [rule for rule, ok in (
        ("i0 before i1", pos["i0"] < pos["i1"]), ("i1 before k", pos["i1"] < pos["k"]),
        ("j0 before j1", pos["j0"] < pos["j1"]), ("i0 outermost", pos["i0"] == 0),
        ("i1 before j0 in partition mode", not partition_mode or pos["i1"] < pos["j0"])) if not ok]
    if broken:
        raise KernelError(f"loop_order {describe(items)} is illegal: it breaks "
                          f"{', '.join(broken)}")
    return items


def positions(order: Sequence[int]) -> dict[str, int]:
    """Loop item name -> its position in ``order``."""
    return {LOOP_ITEMS[item]: at for at, item in enumerate(order)}


def describe(order: Sequence[int]) -> str:
    """The order written as loop names, outermost first: "i0 i1 k j0 j1"."""
    return " ".join(LOOP_ITEMS[item] for item in order)


def family(order: Sequence[int]) -> str:
    """"k_outer" (k outside j0), "register" (j0 outside k, j1 inside) or "column" (both
    outside)."""
    pos = positions(order)
    return "k_outer" if pos["k"] < pos["j0"] else "register" if pos["k"] < pos["j1"] \
        else "column"


@dataclass(frozen=True)
class Names:
    """C expressions the nest reads: ``w`` the dense width, ``col`` / ``val`` the CSR arrays,
    ``k_lo`` / ``k_hi`` a row's nonzero range (in terms of ``row``), SpMM's ``x`` (X, row-major
    [ncols, w]) and ``dst`` (the output row, bound by the caller or at the i1 level from ``y``),
    SDDMM's ``xr`` (X's row, bound likewise from ``X``), ``Y`` and ``out``."""

    w: str = "w"
    col: str = "col"
    val: str = "val"
    k_lo: str = "indptr[row]"
    k_hi: str = "indptr[row + 1]"
    x: str = "x"
    y: str = "y"
    dst: str = "dst"
    X: str = "X"
    Y: str = "Y"
    xr: str = "xr"
    out: str = "out"


def nest_lines(op: str, order: Sequence[int], unroll: int, names: Names = Names(),
               chunk_lines: Sequence[str] = ()) -> list[str]:
    """The C lines of ``op``'s loop nest in ``order`` (every loop of LOOP_ITEMS, or, for the
    body of one row in partition mode, only the items after i1).

    The i0 loop is emitted as ``for (ch ...)`` over chunks whose rows ``lo .. hi-1`` the caller's
    ``chunk_lines`` (placed first in its body, after lo / hi) may use; the caller puts the
    ``#pragma omp for`` line right before the returned lines when i0 is in ``order``.
    """
    if op not in LOOP_ORDER_OPS:
        raise KernelError(f"loop orders apply to {LOOP_ORDER_OPS}, not {op!r}")
    loops = [LOOP_ITEMS[item] for item in order]
    kind = family(_full(order))
    n = names

    def body(level: int, lanes: int) -> list[str]:
        if level == len(loops):
            return _innermost(op, kind, lanes, n)
        loop = loops[level]
        if loop == "j0":  # the only loop whose inside runs with other lanes than its own
            if unroll == 1:
                return ["for (int64_t jb = 0; jb < " + n.w + "; ++jb) {",
                        *_indent(body(level + 1, 1), "    "), "}"]
            return ["{",
                    "    int64_t jb = 0;",
                    f"    for (; jb + {unroll} <= {n.w}; jb += {unroll}) {{",
                    *_indent(body(level + 1, unroll), "        "),
                    "    }",
                    f"    for (; jb < {n.w}; ++jb) {{  /* the tail of j, one lane at a time */",
                    *_indent(body(level + 1, 1), "        "),
                    "    }",
                    "}"]
        inner = _indent(body(level + 1, lanes), "    ")
        if loop == "i0":  # schedule mode only, where the row pointers are `indptr`
            zero = [] if op == "spmm" or kind == "k_outer" else [
                f"    for (int64_t q = indptr[lo]; q < indptr[hi]; ++q) {n.out}[q] = 0.0;"]
            return ["for (int64_t ch = 0; ch < nchunks; ++ch) {",
                    "    const int64_t lo = ch * chunk_size, "
                    "hi = lo + chunk_size < nrows ? lo + chunk_size : nrows;",
                    *_indent(list(chunk_lines), "    "), *zero, *inner, "}"]
        if loop == "i1":
            bind = [f"    double *restrict {n.dst} = {n.y} + row * {n.w};"] if op == "spmm" \
                else [f"    const double *restrict {n.xr} = {n.X} + row * {n.w};"]
            clear = [f"    for (int64_t c = 0; c < {n.w}; ++c) {n.dst}[c] = 0.0;"] \
                if op == "spmm" and kind == "k_outer" else []
            return ["for (int64_t row = lo; row < hi; ++row) {", *bind, *clear, *inner, "}"]
        if loop == "j1":
            if kind == "column":  # a real loop over the block's columns, outside k
                return [f"for (int64_t c = jb; c < jb + {lanes}; ++c) {{", *inner, "}"]
            return body(level + 1, lanes)  # inside k: the lanes are unrolled statements
        return _k_loop(op, kind, lanes, unroll, n, body(level + 1, lanes))
    if "i1" in loops:
        return body(0, unroll)
    # One row's nonzeros k_lo .. k_hi-1 (partition mode): clear what the nest accumulates into.
    if op == "spmm":
        clear = [f"for (int64_t c = 0; c < {n.w}; ++c) {n.dst}[c] = 0.0;"] \
            if kind == "k_outer" else []
    else:
        clear = [] if kind == "k_outer" else \
            [f"for (int64_t q = {n.k_lo}; q < {n.k_hi}; ++q) {n.out}[q] = 0.0;"]
    return clear + body(0, unroll)


def _full(order: Sequence[int]) -> tuple[int, ...]:
    """A row-body order (items after i1 only) completed with i0 i1 in front."""
    return tuple(order) if len(order) == len(LOOP_ITEMS) else (0, 1, *order)


def _k_loop(op: str, kind: str, lanes: int, unroll: int, n: Names, inner: list[str]) -> list[str]:
    """The nonzero loop with what its family does before, in and after it."""
    head = f"for (int64_t k = {n.k_lo}; k < {n.k_hi}; ++k) {{"
    if op == "spmm":
        per_k = [f"    const double a = {n.val}[k];",
                 f"    const double *restrict xr = {n.x} + (int64_t) {n.col}[k] * {n.w};"]
        if kind == "k_outer":
            return [head, *per_k, *_indent(inner, "    "), "}"]
        if kind == "register":
            accs = [f"acc{lane}" for lane in range(lanes)]
            return [f"double {', '.join(a + ' = 0.0' for a in accs)};", head, *per_k,
                    *_indent(inner, "    "), "}",
                    *(f"{n.dst}[jb + {lane}] = acc{lane};" for lane in range(lanes))]
        return ["double s = 0.0;", head, *_indent(inner, "    "), "}", f"{n.dst}[c] = s;"]
    per_k = [f"    const double *restrict yr = {n.Y} + {n.col}[k] * {n.w};"]
    if kind == "k_outer":
        sums = [f"s{lane}" for lane in range(unroll)]
        return [head, *per_k, f"    double {', '.join(s + ' = 0.0' for s in sums)};",
                *_indent(inner, "    "), f"    {n.out}[k] = {n.val}[k] * {_tree_sum(sums)};", "}"]
    return [head, *per_k, *_indent(inner, "    "), "}"]


def _innermost(op: str, kind: str, lanes: int, n: Names) -> list[str]:
    """The statement(s) at the bottom of the nest, for ``lanes`` columns jb .. jb+lanes-1 (or
    column c in the column family)."""
    if op == "spmm":
        if kind == "k_outer":
            return [f"{n.dst}[jb + {lane}] += a * xr[jb + {lane}];" for lane in range(lanes)]
        if kind == "register":
            return [f"acc{lane} += a * xr[jb + {lane}];" for lane in range(lanes)]
        return [f"s += {n.val}[k] * {n.x}[(int64_t) {n.col}[k] * {n.w} + c];"]
    if kind == "k_outer":  # lane l of the dot's partial sums
        return [f"s{lane} += {n.xr}[jb + {lane}] * yr[jb + {lane}];" for lane in range(lanes)]
    if kind == "register":
        terms = [f"{n.xr}[jb + {lane}] * yr[jb + {lane}]" for lane in range(lanes)]
        return [f"{n.out}[k] += {n.val}[k] * {_tree_sum(terms)};"]
    return [f"{n.out}[k] += {n.val}[k] * ({n.xr}[c] * yr[c]);"]


def _indent(lines: list[str], by: str) -> list[str]:
    return [by + line for line in lines]


# ------------------------------------------------------------------------------------- programs
# The functions each generator (emit: SpMM, ops: SDDMM) puts in place of its default ones when
# its spec has a loop_order.


def _row_items(order: Sequence[int]) -> tuple[int, ...]:
    """The items after i1 (k, j0, j1) in ``order``: the nest of one row."""
    return tuple(item for item in order if LOOP_ITEMS[item] not in ("i0", "i1"))


def _chunk_size(spec) -> int:
    return 1 if spec.chunk_size is None else spec.chunk_size


def spmm_row_kernel(spec) -> str:
    """SpMM's ``row_kernel`` (partition mode) in the order of ``spec.loop_order``'s k, j0, j1."""
    from perfjax.kernels.c.emit import _ROW_SIGNATURE
    names = Names(w="width", k_lo="lo", k_hi="hi")
    order = _row_items(spec.loop_order)
    return "\n".join([
        f"/* dst[0:width] = sum over nonzeros [lo, hi) of val * X[col, 0:width]; loops "
        f"{describe(order)}, j blocks of {spec.unroll}. */",
        _ROW_SIGNATURE, "{",
        *_indent(nest_lines("spmm", order, spec.unroll, names), "    "), "}"])


def spmm_schedule_kernel(spec) -> str:
    """SpMM's ``kernel`` (schedule mode): the whole nest of ``spec.loop_order``, OpenMP
    schedule(kind, chunk) over chunks of ``chunk_size`` rows (1 when not given)."""
    count, clause = spec.instrument, schedule_clause(spec)
    chunk_lines = ["rows += hi - lo;", "nnz += indptr[hi] - indptr[lo];"] if count else []
    return "\n".join(line for line in [
        f"/* OpenMP schedule({clause}) over chunks of {_chunk_size(spec)} rows, loops "
        f"{describe(spec.loop_order)}; `single` does not apply here. */",
        "static void kernel(const Problem *pb, int threads, int64_t single)",
        "{",
        "    (void) single;",
        "    const int64_t *restrict indptr = pb->indptr;",
        "    const col_t *restrict col = pb->col;",
        "    const double *restrict val = pb->val, *restrict x = pb->x;",
        "    double *restrict y = pb->y;",
        f"    const int64_t w = pb->width, nrows = pb->nrows, chunk_size = {_chunk_size(spec)};",
        "    const int64_t nchunks = (nrows + chunk_size - 1) / chunk_size;",
        *schedule_region(clause, _indent(nest_lines("spmm", spec.loop_order, spec.unroll,
                                                    chunk_lines=chunk_lines), "        "), count),
        "}"] if line is not None)


def sddmm_span(spec) -> str:
    """SDDMM's ``sddmm_span`` (nonzeros [lo, hi) of one row) in the order of ``spec.loop_order``'s
    k, j0, j1."""
    order = _row_items(spec.loop_order)
    return "\n".join([
        "/* out[k] = val[k] * <X[row, :], Y[col[k], :]> for the nonzeros [lo, hi) of row `row`;",
        f" * loops {describe(order)}, j blocks of {spec.unroll}. */",
        "static inline void sddmm_span(const Problem *pb, int64_t row, int64_t lo, int64_t hi)",
        "{",
        "    const int64_t w = pb->width;",
        "    const int64_t *restrict col = pb->col;",
        "    const double *restrict val = pb->val, *restrict Y = pb->Y;",
        "    double *restrict out = pb->out;",
        "    const double *restrict xr = pb->X + row * w;",
        *_indent(nest_lines("sddmm", order, spec.unroll, Names(k_lo="lo", k_hi="hi")), "    "),
        "}"])


def sddmm_schedule_kernel(spec) -> str:
    """SDDMM's ``kernel`` (schedule mode): the whole nest of ``spec.loop_order`` over chunks of
    ``chunk_size`` rows, with the ops driver's COUNT / SPAN instrumentation."""
    clause = schedule_clause(spec)
    return "\n".join([
        f"/* OpenMP schedule({clause}) over chunks of {_chunk_size(spec)} rows, loops "
        f"{describe(spec.loop_order)}; `single` does not apply. */",
        "static void kernel(Problem *pb, int threads, int64_t single)",
        "{",
        "    (void) single;",
        "    const int64_t *restrict indptr = pb->indptr, *restrict col = pb->col;",
        "    const double *restrict val = pb->val, *restrict X = pb->X, *restrict Y = pb->Y;",
        "    double *restrict out = pb->out;",
        f"    const int64_t w = pb->width, nrows = pb->nrows, chunk_size = {_chunk_size(spec)};",
        "    const int64_t nchunks = (nrows + chunk_size - 1) / chunk_size;",
        "#pragma omp parallel num_threads(threads)",
        "    {",
        "        const int64_t p = omp_get_thread_num();",
        "        (void) p;",
        "        SPAN_BEGIN;",
        "        int64_t cnt[D] = {0};",
        f"#pragma omp for schedule({clause}) nowait",
        *_indent(nest_lines("sddmm", spec.loop_order, spec.unroll,
                            chunk_lines=["COUNT(0, hi - lo);",
                                         "COUNT(1, indptr[hi] - indptr[lo]);"]), "        "),
        "        (void) cnt;",
        "        SPAN_END(p);",
        "    }",
        "}"])
