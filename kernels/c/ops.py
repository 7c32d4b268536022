"""C11 + OpenMP source for SDDMM, SpAdd / SpMul co-iteration, and CSF TTV / MTTKRP programs.

Same design as ``emit`` (SpMV / SpMM): a standalone program per ``OpSpec`` reads one input file,
runs the kernel ``repeats`` times and writes one output file; partition mode executes an explicit
``Partition`` (worker p = OpenMP thread p, or only worker p on one thread, or every worker in
turn on one thread), schedule mode is a plain ``#pragma omp for schedule(kind, chunk)`` over the
rows (slices for CSF), optionally split TACO-style into ``chunk_size`` row chunks (the worksharing
loop runs over chunks, an inner loop over the rows of a chunk). Instrumented programs count, per
worker, every path coordinate their loops actually consumed, so the counters equal
``Partition.work()`` exactly.

The kernels and how a segment is executed:

* ``sddmm``: out[k] = A.val[k] * <X[row(k), :], Y[col(k), :]> over A's pattern (A CSR [m, n], X
  [m, K], Y [n, K]). Path points (rows, nonzeros) as SpMV; every nonzero has its own output slot,
  so a row cut by a segment needs no carry. ``unroll`` unrolls the K loop (U partial sums).
* ``spadd2`` / ``spadd3`` / ``spmul2``: C = A + B (+ D) or A .* B, N CSR operands co-iterated row
  by row (a merge of the sorted column lists). Path points (rows, nnz of operand 1, ..., of N); a
  segment starts and stops at *joint* coordinates (``merge_path_nway``, or row boundaries), so
  each output coordinate is produced by exactly one segment. The output CSR is built in two
  passes: (1) every segment counts the output coordinates it will produce; a sequential scan over
  the segments in path order gives each its first output position (no per-row carries: a
  segment's output is one contiguous range of the output arrays); the arrays are sized to the
  total; (2) every segment merges again, writing its coordinates from its position on and
  ``out_ptr[row + 1]`` at each row end it holds. Schedule mode counts per row, scans the rows,
  then fills. The output is the *structural* union (intersection for SpMul): a sum that cancels
  to 0 stays an explicit entry, as TACO does (scipy would drop it). Counters: rows and each
  operand's nonzeros consumed (both passes consume the same; pass 2 is counted).
* ``ttv`` (Z(i,j) = sum_k T(i,j,k) v(k)) and ``mttkrp`` (M(i,r) = sum_{j,k} T(i,j,k) B(j,r)
  C(k,r)) over CSF. Path points (slices, fibers, nonzeros), from the hierarchical merge path or
  slice blocks. TTV has one output per fiber: the segment holding a fiber's end writes it, a
  segment stopping inside fiber f1 carries its partial dot product. MTTKRP has one output row per
  slice: the segment holding a slice's end writes the row (sum over its fibers of B[j] * (sum of
  val * C[k])), a segment stopping inside slice s1 (after fibers or inside one) carries its
  partial rank-R vector. A sequential fix-up adds the carries after the parallel region, as in
  SpMV. ``unroll`` unrolls TTV's nonzero loop (partial sums) or MTTKRP's rank loop.

File formats (shared with ``ops_run``): input is an int64 header (INPUT_HEADER, then NDIMS dims
in the op's DIMS order, unused ones 0), seg_ptr [workers+1], seg_start [nseg*D], seg_end
[nseg*D], seg_order [nseg] (segments grouped by worker; seg_order lists them in path order), then
the op's INPUTS in order. Output is an int64 header (magic, workers, D, repeats, outputs), then
per OUTPUTS entry (count, kind) and its data, then seconds [repeats] f64, work [workers*D] i64,
worker_seconds [workers] f64 (each worker's fastest span over the repetitions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template

from perfjax.kernels.c.emit import (
    CSpec, KernelError, _lines, _tree_sum, check_unroll, driver_parts, header_enum, schedule_clause)

OPS = ("sddmm", "spadd2", "spadd3", "spmul2", "ttv", "mttkrp")
COITERATION = {"spadd2": ("add", 2), "spadd3": ("add", 3), "spmul2": ("mul", 2)}

INPUT_MAGIC = 0x504A4B4F5053        # "PJKOPS"
OUTPUT_MAGIC = 0x504A4B4F504F       # "PJKOPO"
FORMAT_VERSION = 1
NDIMS = 8
INPUT_HEADER = ("magic", "version", "opcode", "workers", "worker", "repeats", "debug", "nseg",
                "ndim")
KINDS = {"i64": 0, "f64": 1}

DIMS = {
    "sddmm": ("nrows", "ncols", "nnz", "width"),
    "spadd2": ("nrows", "ncols", "nnz0", "nnz1"),
    "spmul2": ("nrows", "ncols", "nnz0", "nnz1"),
    "spadd3": ("nrows", "ncols", "nnz0", "nnz1", "nnz2"),
    "ttv": ("nslices", "nfibers", "nnz", "klen"),
    "mttkrp": ("nslices", "nfibers", "nnz", "jlen", "klen", "rank"),
}


def _coiteration_inputs(n: int) -> tuple[tuple[str, str, str], ...]:
    return tuple(item for q in range(n) for item in (
        (f"ip{q}", "i64", "nrows + 1"), (f"ic{q}", "i64", f"nnz{q}"), (f"iv{q}", "f64", f"nnz{q}")))


# (name, kind, element count as an expression of the dims)
INPUTS = {
    "sddmm": (("indptr", "i64", "nrows + 1"), ("col", "i64", "nnz"), ("val", "f64", "nnz"),
              ("X", "f64", "nrows * width"), ("Y", "f64", "ncols * width")),
    "spadd2": _coiteration_inputs(2),
    "spmul2": _coiteration_inputs(2),
    "spadd3": _coiteration_inputs(3),
    "ttv": (("ptr0", "i64", "nslices + 1"), ("ptr1", "i64", "nfibers + 1"), ("kidx", "i64", "nnz"),
            ("val", "f64", "nnz"), ("v", "f64", "klen")),
    "mttkrp": (("ptr0", "i64", "nslices + 1"), ("ptr1", "i64", "nfibers + 1"),
               ("jidx", "i64", "nfibers"), ("kidx", "i64", "nnz"), ("val", "f64", "nnz"),
               ("B", "f64", "jlen * rank"), ("C", "f64", "klen * rank")),
}
_CSR_OUT = (("out_ptr", "i64", "nrows + 1"), ("out_col", "i64", "out_nnz"),
            ("out_val", "f64", "out_nnz"))
OUTPUTS = {
    "sddmm": (("out", "f64", "nnz"),),
    "spadd2": _CSR_OUT, "spmul2": _CSR_OUT, "spadd3": _CSR_OUT,
    "ttv": (("out", "f64", "nfibers"),),
    "mttkrp": (("out", "f64", "nslices * rank"),),
}


def ndim(op: str) -> int:
    """D, the number of coordinates of the op's path points."""
    if op in COITERATION:
        return COITERATION[op][1] + 1
    return 2 if op == "sddmm" else 3


