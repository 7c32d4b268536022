"""Tests of perfjax.kernels.c: generated C/OpenMP SpMV and SpMM executing explicit partitions.

Outputs are compared with scipy here (not only through the runner's own ``check``), within
1e-10 of |A| |x| per entry (the bound on reordering a sum); instrumented counters must equal
``Partition.work()`` exactly, since the kernels count the items their loops actually ran.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from kernels_c_common import (
    CRASH_HOOKS, EDGE_MATRICES, RTOL, assert_kernel_errors, corrupt, needs_cc,
    partition_grid)
from perfjax.kernels import c as kc
from perfjax.kernels.c import KernelError, KernelSpec, Measurement, build, emit_source, spmm, spmv
from perfjax.schedulers.partition import STRATEGIES, partition, static_chunks
from perfjax.workloads import banded, powerlaw_rows, rmat, uniform_random

pytestmark = needs_cc

MATRICES = {
    "powerlaw": lambda: powerlaw_rows(300, 250, 4000, alpha=1.3, seed=1),
    "banded": lambda: banded(200, 3, seed=2),
    "uniform": lambda: uniform_random(150, 180, 0.05, seed=3),
    "rmat": lambda: rmat(8, 8, seed=4),
    **EDGE_MATRICES,
}


def _x(matrix, k: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (matrix.shape[1],) if k is None else (matrix.shape[1], k)
    return np.random.default_rng(seed).standard_normal(shape)


def assert_close(matrix, operand, output):
    """|output - A x| <= RTOL * |A| |x| entrywise."""
    expected = matrix @ operand
    bound = RTOL * (abs(matrix) @ np.abs(operand))
    assert output.shape == expected.shape
    assert np.all(np.abs(output - expected) <= bound), np.max(np.abs(output - expected) - bound)


def _partitions(matrix):
    """Every (strategy, P, chunk) of the grid that the strategy accepts for this matrix."""
    return partition_grid(lambda s, p, c: partition(s, matrix, p, c), STRATEGIES, chunks=(1, 7))


def test_nnz_split_covers_leading_empty_rows():
    matrix = MATRICES["empty-rows"]()
    assert partition("nnz_split", matrix, 2).work()[:, 0].sum() == matrix.shape[0]


# ------------------------------------------------------------------------------ correctness


@pytest.mark.parametrize("name", list(MATRICES))
def test_every_partition_is_exact_and_counted(name):
    matrix = MATRICES[name]()
    x = _x(matrix)
    tried = 0
    for part in _partitions(matrix):
        m = spmv(matrix, x, part, instrument=True, repeats=2)
        label = f"{name} {part.strategy} P={part.workers}"
        assert m.ok, f"{label}: {m.reason}"
        assert_close(matrix, x, m.output)
        work = part.work()
        np.testing.assert_array_equal(m.worker_rows, work[:, 0], err_msg=label)
        np.testing.assert_array_equal(m.worker_nnz, work[:, 1], err_msg=label)
        assert len(m.seconds) == 2 and min(m.seconds) > 0
        assert m.worker_seconds.shape == (part.workers,) and (m.worker_seconds >= 0).all()
        tried += 1
    assert tried >= (1 if name == "1x1" else 20)


@pytest.mark.parametrize("name", ["powerlaw", "empty-rows", "dense-row", "rmat"])
@pytest.mark.parametrize("strategy", ["dynamic_chunks", "nnz_split", "merge_path"])
def test_single_worker_reproduces_its_share(name, strategy):
    matrix = MATRICES[name]()
    x = _x(matrix, seed=1)
    part = partition(strategy, matrix, 3, 7)
    work = part.work()
    total = np.zeros(matrix.shape[0])
    for p in range(3):
        m = spmv(matrix, x, part, worker=p, instrument=True)
        assert m.ok, m.reason
        expected_rows = np.zeros(3, np.int64)
        expected_rows[p] = work[p, 0]
        expected_nnz = np.zeros(3, np.int64)
        expected_nnz[p] = work[p, 1]
        np.testing.assert_array_equal(m.worker_rows, expected_rows)
        np.testing.assert_array_equal(m.worker_nnz, expected_nnz)
        total += m.output
    assert_close(matrix, x, total)  # the workers' shares add up to A x


@pytest.mark.parametrize("schedule", ["static", "dynamic", "guided"])
def test_openmp_schedule_mode(schedule):
    for name in ("powerlaw", "empty-rows", "1x1"):
        matrix = MATRICES[name]()
        x = _x(matrix, seed=2)
        for chunk in (None, 1, 7):
            for threads in (1, 2, 3):
                m = spmv(matrix, x, schedule=schedule, chunk=chunk, threads=threads,
                         instrument=True)
                assert m.ok, f"{name} {schedule},{chunk} T={threads}: {m.reason}"
                assert_close(matrix, x, m.output)
                assert m.worker_rows.sum() == matrix.shape[0] and m.worker_nnz.sum() == matrix.nnz
                if schedule == "static" and chunk is not None and threads <= matrix.shape[0]:
                    # schedule(static, c) deals chunk k to thread k mod T: static_chunks exactly
                    work = static_chunks(matrix, threads, chunk).work()
                    np.testing.assert_array_equal(m.worker_rows, work[:, 0])
                    np.testing.assert_array_equal(m.worker_nnz, work[:, 1])


@pytest.mark.parametrize("bin_rows", [1, 4, 16])
def test_row_length_binning(bin_rows):
    """Binned rows give scipy's answer, bit-identical to the plain kernel single-threaded (the
    same sums in the same order), and every row and nonzero is counted once, on any schedule."""
    for name in ("powerlaw", "empty-rows", "dense-row", "banded", "1x1"):
        matrix = MATRICES[name]()
        x, X = _x(matrix, seed=5), _x(matrix, 3, seed=6)
        plain = spmv(matrix, x)
        assert plain.ok, plain.reason
        for schedule, chunk, threads in (("static", None, 1), ("static", 3, 2),
                                         ("dynamic", 2, 2), ("guided", None, 3)):
            for unroll in (1, 4):
                m = spmv(matrix, x, schedule=schedule, chunk=chunk, threads=threads,
                         unroll=unroll, bin_rows=bin_rows, instrument=True)
                assert m.ok, f"{name} {schedule},{chunk} T={threads} u{unroll}: {m.reason}"
                assert_close(matrix, x, m.output)
                if unroll == 1:
                    np.testing.assert_array_equal(m.output, plain.output)
                assert m.worker_rows.sum() == matrix.shape[0] and m.worker_nnz.sum() == matrix.nnz
            m = spmm(matrix, X, schedule=schedule, chunk=chunk, threads=threads, unroll=2,
                     bin_rows=bin_rows, instrument=True)
            assert m.ok, f"{name} SpMM {schedule},{chunk} T={threads}: {m.reason}"
            assert_close(matrix, X, m.output)
            assert m.worker_rows.sum() == matrix.shape[0] and m.worker_nnz.sum() == matrix.nnz


def test_binned_source_has_one_constant_trip_loop_per_length():
    source = emit_source(KernelSpec("spmv", 1, "static", bin_rows=3))
    for length in range(4):
        assert f"t < bin[{length + 1}]" in source and f"lo, lo + {length});" in source
    assert "runs of longer rows" in source and "lo + 4" not in source
    assert KernelSpec("spmv", 1, "static", bin_rows=3).name == "spmv-u1-static-b3"


def test_default_mode_is_static_single_thread():
    matrix = MATRICES["banded"]()
    m = spmv(matrix, _x(matrix), instrument=True)
    assert m.ok and m.worker_rows.tolist() == [matrix.shape[0]]


@pytest.mark.parametrize("unroll", [1, 2, 4, 8])
def test_unroll(unroll):
    for name in ("powerlaw", "dense-row", "banded"):
        matrix = MATRICES[name]()
        x = _x(matrix, seed=3)
        for m in (spmv(matrix, x, partition("merge_path", matrix, 3), unroll=unroll),
                  spmv(matrix, x, schedule="dynamic", chunk=4, threads=2, unroll=unroll)):
            assert m.ok, m.reason
            assert_close(matrix, x, m.output)


@pytest.mark.parametrize("k", [1, 3, 16])
def test_spmm(k):
    for name in ("powerlaw", "empty-rows", "dense-row"):
        matrix = MATRICES[name]()
        X = _x(matrix, k, seed=4)
        for unroll in (1, 4):
            for strategy in ("row_blocks", "nnz_split", "merge_path"):
                part = partition(strategy, matrix, 3)
                m = spmm(matrix, X, part, unroll=unroll, instrument=True)
                assert m.ok, f"{name} {strategy} K={k} u={unroll}: {m.reason}"
                assert_close(matrix, X, m.output)
                work = part.work()
                np.testing.assert_array_equal(m.worker_rows, work[:, 0])
                np.testing.assert_array_equal(m.worker_nnz, work[:, 1])
            m = spmm(matrix, X, schedule="guided", threads=2, unroll=unroll)
            assert m.ok, m.reason
            assert_close(matrix, X, m.output)
        single = spmm(matrix, X, partition("merge_path", matrix, 2), worker=1)
        assert single.ok, single.reason


# ------------------------------------------------------------------------------ failures


@pytest.fixture(scope="module")
def small():
    matrix = MATRICES["powerlaw"]()
    return matrix, _x(matrix), partition("merge_path", matrix, 2)


@pytest.mark.parametrize("hook, words", CRASH_HOOKS)
def test_crashes_become_failed_measurements(small, hook, words):
    matrix, x, part = small
    m = spmv(matrix, x, part, _debug=hook)
    assert isinstance(m, Measurement) and not m.ok
    assert words in m.reason and m.output is None and m.seconds == []


def test_hang_times_out(small):
    matrix, x, part = small
    m = spmv(matrix, x, part, timeout=0.5, _debug="hang")
    assert not m.ok and "timed out after 0.5 s" in m.reason


def test_wrong_answer_is_caught_only_when_checking(small):
    matrix, x, part = small
    m = spmv(matrix, x, part, _debug="wrong")
    assert not m.ok and m.reason.startswith("wrong answer at (0,)")
    assert m.output is not None and len(m.seconds) == 1  # kept for inspection
    assert spmv(matrix, x, part, _debug="wrong", check=False).ok


def test_nan_inputs(small):
    matrix, x, part = small
    bad_x = x.copy()
    bad_x[matrix.indices[0]] = np.nan
    m = spmv(matrix, bad_x, part)
    assert not m.ok and "output contains NaN" in m.reason
    bad_matrix = matrix.copy()
    bad_matrix.data[-1] = np.nan
    m = spmm(bad_matrix, np.ones((matrix.shape[1], 2)), schedule="dynamic", threads=2)
    assert not m.ok and "output contains NaN in 2 of" in m.reason


def test_build_failure_is_a_failed_measurement(small, monkeypatch):
    matrix, x, part = small

    def broken(spec):
        raise kc.BuildError("compiler exploded")

    monkeypatch.setattr("perfjax.kernels.c.run.build", broken)
    m = spmv(matrix, x, part)
    assert not m.ok and m.reason == "build failed: compiler exploded" and m.source_hash


# ------------------------------------------------------------------------------ bad arguments


def test_bad_arguments_raise(small):
    matrix, x, part = small
    other = partition("merge_path", uniform_random(300, 250, 0.02, seed=9), 2)
    out_of_bounds = part.end.copy()
    out_of_bounds[-1] = (matrix.shape[0] + 1, matrix.nnz + 5)
    overlap = part.start.copy()
    overlap[1] = overlap[0]  # both segments start at (0, 0): on the path, but overlapping
    cases = [
        (lambda: spmv(matrix, x[:-1], part), "x must have shape (250,)"),
        (lambda: spmv(matrix, x[:, None], part), "x must have shape (250,)"),
        (lambda: spmm(matrix, np.ones((249, 3)), part), "X must have shape (250, K)"),
        (lambda: spmm(matrix, x, part), "X must have shape (250, K)"),
        (lambda: spmv(matrix, x + 1j, part), "complex"),
        (lambda: spmv(matrix.toarray(), x, part), "scipy.sparse"),
        (lambda: spmv(sp.coo_array(x), x), "matrix must be 2-D"),
        (lambda: spmv(matrix, x, other), "does not fit this matrix"),
        (lambda: spmv(matrix[:100], x, part), "does not fit this matrix"),
        (lambda: spmv(matrix, x, corrupt(part, end=out_of_bounds)), "not a point of its"),
        (lambda: spmv(matrix, x, corrupt(part, start=overlap)), "do not tile the merge path"),
        (lambda: spmv(matrix, x, corrupt(part, owner=np.array([0, 2]))), "owner outside"),
        (lambda: spmv(matrix, x, part, schedule="static"), "either a partition or"),
        (lambda: spmv(matrix, x, worker=0), "need a partition"),
        (lambda: spmv(matrix, x, part, worker=2), "worker must be an integer in 0..1"),
        (lambda: spmv(matrix, x, part, threads=3), "threads=3 but the partition has 2"),
        (lambda: spmv(matrix, x, part, chunk=4), "chunk applies to schedule mode"),
        (lambda: spmv(matrix, x, part, unroll=3), "unroll must be one of"),
        (lambda: spmv(matrix, x, schedule="runtime"), "schedule must be None or one of"),
        (lambda: spmv(matrix, x, schedule="static", chunk=0), "chunk must be a positive"),
        (lambda: spmv(matrix, x, threads=0), "threads must be a positive integer"),
        (lambda: spmv(matrix, x, part, repeats=0), "repeats must be a positive integer"),
        (lambda: spmv(matrix, x, part, timeout=-1), "timeout must be a positive"),
        (lambda: spmv(matrix, x, part, _debug="explode"), "_debug must be"),
        (lambda: spmv(matrix, x, part, bin_rows=4), "bin_rows applies to schedule mode"),
        (lambda: spmv(matrix, x, bin_rows=0), "bin_rows must be None or an integer in 1..16"),
        (lambda: spmv(matrix, x, bin_rows=17), "bin_rows must be None or an integer in 1..16"),
        (lambda: spmv(matrix, x, bin_rows=True), "bin_rows must be None or an integer"),
        (lambda: spmv(matrix, x, bin_rows=4, chunk_size=8), "without chunk_size and loop_order"),
        (lambda: spmm(matrix, np.ones((250, 2)), bin_rows=2, loop_order=(0, 1, 2, 3, 4)),
         "without chunk_size and loop_order"),
    ]
    assert_kernel_errors(cases)


# ------------------------------------------------------------------------------ source, cache


def test_sources_differ_by_knob_and_are_deterministic():
    specs = [KernelSpec(op, u, s, c, i) for op in ("spmv", "spmm") for u in (1, 8)
             for s, c in ((None, None), ("dynamic", 7)) for i in (False, True)]
    sources = [emit_source(spec) for spec in specs]
    assert len(set(sources)) == len(specs) and sources[0] == emit_source(specs[0])
    assert "schedule(dynamic, 7)" in emit_source(KernelSpec("spmv", 1, "dynamic", 7))
    assert "rows += 1" not in emit_source(KernelSpec("spmv"))  # counting only when instrumented
    assert "rows += 1" in emit_source(KernelSpec("spmv", instrument=True))


def test_column_indices_are_int32_unless_asked_for_int64():
    for op in ("spmv", "spmm"):
        assert "typedef int32_t col_t;" in emit_source(KernelSpec(op))
        assert "const col_t *restrict col" in emit_source(KernelSpec(op))
        assert "typedef int64_t col_t;" in emit_source(KernelSpec(op, col_bits=64))
    assert KernelSpec("spmv").name == "spmv-u1-part"
    assert KernelSpec("spmv", col_bits=64).name == "spmv-u1-part-c64"
    for bad in (16, 0, True, "32", None):
        with pytest.raises(KernelError, match="col_bits"):
            KernelSpec("spmv", col_bits=bad)


@pytest.mark.parametrize("op", ["spmv", "spmm"])
def test_int64_column_fallback_gives_the_same_answer(op, monkeypatch):
    """Matrices too wide for int32 columns (>= 2^31, too large to test) take the int64 programs:
    force that path with a lower limit and check both against scipy and each other."""
    from perfjax.kernels.c import run as kc_run
    matrix = MATRICES["powerlaw"]()
    operand = _x(matrix, None if op == "spmv" else 3)
    part = partition("merge_path", matrix, 3)
    runner = spmv if op == "spmv" else spmm
    narrow = runner(matrix, operand, part, instrument=True)
    monkeypatch.setattr(kc_run, "COL_INT32_MAX_NCOLS", matrix.shape[1] - 1)
    wide = runner(matrix, operand, part, instrument=True)
    assert narrow.ok and wide.ok, (narrow.reason, wide.reason)
    assert narrow.source_hash != wide.source_hash and "int64_t col_t" not in \
        emit_source(KernelSpec(op))
    np.testing.assert_array_equal(narrow.output, wide.output)
    np.testing.assert_array_equal(narrow.worker_nnz, wide.worker_nnz)


def test_program_rejects_input_with_other_column_width(monkeypatch):
    """The header's col_bytes must match the program's col_t: a mismatch fails cleanly instead
    of reading the arrays misaligned."""
    from perfjax.kernels.c import run as kc_run
    real = kc_run.KernelSpec
    monkeypatch.setattr(kc_run, "KernelSpec", lambda *a: real(*a[:-1], 96 - a[-1]))
    matrix = MATRICES["banded"]()
    m = spmv(matrix, _x(matrix))
    assert not m.ok and "col_bits" in m.reason, m.reason


def test_cache_is_reused_and_concurrent_builds_are_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFJAX_CACHE", str(tmp_path / "cache"))
    spec = KernelSpec("spmv", 2, "guided", 5)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: build(spec), range(4)))
    assert len(set(paths)) == 1 and paths[0].parent == tmp_path / "cache"
    assert os.access(paths[0], os.X_OK)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == \
        sorted([paths[0].name, paths[0].name + ".c"])  # no temporary file left behind
    mtime = paths[0].stat().st_mtime_ns
    assert build(spec) == paths[0] and paths[0].stat().st_mtime_ns == mtime
    matrix = MATRICES["banded"]()
    m = spmv(matrix, _x(matrix), schedule="guided", chunk=5, threads=2, unroll=2)
    assert m.ok and len(list((tmp_path / "cache").iterdir())) == 2


@pytest.mark.parametrize("strategy", ["row_blocks", "merge_path", "dynamic_chunks"])
def test_sequential_mode_runs_every_worker_alone_and_counts_exactly(strategy):
    matrix = MATRICES["powerlaw"]()
    part = partition(strategy, matrix, 8, 4)
    result = spmv(matrix, _x(matrix), part, sequential=True, instrument=True, repeats=3)
    assert result.ok, result.reason  # full A x, checked against scipy
    assert (result.worker_rows == part.work()[:, 0]).all()
    assert (result.worker_nnz == part.work()[:, 1]).all()
    assert (np.asarray(result.worker_seconds) > 0).all()
    with pytest.raises(KernelError, match="sequential"):
        spmv(matrix, _x(matrix), part, sequential=True, worker=0)
