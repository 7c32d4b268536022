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

SEQUENTIAL_WORKERS = -2  # header value of `worker` for sequential mode (SEQUENTIAL in the C)

from perfjax.kernels.c.build import BuildError, build, source_hash
from perfjax.kernels.c.emit import (
    DEBUG_HOOKS, FORMAT_VERSION, INPUT_HEADER, INPUT_MAGIC, OUTPUT_HEADER, OUTPUT_MAGIC,
    KernelError, KernelSpec, emit_source)
from perfjax.schedulers.partition import Partition

STDERR_TAIL = 600  # characters of the program's stderr quoted in a failure reason


@dataclass(frozen=True)
class Measurement:
    """What one run of a generated program gave.

    ``ok`` is False when anything went wrong, and ``reason`` says what (empty when ok).
    ``output``, ``seconds`` and the instrumented counters are filled whenever the program
    finished, even if its answer was then found wrong, so a failure can be inspected.
    ``seconds``: wall time of the kernel region (parallel phase + fix-up) of each repetition.
    ``worker_rows`` / ``worker_nnz``: row ends and nonzeros each worker processed;
    ``worker_seconds``: each worker's time span in the last repetition (instrumented runs only;
    in single-worker mode the other workers' entries are 0). ``source_hash``: SHA-256 of the
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
         chunk_size: int | None = None) -> Measurement:
    """y = A x with a generated C/OpenMP program.

    With a ``partition`` its workers run as OpenMP threads (``threads`` defaults to, and must
    equal, ``partition.workers``), or only worker ``worker`` on one thread (single-worker mode:
    the output is that worker's contribution, and ``check`` compares with exactly that), or,
    with ``sequential=True``, every worker in turn on one thread: each worker's span is then
    its time alone on a core, which is how P workers are validated on a machine with fewer
    cores (``worker_seconds`` holds each worker's fastest span over the repetitions). Without one, the rows are scheduled by ``#pragma omp for schedule(schedule, chunk)``
    (``schedule`` defaults to "static", ``threads`` to 1). ``check`` compares with scipy: entry r
    must be within ``rtol * (|A| |x|)[r]`` of ``(A @ x)[r]`` (the bound on reordering a sum).
    ``_debug`` (tests only) makes the program misbehave: one of DEBUG_HOOKS. ``chunk_size``
    (schedule mode only): TACO-style row split, the worksharing loop runs over chunks of that
    many rows.
    """
    return _measure("spmv", matrix, x, partition, threads, unroll, schedule, chunk, repeats,
                    instrument, worker, sequential, timeout, check, rtol, _debug, chunk_size)


def spmm(matrix, X, partition: Partition | None = None, *, threads: int | None = None,
         unroll: int = 1, schedule: str | None = None, chunk: int | None = None,
         repeats: int = 1, instrument: bool = False, worker: int | None = None,
         sequential: bool = False, timeout: float = 30.0, check: bool = True,
         rtol: float = 1e-10, _debug: str | None = None,
         chunk_size: int | None = None) -> Measurement:
    """Y = A X for a dense row-major X of shape [ncols, K]; otherwise exactly like ``spmv``
    (``unroll`` unrolls the K loop)."""
    return _measure("spmm", matrix, X, partition, threads, unroll, schedule, chunk, repeats,
                    instrument, worker, sequential, timeout, check, rtol, _debug, chunk_size)


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


def _as_operand(op: str, csr: sp.csr_array, operand) -> np.ndarray:
    name, want = ("x", 1) if op == "spmv" else ("X", 2)
    if np.iscomplexobj(operand):
        raise KernelError(f"{name} has complex values; the C kernels compute in double")
    try:
        array = np.ascontiguousarray(operand, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"{name} is not a numeric array: {exc}") from None
    ncols = csr.shape[1]
    expected = f"({ncols},)" if op == "spmv" else f"({ncols}, K) with K >= 1"
    if array.ndim != want or array.shape[0] != ncols or array.size == 0:
        raise KernelError(f"{name} must have shape {expected} to multiply the {csr.shape} "
                          f"matrix, got shape {array.shape}")
    return array


def _segments(partition, indptr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Check that ``partition`` tiles this matrix's merge path; its segments grouped by worker.

    A path point (i, j) lies on the path iff 0 <= i <= n and indptr[i] <= j <= indptr[i + 1]
    (with indptr[n + 1] read as nnz): i row ends before it means all their nonzeros are too, and
    row i's end is not, so neither are nonzeros after it. Sorted by position i + j, the segments
    must run from (0, 0) to (n, nnz), each ending where the next starts.
    """
    if not isinstance(partition, Partition):
        raise KernelError(f"partition must be a perfjax Partition, got {type(partition).__name__}")
    start = np.asarray(partition.start)
    end = np.asarray(partition.end)
    owner = np.asarray(partition.owner)
    if start.ndim != 2 or start.shape[1] != 2 or end.shape != start.shape or len(start) == 0 \
            or owner.shape != (len(start),):
        raise KernelError(f"partition ({partition.strategy}) is not a CSR merge-path partition: "
                          f"start {start.shape}, end {end.shape}, owner {owner.shape}")
    workers = _positive_int("partition.workers", partition.workers)
    if owner.min() < 0 or owner.max() >= workers:
        raise KernelError(f"partition ({partition.strategy}) has an owner outside 0..{workers - 1}")
    start, end, owner = start.astype(np.int64), end.astype(np.int64), owner.astype(np.int64)
    n, nnz = len(indptr) - 1, int(indptr[-1])
    where = f"partition ({partition.strategy}, P={workers}) does not fit this matrix " \
            f"({n} rows, {nnz} nonzeros)"
    for points, what in ((start, "starts"), (end, "ends")):
        i, j = points[:, 0], points[:, 1]
        on_path = (i >= 0) & (i <= n) & (j >= indptr[np.clip(i, 0, n)]) & \
            (j <= indptr[np.clip(i + 1, 0, n)])
        if not on_path.all():
            s = int(np.argmin(on_path))
            raise KernelError(f"{where}: segment {s} {what} at ({i[s]}, {j[s]}), which is not a "
                              f"point of its merge path")
    order = np.lexsort((end.sum(axis=1), start.sum(axis=1)))
    first, last = start[order], end[order]
    if (end < start).any() or first[0].any() or (last[-1] != (n, nnz)).any() or \
            (last[:-1] != first[1:]).any():
        raise KernelError(f"{where}: its segments do not tile the merge path from (0, 0) to "
                          f"({n}, {nnz}) exactly once")
    grouped = np.argsort(owner, kind="stable")  # each worker keeps its segments' given order
    seg_ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=workers))])
    return (seg_ptr.astype(np.int64), *(a[grouped] for a in (start[:, 0], start[:, 1],
                                                               end[:, 0], end[:, 1])))