@dataclass(frozen=True)
class OpSpec(CSpec):
    """Compile-time knobs of one generated program of ``OPS``.

    ``schedule`` None is partition mode; otherwise OpenMP schedule(schedule, chunk) over the rows
    (CSF: slices), split into ``chunk_size``-row chunks when given (TACO's split + parallelize of
    the outer loop: the worksharing loop runs over chunks). ``unroll``: see the module doc.
    ``loop_order`` (SDDMM only): a legal order of the loops (i0, i1, k, j0, j1), see
    ``perfjax.kernels.c.loop_order``; None keeps the default nest.
    """

    op: str
    unroll: int = 1
    schedule: str | None = None
    chunk: int | None = None
    chunk_size: int | None = None
    instrument: bool = False
    loop_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise KernelError(f"op must be one of {OPS}, got {self.op!r}")
        check_unroll(self.unroll)
        if self.op in COITERATION and self.unroll != 1:
            raise KernelError(f"unroll does not apply to {self.op} (its merge loop has no dense "
                              f"inner loop to unroll); leave it at 1")
        self._check_schedule_knobs()
        self._check_loop_order()

    def source(self) -> str:
        return emit_op_source(self)


# ------------------------------------------------------------------------------------ helpers


def c_count(expr: str) -> str:
    """A count expression of the dims as C (every name read from the Problem)."""
    return re.sub(r"\b([A-Za-z_]\w*)\b", r"pb->\1", expr)


def _ctype(kind: str) -> str:
    return "int64_t" if kind == "i64" else "double"


def _omp_units(spec: OpSpec, n: str, var: str, body: list[str], indent: str = "        ") -> str:
    """``#pragma omp for`` (nowait) over units 0..n-1 as ``var``, chunked when chunk_size is set."""
    clause = schedule_clause(spec)
    if spec.chunk_size is None:
        return _lines(f"#pragma omp for schedule({clause}) nowait",
                      f"{indent}for (int64_t {var} = 0; {var} < {n}; ++{var}) {{",
                      *(indent + "    " + line for line in body),
                      f"{indent}}}")
    cs = spec.chunk_size
    return _lines(f"{indent}{{",
                  f"{indent}const int64_t nchunks_ = ({n} + {cs - 1}) / {cs};",
                  f"#pragma omp for schedule({clause}) nowait",
                  f"{indent}for (int64_t ch_ = 0; ch_ < nchunks_; ++ch_) {{  /* chunk_size {cs} */",
                  f"{indent}    const int64_t lo_ = ch_ * {cs}, hi_ = lo_ + {cs} < {n} ? lo_ + {cs} : {n};",
                  f"{indent}    for (int64_t {var} = lo_; {var} < hi_; ++{var}) {{",
                  *(indent + "        " + line for line in body),
                  f"{indent}    }}",
                  f"{indent}}}",
                  f"{indent}}}")


def _dense_dot(u: int, a: str, b: str, n: str, result: str) -> list[str]:
    """Lines computing ``result = sum_c a[c] * b[c]`` for c < n, U independent partial sums."""
    sums = [f"s{i}" for i in range(u)]
    loop = "for (; c < n_; ++c) {" if u == 1 else f"for (; c + {u} <= n_; c += {u}) {{"
    return [f"const int64_t n_ = {n};",
            f"double {', '.join(s + ' = 0.0' for s in sums)};",
            "int64_t c = 0;",
            loop,
            *(f"    s{i} += {a}[c + {i}] * {b}[c + {i}];" for i in range(u)),
            "}",
            *([f"for (; c < n_; ++c) s0 += {a}[c] * {b}[c];"] if u > 1 else []),
            f"{result} = {_tree_sum(sums)};"]


def _indent(lines: list[str], by: str) -> list[str]:
    return [by + line for line in lines]


