"""SpMV / SpMM as Vitis-HLS-style C++ dataflow designs: emitted, C-simulated, cycle-estimated.

The design (one compute unit) is a ``#pragma HLS DATAFLOW`` region of stages connected by
``hls::stream`` FIFOs; every loop that does work is ``#pragma HLS PIPELINE II=1``, lanes are
``#pragma HLS UNROLL factor=U``, local arrays are ``#pragma HLS ARRAY_PARTITION``-ed so the
unrolled lanes get their own ports. The read stage walks the *merge path* (one beat per U
nonzeros of a row and one beat per row end), so a row of any length costs its items and no
per-row pipeline restart.

SpMV (U lanes): read_matrix (beats of up to U nonzeros of one row, or a row end) ->
multiply (val * x[col] on every lane) -> accumulate (lane sums added into ACC_LANES interleaved
partial sums, so the double adder's latency does not force II > 1; a row end reduces them and
emits y[row]) -> write_y.

SpMM (K columns, U lanes): read_matrix (one beat per nonzero or row end) -> mac (per nonzero a
pipelined loop over the K columns, U per iteration, into a row accumulator partitioned cyclic U;
per row end a flush loop emitting the row in U-wide packs) -> write_y.

C simulation: the emitted program is compiled with g++ against ``hls_stream.h`` (the project's
``hls::stream``: a std::deque; pragmas are ignored), run out of process on the input like the C
kernels, and checked against scipy. Outside synthesis (``#ifndef __SYNTHESIS__``) every
pipelined loop counts its invocations and iterations and every stream its highest occupancy.

Cycle estimate (``estimate_cycles``), the formula:

    cycles(loop)  = II * iterations + depth * invocations   (a pipelined loop: one iteration
                                                               issued every II cycles, plus the
                                                               pipeline's fill each time it is
                                                               entered)
    cycles(stage) = sum of cycles(loop) over the stage's pipelined loops
    cycles(design) = max over the dataflow's stages of cycles(stage)

(the stages of a dataflow run concurrently, so the slowest stage bounds the design; the fill of
the other stages, loop-entry overheads of non-pipelined loops and memory stalls are not
modelled). The trip counts come from the matrix (row lengths, K) in Python; ``depth`` is the sum
of the latencies (``LATENCY``) on the loop body's critical path. The same formula applied to the
trip counts the C simulation counted gives ``HlsMeasurement.simulated``, which must equal the
estimate: that checks the emitted loops do the work the estimate assumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from string import Template
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from perfjax.kernels.c.build import build
from perfjax.kernels.c.emit import (
    DEBUG_HOOKS, KernelError, _tree_sum, check_unroll, debug_switch, fail_function, hook_defines)
from perfjax.kernels.c.run import (
    _as_csr, _as_operand, _build_and_run, _judge, _positive_int, _run_arguments)

HLS_OPS = ("spmv", "spmm")
ACC_LANES = 8          # interleaved partial sums of the SpMV accumulator (>= the adder latency)
KMAX = 4096            # SpMM: the row accumulator's size, the largest K the design takes
INPUT_MAGIC = 0x504A484C5349       # "PJHLSI"
OUTPUT_MAGIC = 0x504A484C534F      # "PJHLSO"

# Operation latencies in cycles (double precision, Vitis HLS on UltraScale+ at ~300 MHz, rounded):
# what the pipeline depths are made of. They set the estimate's constant terms only.
LATENCY = {"axi_read": 7, "axi_write": 2, "fifo": 1, "dmul": 6, "dadd": 7, "reg": 1}


def _log2(n: int) -> int:
    return max(0, math.ceil(math.log2(n)))


@dataclass(frozen=True)
class Loop:
    """One pipelined loop of the design: its stage, label, II and pipeline depth."""

    stage: str
    label: str
    ii: int
    depth: int


def loops(op: str, unroll: int) -> tuple[Loop, ...]:
    """The pipelined loops of the design, in the order of the C simulation's counters."""
    L = LATENCY
    if op == "spmv":
        return (
            Loop("read_matrix", "read_loop", 1, L["axi_read"] + L["fifo"]),
            Loop("multiply", "mul_loop", 1, L["fifo"] + L["axi_read"] + L["dmul"] + L["fifo"]),
            Loop("accumulate", "acc_loop", 1,
                 L["fifo"] + max(L["dadd"] * (_log2(unroll) + 1), L["dadd"] * _log2(ACC_LANES))
                 + L["fifo"]),
            Loop("write_y", "write_loop", 1, L["fifo"] + L["axi_write"]),
        )
    return (
        Loop("read_matrix", "read_loop", 1, L["axi_read"] + L["fifo"]),
        Loop("mac", "init_loop", 1, L["reg"]),
        Loop("mac", "mac_loop", 1, L["axi_read"] + L["dmul"] + L["dadd"]),
        Loop("mac", "flush_loop", 1, L["reg"] + L["fifo"]),
        Loop("write_y", "write_loop", 1, L["fifo"] + L["axi_write"]),
    )


