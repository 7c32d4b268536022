"""C11 + OpenMP source for CSR SpMV (y = A x) and SpMM (Y = A X) programs.

Every generated program is a standalone executable: it reads one input file (the layout below),
runs the kernel ``repeats`` times and writes one output file. Running kernels out of process is
what lets a tuner survive a crash or a hang of the configuration it is trying.

Partition mode executes an explicit ``perfjax.schedulers.partition.Partition``: worker p (OpenMP
thread p, or the calling thread alone in single-worker mode) walks its segments in order. A
segment (i0, j0) -> (i1, j1) of the merge path holds the ends of rows i0 .. i1-1 and the
nonzeros j0 .. j1-1. The scheme is Merrill & Garland's:

* a row is *finished* by the segment that holds its end, which writes ``y[row] =`` the sum of
  the row's nonzeros that lie in that segment (all of them unless the segment started inside
  the row, which only row i0 can do when j0 > indptr[i0]);
* a segment that stops inside row i1 (i1 < nrows, j1 > indptr[i1]) leaves the partial sum of
  that row's nonzeros in its own carry slot (row i1, value(s)) instead of touching y;
* after the parallel region (its implicit barrier) one sequential fix-up loop adds every carry
  into y. Carries never race with row writes, and a row cut into many segments gets all of them.

Rows without nonzeros get y = 0 from their (empty) sum, so the kernel writes every row of y; the
driver fills y with NaN before the first repetition, so a row the kernel forgot shows up as NaN
instead of as a plausible stale value. In single-worker mode only worker p's items run: y starts
from zeros in every repetition and ends up holding exactly worker p's contribution.

Schedule mode ignores any partition: ``#pragma omp for schedule(kind, chunk)`` over the rows with
a run-time thread count, the loop TACO generates; the tuner uses it as the baseline family.

Instrumented programs count, per worker, the row ends and the nonzeros their loops actually
processed (from the loop bounds as executed, not from the partition) and the worker's time span
(CLOCK_MONOTONIC around its loop). Counting is compiled in only when asked, so timing runs pay
nothing for it.

Values are double; indptr, segments and every other index array are int64, except the column
indices: int32 (``KernelSpec.col_bits`` 32, the default, as scipy stores them: 12 bytes a nonzero
instead of 16, which is what a memory-bound SpMV pays for) or int64 (``col_bits`` 64, which the
runner picks only for a matrix with 2^31 columns or more). ``unroll`` unrolls the nonzero loop of SpMV (with that many
independent partial sums, which is what lets the loads overlap) or the K loop of SpMM.

Row-length binning (``bin_rows`` B, schedule mode): an inspector-executor scheme. When the program
starts (once, outside the timed region, like computing a partition) a stable counting sort groups
the rows by length: one bin for each length 0 .. B, in row order within a bin, and the longer rows
last, as runs of consecutive rows (at most 64 each). The kernel then runs one worksharing loop
per bin: every row of bin L calls the row kernel with the constant trip count L, so the compiler
unrolls it completely and the loop's exit is never mispredicted; then one loop over the runs of
longer rows (which keep the plain kernel's access pattern; a schedule's chunk there counts
runs). On power-law matrices, where most rows hold a handful of nonzeros of varying count, those
mispredicted row ends are a quarter to a half of a plain CSR SpMV's time (email-enron: 1.3x
faster binned, as-caida: 1.7x). Sums keep the plain kernel's order, so results are bit-identical
to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import ClassVar

from perfjax.errors import PerfjaxError

OPS = ("spmv", "spmm")
UNROLLS = (1, 2, 4, 8)
MAX_BIN_ROWS = 16  # bin_rows: 1 .. 16 fixed-length bins (each is a fully unrolled loop)
SCHEDULES = ("static", "dynamic", "guided")

# File formats shared with the runner. Input: int64 header (INPUT_HEADER order), then indptr
# [nrows+1] i64, col [nnz] i32 or i64 (header word col_bytes: 4 or 8, which must match the
# program's KernelSpec.col_bits), val [nnz] f64, x [ncols*width] f64, seg_ptr [workers+1] i64 and
# i0, j0, i1, j1 [nseg] i64 (segments grouped by worker, each worker's in its walking order).
# Output: int64 header (OUTPUT_HEADER order), then y [nrows*width] f64, seconds [repeats] f64,
# rows [workers] i64, nnz [workers] i64, worker_seconds [workers] f64.
INPUT_MAGIC = 0x504A4B494E          # "PJKIN"
OUTPUT_MAGIC = 0x504A4B4F5554       # "PJKOUT"
FORMAT_VERSION = 2  # 2: column indices int32 (or int64), header word col_bytes
INPUT_HEADER = ("magic", "version", "nrows", "ncols", "nnz", "width", "nseg", "workers",
                "worker", "repeats", "debug", "col_bytes")
COL_BITS = (32, 64)
COL_INT32_MAX_NCOLS = 2**31 - 1  # int32 column indices hold columns 0 .. 2^31 - 2
OUTPUT_HEADER = ("magic", "nrows", "width", "workers", "repeats")

# Test hooks: what the program does instead of (or after) its work, to exercise the runner's
# failure handling. "wrong" perturbs y[0] after the last repetition.
DEBUG_HOOKS = {"segv": 1, "abort": 2, "hang": 3, "exit": 4, "wrong": 5}


class KernelError(PerfjaxError, ValueError):
    """Bad arguments to a C kernel: a kernel spec, a matrix, an operand, a partition."""


def check_unroll(unroll) -> None:
    """KernelError unless ``unroll`` is one of UNROLLS (every generator's lane / unroll knob)."""
    if isinstance(unroll, bool) or unroll not in UNROLLS:
        raise KernelError(f"unroll must be one of {UNROLLS}, got {unroll!r}")


def check_bin_rows(bin_rows) -> None:
    """KernelError unless ``bin_rows`` is None or an integer in 1 .. MAX_BIN_ROWS."""
    if bin_rows is not None and (isinstance(bin_rows, bool) or not isinstance(bin_rows, int)
                                 or not 1 <= bin_rows <= MAX_BIN_ROWS):
        raise KernelError(f"bin_rows must be None or an integer in 1..{MAX_BIN_ROWS}, "
                          f"got {bin_rows!r}")


class CSpec:
    """What the specs of the C generators (``KernelSpec``, ``ops.OpSpec``) share beyond their
    fields ``op``, ``unroll``, ``schedule``, ``chunk``, ``chunk_size``, ``instrument``: the
    schedule knobs' checks, the name, and what ``build`` reads (``language``, ``flag_op``;
    ``source()`` is each generator's)."""

    language: ClassVar[str] = "c"

    def _check_loop_order(self) -> None:
        """Normalize ``loop_order`` to a tuple, or KernelError if the op or the order is wrong."""
        if self.loop_order is None:
            return
        from perfjax.kernels.c.loop_order import LOOP_ORDER_OPS, check_loop_order
        if self.op not in LOOP_ORDER_OPS:
            raise KernelError(f"loop_order applies to {', '.join(LOOP_ORDER_OPS)}, not {self.op}")
        order = check_loop_order(self.loop_order, partition_mode=self.schedule is None)
        object.__setattr__(self, "loop_order", order)

    def _check_schedule_knobs(self) -> None:
        """KernelError unless ``schedule``, ``chunk``, ``chunk_size`` and ``instrument`` are
        valid together."""
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise KernelError(f"schedule must be None or one of {SCHEDULES}, got {self.schedule!r}")
        for knob in ("chunk", "chunk_size"):
            value = getattr(self, knob)
            if value is None:
                continue
            if self.schedule is None:
                raise KernelError(f"{knob} applies to schedule mode only (a partition fixes its "
                                  f"own chunks); pass schedule= as well or leave {knob} out")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KernelError(f"{knob} must be a positive integer, got {value!r}")
        if not isinstance(self.instrument, bool):
            raise KernelError(f"instrument must be a bool, got {self.instrument!r}")

    @property
    def flag_op(self) -> str:
        """The op whose compiler flags (``build.flags``) the program gets."""
        return self.op

    @property
    def name(self) -> str:
        """Short readable name, the prefix of the cached binary's file name."""
        mode = "part" if self.schedule is None else \
            self.schedule + ("" if self.chunk is None else str(self.chunk)) + \
            ("" if self.chunk_size is None else f"-cs{self.chunk_size}")
        order = getattr(self, "loop_order", None)
        return f"{self.op}-u{self.unroll}-{mode}" + ("-inst" if self.instrument else "") + \
            ("" if order is None else "-o" + "".join(map(str, order)))


@dataclass(frozen=True)
class KernelSpec(CSpec):
    """The compile-time knobs of one generated program (everything else is read at run time).

    ``schedule`` None means partition mode; otherwise plain OpenMP scheduling of the rows, with
    ``chunk`` None leaving the chunk clause out (the runtime's default for that kind).
    ``chunk_size`` (schedule mode only) splits the rows TACO-style: the worksharing loop runs
    over chunks of ``chunk_size`` rows, an inner loop over the rows of a chunk (so
    schedule(static, c) deals c * chunk_size rows at a time). ``col_bits``: the width of the
    column indices (32 or 64); the runner uses 32 unless the matrix has 2^31 columns or more.
    ``loop_order`` (SpMM only): a legal order of the loops (i0, i1, k, j0, j1), see
    ``perfjax.kernels.c.loop_order``; None keeps the default nest. ``bin_rows`` (schedule mode,
    without ``chunk_size`` or ``loop_order``): rows of 0 .. bin_rows nonzeros run in per-length
    bins with constant trip counts (row-length binning, see the module docstring); None: rows in
    order.
    """

    op: str = "spmv"
    unroll: int = 1
    schedule: str | None = None
    chunk: int | None = None
    instrument: bool = False
    chunk_size: int | None = None
    col_bits: int = 32
    loop_order: tuple[int, ...] | None = None
    bin_rows: int | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise KernelError(f"op must be one of {OPS}, got {self.op!r}")
        check_unroll(self.unroll)
        self._check_schedule_knobs()
        self._check_loop_order()
        if isinstance(self.col_bits, bool) or self.col_bits not in COL_BITS:
            raise KernelError(f"col_bits must be one of {COL_BITS}, got {self.col_bits!r}")
        check_bin_rows(self.bin_rows)
        if self.bin_rows is not None:
            if self.schedule is None:
                raise KernelError("bin_rows applies to schedule mode only (a partition fixes the "
                                  "order of the rows); pass schedule= as well or leave bin_rows "
                                  "out")
            if self.chunk_size is not None or self.loop_order is not None:
                raise KernelError("bin_rows reorders the rows itself: give it without chunk_size "
                                  "and loop_order")

    @property
    def name(self) -> str:
        return super().name + ("" if self.col_bits == 32 else f"-c{self.col_bits}") + \
            ("" if self.bin_rows is None else f"-b{self.bin_rows}")

    def source(self) -> str:
        return emit_source(self)


def emit_source(spec: KernelSpec) -> str:
    """The complete C program for ``spec``."""
    if not isinstance(spec, KernelSpec):
        raise KernelError(f"expected a KernelSpec, got {type(spec).__name__}")
    from perfjax.kernels.c import loop_order
    ordered = spec.loop_order is not None
    kernel = _partition_kernel(spec) if spec.schedule is None else \
        loop_order.spmm_schedule_kernel(spec) if ordered else \
        _binned_kernel(spec) if spec.bin_rows is not None else _schedule_kernel(spec)
    return _DRIVER.substitute(
        spec=repr(spec), header_enum=header_enum(INPUT_HEADER), **driver_parts(),
        input_magic=f"0x{INPUT_MAGIC:X}LL", output_magic=f"0x{OUTPUT_MAGIC:X}LL",
        version=FORMAT_VERSION, output_header_len=len(OUTPUT_HEADER),
        row_kernel=loop_order.spmm_row_kernel(spec) if ordered else _row_kernel(spec),
        kernel=kernel, col_bits=spec.col_bits,
        width="1" if spec.op == "spmv" else "pb->width",
        prepare="" if spec.bin_rows is None else
        f"    bin_by_length(pb, {spec.bin_rows}); /* the inspector: once, before timing */")


def header_enum(names) -> str:
    """The C enum entries H_<NAME> of an input header's words (its fields, in file order)."""
    return ", ".join(f"H_{name.upper()}" for name in names)


def hook_defines() -> str:
    """``#define DEBUG_<HOOK> code`` for every DEBUG_HOOKS entry (C and C++ programs)."""
    return "\n".join(f"#define DEBUG_{name.upper()} {code}" for name, code in DEBUG_HOOKS.items())


def _lines(*items: str | None) -> str:
    """Join the lines that are present (None marks a line compiled only in other variants)."""
    return "\n".join(item for item in items if item is not None)


def _tree_sum(terms: list[str]) -> str:
    """Pairwise sum expression: the partial sums' dependency chains stay short."""
    while len(terms) > 1:
        terms = [f"({a} + {b})" for a, b in zip(terms[::2], terms[1::2])] + \
            ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


_ROW_SIGNATURE = """static inline void row_kernel(double *restrict dst, const col_t *restrict col,
                              const double *restrict val, const double *restrict x,
                              int64_t width, int64_t lo, int64_t hi)"""


def _row_kernel(spec: KernelSpec) -> str:
    """``row_kernel``: dst[0:width] = sum of val[k] * x[col[k], 0:width] over k in [lo, hi)."""
    u = spec.unroll
    if spec.op == "spmv":
        sums = [f"s{i}" for i in range(u)]
        loop = "for (; k < hi; ++k) {" if u == 1 else f"for (; k + {u} <= hi; k += {u}) {{"
        return _lines(
            f"/* Dot product of nonzeros [lo, hi) with x, {u} independent partial sum(s). */",
            _ROW_SIGNATURE,
            "{",
            "    (void) width;",
            f"    double {', '.join(s + ' = 0.0' for s in sums)};",
            "    int64_t k = lo;",
            f"    {loop}",
            *(f"        s{i} += val[k + {i}] * x[col[k + {i}]];" for i in range(u)),
            "    }",
            "    for (; k < hi; ++k) s0 += val[k] * x[col[k]];" if u > 1 else None,
            f"    *dst = {_tree_sum(sums)};",
            "}")
    loop = "for (; c < width; ++c) {" if u == 1 else f"for (; c + {u} <= width; c += {u}) {{"
    return _lines(
        f"/* dst[0:width] = sum over nonzeros [lo, hi) of val * X[col, 0:width], K loop {u}x. */",
        _ROW_SIGNATURE,
        "{",
        "    for (int64_t c = 0; c < width; ++c) dst[c] = 0.0;",
        "    for (int64_t k = lo; k < hi; ++k) {",
        "        const double a = val[k];",
        "        const double *restrict xr = x + col[k] * width;",
        "        int64_t c = 0;",
        f"        {loop}",
        *(f"            dst[c + {i}] += a * xr[c + {i}];" for i in range(u)),
        "        }",
        "        for (; c < width; ++c) dst[c] += a * xr[c];" if u > 1 else None,
        "    }",
        "}")


def _partition_kernel(spec: KernelSpec) -> str:
    """``run_worker`` (one worker's segments) and ``kernel`` (all workers, then the fix-up)."""
    count = spec.instrument
    return _lines(
        "/* Worker p walks its segments in order (the scheme is in the header comment). */",
        "static void run_worker(const Problem *pb, int64_t p)",
        "{",
        "    const int64_t *restrict indptr = pb->indptr;",
        f"    const int64_t w = {'1' if spec.op == 'spmv' else 'pb->width'};",
        "    const double t0 = now();" if count else None,
        "    int64_t rows = 0, nnz = 0;" if count else None,
        "    for (int64_t s = pb->seg_ptr[p]; s < pb->seg_ptr[p + 1]; ++s) {",
        "        const int64_t i1 = pb->i1[s], j1 = pb->j1[s];",
        "        int64_t k = pb->j0[s];",
        "        for (int64_t row = pb->i0[s]; row < i1; ++row) {  /* rows it finishes */",
        "            const int64_t stop = indptr[row + 1];",
        "            row_kernel(pb->y + row * w, pb->col, pb->val, pb->x, w, k, stop);",
        "            rows += 1;" if count else None,
        "            nnz += stop - k;" if count else None,
        "            k = stop;",
        "        }",
        "        if (k < j1) {  /* stops inside row i1: carry its partial sum out */",
        "            row_kernel(pb->carry_val + s * w, pb->col, pb->val, pb->x, w, k, j1);",
        "            nnz += j1 - k;" if count else None,
        "        }",
        "        pb->carry_row[s] = k < j1 ? i1 : -1;",
        "    }",
        "    pb->rows_done[p] = rows;" if count else None,
        "    pb->nnz_done[p] = nnz;" if count else None,
        "    pb->span_start[p] = t0;" if count else None,
        "    pb->span_end[p] = now();" if count else None,
        "}",
        "",
        "/* All workers as threads (single == -1), only worker `single` (>= 0), or every worker",
        " * one after another on this thread (single == SEQUENTIAL); then the carry fix-up. */",
        "static void kernel(const Problem *pb, int threads, int64_t single)",
        "{",
        "    if (single >= 0) {",
        "        run_worker(pb, single);",
        "    } else if (single == SEQUENTIAL) {",
        "        for (int64_t p = 0; p < pb->workers; ++p) run_worker(pb, p);",
        "    } else {",
        "#pragma omp parallel num_threads(threads)",
        "        run_worker(pb, omp_get_thread_num());",
        "    }",
        f"    const int64_t w = {'1' if spec.op == 'spmv' else 'pb->width'};",
        "    for (int64_t s = 0; s < pb->nseg; ++s) {",
        "        const int64_t row = pb->carry_row[s];",
        "        if (row < 0) continue;",
        "        for (int64_t c = 0; c < w; ++c) pb->y[row * w + c] += pb->carry_val[s * w + c];",
        "    }",
        "}")


def _schedule_kernel(spec: KernelSpec) -> str:
    """``kernel`` as a plain OpenMP worksharing loop over the rows (partition ignored), or over
    chunks of ``chunk_size`` rows with an inner loop over a chunk's rows."""
    count = spec.instrument
    clause = schedule_clause(spec)
    cs = spec.chunk_size
    pad = "" if cs is None else "    "
    body = [
        f"{pad}        for (int64_t row = {'0' if cs is None else 'lo'}; "
        f"row < {'n' if cs is None else 'hi'}; ++row) {{",
        f"{pad}            row_kernel(pb->y + row * w, pb->col, pb->val, pb->x, w, indptr[row],",
        f"{pad}                       indptr[row + 1]);",
        f"{pad}            rows += 1;" if count else None,
        f"{pad}            nnz += indptr[row + 1] - indptr[row];" if count else None,
        f"{pad}        }}"]
    if cs is not None:
        body = [f"        for (int64_t ch = 0; ch < nchunks; ++ch) {{  /* chunk_size {cs} */",
                f"            const int64_t lo = ch * {cs}, hi = lo + {cs} < n ? lo + {cs} : n;",
                *body,
                "        }"]
    return _lines(
        f"/* OpenMP schedule({clause}) over the "
        + ("rows" if cs is None else f"chunks of {cs} rows") + "; `single` does not apply here. */",
        "static void kernel(const Problem *pb, int threads, int64_t single)",
        "{",
        "    (void) single;",
        "    const int64_t *restrict indptr = pb->indptr;",
        f"    const int64_t w = {'1' if spec.op == 'spmv' else 'pb->width'};",
        "    const int64_t n = pb->nrows;",
        None if cs is None else f"    const int64_t nchunks = (n + {cs - 1}) / {cs};",
        *schedule_region(clause, body, count),
        "}")


_BIN_BY_LENGTH = """/* Row-length binning (the inspector): a stable counting sort of the rows of 0 .. top
 * nonzeros into one bin per length (order[bin_ptr[L] .. bin_ptr[L + 1]) holds the rows of
 * length L), and the longer rows as runs of consecutive rows (at most RUN_ROWS each, so that
 * threads can share them): long_runs[2 r] .. long_runs[2 r + 1] - 1. */
#define RUN_ROWS 64
static void bin_by_length(Problem *pb, int64_t top)
{
    int64_t *order = alloc(pb->nrows, sizeof(int64_t));
    int64_t *bin_ptr = alloc(top + 2, sizeof(int64_t));
    int64_t *next = alloc(top + 1, sizeof(int64_t));
    int64_t *runs = alloc(2 * pb->nrows, sizeof(int64_t));
    int64_t nruns = 0;
    for (int64_t row = 0; row < pb->nrows; ++row) {
        const int64_t len = pb->indptr[row + 1] - pb->indptr[row];
        if (len <= top) bin_ptr[len + 1] += 1;
    }
    for (int64_t b = 0; b <= top; ++b) {
        bin_ptr[b + 1] += bin_ptr[b];
        next[b] = bin_ptr[b];
    }
    for (int64_t row = 0; row < pb->nrows; ++row) {
        const int64_t len = pb->indptr[row + 1] - pb->indptr[row];
        if (len <= top) {
            order[next[len]++] = row;
        } else if (nruns > 0 && runs[2 * nruns - 1] == row &&
                   row - runs[2 * nruns - 2] < RUN_ROWS) {
            runs[2 * nruns - 1] = row + 1;  /* extends the current run */
        } else {
            runs[2 * nruns] = row;
            runs[2 * nruns + 1] = row + 1;
            nruns += 1;
        }
    }
    free(next);
    pb->order = order;
    pb->bin_ptr = bin_ptr;
    pb->long_runs = runs;
    pb->nruns = nruns;
}"""


def _binned_kernel(spec: KernelSpec) -> str:
    """``kernel`` with row-length binning: one worksharing loop (nowait) per bin of
    ``bin_by_length``; rows of bin L run the row kernel with the constant trip count L."""
    count = spec.instrument
    clause = schedule_clause(spec)
    top = spec.bin_rows

    def loop(length: int) -> list:
        return [f"#pragma omp for schedule({clause}) nowait",
                f"        for (int64_t t = bin[{length}]; t < bin[{length + 1}]; ++t) {{",
                "            const int64_t row = order[t], lo = indptr[row];",
                f"            row_kernel(pb->y + row * w, pb->col, pb->val, pb->x, w, lo, "
                f"lo + {length});",
                "            rows += 1;" if count else None,
                f"            nnz += {length};" if count and length else None,
                "        }"]

    body = [line for length in range(top + 1) for line in loop(length)]
    body += [f"#pragma omp for schedule({clause}) nowait",
             "        for (int64_t r = 0; r < pb->nruns; ++r) {  /* runs of longer rows */",
             "            for (int64_t row = runs[2 * r]; row < runs[2 * r + 1]; ++row) {",
             "                row_kernel(pb->y + row * w, pb->col, pb->val, pb->x, w, indptr[row],",
             "                           indptr[row + 1]);",
             "                rows += 1;" if count else None,
             "                nnz += indptr[row + 1] - indptr[row];" if count else None,
             "            }",
             "        }"]
    region = schedule_region(clause, body, count, worksharing=False)  # every bin has its own
    return _lines(
        _BIN_BY_LENGTH,
        "",
        f"/* OpenMP schedule({clause}) over the rows bin by bin: rows of 0 .. {top} nonzeros with "
        "constant trip counts, then the longer rows; `single` does not apply here. */",
        "static void kernel(const Problem *pb, int threads, int64_t single)",
        "{",
        "    (void) single;",
        "    const int64_t *restrict indptr = pb->indptr, *restrict order = pb->order;",
        "    const int64_t *restrict bin = pb->bin_ptr, *restrict runs = pb->long_runs;",
        f"    const int64_t w = {'1' if spec.op == 'spmv' else 'pb->width'};",
        *region,
        "}")


def schedule_clause(spec) -> str:
    """The ``schedule(...)`` clause's contents of a schedule-mode spec: kind[, chunk]."""
    return spec.schedule + ("" if spec.chunk is None else f", {spec.chunk}")


def schedule_region(clause: str, body: list, count: bool, worksharing: bool = True) -> list:
    """The parallel region of schedule mode: ``omp for schedule(clause)`` over ``body`` (lines
    that add to ``rows`` / ``nnz`` when ``count``), and, instrumented, each thread's counters and
    time span stored in the Problem. None entries are lines of other variants (``_lines``).
    ``worksharing`` False: ``body`` brings its own ``omp for`` loops."""
    return [
        "#pragma omp parallel num_threads(threads)",
        "    {",
        "        const double t0 = now();" if count else None,
        "        int64_t rows = 0, nnz = 0;" if count else None,
        f"#pragma omp for schedule({clause}) nowait" if worksharing else None,
        *body,
        "        const int p = omp_get_thread_num();" if count else None,
        "        pb->rows_done[p] = rows;" if count else None,
        "        pb->nnz_done[p] = nnz;" if count else None,
        "        pb->span_start[p] = t0;" if count else None,
        "        pb->span_end[p] = now();" if count else None,
        "    }"]


_DRIVER = Template(r"""/* Generated by perfjax.kernels.c from $spec. Do not edit.
 * Usage: prog INPUT OUTPUT THREADS (file layouts and the full story: perfjax/kernels/c/emit.py).
 *
 * Partition scheme (Merrill & Garland): the segment holding a row's end writes y[row] = its
 * partial sum of the row; a segment stopping inside row i1 stores (i1, partial sum) in its carry
 * slot; after the parallel region a sequential fix-up adds every carry into y. */
$includes

enum { $header_enum, H_LEN };
typedef int${col_bits}_t col_t; /* column indices (KernelSpec.col_bits) */
#define SEQUENTIAL (-2) /* header `worker`: run every worker in turn on one thread */
$hooks

typedef struct {
    int64_t nrows, ncols, nnz, width, nseg, workers;
    const int64_t *indptr;
    const col_t *col;
    const double *val, *x;
    double *y;
    const int64_t *seg_ptr, *i0, *j0, *i1, *j1;   /* segments grouped by worker */
    int64_t *carry_row;                            /* per segment: row carried out, or -1 */
    double *carry_val;                             /* per segment: width partial sums */
    int64_t *rows_done, *nnz_done;                 /* per worker (instrumented) */
    double *span_start, *span_end;                 /* per worker (instrumented) */
    int64_t *order, *bin_ptr, *long_runs, nruns;   /* row-length binning (bin_rows) */
} Problem;

$helpers

$row_kernel

$kernel

int main(int argc, char **argv)
{
$open_input
    int64_t h[H_LEN];
    if (fread(h, sizeof h[0], H_LEN, in) != H_LEN) fail("input file is truncated");
    if (h[H_MAGIC] != $input_magic || h[H_VERSION] != $version)
        fail("not a perfjax kernel input file");
    if (h[H_NROWS] < 1 || h[H_NCOLS] < 1 || h[H_NNZ] < 0 || h[H_WIDTH] < 1 || h[H_NSEG] < 0 ||
        h[H_WORKERS] < 1 || h[H_WORKER] < SEQUENTIAL || h[H_WORKER] >= h[H_WORKERS] ||
        h[H_REPEATS] < 1)
        fail("input header holds an invalid size");
    if (h[H_COL_BYTES] != (int64_t) sizeof(col_t))
        fail("input column indices are not as wide as this program's (col_bits)");

    Problem prob = {0};
    Problem *pb = &prob;
    pb->nrows = h[H_NROWS];
    pb->ncols = h[H_NCOLS];
    pb->nnz = h[H_NNZ];
    pb->width = h[H_WIDTH];
    pb->nseg = h[H_NSEG];
    pb->workers = h[H_WORKERS];
    const int64_t single = h[H_WORKER], repeats = h[H_REPEATS], w = $width;
    pb->indptr = read_array(in, pb->nrows + 1, sizeof(int64_t));
    pb->col = read_array(in, pb->nnz, sizeof(col_t));
    pb->val = read_array(in, pb->nnz, sizeof(double));
    pb->x = read_array(in, pb->ncols * w, sizeof(double));
    pb->seg_ptr = read_array(in, pb->workers + 1, sizeof(int64_t));
    pb->i0 = read_array(in, pb->nseg, sizeof(int64_t));
    pb->j0 = read_array(in, pb->nseg, sizeof(int64_t));
    pb->i1 = read_array(in, pb->nseg, sizeof(int64_t));
    pb->j1 = read_array(in, pb->nseg, sizeof(int64_t));
    fclose(in);
    pb->y = alloc(pb->nrows * w, sizeof(double));
    pb->carry_row = alloc(pb->nseg, sizeof(int64_t));
    pb->carry_val = alloc(pb->nseg * w, sizeof(double));
    pb->rows_done = alloc(pb->workers, sizeof(int64_t));
    pb->nnz_done = alloc(pb->workers, sizeof(int64_t));
    pb->span_start = alloc(pb->workers, sizeof(double));
    pb->span_end = alloc(pb->workers, sizeof(double));
    double *seconds = alloc(repeats, sizeof(double));
    for (int64_t s = 0; s < pb->nseg; ++s) pb->carry_row[s] = -1;
    if (single < 0) fill_nan(pb->y, pb->nrows * w);
$prepare

$start_team

    double *worker_seconds = alloc(pb->workers, sizeof(double));
    for (int64_t rep = 0; rep < repeats; ++rep) {
        if (single >= 0) memset(pb->y, 0, (size_t) (pb->nrows * w) * sizeof(double));
        const double t0 = now();
        kernel(pb, threads, single);
        seconds[rep] = now() - t0;
        /* Each worker's fastest span over the repetitions (0 unless instrumented). */
        for (int64_t p = 0; p < pb->workers; ++p) {
            const double span = pb->span_end[p] - pb->span_start[p];
            if (rep == 0 || span < worker_seconds[p]) worker_seconds[p] = span;
        }
    }
    if (h[H_DEBUG] == DEBUG_WRONG) pb->y[0] += 1.0;
$open_output
    const int64_t oh[$output_header_len] = {$output_magic, pb->nrows, w, pb->workers, repeats};
    write_array(out, oh, $output_header_len, sizeof(int64_t));
    write_array(out, pb->y, pb->nrows * w, sizeof(double));
    write_array(out, seconds, repeats, sizeof(double));
    write_array(out, pb->rows_done, pb->workers, sizeof(int64_t));
    write_array(out, pb->nnz_done, pb->workers, sizeof(int64_t));
    write_array(out, worker_seconds, pb->workers, sizeof(double));
$close_output
}
""")


# ------------------------------------------------------------------------------ shared driver
# The C text of the driver that every generated C program shares (this module's SpMV / SpMM and
# ``ops``'s kernels): the includes, the helpers, opening the input, starting and checking the
# thread team, the debug hooks and writing the output. ``debug_switch`` and ``fail_function``
# serve the C++ test benches of ``hls`` too (with ``std="std::"``).

_INCLUDES = """#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>"""

_HELPERS = Template(r"""static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

$fail

/* Zeroed, 64-byte aligned, never NULL (count may be 0). */
static void *alloc(int64_t count, size_t size)
{
    void *p = NULL;
    const size_t bytes = count > 0 ? (size_t) count * size : 64;
    if (posix_memalign(&p, 64, bytes) != 0) fail("out of memory");
    memset(p, 0, bytes);
    return p;
}

/* NaN everywhere: an entry the kernel forgot to write cannot look plausible. */
static void fill_nan(double *p, int64_t count)
{
    for (int64_t q = 0; q < count; ++q) p[q] = NAN;
}

static void *read_array(FILE *f, int64_t count, size_t size)
{
    void *p = alloc(count, size);
    if (count > 0 && fread(p, size, (size_t) count, f) != (size_t) count)
        fail("input file is truncated");
    return p;
}

static void write_array(FILE *f, const void *p, int64_t count, size_t size)
{
    if (count > 0 && fwrite(p, size, (size_t) count, f) != (size_t) count)
        fail("cannot write the output file");
}""")

_OPEN_INPUT = r"""    if (argc != 4) fail("usage: prog INPUT OUTPUT THREADS");
    const int threads = atoi(argv[3]);
    if (threads < 1) fail("THREADS must be a positive integer");
    FILE *in = fopen(argv[1], "rb");
    if (!in) fail("cannot open the input file");"""

_START_TEAM = Template(r"""
    /* Start the thread team outside the timed region, and make sure it has the size asked for:
     * a worker of the partition without a thread would silently leave its work undone. */
    omp_set_dynamic(0);
    int team = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        team = omp_get_num_threads();
    }
    if (team != threads) {
        fprintf(stderr, "OpenMP started %d threads instead of %d\n", team, threads);
        return 3;
    }

$debug_switch""".strip("\n"))

_OPEN_OUTPUT = r"""    FILE *out = fopen(argv[2], "wb");
    if (!out) fail("cannot open the output file");"""

_CLOSE_OUTPUT = r"""    if (fclose(out) != 0) fail("cannot write the output file");
    return 0;"""


def fail_function(std: str = "") -> str:
    """C (``std=""``) or C++ (``std="std::"``) ``fail(what)``: the message on stderr, exit 2."""
    return _lines("static void fail(const char *what)",
                  "{",
                  f'    {std}fprintf(stderr, "%s\\n", what);',
                  f"    {std}exit(2);",
                  "}")


def debug_switch(code: str, std: str = "") -> str:
    """The program's reaction to the debug hook ``code`` (a C expression), before any work: the
    misbehaviours of DEBUG_HOOKS ("wrong" acts after the work, in each driver)."""
    return _lines(f"    switch ({code}) {{",
                  f"    case DEBUG_SEGV: {std}raise(SIGSEGV); break;",
                  f"    case DEBUG_ABORT: {std}abort();",
                  "    case DEBUG_HANG: for (;;) sleep(1);",
                  f'    case DEBUG_EXIT: {std}fprintf(stderr, "debug hook: exit 3\\n"); return 3;',
                  "    default: break;",
                  "    }")


def driver_parts() -> dict[str, str]:
    """The shared pieces of a C driver template, by placeholder name: ``includes``, ``hooks``,
    ``helpers`` (now, fail, alloc, fill_nan, read_array, write_array), and in ``main``
    ``open_input``, ``start_team`` (thread team check, then the debug hooks of header word
    H_DEBUG), ``open_output`` and ``close_output``."""
    return dict(includes=_INCLUDES, hooks=hook_defines(),
                helpers=_HELPERS.substitute(fail=fail_function()), open_input=_OPEN_INPUT,
                start_team=_START_TEAM.substitute(debug_switch=debug_switch("h[H_DEBUG]")),
                open_output=_OPEN_OUTPUT, close_output=_CLOSE_OUTPUT)