def _dense_output(count: str, carry: str | None = None) -> dict:
    """The driver parts (fields, alloc, init, reset, wrong) of a kernel whose output is one dense
    array ``out`` of ``count`` doubles (a C expression of the Problem). With ``carry`` (a C
    expression, the doubles one carry holds) every segment also gets a carry slot: the output
    unit it carries out (``carry_unit``, -1 for none) and its partial sums (``carry_val``), added
    in by ``_carry_fixup``."""
    fields, alloc = "double *out;", [f"pb->out = alloc({count}, sizeof(double));"]
    init = [f"fill_nan(pb->out, {count});"]
    if carry is not None:
        fields = "double *out, *carry_val;\n    int64_t *carry_unit;"
        alloc += ["pb->carry_unit = alloc(pb->nseg, sizeof(int64_t));",
                  f"pb->carry_val = alloc(pb->nseg * {carry}, sizeof(double));"]
        init.append("for (int64_t s = 0; s < pb->nseg; ++s) pb->carry_unit[s] = -1;")
    return dict(fields=fields, alloc="\n    ".join(alloc), init="\n    ".join(init),
                reset=f"if (single >= 0) memset(pb->out, 0, (size_t) ({count}) * sizeof(double));",
                wrong=f"if ({count} > 0) pb->out[0] += 1.0;")


def _carry_fixup(what: str, width: str) -> str:
    """``fixup``: add every segment's carry (``width`` doubles, a C expression) into the output
    unit it carried out of (see ``_dense_output``)."""
    return _lines(
        f"/* Add every carried partial {what}. */",
        "static void fixup(Problem *pb)",
        "{",
        f"    const int64_t W = {width};",
        "    for (int64_t s = 0; s < pb->nseg; ++s) {",
        "        const int64_t u = pb->carry_unit[s];",
        "        if (u < 0) continue;",
        "        for (int64_t c = 0; c < W; ++c) pb->out[u * W + c] += pb->carry_val[s * W + c];",
        "    }",
        "}")


# ------------------------------------------------------------------------------------ SDDMM


def _sddmm(spec: OpSpec) -> dict:
    u = spec.unroll
    span = _lines(
        "/* out[k] = val[k] * <X[row, :], Y[col[k], :]> for the nonzeros [lo, hi) of row `row`",
        f" * (K loop {u}x, independent partial sums). */",
        "static inline void sddmm_span(const Problem *pb, int64_t row, int64_t lo, int64_t hi)",
        "{",
        "    const int64_t w = pb->width;",
        "    const double *restrict xr = pb->X + row * w;",
        "    for (int64_t k = lo; k < hi; ++k) {",
        "        const double *restrict yr = pb->Y + pb->col[k] * w;",
        "        double dot;",
        *_indent(_dense_dot(u, "xr", "yr", "w", "dot"), "        "),
        "        pb->out[k] = pb->val[k] * dot;",
        "    }",
        "}")
    if spec.loop_order is not None:  # the nest in the order asked for (loop_order's generators)
        from perfjax.kernels.c import loop_order
        span = loop_order.sddmm_span(spec)
    if spec.schedule is None:
        kernel = _lines(
            span, "",
            "static void fixup(Problem *pb) { (void) pb; }  /* no carries */", "",
            _partition_kernel(
                "/* Worker p walks its segments (i0, j0) -> (i1, j1): rows i0 .. i1-1 end in it,\n"
                " * then nonzeros up to j1 of row i1. Every nonzero has its own output slot: no\n"
                " * carry. */",
                ["const int64_t *restrict indptr = pb->indptr;"],
                ["const int64_t i1 = b[0], j1 = b[1];",
                 "int64_t k = a[1];",
                 "for (int64_t row = a[0]; row < i1; ++row) {",
                 "    const int64_t stop = indptr[row + 1];",
                 "    sddmm_span(pb, row, k, stop);",
                 "    COUNT(0, 1);",
                 "    COUNT(1, stop - k);",
                 "    k = stop;",
                 "}",
                 "if (k < j1) {",
                 "    sddmm_span(pb, i1, k, j1);",
                 "    COUNT(1, j1 - k);",
                 "}"]))
    elif spec.loop_order is not None:
        kernel = _lines(span, "", loop_order.sddmm_schedule_kernel(spec))
    else:
        body = ["const int64_t lo = pb->indptr[row], hi = pb->indptr[row + 1];",
                "sddmm_span(pb, row, lo, hi);",
                "COUNT(0, 1);",
                "COUNT(1, hi - lo);"]
        kernel = _lines(span, "", _schedule_kernel(spec, "pb->nrows", "row", body))
    return dict(kernel=kernel, **_dense_output("pb->nnz"))


def _partition_kernel(comment: str, setup: list[str], segment: list[str]) -> str:
    """Partition mode of the single-pass kernels: ``run_worker`` (worker p's ``setup`` lines, then
    ``segment`` for each of its segments s, whose start and end points are a[0:D] and b[0:D];
    its counters and span recorded) after ``comment``, and ``_PARTITION_KERNEL``."""
    return _lines(
        comment,
        "static void run_worker(Problem *pb, int64_t p)",
        "{",
        "    SPAN_BEGIN;",
        "    int64_t cnt[D] = {0};",
        *_indent(setup, "    "),
        "    for (int64_t s = pb->seg_ptr[p]; s < pb->seg_ptr[p + 1]; ++s) {",
        "        const int64_t *a = pb->seg_start + s * D, *b = pb->seg_end + s * D;",
        *_indent(segment, "        "),
        "    }",
        "    (void) cnt;",
        "    SPAN_END(p);",
        "}",
        "",
        _PARTITION_KERNEL)


