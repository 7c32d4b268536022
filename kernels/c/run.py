"""Run generated SpMV / SpMM programs out of process and turn what happened into a Measurement.

A tuner tries configurations that may crash, hang or compute garbage; none of that may take the
tuner down. So the program runs in a subprocess with a timeout, and a build failure, a signal, a
non-zero exit, a timeout, a malformed output file, NaN in the output or (with ``check``) a wrong
answer all come back as ``Measurement(ok=False, reason=...)``. Only bad *arguments* raise
(``KernelError``, a ``PerfjaxError``), before anything is built or run.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from perfjax.kernels.c.build import BuildError, build, source_hash
from perfjax.kernels.c.emit import (
    COL_INT32_MAX_NCOLS, DEBUG_HOOKS, FORMAT_VERSION, INPUT_HEADER, INPUT_MAGIC, OUTPUT_HEADER,
    OUTPUT_MAGIC, KernelError, KernelSpec)
from perfjax.schedulers.partition import Partition

STDERR_TAIL = 600  # characters of the program's stderr quoted in a failure reason
SEQUENTIAL_WORKERS = -2  # header value of `worker` for sequential mode (SEQUENTIAL in the C)


@dataclass(frozen=True)
class Measurement:
    """What one run of a generated program gave.

    ``ok`` is False when anything went wrong, and ``reason`` says what (empty when ok).
    ``output``, ``seconds`` and the instrumented counters are filled whenever the program
    finished, even if its answer was then found wrong, so a failure can be inspected.
    ``seconds``: wall time of the kernel region (parallel phase + fix-up) of each repetition.
    ``worker_rows`` / ``worker_nnz``: row ends and nonzeros each worker processed;
    ``worker_seconds``: each worker's fastest time span over the repetitions (instrumented runs
    only; in single-worker mode the other workers' entries are 0). ``source_hash``: SHA-256 of the
    generated C source. ``worker_work``: the instrumented counters of the kernels with more than
    two path coordinates (``perfjax.kernels.c.ops``), [P, D] in the order of the partition's
    path points, equal to ``Partition.work()``; None for SpMV / SpMM.
    """

    ok: bool
    reason: str
    output: np.ndarray | None = None
    seconds: list[float] = field(default_factory=list)
    worker_rows: np.ndarray | None = None
    worker_nnz: np.ndarray | None = None
    worker_seconds: np.ndarray | None = None
    source_hash: str = ""
    worker_work: np.ndarray | None = None

    @property
    def best(self) -> float:
        """Fastest repetition in seconds (inf when there is none): what a tuner minimizes."""
        return min(self.seconds, default=math.inf)


def spmv(matrix, x, partition: Partition | None = None, *, threads: int | None = None,
         unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
         repeats: int = 1, instrument: bool = False, worker: int | None = None,
         sequential: bool = False, timeout: float = 30.0, check: bool = True,
         rtol: float = 1e-10, _debug: str | None = None,
         chunk_size: int | None = None, bin_rows: int | None = None) -> Measurement:
    """y = A x with a generated C/OpenMP program.

    With a ``partition`` its workers run as OpenMP threads (``threads`` defaults to, and must
    equal, ``partition.workers``), or only worker ``worker`` on one thread (single-worker mode:
    the output is that worker's contribution, and ``check`` compares with exactly that), or,
    with ``sequential=True``, every worker in turn on one thread: each worker's span is then
    its time alone on a core, which is how P workers are validated on a machine with fewer
    cores (``worker_seconds`` holds each worker's fastest span over the repetitions). Without
    one, the rows are scheduled by ``#pragma omp for schedule(schedule, chunk)``
    (``schedule`` defaults to "static", ``threads`` to 1). ``check`` compares with scipy: entry r
    must be within ``rtol * (|A| |x|)[r]`` of ``(A @ x)[r]`` (the bound on reordering a sum).
    ``_debug`` (tests only) makes the program misbehave: one of DEBUG_HOOKS. ``chunk_size``
    (schedule mode only): TACO-style row split, the worksharing loop runs over chunks of that
    many rows. ``bin_rows`` (schedule mode only, 1 .. 16): row-length binning, rows of up to that
    many nonzeros run in per-length bins with constant trip counts (``KernelSpec.bin_rows``).
    """
    return _measure("spmv", matrix, x, partition, threads, unroll, schedule, chunk, repeats,
                    instrument, worker, sequential, timeout, check, rtol, _debug, chunk_size,
                    bin_rows=bin_rows)


def spmm(matrix, X, partition: Partition | None = None, *, threads: int | None = None,
         unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
         repeats: int = 1, instrument: bool = False, worker: int | None = None,
         sequential: bool = False, timeout: float = 30.0, check: bool = True,
         rtol: float = 1e-10, _debug: str | None = None,
         chunk_size: int | None = None,
         loop_order: tuple[int, ...] | None = None, bin_rows: int | None = None) -> Measurement:
    """Y = A X for a dense row-major X of shape [ncols, K]; otherwise exactly like ``spmv``
    (``unroll`` unrolls the K loop, or blocks it: ``loop_order`` is an order of the loops
    (i0, i1, k, j0, j1), see ``perfjax.kernels.c.loop_order``; None is the default nest)."""
    return _measure("spmm", matrix, X, partition, threads, unroll, schedule, chunk, repeats,
                    instrument, worker, sequential, timeout, check, rtol, _debug, chunk_size,
                    loop_order, bin_rows)


# ----------------------------------------------------------------------------------- arguments


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise KernelError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise KernelError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _as_csr(matrix) -> sp.csr_array:
    if not sp.issparse(matrix):
        raise KernelError(f"matrix must be a scipy.sparse matrix, got {type(matrix).__name__}")
    try:
        csr = sp.csr_array(matrix)
    except (TypeError, ValueError) as exc:  # an unsupported dtype, say
        raise KernelError(f"matrix cannot be read as a CSR matrix: {exc}") from None
    if csr.ndim != 2:
        raise KernelError(f"matrix must be 2-D, got shape {csr.shape}")
    if min(csr.shape) < 1:
        raise KernelError(f"matrix of shape {csr.shape} has no rows or no columns")
    if np.iscomplexobj(csr.data):
        raise KernelError("matrix has complex values; the C kernels compute in double")
    return csr


def _dense(name: str, operand, ndim: int, shape: tuple, expected: str) -> np.ndarray:
    """``operand`` as a C-contiguous float64 array of ``ndim`` dimensions, non-empty and of
    ``shape`` (None: any length), or KernelError saying it must have shape ``expected``."""
    if np.iscomplexobj(operand):
        raise KernelError(f"{name} has complex values; the C kernels compute in double")
    try:
        array = np.ascontiguousarray(operand, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"{name} is not a numeric array: {exc}") from None
    if array.ndim != ndim or array.size == 0 or \
            any(want is not None and got != want for got, want in zip(array.shape, shape)):
        raise KernelError(f"{name} must have shape {expected}, got shape {array.shape}")
    return array


def _as_operand(op: str, csr: sp.csr_array, operand) -> np.ndarray:
    ncols = csr.shape[1]
    if op == "spmv":
        return _dense("x", operand, 1, (ncols,), f"({ncols},) to multiply the {csr.shape} matrix")
    return _dense("X", operand, 2, (ncols, None),
                  f"({ncols}, K) with K >= 1 to multiply the {csr.shape} matrix")


def _csr_path(indptr: np.ndarray) -> tuple:
    """The merge path of a CSR matrix, as ``_grouped`` takes it: (2, on_path, last, what).

    A path point (i, j) lies on the path iff 0 <= i <= n and indptr[i] <= j <= indptr[i + 1]
    (with indptr[n + 1] read as nnz): i row ends before it means all their nonzeros are too, and
    row i's end is not, so neither are nonzeros after it. It runs from (0, 0) to (n, nnz).
    """
    n, nnz = len(indptr) - 1, int(indptr[-1])

    def on_path(points):
        i, j = points[:, 0], points[:, 1]
        return (i >= 0) & (i <= n) & (j >= indptr[np.clip(i, 0, n)]) & \
            (j <= indptr[np.clip(i + 1, 0, n)])
    return 2, on_path, (n, nnz), f"this matrix ({n} rows, {nnz} nonzeros)"


def _grouped(partition, width: int, on_path, last: tuple, what: str, *,
             merge_path: bool = False) -> tuple[np.ndarray, ...]:
    """Check that ``partition`` tiles a path of points with ``width`` coordinates from the origin
    to ``last`` (``on_path`` says which points lie on it; ``what`` names the operands); return
    (seg_ptr, start, end, order): segments grouped by worker (each worker keeps its segments'
    given order), ``order`` their positions in path order (by i + j + ...).

    ``merge_path`` words the messages as SpMV / SpMM always have (a CSR merge path).
    """
    if not isinstance(partition, Partition):
        raise KernelError(f"partition must be a perfjax Partition, got {type(partition).__name__}")
    start, end, owner = (np.asarray(a) for a in (partition.start, partition.end, partition.owner))
    if start.ndim != 2 or start.shape[1] != width or end.shape != start.shape or \
            len(start) == 0 or owner.shape != (len(start),):
        layout = f"start {start.shape}, end {end.shape}, owner {owner.shape}"
        raise KernelError(
            f"partition ({partition.strategy}) is not a CSR merge-path partition: {layout}"
            if merge_path else f"partition ({partition.strategy}) is not a partition of {what}: "
            f"{layout} (points must have {width} coordinates)")
    workers = _positive_int("partition.workers", partition.workers)
    if owner.min() < 0 or owner.max() >= workers:
        raise KernelError(f"partition ({partition.strategy}) has an owner outside 0..{workers - 1}")
    start, end, owner = start.astype(np.int64), end.astype(np.int64), owner.astype(np.int64)
    where = f"partition ({partition.strategy}, P={workers}) does not fit {what}"
    path, origin = ("merge path", f"{(0,) * width}") if merge_path else ("path", "the origin")
    for points, name in ((start, "starts"), (end, "ends")):
        ok = on_path(points)
        if not ok.all():
            s = int(np.argmin(ok))
            raise KernelError(f"{where}: segment {s} {name} at {tuple(int(c) for c in points[s])},"
                              f" which is not a point of its {path}")
    order = np.lexsort((end.sum(axis=1), start.sum(axis=1)))
    first, final = start[order], end[order]
    if (end < start).any() or first[0].any() or (final[-1] != np.asarray(last)).any() or \
            (final[:-1] != first[1:]).any():
        raise KernelError(f"{where}: its segments do not tile the {path} from {origin} to "
                          f"{tuple(last)} exactly once")
    grouped = np.argsort(owner, kind="stable")
    position = np.empty_like(grouped)
    position[grouped] = np.arange(len(grouped))
    seg_ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=workers))])
    return (seg_ptr.astype(np.int64), start[grouped], end[grouped],
            position[order].astype(np.int64))


def _segments(partition, indptr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Check that ``partition`` tiles this matrix's merge path (``_csr_path``); its segments
    grouped by worker, as the SpMV / SpMM input file holds them: (seg_ptr, i0, j0, i1, j1)."""
    seg_ptr, start, end, _ = _grouped(partition, *_csr_path(indptr), merge_path=True)
    return seg_ptr, start[:, 0], start[:, 1], end[:, 0], end[:, 1]


def _run_arguments(repeats, timeout, rtol, debug) -> tuple[int, float, float]:
    """(repeats, timeout, rtol) checked, and ``debug`` one of DEBUG_HOOKS or None; else
    KernelError. Every runner (C kernels and HLS C simulations) starts here."""
    repeats = _positive_int("repeats", repeats)
    timeout = _positive_real("timeout", timeout)
    rtol = _positive_real("rtol", rtol)
    if debug is not None and debug not in DEBUG_HOOKS:
        raise KernelError(f"_debug must be None or one of {sorted(DEBUG_HOOKS)}, got {debug!r}")
    return repeats, timeout, rtol


@dataclass(frozen=True)
class _Layout:
    """How a C kernel runs: its OpenMP ``schedule`` (None in partition mode), the ``workers`` the
    output file reports on, the ``team`` of threads started, the ``segments`` in the input file
    and the header's ``worker`` word (a worker, -1 for all of them, SEQUENTIAL_WORKERS)."""

    schedule: str | None
    workers: int
    team: int
    segments: tuple
    worker: int


def _layout(partition, schedule, threads, worker, sequential, segments_of,
            no_segments) -> _Layout:
    """Check the mode arguments (KernelError) shared by every C kernel: a ``partition``
    (``segments_of(partition)`` checks it against the operands and gives its segments) run by
    all its workers as threads, by one ``worker`` or ``sequential``-ly; or else an OpenMP
    ``schedule`` (default "static") on ``threads`` threads (default 1), with
    ``no_segments(workers)`` for segments."""
    if partition is not None:
        if schedule is not None:
            raise KernelError("give either a partition or an OpenMP schedule, not both")
        segments = segments_of(partition)
        workers = partition.workers
        if sequential:
            if worker is not None or threads not in (None, 1):
                raise KernelError("sequential mode runs every worker on one thread: give neither "
                                  "worker nor threads")
        elif threads is not None and _positive_int("threads", threads) != workers:
            raise KernelError(f"threads={threads} but the partition has {workers} workers "
                              f"(one thread per worker)")
        if worker is not None and (isinstance(worker, bool) or not isinstance(
                worker, (int, np.integer)) or not 0 <= worker < workers):
            raise KernelError(f"worker must be an integer in 0..{workers - 1}, got {worker!r}")
        team = 1 if sequential or worker is not None else workers
    else:
        if worker is not None or sequential:
            raise KernelError("single-worker and sequential modes need a partition")
        schedule = "static" if schedule is None else schedule
        team = workers = 1 if threads is None else _positive_int("threads", threads)
        segments = no_segments(workers)
    code = SEQUENTIAL_WORKERS if sequential else -1 if worker is None else int(worker)
    return _Layout(schedule, workers, team, segments, code)


# ------------------------------------------------------------------------------------- running


def _measure(op, matrix, operand, partition, threads, unroll, schedule, chunk, repeats,
             instrument, worker, sequential, timeout, check, rtol, debug,
             chunk_size=None, loop_order=None, bin_rows=None) -> Measurement:
    """Validate everything (raising KernelError), then build, run and judge."""
    csr = _as_csr(matrix)
    operand = _as_operand(op, csr, operand)
    indptr = csr.indptr.astype(np.int64)
    repeats, timeout, rtol = _run_arguments(repeats, timeout, rtol, debug)
    layout = _layout(
        partition, schedule, threads, worker, sequential, lambda p: _segments(p, indptr),
        lambda workers: (np.zeros(workers + 1, np.int64), *[np.zeros(0, np.int64)] * 4))
    segments, workers = layout.segments, layout.workers
    # Column indices as scipy keeps them, int32 (12 bytes a nonzero with the value, not 16),
    # unless a column number might not fit.
    col_dtype = np.int32 if csr.shape[1] <= COL_INT32_MAX_NCOLS else np.int64
    spec = KernelSpec(op, unroll, layout.schedule, chunk, instrument, chunk_size,
                      8 * np.dtype(col_dtype).itemsize)
    if loop_order is not None or bin_rows is not None:
        spec = replace(spec, loop_order=loop_order, bin_rows=bin_rows)
    width = 1 if op == "spmv" else operand.shape[1]
    header = dict(magic=INPUT_MAGIC, version=FORMAT_VERSION, nrows=csr.shape[0],
                  ncols=csr.shape[1], nnz=csr.nnz, width=width, nseg=len(segments[1]),
                  workers=workers, worker=layout.worker, repeats=repeats,
                  debug=DEBUG_HOOKS.get(debug, 0), col_bytes=np.dtype(col_dtype).itemsize)
    inputs = (np.array([header[k] for k in INPUT_HEADER], np.int64), indptr,
              csr.indices.astype(col_dtype, copy=False), csr.data.astype(np.float64), operand,
              *segments)
    raw, failure, digest = _build_and_run(spec, build, inputs, layout.team, timeout)
    if raw is None:
        return Measurement(False, failure, source_hash=digest)
    result = _read_output(raw, csr.shape[0], width, workers, repeats, instrument, digest)
    if not result.ok:
        return result
    if op == "spmv":
        result = replace(result, output=result.output[:, 0])
    reason = _judge(csr, operand, result.output, segments, worker, check, rtol)
    return replace(result, ok=False, reason=reason) if reason else result


def _build_and_run(spec, build, inputs: tuple[np.ndarray, ...], team: int,
                   timeout: float) -> tuple[np.ndarray | None, str, str]:
    """Build ``spec`` with ``build`` (the calling runner module's own ``build``) and run it on
    ``inputs``: (output file bytes or None, why there are none, SHA-256 of the source). A build
    failure is a reason like any other, never an exception."""
    digest = source_hash(spec.source())
    try:
        program = build(spec)
    except BuildError as exc:
        return None, f"build failed: {exc}", digest
    raw, failure = _run_program(program, inputs, team, timeout)
    return raw, failure, digest


def _run_program(program: Path, inputs: tuple[np.ndarray, ...], team: int,
                 timeout: float) -> tuple[np.ndarray | None, str]:
    """Write the input file and run the program on ``team`` threads: (its output file's bytes,
    "") or (None, why there are none)."""
    with tempfile.TemporaryDirectory(prefix="perfjax-kernel-") as tmp:
        inp, out = Path(tmp) / "input.bin", Path(tmp) / "output.bin"
        with inp.open("wb") as handle:
            for array in inputs:
                handle.write(np.ascontiguousarray(array).data)
        try:
            run = subprocess.run([str(program), str(inp), str(out), str(team)],
                                 env={**os.environ, "OMP_NUM_THREADS": str(team)},
                                 capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:g} s (killed)"
        except OSError as exc:
            return None, f"could not start {program}: {exc}"
        stderr = run.stderr.decode(errors="replace").strip()[-STDERR_TAIL:]
        detail = f": {stderr}" if stderr else ""
        if run.returncode < 0:
            return None, f"crashed with signal {_signal_name(-run.returncode)}{detail}"
        if run.returncode > 0:
            return None, f"exited with status {run.returncode}{detail}"
        if not out.is_file():
            return None, "the program exited 0 but wrote no output file"
        return np.frombuffer(out.read_bytes(), np.uint8), ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"#{number}"


def _read_output(raw: np.ndarray, nrows: int, width: int, workers: int, repeats: int,
                 instrument: bool, digest: str) -> Measurement:
    """Parse the output file's bytes; anything unexpected is a failed measurement."""
    lengths = [len(OUTPUT_HEADER), nrows * width, repeats, workers, workers, workers]
    if raw.size != 8 * sum(lengths):
        return Measurement(False, f"the program's output file has {raw.size} bytes, expected "
                           f"{8 * sum(lengths)}", source_hash=digest)
    offsets = np.cumsum([0, *lengths]) * 8
    part = [np.frombuffer(raw, dtype, count, int(offset)) for dtype, count, offset in zip(
        (np.int64, np.float64, np.float64, np.int64, np.int64, np.float64), lengths, offsets)]
    if list(part[0]) != [OUTPUT_MAGIC, nrows, width, workers, repeats]:
        return Measurement(False, f"the program's output header {list(part[0])} does not match "
                           "its input", source_hash=digest)
    counters = (part[3].copy(), part[4].copy(), part[5].copy()) if instrument else (None,) * 3
    return Measurement(True, "", part[1].reshape(nrows, width).copy(),
                       [float(s) for s in part[2]], *counters, digest)


def _judge(csr, operand, output, segments, worker, check, rtol) -> str:
    """Why the SpMV / SpMM output is unacceptable ("" if it is): ``_verdict`` against scipy.

    In single-worker mode the reference is A restricted to that worker's nonzeros.
    """
    def reference():
        data = csr.data.astype(np.float64)
        if worker is not None:
            seg_ptr, _, j0, _, j1 = segments
            data = data * _share(csr.nnz, seg_ptr, j0, j1, worker)
        matrix = sp.csr_array((data, csr.indices, csr.indptr), shape=csr.shape)
        return matrix @ operand, rtol * (abs(matrix) @ np.abs(operand))
    return _verdict(output, check, reference, "scipy")


def _share(count: int, seg_ptr, lo, hi, worker: int) -> np.ndarray:
    """1.0 for the items (nonzeros) in [lo[s], hi[s]) of ``worker``'s segments s, else 0.0: what
    single-worker mode runs of ``count`` items."""
    mine = slice(seg_ptr[worker], seg_ptr[worker + 1])
    delta = np.zeros(count + 1, np.int64)
    np.add.at(delta, lo[mine], 1)
    np.add.at(delta, hi[mine], -1)
    return (np.cumsum(delta[:-1]) > 0).astype(np.float64)


def _verdict(output: np.ndarray, check: bool, reference, source: str = "the reference") -> str:
    """Why ``output`` is unacceptable ("" if it is): NaN always; with ``check``, an entry farther
    from the expected value than its bound (equal values pass: infinities that agree).
    ``reference()`` gives (expected, bound), computed only when checking a NaN-free output;
    ``source`` names it in the reason."""
    nan = np.isnan(output)
    if nan.any():
        first = np.unravel_index(int(np.argmax(nan)), output.shape)
        return f"output contains NaN in {int(nan.sum())} of {output.size} entries " \
               f"(first at {tuple(int(i) for i in first)})"
    if not check:
        return ""
    expected, bound = reference()
    error = np.abs(output - expected)
    if ((error <= bound) | (output == expected)).all():
        return ""
    worst = np.unravel_index(int(np.argmax(error - bound)), output.shape)
    return f"wrong answer at {tuple(int(i) for i in worst)}: got {output[worst]!r}, {source} " \
           f"gives {expected[worst]!r} (|error| {error[worst]:.3g} > bound {bound[worst]:.3g})"