STREAMS = {"spmv": ("beats", "prods", "sums"), "spmm": ("beats", "packs")}


@dataclass(frozen=True)
class HlsSpec:
    """Compile-time knobs of one HLS design: ``unroll`` (U lanes) and the FIFOs' depth pragma."""

    op: str = "spmv"
    unroll: int = 1
    fifo_depth: int = 64

    language: ClassVar[str] = "c++"

    def __post_init__(self) -> None:
        if self.op not in HLS_OPS:
            raise KernelError(f"op must be one of {HLS_OPS}, got {self.op!r}")
        check_unroll(self.unroll)
        if isinstance(self.fifo_depth, bool) or not isinstance(self.fifo_depth, int) or \
                self.fifo_depth < 2:
            raise KernelError(f"fifo_depth must be an integer >= 2, got {self.fifo_depth!r}")

    @property
    def flag_op(self) -> str:
        return self.op

    @property
    def name(self) -> str:
        return f"hls-{self.op}-u{self.unroll}-f{self.fifo_depth}"

    def source(self) -> str:
        return emit_hls(self)


# ----------------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class LoopCycles:
    stage: str
    label: str
    ii: int
    depth: int
    iterations: int
    invocations: int

    @property
    def cycles(self) -> int:
        return self.ii * self.iterations + self.depth * self.invocations