# Every worker, then the carry fix-up (fixup()).
_PARTITION_KERNEL = """/* All workers as threads (single == -1), only worker `single` (>= 0), or every worker
 * one after another on this thread (single == SEQUENTIAL); then the carry fix-up. */
static void kernel(Problem *pb, int threads, int64_t single)
{
    if (single >= 0) {
        run_worker(pb, single);
    } else if (single == SEQUENTIAL) {
        for (int64_t p = 0; p < pb->workers; ++p) run_worker(pb, p);
    } else {
#pragma omp parallel num_threads(threads)
        run_worker(pb, omp_get_thread_num());
    }
    fixup(pb);
}"""


def _schedule_kernel(spec: OpSpec, n: str, var: str, body: list[str], fixup: bool = False) -> str:
    return _lines(
        f"/* OpenMP schedule({schedule_clause(spec)}) over the {var}s"
        + ("" if spec.chunk_size is None else f" in chunks of {spec.chunk_size}")
        + "; `single` does not apply. */",
        "static void kernel(Problem *pb, int threads, int64_t single)",
        "{",
        "    (void) single;",
        "#pragma omp parallel num_threads(threads)",
        "    {",
        "        const int64_t p = omp_get_thread_num();",
        "        SPAN_BEGIN;",
        "        int64_t cnt[D] = {0};",
        "        double *restrict scratch = pb->scratch + p * pb->scratch_width;",
        "        (void) scratch;",
        _omp_units(spec, n, var, body),
        "        (void) cnt;",
        "        SPAN_END(p);",
        "    }",
        "    fixup(pb);" if fixup else None,
        "}")


# ------------------------------------------------------------------------------------ co-iteration