# ------------------------------------------------------------------------------------- running


def _measure(op, matrix, operand, partition, threads, unroll, schedule, chunk, repeats,
             instrument, worker, sequential, timeout, check, rtol, debug,
             chunk_size=None) -> Measurement:
    """Validate everything (raising KernelError), then build, run and judge."""
    csr = _as_csr(matrix)
    operand = _as_operand(op, csr, operand)
    indptr = csr.indptr.astype(np.int64)
    repeats = _positive_int("repeats", repeats)
    timeout = _positive_real("timeout", timeout)
    rtol = _positive_real("rtol", rtol)
    if debug is not None and debug not in DEBUG_HOOKS:
        raise KernelError(f"_debug must be None or one of {sorted(DEBUG_HOOKS)}, got {debug!r}")
    if partition is not None:
        if schedule is not None:
            raise KernelError("give either a partition or an OpenMP schedule, not both")
        segments = _segments(partition, indptr)
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
        segments = (np.zeros(workers + 1, np.int64), *[np.zeros(0, np.int64)] * 4)
    spec = KernelSpec(op, unroll, schedule, chunk, instrument, chunk_size)

    digest = source_hash(emit_source(spec))
    try:
        program = build(spec)
    except BuildError as exc:
        return Measurement(False, f"build failed: {exc}", source_hash=digest)
    width = 1 if op == "spmv" else operand.shape[1]
    header = dict(magic=INPUT_MAGIC, version=FORMAT_VERSION, nrows=csr.shape[0],
                  ncols=csr.shape[1], nnz=csr.nnz, width=width, nseg=len(segments[1]),
                  workers=workers,
                  worker=SEQUENTIAL_WORKERS if sequential else -1 if worker is None else int(worker),
                  repeats=repeats, debug=DEBUG_HOOKS.get(debug, 0))
    inputs = (np.array([header[k] for k in INPUT_HEADER], np.int64), indptr,
              csr.indices.astype(np.int64), csr.data.astype(np.float64), operand, *segments)
    raw, failure = _run_program(program, inputs, team, timeout)
    if raw is None:
        return Measurement(False, failure, source_hash=digest)
    result = _read_output(raw, csr.shape[0], width, workers, repeats, instrument, digest)
    if not result.ok:
        return result
    if op == "spmv":
        result = replace(result, output=result.output[:, 0])
    reason = _judge(csr, operand, result.output, segments, worker, check, rtol)
    return replace(result, ok=False, reason=reason) if reason else result


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
    """Why the output is unacceptable ("" if it is): NaN always, a wrong answer if ``check``.

    In single-worker mode the reference is A restricted to that worker's nonzeros.
    """
    nan = np.isnan(output)
    if nan.any():
        first = np.unravel_index(int(np.argmax(nan)), output.shape)
        return f"output contains NaN in {int(nan.sum())} of {output.size} entries " \
               f"(first at {tuple(int(i) for i in first)})"
    if not check:
        return ""
    data = csr.data.astype(np.float64)
    if worker is not None:
        seg_ptr, _, j0, _, j1 = segments
        mine = slice(seg_ptr[worker], seg_ptr[worker + 1])
        delta = np.zeros(csr.nnz + 1, np.int64)
        np.add.at(delta, j0[mine], 1)
        np.add.at(delta, j1[mine], -1)
        data = data * (np.cumsum(delta[:-1]) > 0)
    reference = sp.csr_array((data, csr.indices, csr.indptr), shape=csr.shape)
    expected = reference @ operand
    bound = rtol * (abs(reference) @ np.abs(operand))
    error = np.abs(output - expected)
    if ((error <= bound) | (output == expected)).all():  # equality: infinities that agree
        return ""
    worst = np.unravel_index(int(np.argmax(error - bound)), output.shape)
    return f"wrong answer at {tuple(int(i) for i in worst)}: got {output[worst]!r}, scipy gives " \
           f"{expected[worst]!r} (|error| {error[worst]:.3g} > bound {bound[worst]:.3g})"