@dataclass(frozen=True)
class CycleEstimate:
    """Cycles of a dataflow design: per loop, per stage, and the design (its slowest stage)."""

    loops: tuple[LoopCycles, ...]

    @property
    def stages(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for loop in self.loops:
            totals[loop.stage] = totals.get(loop.stage, 0) + loop.cycles
        return totals

    @property
    def cycles(self) -> int:
        return max(self.stages.values())

    @property
    def bottleneck(self) -> str:
        stages = self.stages
        return max(stages, key=stages.get)

    def table(self) -> str:
        rows = [f"{'stage':<12} {'loop':<11} {'II':>3} {'depth':>5} {'iterations':>11} "
                f"{'calls':>7} {'cycles':>10}"]
        rows += [f"{lp.stage:<12} {lp.label:<11} {lp.ii:>3} {lp.depth:>5} {lp.iterations:>11} "
                 f"{lp.invocations:>7} {lp.cycles:>10}" for lp in self.loops]
        rows.append(f"design: {self.cycles} cycles (slowest stage: {self.bottleneck})")
        return "\n".join(rows)


def _trips(op: str, unroll: int, lengths: np.ndarray, width: int) -> list[tuple[int, int]]:
    """(iterations, invocations) of every loop of ``loops(op, unroll)`` for these row lengths."""
    nrows, nnz = len(lengths), int(lengths.sum())
    if op == "spmv":
        beats = int((-(-lengths // unroll)).sum()) + nrows
        return [(beats, 1), (beats, 1), (beats, 1), (nrows, 1)]
    packs = -(-width // unroll)
    return [(nnz + nrows, 1), (packs, 1), (nnz * packs, nnz), (nrows * packs, nrows),
            (nrows * packs, 1)]


def _estimate(spec: HlsSpec, trips: list[tuple[int, int]]) -> CycleEstimate:
    return CycleEstimate(tuple(LoopCycles(lp.stage, lp.label, lp.ii, lp.depth, int(it), int(calls))
                               for lp, (it, calls) in zip(loops(spec.op, spec.unroll), trips)))


def estimate_cycles(matrix, op: str = "spmv", *, unroll: int = 1, width: int = 1,
                    fifo_depth: int = 64) -> CycleEstimate:
    """The cycle estimate of the emitted ``op`` design for ``matrix`` (``width`` = K for SpMM);
    the formula is in the module doc."""
    spec = HlsSpec(op, unroll, fifo_depth)
    csr = _as_csr(matrix)
    width = _positive_int("width", width)
    if op == "spmv" and width != 1:
        raise KernelError(f"width applies to spmm only, got width={width} for spmv")
    return _estimate(spec, _trips(op, spec.unroll, np.diff(csr.indptr).astype(np.int64), width))


# ----------------------------------------------------------------------------------- source


def emit_hls(spec: HlsSpec) -> str:
    """The complete C++ program (design + C-simulation test bench) for ``spec``."""
    if not isinstance(spec, HlsSpec):
        raise KernelError(f"expected an HlsSpec, got {type(spec).__name__}")
    u = spec.unroll
    design = (_SPMV if spec.op == "spmv" else _SPMM).substitute(
        U=u, ACC=ACC_LANES, KMAX=KMAX, DEPTH=spec.fifo_depth,
        lane_sum=_tree_sum([f"p.v[{i}]" for i in range(u)]),
        acc_sum=_tree_sum([f"acc[{i}]" for i in range(ACC_LANES)]),
        **{f"II_{lp.label.upper()}": lp.ii for lp in loops(spec.op, u)})
    names = loops(spec.op, u)
    enum = ", ".join(f"L_{lp.label.upper()}" for lp in names)
    streams = STREAMS[spec.op]
    return _BENCH.substitute(
        spec=repr(spec), loop_enum=enum, nloops=len(names), nstreams=len(streams),
        stream_enum=", ".join(f"S_{s.upper()}" for s in streams), design=design,
        top=f"{spec.op}_top", input_magic=f"0x{INPUT_MAGIC:X}LL",
        output_magic=f"0x{OUTPUT_MAGIC:X}LL",
        hooks=hook_defines(), fail=fail_function("std::"),
        debug_switch=debug_switch("h[7]", "std::"))


_SPMV = Template(r"""constexpr int U = $U;            // lanes: nonzeros per beat
constexpr int ACC = $ACC;         // interleaved partial sums of the accumulator

struct Beat {                     // up to U nonzeros of one row, or that row's end
    int64_t col[U];
    double val[U];
    int32_t n;
    bool end;
};
struct Prod {
    double v[U];
    bool end;
};

static void read_matrix(const int64_t *indptr, const int64_t *col, const double *val,
                        int64_t nrows, hls::stream<Beat> &beats)
{
    int64_t row = 0, k = 0;
    SIM_CALL(L_READ_LOOP);
read_loop:
    while (row < nrows) {
#pragma HLS PIPELINE II=$II_READ_LOOP
        SIM_TRIP(L_READ_LOOP);
        const int64_t left = indptr[row + 1] - k;
        Beat b;
        b.n = (int32_t) (left < U ? left : U);
        b.end = left == 0;
        for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
            const bool live = u < b.n;
            b.col[u] = live ? col[k + u] : 0;
            b.val[u] = live ? val[k + u] : 0.0;
        }
        if (b.end) ++row;
        else k += b.n;
        beats.write(b);
    }
}

static void multiply(const double *x, int64_t nrows, hls::stream<Beat> &beats,
                     hls::stream<Prod> &prods)
{
    int64_t rows = 0;
    SIM_CALL(L_MUL_LOOP);
mul_loop:
    while (rows < nrows) {
#pragma HLS PIPELINE II=$II_MUL_LOOP
        SIM_TRIP(L_MUL_LOOP);
        const Beat b = beats.read();
        Prod p;
        p.end = b.end;
        for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
            p.v[u] = u < b.n ? b.val[u] * x[b.col[u]] : 0.0;
        }
        if (b.end) ++rows;
        prods.write(p);
    }
}

static void accumulate(int64_t nrows, hls::stream<Prod> &prods, hls::stream<double> &sums)
{
    double acc[ACC];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
    for (int a = 0; a < ACC; ++a) {
#pragma HLS UNROLL
        acc[a] = 0.0;
    }
    int lane = 0;
    int64_t rows = 0;
    SIM_CALL(L_ACC_LOOP);
acc_loop:
    while (rows < nrows) {
#pragma HLS PIPELINE II=$II_ACC_LOOP
#pragma HLS DEPENDENCE variable=acc inter false
        SIM_TRIP(L_ACC_LOOP);
        const Prod p = prods.read();
        if (p.end) {
            sums.write($acc_sum);
            for (int a = 0; a < ACC; ++a) {
#pragma HLS UNROLL
                acc[a] = 0.0;
            }
            lane = 0;
            ++rows;
        } else {
            acc[lane] += $lane_sum;
            lane = lane + 1 == ACC ? 0 : lane + 1;
        }
    }
}

static void write_y(double *y, int64_t nrows, hls::stream<double> &sums)
{
    SIM_CALL(L_WRITE_LOOP);
write_loop:
    for (int64_t r = 0; r < nrows; ++r) {
#pragma HLS PIPELINE II=$II_WRITE_LOOP
        SIM_TRIP(L_WRITE_LOOP);
        y[r] = sums.read();
    }
}

void spmv_top(const int64_t *indptr, const int64_t *col, const double *val, const double *x,
              double *y, int64_t nrows, int64_t width)
{
#pragma HLS INTERFACE m_axi port=indptr offset=slave bundle=gmem0
#pragma HLS INTERFACE m_axi port=col offset=slave bundle=gmem1
#pragma HLS INTERFACE m_axi port=val offset=slave bundle=gmem2
#pragma HLS INTERFACE m_axi port=x offset=slave bundle=gmem3
#pragma HLS INTERFACE m_axi port=y offset=slave bundle=gmem4
#pragma HLS INTERFACE s_axilite port=nrows
#pragma HLS INTERFACE s_axilite port=return
#pragma HLS DATAFLOW
    (void) width;
    hls::stream<Beat> beats("beats");
    hls::stream<Prod> prods("prods");
    hls::stream<double> sums("sums");
#pragma HLS STREAM variable=beats depth=$DEPTH
#pragma HLS STREAM variable=prods depth=$DEPTH
#pragma HLS STREAM variable=sums depth=$DEPTH
    read_matrix(indptr, col, val, nrows, beats);
    multiply(x, nrows, beats, prods);
    accumulate(nrows, prods, sums);
    write_y(y, nrows, sums);
#ifndef __SYNTHESIS__
    sim_high_water[S_BEATS] = beats.high_water();
    sim_high_water[S_PRODS] = prods.high_water();
    sim_high_water[S_SUMS] = sums.high_water();
#endif
}
""")

_SPMM = Template(r"""constexpr int U = $U;            // lanes: columns of X per cycle
constexpr int64_t KMAX = $KMAX;    // the largest K the row accumulator holds

struct Beat {                     // one nonzero, or a row end
    int64_t col;
    double val;
    bool end;
};
struct Pack {                     // U consecutive entries of an output row
    double v[U];
};

static void read_matrix(const int64_t *indptr, const int64_t *col, const double *val,
                        int64_t nrows, hls::stream<Beat> &beats)
{
    int64_t row = 0, k = 0;
    SIM_CALL(L_READ_LOOP);
read_loop:
    while (row < nrows) {
#pragma HLS PIPELINE II=$II_READ_LOOP
        SIM_TRIP(L_READ_LOOP);
        Beat b;
        b.end = k == indptr[row + 1];
        b.col = b.end ? 0 : col[k];
        b.val = b.end ? 0.0 : val[k];
        if (b.end) ++row;
        else ++k;
        beats.write(b);
    }
}

static void mac(const double *X, int64_t nrows, int64_t K, hls::stream<Beat> &beats,
                hls::stream<Pack> &packs)
{
    static double acc[KMAX];
#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=$U dim=1
    SIM_CALL(L_INIT_LOOP);
init_loop:
    for (int64_t c = 0; c < K; c += U) {
#pragma HLS PIPELINE II=$II_INIT_LOOP
        SIM_TRIP(L_INIT_LOOP);
        for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
            if (c + u < K) acc[c + u] = 0.0;
        }
    }
    int64_t rows = 0;
beat_loop:
    while (rows < nrows) {
        const Beat b = beats.read();
        if (!b.end) {
            const double *xr = X + b.col * K;
            SIM_CALL(L_MAC_LOOP);
mac_loop:
            for (int64_t c = 0; c < K; c += U) {
#pragma HLS PIPELINE II=$II_MAC_LOOP
                SIM_TRIP(L_MAC_LOOP);
                for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
                    if (c + u < K) acc[c + u] += b.val * xr[c + u];
                }
            }
        } else {
            SIM_CALL(L_FLUSH_LOOP);
flush_loop:
            for (int64_t c = 0; c < K; c += U) {
#pragma HLS PIPELINE II=$II_FLUSH_LOOP
                SIM_TRIP(L_FLUSH_LOOP);
                Pack p;
                for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
                    p.v[u] = c + u < K ? acc[c + u] : 0.0;
                    if (c + u < K) acc[c + u] = 0.0;
                }
                packs.write(p);
            }
            ++rows;
        }
    }
}

static void write_y(double *Y, int64_t nrows, int64_t K, hls::stream<Pack> &packs)
{
    const int64_t per_row = (K + U - 1) / U;
    int64_t r = 0, c = 0;
    SIM_CALL(L_WRITE_LOOP);
write_loop:
    for (int64_t t = 0; t < nrows * per_row; ++t) {
#pragma HLS PIPELINE II=$II_WRITE_LOOP
        SIM_TRIP(L_WRITE_LOOP);
        const Pack p = packs.read();
        for (int u = 0; u < U; ++u) {
#pragma HLS UNROLL factor=$U
            if (c + u < K) Y[r * K + c + u] = p.v[u];
        }
        c += U;
        if (c >= K) {
            c = 0;
            ++r;
        }
    }
}

void spmm_top(const int64_t *indptr, const int64_t *col, const double *val, const double *X,
              double *Y, int64_t nrows, int64_t K)
{
#pragma HLS INTERFACE m_axi port=indptr offset=slave bundle=gmem0
#pragma HLS INTERFACE m_axi port=col offset=slave bundle=gmem1
#pragma HLS INTERFACE m_axi port=val offset=slave bundle=gmem2
#pragma HLS INTERFACE m_axi port=X offset=slave bundle=gmem3
#pragma HLS INTERFACE m_axi port=Y offset=slave bundle=gmem4
#pragma HLS INTERFACE s_axilite port=nrows
#pragma HLS INTERFACE s_axilite port=K
#pragma HLS INTERFACE s_axilite port=return
#pragma HLS DATAFLOW
    hls::stream<Beat> beats("beats");
    hls::stream<Pack> packs("packs");
#pragma HLS STREAM variable=beats depth=$DEPTH
#pragma HLS STREAM variable=packs depth=$DEPTH
    read_matrix(indptr, col, val, nrows, beats);
    mac(X, nrows, K, beats, packs);
    write_y(Y, nrows, K, packs);
#ifndef __SYNTHESIS__
    sim_high_water[S_BEATS] = beats.high_water();
    sim_high_water[S_PACKS] = packs.high_water();
#endif
}
""")

_BENCH = Template(r"""// Generated by perfjax.kernels.c.hls from $spec. Do not edit.
// A Vitis-HLS-style design and its C-simulation test bench (g++ with perfjax's hls_stream.h).
// Usage: prog INPUT OUTPUT [THREADS, ignored] (layout: perfjax/kernels/c/hls.py).
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <unistd.h>
#include "hls_stream.h"

enum { $loop_enum, NLOOPS };
enum { $stream_enum, NSTREAMS };
$hooks

#ifndef __SYNTHESIS__
static long long sim_trips[NLOOPS], sim_calls[NLOOPS];   // iterations / invocations per loop
static long long sim_high_water[NSTREAMS];                 // highest occupancy per stream
#define SIM_TRIP(id) (++sim_trips[id])
#define SIM_CALL(id) (++sim_calls[id])
#else
#define SIM_TRIP(id) ((void) 0)
#define SIM_CALL(id) ((void) 0)
#endif

// ----------------------------------------------------------------------------------- design
$design
// ----------------------------------------------------------------------------------- test bench

$fail

template <typename T>
static std::vector<T> read_vec(FILE *f, int64_t count)
{
    std::vector<T> v(count > 0 ? (size_t) count : 1);
    if (count > 0 && std::fread(v.data(), sizeof(T), (size_t) count, f) != (size_t) count)
        fail("input file is truncated");
    return v;
}

template <typename T>
static void write_vec(FILE *f, const T *p, int64_t count)
{
    if (count > 0 && std::fwrite(p, sizeof(T), (size_t) count, f) != (size_t) count)
        fail("cannot write the output file");
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) fail("usage: prog INPUT OUTPUT [THREADS, ignored]");
    FILE *in = std::fopen(argv[1], "rb");
    if (!in) fail("cannot open the input file");
    int64_t h[8];  // magic, nrows, ncols, nnz, width, K-or-1, repeats, debug
    if (std::fread(h, sizeof h[0], 8, in) != 8) fail("input file is truncated");
    if (h[0] != $input_magic) fail("not a perfjax HLS input file");
    const int64_t nrows = h[1], ncols = h[2], nnz = h[3], width = h[4], repeats = h[6];
    if (nrows < 1 || ncols < 1 || nnz < 0 || width < 1 || repeats < 1)
        fail("input header holds an invalid size");
    const std::vector<int64_t> indptr = read_vec<int64_t>(in, nrows + 1);
    const std::vector<int64_t> col = read_vec<int64_t>(in, nnz);
    const std::vector<double> val = read_vec<double>(in, nnz);
    const std::vector<double> x = read_vec<double>(in, ncols * width);
    std::fclose(in);
    std::vector<double> y((size_t) (nrows * width), NAN);
    std::vector<double> seconds((size_t) repeats);

$debug_switch
    for (int64_t rep = 0; rep < repeats; ++rep) {
        std::memset(sim_trips, 0, sizeof sim_trips);
        std::memset(sim_calls, 0, sizeof sim_calls);
        const auto t0 = std::chrono::steady_clock::now();
        $top(indptr.data(), col.data(), val.data(), x.data(), y.data(), nrows, width);
        seconds[(size_t) rep] = std::chrono::duration<double>(
            std::chrono::steady_clock::now() - t0).count();
    }
    if (h[7] == DEBUG_WRONG) y[0] += 1.0;
    FILE *out = std::fopen(argv[2], "wb");
    if (!out) fail("cannot open the output file");
    const int64_t oh[6] = {$output_magic, nrows, width, NLOOPS, NSTREAMS, repeats};
    write_vec(out, oh, 6);
    write_vec(out, y.data(), nrows * width);
    write_vec(out, sim_trips, NLOOPS);
    write_vec(out, sim_calls, NLOOPS);
    write_vec(out, sim_high_water, NSTREAMS);
    write_vec(out, seconds.data(), repeats);
    if (std::fclose(out) != 0) fail("cannot write the output file");
    return 0;
}
""")


# ----------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class HlsMeasurement:
    """A C simulation of an HLS design beside its cycle estimate.

    ``output``: y (or Y) from the C simulation, checked against scipy when ``ok``; ``seconds``:
    wall time of each simulated run of the top function (a C simulation, not the hardware);
    ``estimate``: the cycle estimate from the matrix's structure; ``simulated``: the same formula
    on the trip counts the C simulation counted (equal to ``estimate`` for a correct design);
    ``fifo_high_water``: the highest occupancy of every stream (the depth the FIFO needs for
    the stages to run back to back).
    """

    ok: bool
    reason: str
    output: np.ndarray | None = None
    seconds: list[float] = field(default_factory=list)
    estimate: CycleEstimate | None = None
    simulated: CycleEstimate | None = None
    fifo_high_water: dict[str, int] = field(default_factory=dict)
    source_hash: str = ""

    def report(self) -> str:
        """The estimate's table, and what the C simulation gave beside it."""
        lines = [self.estimate.table()] if self.estimate else []
        if self.simulated is not None:
            lines.append(f"C simulation: {self.simulated.cycles} cycles from its counted trips "
                         f"({'equal to' if self.simulated == self.estimate else 'DIFFERS from'}"
                         f" the estimate), {min(self.seconds) * 1e3:.3f} ms wall, output "
                         f"{'matches scipy' if self.ok else 'REJECTED: ' + self.reason}")
        if self.fifo_high_water:
            lines.append("FIFO high water: " + ", ".join(
                f"{k} {v}" for k, v in self.fifo_high_water.items()))
        return "\n".join(lines)


def hls_spmv(matrix, x, *, unroll: int = 1, fifo_depth: int = 64, repeats: int = 1,
             timeout: float = 60.0, check: bool = True, rtol: float = 1e-10,
             _debug: str | None = None) -> HlsMeasurement:
    """C-simulate the HLS SpMV design on y = A x and estimate its cycles."""
    return _simulate("spmv", matrix, x, unroll, fifo_depth, repeats, timeout, check, rtol, _debug)


def hls_spmm(matrix, X, *, unroll: int = 1, fifo_depth: int = 64, repeats: int = 1,
             timeout: float = 60.0, check: bool = True, rtol: float = 1e-10,
             _debug: str | None = None) -> HlsMeasurement:
    """C-simulate the HLS SpMM design on Y = A X (K <= KMAX) and estimate its cycles."""
    return _simulate("spmm", matrix, X, unroll, fifo_depth, repeats, timeout, check, rtol, _debug)


def _simulate(op, matrix, operand, unroll, fifo_depth, repeats, timeout, check, rtol, debug):
    csr = _as_csr(matrix)
    operand = _as_operand(op, csr, operand)
    repeats, timeout, rtol = _run_arguments(repeats, timeout, rtol, debug)
    spec = HlsSpec(op, unroll, fifo_depth)
    width = 1 if op == "spmv" else operand.shape[1]
    if width > KMAX:
        raise KernelError(f"X has K={width} columns; the HLS SpMM design holds at most {KMAX}")
    csr = sp.csr_array(csr, dtype=np.float64)
    csr.sort_indices()
    indptr = csr.indptr.astype(np.int64)
    estimate = _estimate(spec, _trips(op, spec.unroll, np.diff(indptr), width))
    header = np.array([INPUT_MAGIC, csr.shape[0], csr.shape[1], csr.nnz, width, width, repeats,
                       DEBUG_HOOKS.get(debug, 0)], np.int64)
    # a C simulation has no OpenMP: one thread
    raw, failure, digest = _build_and_run(
        spec, build, (header, indptr, csr.indices.astype(np.int64), csr.data, operand), 1, timeout)
    if raw is None:
        return HlsMeasurement(False, failure, estimate=estimate, source_hash=digest)
    nrows, nloops, streams = csr.shape[0], len(loops(op, spec.unroll)), STREAMS[op]
    lengths = [6, nrows * width, nloops, nloops, len(streams), repeats]
    if raw.size != 8 * sum(lengths):
        return HlsMeasurement(False, f"the C simulation's output file has {raw.size} bytes, "
                              f"expected {8 * sum(lengths)}", estimate=estimate,
                              source_hash=digest)
    offsets = np.cumsum([0, *lengths]) * 8
    part = [np.frombuffer(raw, dtype, n, int(o)) for dtype, n, o in zip(
        (np.int64, np.float64, np.int64, np.int64, np.int64, np.float64), lengths, offsets)]
    if part[0].tolist() != [OUTPUT_MAGIC, nrows, width, nloops, len(streams), repeats]:
        return HlsMeasurement(False, f"the C simulation's output header {part[0].tolist()} does "
                              "not match its input", estimate=estimate, source_hash=digest)
    output = part[1].reshape(nrows, width).copy()
    if op == "spmv":
        output = output[:, 0]
    simulated = _estimate(spec, list(zip(part[2].tolist(), part[3].tolist())))
    high = dict(zip(streams, (int(v) for v in part[4])))
    reason = _judge(csr, operand, output, None, None, check, rtol)
    return HlsMeasurement(not reason, reason, output, [float(s) for s in part[5]], estimate,
                          simulated, high, digest)