def _coiteration(spec: OpSpec) -> dict:
    kind, n = COITERATION[spec.op]
    ops = range(n)
    args = ", ".join(f"int64_t k{q}, int64_t e{q}" for q in ops)

    def merge(fill: bool) -> str:
        head = [*(f"const int64_t *restrict c{q} = pb->ic{q};" for q in ops),
                *((f"const double *restrict v{q} = pb->iv{q};" for q in ops) if fill else ()),
                *(("int64_t *restrict oc = pb->out_col;", "double *restrict ov = pb->out_val;")
                  if fill else ())]
        if kind == "add":
            body = ["for (;;) {",
                    "    int64_t c = INT64_MAX;",
                    *(f"    if (k{q} < e{q} && c{q}[k{q}] < c) c = c{q}[k{q}];" for q in ops),
                    "    if (c == INT64_MAX) break;",
                    "    double v = 0.0;" if fill else None,
                    *(f"    if (k{q} < e{q} && c{q}[k{q}] == c) {{ "
                      + (f"v += v{q}[k{q}]; " if fill else "") + f"++k{q}; }}" for q in ops),
                    "    oc[pos] = c;" if fill else None,
                    "    ov[pos] = v;" if fill else None,
                    "    ++pos;",
                    "}"]
        else:  # intersection of two
            body = ["while (k0 < e0 && k1 < e1) {",
                    "    const int64_t a = c0[k0], b = c1[k1];",
                    "    if (a < b) {",
                    "        ++k0;",
                    "    } else if (b < a) {",
                    "        ++k1;",
                    "    } else {",
                    "        oc[pos] = a;" if fill else None,
                    "        ov[pos] = v0[k0] * v1[k1];" if fill else None,
                    "        ++pos;",
                    "        ++k0;",
                    "        ++k1;",
                    "    }",
                    "}"]
        what = "write the output coordinates from pos on" if fill else "count output coordinates"
        return _lines(
            f"/* Merge the spans [k_q, e_q) of one row of the {n} operands ({'union, sum' if kind == 'add' else 'intersection, product'}):",
            f" * {what}; returns pos + their number. */",
            f"static inline int64_t {'fill' if fill else 'count'}_span(Problem *pb, {args}, int64_t pos)",
            "{",
            *("    " + line for line in head),
            *("    " + line for line in body if line is not None),
            "    return pos;",
            "}")

    k_init = " ".join(f"int64_t k{q} = a[{q + 1}];" for q in ops)
    e_row = " ".join(f"const int64_t e{q} = pb->ip{q}[row + 1];" for q in ops)
    span_row = ", ".join(f"k{q}, e{q}" for q in ops)
    span_end = ", ".join(f"k{q}, b[{q + 1}]" for q in ops)
    advance = " ".join(f"k{q} = e{q};" for q in ops)
    count_row = [f"COUNT({q + 1}, e{q} - k{q});" for q in ops]
    count_end = [f"COUNT({q + 1}, b[{q + 1}] - k{q});" for q in ops]
    if spec.schedule is None:
        kernel = _lines(
            merge(False), "", merge(True), "",
            "/* Pass 1 of worker p: how many output coordinates each of its segments produces. */",
            "static void count_worker(Problem *pb, int64_t p)",
            "{",
            "    const double t0 = now();",
            "    for (int64_t s = pb->seg_ptr[p]; s < pb->seg_ptr[p + 1]; ++s) {",
            "        const int64_t *a = pb->seg_start + s * D, *b = pb->seg_end + s * D;",
            f"        {k_init}",
            "        int64_t pos = 0;",
            "        for (int64_t row = a[0]; row < b[0]; ++row) {",
            f"            {e_row}",
            f"            pos = count_span(pb, {span_row}, pos);",
            f"            {advance}",
            "        }",
            f"        pb->seg_count[s] = count_span(pb, {span_end}, pos);",
            "    }",
            "    pb->span[p] = now() - t0;",
            "}",
            "",
            "/* Pass 2 of worker p: each segment writes its coordinates from its first output",
            " * position on and out_ptr[row + 1] at each row end it holds (single-worker mode: the",
            " * number of coordinates per row instead, turned into out_ptr afterwards). */",
            "static void fill_worker(Problem *pb, int64_t p, int alone)",
            "{",
            "    const double t0 = now();",
            "    int64_t cnt[D] = {0};",
            "    for (int64_t s = pb->seg_ptr[p]; s < pb->seg_ptr[p + 1]; ++s) {",
            "        const int64_t *a = pb->seg_start + s * D, *b = pb->seg_end + s * D;",
            f"        {k_init}",
            "        int64_t pos = pb->seg_off[s];",
            "        for (int64_t row = a[0]; row < b[0]; ++row) {",
            f"            {e_row}",
            "            const int64_t before = pos;",
            f"            pos = fill_span(pb, {span_row}, pos);",
            "            if (alone) pb->row_cnt[row] += pos - before;",
            "            else pb->out_ptr[row + 1] = pos;",
            "            COUNT(0, 1);",
            *("            " + line for line in count_row),
            f"            {advance}",
            "        }",
            "        if (b[0] < pb->nrows) {",
            "            const int64_t before = pos;",
            f"            pos = fill_span(pb, {span_end}, pos);",
            "            if (alone) pb->row_cnt[b[0]] += pos - before;",
            *("            " + line for line in count_end),
            "        }",
            "    }",
            "    (void) cnt;",
            "    if (INSTRUMENTED)",
            "        for (int64_t d = 0; d < D; ++d) pb->work[p * D + d] = cnt[d];",
            "    pb->span[p] += now() - t0;",
            "}",
            "",
            "/* Between the passes: each segment's first output position (segments in path order),",
            " * and output arrays of the total size. */",
            "static void scan_segments(Problem *pb)",
            "{",
            "    int64_t total = 0;",
            "    for (int64_t q = 0; q < pb->nseg; ++q) {",
            "        const int64_t s = pb->seg_order[q];",
            "        pb->seg_off[s] = total;",
            "        total += pb->seg_count[s];",
            "    }",
            "    reserve(pb, total);",
            "}",
            "",
            "static void kernel(Problem *pb, int threads, int64_t single)",
            "{",
            "    if (single >= 0) {",
            "        count_worker(pb, single);",
            "        scan_segments(pb);",
            "        fill_worker(pb, single, 1);",
            "        for (int64_t r = 0; r < pb->nrows; ++r)",
            "            pb->out_ptr[r + 1] = pb->out_ptr[r] + pb->row_cnt[r];",
            "    } else if (single == SEQUENTIAL) {",
            "        for (int64_t p = 0; p < pb->workers; ++p) count_worker(pb, p);",
            "        scan_segments(pb);",
            "        for (int64_t p = 0; p < pb->workers; ++p) fill_worker(pb, p, 0);",
            "    } else {",
            "#pragma omp parallel num_threads(threads)",
            "        {",
            "            const int64_t p = omp_get_thread_num();",
            "            count_worker(pb, p);",
            "#pragma omp barrier",
            "#pragma omp single",
            "            scan_segments(pb);",
            "            fill_worker(pb, p, 0);",
            "        }",
            "    }",
            "}")
    else:
        full = ", ".join(f"pb->ip{q}[row], pb->ip{q}[row + 1]" for q in ops)
        count_full = [f"COUNT({q + 1}, pb->ip{q}[row + 1] - pb->ip{q}[row]);" for q in ops]
        kernel = _lines(
            merge(False), "", merge(True), "",
            f"/* OpenMP schedule({schedule_clause(spec)}) over the rows"
            + ("" if spec.chunk_size is None else f" in chunks of {spec.chunk_size}")
            + ": count per row, scan, fill. */",
            "static void kernel(Problem *pb, int threads, int64_t single)",
            "{",
            "    (void) single;",
            "#pragma omp parallel num_threads(threads)",
            "    {",
            "        const int64_t p = omp_get_thread_num();",
            "        int64_t cnt[D] = {0};",
            "        double t0 = now();",
            _omp_units(spec, "pb->nrows", "row", [f"pb->row_cnt[row] = count_span(pb, {full}, 0);"]),
            "        double spent = now() - t0;",
            "#pragma omp barrier",
            "#pragma omp single",
            "        {",
            "            for (int64_t r = 0; r < pb->nrows; ++r)",
            "                pb->out_ptr[r + 1] = pb->out_ptr[r] + pb->row_cnt[r];",
            "            reserve(pb, pb->out_ptr[pb->nrows]);",
            "        }",
            "        t0 = now();",
            _omp_units(spec, "pb->nrows", "row",
                       [f"fill_span(pb, {full}, pb->out_ptr[row]);", "COUNT(0, 1);", *count_full]),
            "        (void) cnt;",
            "        if (INSTRUMENTED)",
            "            for (int64_t d = 0; d < D; ++d) pb->work[p * D + d] = cnt[d];",
            "        pb->span[p] = spent + (now() - t0);",
            "    }",
            "}")
    reserve = _lines(
        "/* Output arrays for `total` coordinates (grown only when too small; new space is filled",
        " * with -1 / NaN so an entry the kernel forgot to write cannot look plausible). */",
        "static void reserve(Problem *pb, int64_t total)",
        "{",
        "    pb->out_nnz = total;",
        "    if (pb->out_col != NULL && total <= pb->capacity) return;",
        "    free(pb->out_col);",
        "    free(pb->out_val);",
        "    pb->capacity = total;",
        "    pb->out_col = alloc(total, sizeof(int64_t));",
        "    pb->out_val = alloc(total, sizeof(double));",
        "    for (int64_t q = 0; q < total; ++q) pb->out_col[q] = -1;",
        "    fill_nan(pb->out_val, total);",
        "}")
    return dict(
        kernel=_lines(reserve, "", kernel),
        fields="int64_t *out_ptr, *out_col, out_nnz, capacity;\n    double *out_val;\n"
               "    int64_t *seg_count, *seg_off, *row_cnt;",
        alloc="pb->out_ptr = alloc(pb->nrows + 1, sizeof(int64_t));\n"
              "    pb->seg_count = alloc(pb->nseg, sizeof(int64_t));\n"
              "    pb->seg_off = alloc(pb->nseg, sizeof(int64_t));\n"
              "    pb->row_cnt = alloc(pb->nrows, sizeof(int64_t));",
        init="for (int64_t r = 1; r <= pb->nrows; ++r) pb->out_ptr[r] = -1;",
        reset="if (single >= 0) {\n"
              "            memset(pb->seg_count, 0, (size_t) pb->nseg * sizeof(int64_t));\n"
              "            memset(pb->row_cnt, 0, (size_t) pb->nrows * sizeof(int64_t));\n"
              "        }",
        wrong="if (pb->out_nnz > 0) pb->out_val[0] += 1.0;")


