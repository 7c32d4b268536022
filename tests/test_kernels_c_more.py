"""Tests of the generated SDDMM, SpAdd / SpMul, CSF TTV / MTTKRP kernels and the HLS designs.

Outputs are checked here against scipy / numpy (not only through the runners' own ``check``):
SDDMM and the CSF kernels entrywise within 1e-10 of the sum of the absolute terms, co-iteration
exactly in pattern (scipy's A + B + C, A.multiply(B)) and within 1e-12 in values. Instrumented
counters must equal ``Partition.work()`` exactly: the kernels count what their loops consumed.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from kernels_c_common import (
    CRASH_HOOKS, EDGE_MATRICES, RTOL, assert_kernel_errors, corrupt, needs_cc,
    partition_grid)
from perfjax.kernels import c as kc
from perfjax.kernels.c import (
    COITERATION_STRATEGIES, CSF_STRATEGIES, HlsSpec, KernelError, Measurement, OpSpec,
    coiteration_partition, csf_partition, emit_hls, estimate_cycles, hls_spmm, hls_spmv, mttkrp,
    sddmm, spadd, spmm, spmul, spmv, ttv)
from perfjax.kernels.c.hls import LATENCY, loops
from perfjax.schedulers.partition import STRATEGIES, Partition, partition, static_chunks
from perfjax.workloads import CSF, banded, coo3, powerlaw_rows, random_tensor3, uniform_random

pytestmark = needs_cc
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(name) for name in (os.environ.get("CXX") or "c++", "g++")),
    reason="no C++ compiler (c++ or g++) on PATH: the HLS C simulations cannot be built")



# ----------------------------------------------------------------------------------- inputs


MATRICES = {
    "skewed": lambda: powerlaw_rows(200, 150, 2500, alpha=1.3, seed=1),
    "banded": lambda: banded(120, 3, seed=2),
    "uniform": lambda: uniform_random(100, 120, 0.05, seed=3),
    **EDGE_MATRICES,
}


def _partner(matrix, seed: int) -> sp.csr_array:
    """Same shape; shares about half of ``matrix``'s coordinates, has others of its own."""
    rng = np.random.default_rng(seed)
    coo = sp.coo_array(matrix)
    keep = rng.random(coo.nnz) < 0.5
    m, n = matrix.shape
    extra = max(1, coo.nnz // 3)
    rows = np.concatenate([coo.row[keep], rng.integers(0, m, extra)])
    cols = np.concatenate([coo.col[keep], rng.integers(0, n, extra)])
    other = sp.coo_array((np.ones(len(rows)), (rows, cols)), shape=(m, n)).tocsr()
    other.sum_duplicates()
    other.data = rng.standard_normal(other.nnz)
    return sp.csr_array(other)


def _tensor_single_fiber() -> CSF:
    """All nonzeros in one fiber: every nonzero-splitting strategy cuts it."""
    k = np.arange(50)
    return CSF.from_coo3(coo3((4, 5, 50), np.stack([np.full(50, 2), np.full(50, 3), k], axis=1),
                              np.random.default_rng(7).standard_normal(50)))


TENSORS = {
    "powerlaw": lambda: CSF.from_coo3(random_tensor3((50, 30, 25), 2500, alpha=1.5, seed=1)),
    "uniform": lambda: CSF.from_coo3(random_tensor3((30, 20, 20), 800, alpha=0.0, seed=2)),
    "one-slice": lambda: CSF.from_coo3(random_tensor3((1, 20, 30), 200, seed=3)),
    "one-fiber": _tensor_single_fiber,
    "tiny": lambda: CSF.from_coo3(random_tensor3((3, 3, 3), 2, seed=4)),
}


def _dense_tensor(csf: CSF) -> np.ndarray:
    dense = np.zeros(csf.shape)
    ptr0, ptr1 = csf.ptr
    i = np.repeat(np.repeat(csf.ids[0], np.diff(ptr0)), np.diff(ptr1))
    j = np.repeat(csf.ids[1], np.diff(ptr1))
    dense[i, j, csf.ids[2]] = csf.values
    return dense


def _assert_counters(m: Measurement, part: Partition, label: str) -> None:
    work = part.work()
    np.testing.assert_array_equal(m.worker_work, work, err_msg=label)
    np.testing.assert_array_equal(m.worker_rows, work[:, 0], err_msg=label)
    np.testing.assert_array_equal(m.worker_nnz, work[:, 1:].sum(axis=1), err_msg=label)
    assert m.worker_seconds.shape == (part.workers,) and (m.worker_seconds >= 0).all()


# ----------------------------------------------------------------------------------- SDDMM


def _sddmm_reference(matrix, X, Y):
    csr = sp.csr_array(matrix)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    expected = csr.data * np.einsum("ij,ij->i", X[rows], Y[csr.indices])
    bound = RTOL * np.abs(csr.data) * np.einsum("ij,ij->i", np.abs(X[rows]),
                                                np.abs(Y[csr.indices]))
    # and the same thing through scipy: A .* (X @ Y.T) restricted to A's pattern
    full = sp.csr_array(matrix.multiply(X @ Y.T))
    assert np.allclose(sp.csr_array((expected, csr.indices, csr.indptr), shape=csr.shape)
                       .toarray(), full.toarray(), atol=1e-12)
    return expected, bound


@pytest.mark.parametrize("name", list(MATRICES))
def test_sddmm_every_partition_is_exact_and_counted(name):
    matrix = MATRICES[name]()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((matrix.shape[0], 5))
    Y = rng.standard_normal((matrix.shape[1], 5))
    expected, bound = _sddmm_reference(matrix, X, Y)
    tried = 0
    for part in partition_grid(lambda s, p, c: partition(s, matrix, p, c), STRATEGIES):
        unroll = (1, 2, 4, 8)[tried % 4]
        m = sddmm(matrix, X, Y, part, instrument=True, unroll=unroll, repeats=2)
        label = f"{name} {part.strategy} P={part.workers} u={unroll}"
        assert m.ok, f"{label}: {m.reason}"
        assert m.output.shape == (matrix.nnz,) and (np.abs(m.output - expected) <= bound).all()
        _assert_counters(m, part, label)
        assert len(m.seconds) == 2
        tried += 1
    assert tried >= (5 if name == "1x1" else 20)


def test_sddmm_schedule_modes_and_single_worker():
    matrix = MATRICES["skewed"]()
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((150, 3))
    expected, bound = _sddmm_reference(matrix, X, Y)
    for schedule in ("static", "dynamic", "guided"):
        for chunk, chunk_size in ((None, None), (2, None), (None, 7), (3, 4)):
            for threads in (1, 2, 3):
                m = sddmm(matrix, X, Y, schedule=schedule, chunk=chunk, chunk_size=chunk_size,
                          threads=threads, instrument=True, unroll=4)
                assert m.ok, m.reason
                assert (np.abs(m.output - expected) <= bound).all()
                assert m.worker_work.sum(axis=0).tolist() == [200, matrix.nnz]
                if schedule == "static" and chunk is not None:
                    work = static_chunks(matrix, threads, chunk * (chunk_size or 1)).work()
                    np.testing.assert_array_equal(m.worker_work, work)
    part = partition("merge_path", matrix, 3)
    total = np.zeros(matrix.nnz)
    for p in range(3):
        m = sddmm(matrix, X, Y, part, worker=p, instrument=True)
        assert m.ok, m.reason
        assert m.worker_work[p].tolist() == part.work()[p].tolist()
        total += m.output
    assert (np.abs(total - expected) <= bound).all()
    m = sddmm(matrix, X, Y, partition("dynamic_chunks", matrix, 8, 4), sequential=True,
              instrument=True)
    assert m.ok and (m.worker_work == partition("dynamic_chunks", matrix, 8, 4).work()).all()


# ----------------------------------------------------------------------------------- co-iteration


def _operands(name):
    a = MATRICES[name]()
    return a, _partner(a, 11), _partner(a, 12)


def _assert_scipy_equal(output, reference):
    reference = sp.csr_array(reference)
    reference.sort_indices()
    np.testing.assert_array_equal(output.indptr, reference.indptr)
    np.testing.assert_array_equal(output.indices, reference.indices)
    assert np.all(np.abs(output.data - reference.data) <= 1e-12 * (1 + np.abs(reference.data)))


@pytest.mark.parametrize("name", list(MATRICES))
def test_coiteration_every_partition_is_exact_and_counted(name):
    a, b, c = _operands(name)
    references = {"spadd2": a + b, "spadd3": a + b + c, "spmul2": a.multiply(b)}
    calls = {"spadd2": ([a, b], lambda part, **kw: spadd([a, b], part, **kw)),
             "spadd3": ([a, b, c], lambda part, **kw: spadd([a, b, c], part, **kw)),
             "spmul2": ([a, b], lambda part, **kw: spmul(a, b, part, **kw))}
    tried = 0
    for op, (operands, call) in calls.items():
        for part in partition_grid(lambda s, p, k: coiteration_partition(s, operands, p, k),
                          COITERATION_STRATEGIES):
            m = call(part, instrument=True, repeats=2)
            label = f"{name} {op} {part.strategy} P={part.workers}"
            assert m.ok, f"{label}: {m.reason}"
            assert isinstance(m.output, sp.csr_array)
            _assert_scipy_equal(m.output, references[op])
            _assert_counters(m, part, label)
            assert part.work().shape[1] == len(operands) + 1
            tried += 1
    assert tried >= (9 if name == "1x1" else 40)


def test_coiteration_schedule_modes():
    a, b, c = _operands("skewed")
    for schedule in ("static", "dynamic", "guided"):
        for chunk, chunk_size in ((None, None), (2, None), (None, 6), (3, 4)):
            for threads in (1, 2, 3):
                kw = dict(schedule=schedule, chunk=chunk, chunk_size=chunk_size, threads=threads,
                          instrument=True)
                m3 = spadd([a, b, c], **kw)
                assert m3.ok, m3.reason
                _assert_scipy_equal(m3.output, a + b + c)
                assert m3.worker_work.sum(axis=0).tolist() == [a.shape[0], a.nnz, b.nnz, c.nnz]
                m = spmul(a, b, **kw)
                assert m.ok, m.reason
                _assert_scipy_equal(m.output, a.multiply(b))
                if schedule == "static" and chunk is not None:
                    work = coiteration_partition("static_chunks", [a, b, c], threads,
                                                 chunk * (chunk_size or 1)).work()
                    np.testing.assert_array_equal(m3.worker_work, work)


@pytest.mark.parametrize("strategy", ["merge_path_nway", "dynamic_chunks"])
def test_coiteration_single_worker_and_sequential(strategy):
    a, b, c = _operands("empty-rows")
    part = coiteration_partition(strategy, [a, b, c], 3, 4)
    full = spadd([a, b, c], part).output
    shares = [spadd([a, b, c], part, worker=p, instrument=True) for p in range(3)]
    for p, m in enumerate(shares):
        assert m.ok, m.reason
        assert m.worker_work[p].tolist() == part.work()[p].tolist()
    assert sum(m.output.nnz for m in shares) == full.nnz  # disjoint coordinates
    _assert_scipy_equal(sum(m.output for m in shares), full)
    m = spmul(a, b, coiteration_partition(strategy, [a, b], 8, 2), sequential=True,
              instrument=True, repeats=2)
    assert m.ok, m.reason
    _assert_scipy_equal(m.output, a.multiply(b))


def test_coiteration_keeps_structural_zeros_and_canonicalizes():
    a = MATRICES["uniform"]()
    m = spadd([a, -a], coiteration_partition("merge_path_nway", [a, -a], 3))
    assert m.ok and m.output.nnz == a.nnz and not m.output.data.any()  # scipy would drop them
    shuffled = sp.csr_array(a.copy())  # unsorted columns with duplicates: summed first
    coo = sp.coo_array(a)
    order = np.random.default_rng(3).permutation(coo.nnz)
    half = coo.data[order] / 2
    dup = sp.coo_array((np.concatenate([half, half]),
                        (np.concatenate([coo.row[order]] * 2),
                         np.concatenate([coo.col[order]] * 2))), shape=a.shape)
    shuffled = sp.csr_array(dup)
    m = spadd([shuffled, a], schedule="dynamic", threads=2)
    assert m.ok, m.reason
    _assert_scipy_equal(m.output, a + a)


# ----------------------------------------------------------------------------------- CSF


@pytest.mark.parametrize("name", list(TENSORS))
def test_csf_every_partition_is_exact_and_counted(name):
    csf = TENSORS[name]()
    dense = _dense_tensor(csf)
    rng = np.random.default_rng(2)
    v = rng.standard_normal(csf.shape[2])
    B, C = rng.standard_normal((csf.shape[1], 4)), rng.standard_normal((csf.shape[2], 4))
    z = np.einsum("ijk,k->ij", dense, v)
    z_bound = RTOL * np.einsum("ijk,k->ij", np.abs(dense), np.abs(v)) + 1e-300
    m_ref = np.einsum("ijk,jr,kr->ir", dense, B, C)
    m_bound = RTOL * np.einsum("ijk,jr,kr->ir", np.abs(dense), np.abs(B), np.abs(C)) + 1e-300
    tried = 0
    for part in partition_grid(lambda s, p, k: csf_partition(s, csf, p, k), CSF_STRATEGIES):
        unroll = (1, 2, 4, 8)[tried % 4]
        label = f"{name} {part.strategy} P={part.workers} u={unroll}"
        m = ttv(csf, v, part, instrument=True, unroll=unroll)
        assert m.ok, f"ttv {label}: {m.reason}"
        assert m.output.shape == csf.shape[:2] and m.output.nnz == len(csf.ids[1])
        assert (np.abs(m.output.toarray() - z) <= z_bound).all(), label
        _assert_counters(m, part, "ttv " + label)
        m = mttkrp(csf, B, C, part, instrument=True, unroll=unroll)
        assert m.ok, f"mttkrp {label}: {m.reason}"
        assert (np.abs(m.output - m_ref) <= m_bound).all(), label
        _assert_counters(m, part, "mttkrp " + label)
        tried += 1
    assert tried >= (8 if name in ("tiny", "one-slice", "one-fiber") else 20)


def test_csf_schedule_modes_single_worker_and_coo_input():
    coo = random_tensor3((40, 25, 20), 1500, alpha=1.2, seed=9)
    csf = CSF.from_coo3(coo)
    dense = coo.to_dense()
    rng = np.random.default_rng(4)
    v, B, C = rng.standard_normal(20), rng.standard_normal((25, 3)), rng.standard_normal((20, 3))
    z, mref = np.einsum("ijk,k->ij", dense, v), np.einsum("ijk,jr,kr->ir", dense, B, C)
    for schedule in ("static", "dynamic", "guided"):
        for chunk, chunk_size in ((None, None), (2, None), (None, 3), (2, 2)):
            for threads in (1, 3):
                kw = dict(schedule=schedule, chunk=chunk, chunk_size=chunk_size, threads=threads,
                          instrument=True)
                m = ttv(coo, v, **kw)  # a COO3 is converted
                assert m.ok, m.reason
                assert np.allclose(m.output.toarray(), z, rtol=1e-10, atol=1e-12)
                assert m.worker_work.sum(axis=0).tolist() == [len(csf.ptr[0]) - 1,
                                                              len(csf.ptr[1]) - 1, csf.nnz]
                m2 = mttkrp(csf, B, C, unroll=2, **kw)
                assert m2.ok, m2.reason
                assert np.allclose(m2.output, mref, rtol=1e-10, atol=1e-12)
                if schedule == "static" and chunk is not None:
                    work = csf_partition("static_chunks", csf, threads,
                                         chunk * (chunk_size or 1)).work()
                    np.testing.assert_array_equal(m.worker_work, work)
    part = csf_partition("merge_path", csf, 3)
    zs = sum(ttv(csf, v, part, worker=p).output for p in range(3))
    ms = sum(mttkrp(csf, B, C, part, worker=p).output for p in range(3))
    assert np.allclose(zs.toarray(), z) and np.allclose(ms, mref)
    m = mttkrp(csf, B, C, csf_partition("nnz_split", csf, 8), sequential=True, instrument=True)
    assert m.ok and (m.worker_work == csf_partition("nnz_split", csf, 8).work()).all()


# ----------------------------------------------------------------------------------- SpMV/SpMM chunk_size


def test_spmv_spmm_chunk_size():
    matrix = MATRICES["skewed"]()
    x = np.random.default_rng(5).standard_normal(matrix.shape[1])
    for chunk, chunk_size, threads in ((2, 3, 3), (1, 8, 2), (None, 5, 2)):
        m = spmv(matrix, x, schedule="static", chunk=chunk, chunk_size=chunk_size,
                 threads=threads, instrument=True)
        assert m.ok, m.reason
        if chunk is not None:
            work = static_chunks(matrix, threads, chunk * chunk_size).work()
            assert m.worker_rows.tolist() == work[:, 0].tolist()
        X = np.ones((matrix.shape[1], 3))
        assert spmm(matrix, X, schedule="guided", chunk_size=chunk_size, threads=threads,
                    unroll=2).ok
    with pytest.raises(KernelError, match="chunk_size applies to schedule mode"):
        spmv(matrix, x, partition("merge_path", matrix, 2), chunk_size=4)


# ----------------------------------------------------------------------------------- HLS


@needs_cxx
@pytest.mark.parametrize("name", ["skewed", "banded", "empty-rows", "dense-row", "1x1"])
def test_hls_spmv_spmm_match_scipy_and_their_estimate(name):
    matrix = MATRICES[name]()
    rng = np.random.default_rng(6)
    x = rng.standard_normal(matrix.shape[1])
    cycles = []
    for unroll in (1, 2, 4, 8):
        m = hls_spmv(matrix, x, unroll=unroll)
        assert m.ok, m.reason
        assert np.all(np.abs(m.output - matrix @ x) <= RTOL * (abs(matrix) @ np.abs(x)) + 1e-300)
        assert m.simulated == m.estimate  # the C simulation ran exactly the estimated trips
        assert m.estimate == estimate_cycles(matrix, "spmv", unroll=unroll)
        assert m.fifo_high_water["sums"] == matrix.shape[0]
        cycles.append(m.estimate.loops[0].iterations)
    assert cycles == sorted(cycles, reverse=True)  # more lanes never need more beats
    for k in (1, 3, 16):
        X = rng.standard_normal((matrix.shape[1], k))
        for unroll in (1, 4):
            m = hls_spmm(matrix, X, unroll=unroll)
            assert m.ok, m.reason
            assert np.all(np.abs(m.output - matrix @ X)
                          <= RTOL * (abs(matrix) @ np.abs(X)) + 1e-300)
            assert m.simulated == m.estimate == estimate_cycles(matrix, "spmm", unroll=unroll,
                                                                width=k)
            assert m.estimate.bottleneck == "mac" or matrix.nnz == 0


@needs_cxx
def test_hls_estimate_formula_and_source():
    # 3 rows of lengths 5, 0, 2; U = 2: beats = ceil(5/2) + 0 + 1 + 3 row ends = 7
    matrix = sp.csr_array((np.arange(1.0, 8.0), np.array([0, 1, 2, 3, 4, 0, 4]),
                           np.array([0, 5, 5, 7])), shape=(3, 5))
    est = estimate_cycles(matrix, "spmv", unroll=2)
    by_label = {lp.label: lp for lp in est.loops}
    assert by_label["read_loop"].iterations == 7 and by_label["write_loop"].iterations == 3
    for lp in est.loops:
        assert lp.cycles == lp.ii * lp.iterations + lp.depth * lp.invocations
    assert est.cycles == max(est.stages.values())
    assert by_label["read_loop"].depth == LATENCY["axi_read"] + LATENCY["fifo"]
    # SpMM, K = 5, U = 2: 3 packs per nonzero and per row
    est = estimate_cycles(matrix, "spmm", unroll=2, width=5)
    by_label = {lp.label: lp for lp in est.loops}
    assert (by_label["mac_loop"].iterations, by_label["mac_loop"].invocations) == (21, 7)
    assert est.stages["mac"] == sum(lp.cycles for lp in est.loops if lp.stage == "mac")
    m = hls_spmm(matrix, np.ones((5, 5)), unroll=2)
    assert m.ok and m.simulated == est and "C simulation" in m.report()
    source = emit_hls(HlsSpec("spmm", 4, 32))
    for pragma in ("#pragma HLS PIPELINE II=1", "#pragma HLS UNROLL factor=4",
                   "#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=4",
                   "#pragma HLS DATAFLOW", "#pragma HLS STREAM variable=beats depth=32",
                   '#include "hls_stream.h"', "hls::stream<Pack>"):
        assert pragma in source, pragma
    assert "#pragma HLS ARRAY_PARTITION variable=acc complete" in emit_hls(HlsSpec("spmv", 2))
    assert [lp.label for lp in loops("spmv", 1)] == ["read_loop", "mul_loop", "acc_loop",
                                                     "write_loop"]


@needs_cxx
def test_hls_failures_and_bad_arguments(monkeypatch):
    matrix = MATRICES["skewed"]()
    x = np.ones(matrix.shape[1])
    m = hls_spmv(matrix, x, _debug="wrong")
    assert not m.ok and m.reason.startswith("wrong answer at (0,)") and m.estimate is not None
    assert hls_spmv(matrix, x, _debug="wrong", check=False).ok
    assert "signal SIGSEGV" in hls_spmv(matrix, x, _debug="segv").reason
    assert "timed out" in hls_spmv(matrix, x, _debug="hang", timeout=0.5).reason
    cases = [(lambda: hls_spmv(matrix, x[:-1]), "x must have shape"),
             (lambda: hls_spmv(matrix, x, unroll=3), "unroll must be one of"),
             (lambda: hls_spmm(matrix, np.ones((150, 5000))), "at most 4096"),
             (lambda: hls_spmv(matrix, x, fifo_depth=1), "fifo_depth"),
             (lambda: estimate_cycles(matrix, "spmv", width=3), "width applies to spmm"),
             (lambda: estimate_cycles(matrix, "spgemm"), "op must be one of")]
    for call, words in cases:
        with pytest.raises(KernelError, match=words):
            call()

    def broken(spec):
        raise kc.BuildError("no g++ today")

    monkeypatch.setattr("perfjax.kernels.c.hls.build", broken)
    m = hls_spmv(matrix, x)
    assert not m.ok and m.reason == "build failed: no g++ today"


# ----------------------------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def cases():
    """One call per new kernel, with a partition: name -> function(**kw) -> Measurement."""
    a, b, c = _operands("skewed")
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((150, 3))
    csf = TENSORS["powerlaw"]()
    v = rng.standard_normal(csf.shape[2])
    Bm, Cm = rng.standard_normal((30, 2)), rng.standard_normal((25, 2))
    p2, p3 = (coiteration_partition("merge_path_nway", ops, 2) for ops in ([a, b], [a, b, c]))
    pt = csf_partition("merge_path", csf, 2)
    return {
        "sddmm": lambda **kw: sddmm(a, X, Y, partition("merge_path", a, 2), **kw),
        "spadd": lambda **kw: spadd([a, b, c], p3, **kw),
        "spmul": lambda **kw: spmul(a, b, p2, **kw),
        "ttv": lambda **kw: ttv(csf, v, pt, **kw),
        "mttkrp": lambda **kw: mttkrp(csf, Bm, Cm, pt, **kw),
    }


@pytest.mark.parametrize("kernel", ["sddmm", "spadd", "spmul", "ttv", "mttkrp"])
def test_failures_become_failed_measurements(cases, kernel, monkeypatch):
    call = cases[kernel]
    for hook, words in CRASH_HOOKS:
        m = call(_debug=hook)
        assert isinstance(m, Measurement) and not m.ok and words in m.reason
        assert m.output is None and m.seconds == []
    assert "timed out after 0.5 s" in call(_debug="hang", timeout=0.5).reason
    m = call(_debug="wrong")
    assert not m.ok and m.reason.startswith("wrong answer at (0") and m.output is not None
    assert call(_debug="wrong", check=False).ok

    def broken(spec):
        raise kc.BuildError("compiler exploded")

    monkeypatch.setattr("perfjax.kernels.c.ops_run.build", broken)
    m = call()
    assert not m.ok and m.reason == "build failed: compiler exploded" and m.source_hash


def test_nan_inputs_are_reported():
    a = MATRICES["skewed"]()
    X = np.ones((200, 2))
    Y = np.ones((150, 2))
    Y[a.indices[0]] = np.nan
    m = sddmm(a, X, Y, partition("merge_path", a, 2))
    assert not m.ok and "output contains NaN" in m.reason
    b = a.copy()
    b.data[0] = np.nan
    m = spadd([a, b], schedule="dynamic", threads=2)
    assert not m.ok and "output contains NaN in 1 of" in m.reason


def test_bad_arguments_raise_kernel_errors():
    a, b, c = _operands("skewed")
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((150, 3))
    csf = TENSORS["powerlaw"]()
    v = np.ones(csf.shape[2])
    Bm, Cm = np.ones((30, 2)), np.ones((25, 2))
    sp_part = partition("merge_path", a, 2)
    p2 = coiteration_partition("merge_path_nway", [a, b], 3)
    pt = csf_partition("merge_path", csf, 3)
    # a cut between coordinates that only one operand was cut at: not a joint coordinate
    skew = p2.end.copy()
    row = int(skew[0, 0])
    if skew[0, 1] > a.indptr[row]:
        skew[0, 1] -= 1
    else:
        skew[0, 1] += 1
    not_joint = corrupt(p2, end=skew, start=np.concatenate([p2.start[:1], skew[:-1]]))
    fiber_cut = pt.end.copy()
    fiber_cut[0, 0] += 1  # claims a slice end the path has not reached
    overlap = pt.start.copy()
    overlap[1] = overlap[0]
    cases = [
        (lambda: sddmm(a, X[:, :2], Y, sp_part), "Y must have shape (n, K) = (150, 2)"),
        (lambda: sddmm(a, X[:-1], Y, sp_part), "X must have shape (m, K) = (200, K)"),
        (lambda: sddmm(a, X + 1j, Y, sp_part), "X has complex values"),
        (lambda: sddmm(a.toarray(), X, Y), "scipy.sparse"),
        (lambda: sddmm(a, X, Y, p2), "points must have 2 coordinates"),
        (lambda: sddmm(a, X, Y, sp_part, chunk_size=4), "chunk_size applies to schedule mode"),
        (lambda: sddmm(a, X, Y, schedule="static", chunk_size=0), "chunk_size must be a positive"),
        (lambda: sddmm(a, X, Y, sp_part, worker=2), "worker must be an integer in 0..1"),
        (lambda: sddmm(a, X, Y, sp_part, threads=3), "threads=3 but the partition has 2"),
        (lambda: sddmm(a, X, Y, worker=0), "need a partition"),
        (lambda: sddmm(a, X, Y, sp_part, unroll=3), "unroll must be one of"),
        (lambda: sddmm(a, X, Y, sp_part, schedule="static"), "either a partition or"),
        (lambda: spadd([a], p2), "2 or 3 CSR operands"),
        (lambda: spadd([a, b, c, a]), "2 or 3 CSR operands"),
        (lambda: spadd([a, b[:100]]), "different shapes"),
        (lambda: spadd([a, b.toarray()]), "operand 1: matrix must be a scipy.sparse"),
        (lambda: spadd([a, b], sp_part), "points must have 3 coordinates"),
        (lambda: spadd([a, b], not_joint), "not a point of its path"),
        (lambda: spadd([a, c], p2), "does not fit"),
        (lambda: spadd([a, b], corrupt(p2, owner=np.array([0, 1, 3]))), "owner outside"),
        (lambda: spmul(a, b, p2, repeats=0), "repeats must be a positive integer"),
        (lambda: spmul(a, b, p2, sequential=True, worker=1), "sequential mode"),
        (lambda: spmul(a, b, p2, _debug="explode"), "_debug must be"),
        (lambda: coiteration_partition("nnz_split", [a, b], 2), "unknown co-iteration strategy"),
        (lambda: ttv(csf, v[:-1], pt), "v must have shape (25,)"),
        (lambda: ttv(a, v), "tensor must be a perfjax CSF"),
        (lambda: ttv(csf, v, corrupt(pt, end=fiber_cut)), "not a point of its path"),
        (lambda: ttv(csf, v, corrupt(pt, start=overlap)), "do not tile the path"),
        (lambda: ttv(csf, v, partition("merge_path", a, 3)), "points must have 3 coordinates"),
        (lambda: mttkrp(csf, Bm, Cm[:, :1], pt), "C must have shape (K, R) = (25, 2)"),
        (lambda: mttkrp(csf, Bm[:-1], Cm, pt), "B must have shape (J, R) = (30, R)"),
        (lambda: mttkrp(csf, Bm, Cm, pt, timeout=0), "timeout must be a positive"),
        (lambda: mttkrp(csf, Bm, Cm, schedule="runtime"), "schedule must be None or one of"),
        (lambda: csf_partition("row_blocks", csf, 2), "unknown CSF strategy"),
        (lambda: OpSpec("spgemm"), "op must be one of"),
        (lambda: OpSpec("spadd2", unroll=2), "unroll does not apply to spadd2"),
    ]
    assert_kernel_errors(cases)


# ----------------------------------------------------------------------------------- sources, cache


def test_sources_differ_by_knob_are_deterministic_and_cached(tmp_path, monkeypatch):
    specs = [OpSpec(op, u, s, c, cs, i) for op in kc.ops.OPS
             for u in ((1,) if op in kc.ops.COITERATION else (1, 4))
             for s, c, cs in ((None, None, None), ("dynamic", 7, None), ("static", None, 16))
             for i in (False, True)]
    sources = [spec.source() for spec in specs]
    assert len(set(sources)) == len(specs) and sources[0] == specs[0].source()
    assert "schedule(dynamic, 7)" in OpSpec("ttv", 1, "dynamic", 7).source()
    assert "chunk_size 16" in OpSpec("spadd3", 1, "static", None, 16).source()
    assert "#define INSTRUMENTED 0" in OpSpec("mttkrp").source()
    monkeypatch.setenv("PERFJAX_CACHE", str(tmp_path / "cache"))
    first = kc.build(OpSpec("spmul2"))
    assert kc.build(OpSpec("spmul2")) == first
    hls = kc.build(HlsSpec("spmv", 2))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [first.name, first.name + ".c", hls.name, hls.name + ".cpp"])