# ------------------------------------------------------------------------------------ CSF


def _ttv(spec: OpSpec) -> dict:
    u = spec.unroll
    sums = [f"s{i}" for i in range(u)]
    loop = "for (; k < hi; ++k) {" if u == 1 else f"for (; k + {u} <= hi; k += {u}) {{"
    dot = _lines(
        f"/* sum of val[k] * v[kidx[k]] over the nonzeros [lo, hi) of a fiber, {u} partial sum(s). */",
        "static inline double fiber_dot(const Problem *pb, int64_t lo, int64_t hi)",
        "{",
        "    const int64_t *restrict kidx = pb->kidx;",
        "    const double *restrict val = pb->val, *restrict v = pb->v;",
        f"    double {', '.join(s + ' = 0.0' for s in sums)};",
        "    int64_t k = lo;",
        f"    {loop}",
        *(f"        s{i} += val[k + {i}] * v[kidx[k + {i}]];" for i in range(u)),
        "    }",
        "    for (; k < hi; ++k) s0 += val[k] * v[kidx[k]];" if u > 1 else None,
        f"    return {_tree_sum(sums)};",
        "}")
    fixup = _carry_fixup("fiber sum into its fiber", "1")
    if spec.schedule is None:
        kernel = _lines(
            dot, "", fixup, "",
            _partition_kernel(
                "/* Worker p walks its segments (s0, f0, k0) -> (s1, f1, k1): the fibers f0 .. f1-1\n"
                " * end in it (the first possibly started in an earlier segment), slices s0 .. s1-1\n"
                " * too; a segment stopping inside fiber f1 carries that fiber's partial sum. */",
                ["const int64_t *restrict ptr0 = pb->ptr0, *restrict ptr1 = pb->ptr1;"],
                ["const int64_t s1 = b[0], f1 = b[1], k1 = b[2];",
                 "int64_t f = a[1], k = a[2];",
                 "for (int64_t sl = a[0];; ++sl) {",
                 "    const int64_t fend = sl < s1 ? ptr0[sl + 1] : f1;",
                 "    for (; f < fend; ++f) {",
                 "        const int64_t stop = ptr1[f + 1];",
                 "        pb->out[f] = fiber_dot(pb, k, stop);",
                 "        COUNT(1, 1);",
                 "        COUNT(2, stop - k);",
                 "        k = stop;",
                 "    }",
                 "    if (sl >= s1) break;",
                 "    COUNT(0, 1);",
                 "}",
                 "pb->carry_unit[s] = k < k1 ? f1 : -1;",
                 "if (k < k1) {",
                 "    pb->carry_val[s] = fiber_dot(pb, k, k1);",
                 "    COUNT(2, k1 - k);",
                 "}"]))
    else:
        body = ["for (int64_t f = pb->ptr0[sl]; f < pb->ptr0[sl + 1]; ++f) {",
                "    const int64_t lo = pb->ptr1[f], hi = pb->ptr1[f + 1];",
                "    pb->out[f] = fiber_dot(pb, lo, hi);",
                "    COUNT(1, 1);",
                "    COUNT(2, hi - lo);",
                "}",
                "COUNT(0, 1);"]
        kernel = _lines(dot, "", _schedule_kernel(spec, "pb->nslices", "sl", body))
    return dict(kernel=kernel, **_dense_output("pb->nfibers", carry="1"))


def _mttkrp(spec: OpSpec) -> dict:
    u = spec.unroll
    loop = "for (; r < R; ++r) {" if u == 1 else f"for (; r + {u} <= R; r += {u}) {{"
    fiber = _lines(
        "/* acc[0:R] += B[j, :] * t, t = sum over the nonzeros [lo, hi) of a fiber of",
        f" * val[k] * C[kidx[k], :] (rank loop {u}x); t is the worker's scratch row. */",
        "static inline void fiber_mttkrp(const Problem *pb, double *restrict acc,",
        "                                double *restrict t, int64_t j, int64_t lo, int64_t hi)",
        "{",
        "    const int64_t R = pb->rank;",
        "    for (int64_t r = 0; r < R; ++r) t[r] = 0.0;",
        "    for (int64_t k = lo; k < hi; ++k) {",
        "        const double a = pb->val[k];",
        "        const double *restrict cr = pb->C + pb->kidx[k] * R;",
        "        int64_t r = 0;",
        f"        {loop}",
        *(f"            t[r + {i}] += a * cr[r + {i}];" for i in range(u)),
        "        }",
        "        for (; r < R; ++r) t[r] += a * cr[r];" if u > 1 else None,
        "    }",
        "    const double *restrict br = pb->B + j * R;",
        "    for (int64_t r = 0; r < R; ++r) acc[r] += br[r] * t[r];",
        "}")
    fixup = _carry_fixup("slice row into its slice's row", "pb->rank")
    if spec.schedule is None:
        kernel = _lines(
            fiber, "", fixup, "",
            _partition_kernel(
                "/* Worker p walks its segments (s0, f0, k0) -> (s1, f1, k1): the slices s0 .. s1-1\n"
                " * end in it and get their row written (the first possibly begun in an earlier\n"
                " * segment); the part of slice s1 it holds (whole fibers, then nonzeros of fiber f1)\n"
                " * is carried. */",
                ["const int64_t *restrict ptr0 = pb->ptr0, *restrict ptr1 = pb->ptr1;",
                 "const int64_t R = pb->rank;",
                 "double *restrict t = pb->scratch + p * R;"],
                ["const int64_t s1 = b[0], f1 = b[1], k1 = b[2];",
                 "int64_t f = a[1], k = a[2];",
                 "pb->carry_unit[s] = -1;",
                 "for (int64_t sl = a[0];; ++sl) {",
                 "    const int64_t fend = sl < s1 ? ptr0[sl + 1] : f1;",
                 "    if (sl == s1 && f == fend && k == k1) break;  /* nothing of slice s1 here */",
                 "    double *restrict acc = sl < s1 ? pb->out + sl * R : pb->carry_val + s * R;",
                 "    for (int64_t r = 0; r < R; ++r) acc[r] = 0.0;",
                 "    for (; f < fend; ++f) {",
                 "        const int64_t stop = ptr1[f + 1];",
                 "        fiber_mttkrp(pb, acc, t, pb->jidx[f], k, stop);",
                 "        COUNT(1, 1);",
                 "        COUNT(2, stop - k);",
                 "        k = stop;",
                 "    }",
                 "    if (sl == s1) {",
                 "        if (k < k1) {",
                 "            fiber_mttkrp(pb, acc, t, pb->jidx[f1], k, k1);",
                 "            COUNT(2, k1 - k);",
                 "        }",
                 "        pb->carry_unit[s] = s1;",
                 "        break;",
                 "    }",
                 "    COUNT(0, 1);",
                 "}"]))
    else:
        body = ["const int64_t R = pb->rank;",
                "double *restrict acc = pb->out + sl * R;",
                "for (int64_t r = 0; r < R; ++r) acc[r] = 0.0;",
                "for (int64_t f = pb->ptr0[sl]; f < pb->ptr0[sl + 1]; ++f) {",
                "    const int64_t lo = pb->ptr1[f], hi = pb->ptr1[f + 1];",
                "    fiber_mttkrp(pb, acc, scratch, pb->jidx[f], lo, hi);",
                "    COUNT(1, 1);",
                "    COUNT(2, hi - lo);",
                "}",
                "COUNT(0, 1);"]
        kernel = _lines(fiber, "", _schedule_kernel(spec, "pb->nslices", "sl", body))
    parts = _dense_output("pb->nslices * pb->rank", carry="pb->rank")
    return dict(parts, kernel=kernel, alloc=parts["alloc"] + "\n    pb->scratch_width = pb->rank;")


# ------------------------------------------------------------------------------------ program


def emit_op_source(spec: OpSpec) -> str:
    """The complete C program for ``spec``."""
    if not isinstance(spec, OpSpec):
        raise KernelError(f"expected an OpSpec, got {type(spec).__name__}")
    op = spec.op
    parts = _sddmm(spec) if op == "sddmm" else _coiteration(spec) if op in COITERATION else \
        _ttv(spec) if op == "ttv" else _mttkrp(spec)
    d = ndim(op)
    dims = DIMS[op]
    reads = "\n".join(f"    pb->{name} = read_array(in, {c_count(count)}, sizeof({_ctype(kind)}));"
                      for name, kind, count in INPUTS[op])
    inputs = "\n".join(f"    const {_ctype(kind)} *{name};" for name, kind, _ in INPUTS[op])
    outputs = OUTPUTS[op]
    writes = "\n".join(
        f"    write_block(out, pb->{name}, {c_count(count)}, {KINDS[kind]}, sizeof({_ctype(kind)}));"
        for name, kind, count in outputs)
    return _DRIVER.substitute(
        spec=repr(spec), header_enum=header_enum(INPUT_HEADER), **driver_parts(), ndim=d,
        ndims=NDIMS,
        opcode=OPS.index(op), input_magic=f"0x{INPUT_MAGIC:X}LL",
        output_magic=f"0x{OUTPUT_MAGIC:X}LL", version=FORMAT_VERSION,
        instrumented=int(spec.instrument),
        dim_fields="int64_t " + ", ".join(dims) + ";",
        dim_reads="\n".join(f"    pb->{name} = h[H_LEN + {q}];" for q, name in enumerate(dims)),
        input_fields=inputs, op_fields=parts["fields"], reads=reads, alloc=parts["alloc"],
        init=parts["init"], reset=parts["reset"], kernel=parts["kernel"], wrong=parts["wrong"],
        noutputs=len(outputs), writes=writes)


_DRIVER = Template(r"""/* Generated by perfjax.kernels.c.ops from $spec. Do not edit.
 * Usage: prog INPUT OUTPUT THREADS (file layouts and the full story: perfjax/kernels/c/ops.py). */
$includes

enum { $header_enum, H_LEN };
#define NDIMS $ndims
#define D $ndim             /* coordinates of a path point */
#define SEQUENTIAL (-2)     /* header `worker`: run every worker in turn on one thread */
#define INSTRUMENTED $instrumented
$hooks

#if INSTRUMENTED
#define COUNT(d, n) (cnt[(d)] += (n))
#define SPAN_BEGIN const double t0_ = now()
#define SPAN_END(p) do { pb->span[(p)] = now() - t0_; \
    for (int64_t d_ = 0; d_ < D; ++d_) pb->work[(p) * D + d_] = cnt[d_]; } while (0)
#else
#define COUNT(d, n) ((void) 0)
#define SPAN_BEGIN ((void) 0)
#define SPAN_END(p) ((void) 0)
#endif

typedef struct {
    int64_t workers, nseg;
    $dim_fields
    const int64_t *seg_ptr, *seg_start, *seg_end, *seg_order;  /* segments grouped by worker */
$input_fields
    $op_fields
    double *scratch;            /* per worker: scratch_width doubles */
    int64_t scratch_width;
    int64_t *work;              /* per worker: D counters (instrumented) */
    double *span;               /* per worker: seconds of its loops (instrumented) */
} Problem;

$helpers

/* One output array: its element count and kind (0 int64, 1 double), then the data. */
static void write_block(FILE *f, const void *p, int64_t count, int64_t kind, size_t size)
{
    const int64_t head[2] = {count, kind};
    write_array(f, head, 2, sizeof(int64_t));
    write_array(f, p, count, size);
}

$kernel

int main(int argc, char **argv)
{
$open_input
    int64_t h[H_LEN + NDIMS];
    if (fread(h, sizeof h[0], H_LEN + NDIMS, in) != H_LEN + NDIMS) fail("input file is truncated");
    if (h[H_MAGIC] != $input_magic || h[H_VERSION] != $version || h[H_OPCODE] != $opcode ||
        h[H_NDIM] != D)
        fail("not a perfjax input file for this kernel");
    int bad = h[H_WORKERS] < 1 || h[H_WORKER] < SEQUENTIAL || h[H_WORKER] >= h[H_WORKERS] ||
              h[H_REPEATS] < 1 || h[H_NSEG] < 0;
    for (int q = 0; q < NDIMS; ++q) bad |= h[H_LEN + q] < 0;
    if (bad) fail("input header holds an invalid size");

    Problem prob = {0};
    Problem *pb = &prob;
    pb->workers = h[H_WORKERS];
    pb->nseg = h[H_NSEG];
$dim_reads
    const int64_t single = h[H_WORKER], repeats = h[H_REPEATS];
    pb->seg_ptr = read_array(in, pb->workers + 1, sizeof(int64_t));
    pb->seg_start = read_array(in, pb->nseg * D, sizeof(int64_t));
    pb->seg_end = read_array(in, pb->nseg * D, sizeof(int64_t));
    pb->seg_order = read_array(in, pb->nseg, sizeof(int64_t));
$reads
    fclose(in);
    pb->scratch_width = 0;
    $alloc
    pb->scratch = alloc(pb->workers * pb->scratch_width, sizeof(double));
    pb->work = alloc(pb->workers * D, sizeof(int64_t));
    pb->span = alloc(pb->workers, sizeof(double));
    double *seconds = alloc(repeats, sizeof(double));
    if (single < 0) {
        $init
    }

$start_team

    double *worker_seconds = alloc(pb->workers, sizeof(double));
    for (int64_t rep = 0; rep < repeats; ++rep) {
        $reset
        const double t0 = now();
        kernel(pb, threads, single);
        seconds[rep] = now() - t0;
        for (int64_t p = 0; p < pb->workers; ++p)
            if (rep == 0 || pb->span[p] < worker_seconds[p]) worker_seconds[p] = pb->span[p];
    }
    if (!INSTRUMENTED) memset(worker_seconds, 0, (size_t) pb->workers * sizeof(double));
    if (h[H_DEBUG] == DEBUG_WRONG) {
        $wrong
    }
$open_output
    const int64_t oh[5] = {$output_magic, pb->workers, D, repeats, $noutputs};
    write_array(out, oh, 5, sizeof(int64_t));
$writes
    write_array(out, seconds, repeats, sizeof(double));
    write_array(out, pb->work, pb->workers * D, sizeof(int64_t));
    write_array(out, worker_seconds, pb->workers, sizeof(double));
$close_output
}
""")
