"""Sparse workloads: readers, formats and generators against scipy/numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from perfjax.data import data_dir
from perfjax.errors import WorkloadError
from perfjax.workloads import sparse


def test_read_matrix_matches_scipy(tmp_path):
    a = sparse.powerlaw_rows(50, 40, 300, seed=1)
    path = tmp_path / "a.mtx"
    scipy.io.mmwrite(path, a)
    got = sparse.read_matrix(path)
    assert isinstance(got, sp.csr_array)
    assert np.allclose(got.toarray(), a.toarray())


@pytest.mark.parametrize("text, fragment", [
    ("%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1.0\n", "not a readable"),
    ("hello\n", "not a readable"),
    ("%%MatrixMarket matrix coordinate real general\n3 3 0\n", "no nonzero"),
])
def test_bad_matrix_files_name_the_file(tmp_path, text, fragment):
    path = tmp_path / "bad.mtx"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=fragment) as info:
        sparse.read_matrix(path)
    assert str(path) in str(info.value)
    with pytest.raises(WorkloadError, match="no such file"):
        sparse.read_matrix(tmp_path / "missing.mtx")


def test_dcsr_round_trip_and_compression():
    a = sp.csr_array(sp.vstack([sparse.uniform_random(30, 20, 0.1, seed=2), sp.csr_array((7, 20))]))
    d = sparse.DCSR.from_csr(a)
    assert (d.row_ids == np.nonzero(np.diff(a.indptr))[0]).all()
    assert np.allclose(d.to_csr().toarray(), a.toarray())


def test_csf_walk_reproduces_the_dense_tensor():
    t = sparse.random_tensor3((9, 7, 5), 120, seed=3)
    csf = sparse.CSF.from_coo3(t)
    dense = np.zeros(t.shape)
    for s, i in enumerate(csf.ids[0]):
        for f in range(csf.ptr[0][s], csf.ptr[0][s + 1]):
            j = csf.ids[1][f]
            for q in range(csf.ptr[1][f], csf.ptr[1][f + 1]):
                dense[i, j, csf.ids[2][q]] += csf.values[q]
    assert np.allclose(dense, t.to_dense())


def test_read_tns(tmp_path):
    path = tmp_path / "t.tns"
    path.write_text("# a comment\n1 1 1 2.5\n2 3 1 -1\n1 1 1 0.5\n")
    t = sparse.read_tns(path)
    assert t.shape == (2, 3, 1) and t.nnz == 2
    assert np.isclose(t.to_dense()[0, 0, 0], 3.0) and np.isclose(t.to_dense()[1, 2, 0], -1.0)
    path.write_text("1 1 2.5\n")
    with pytest.raises(WorkloadError, match="line 1"):
        sparse.read_tns(path)


def test_generators_are_deterministic_and_shaped():
    p = sparse.powerlaw_rows(200, 150, 3000, alpha=1.5, seed=7)
    assert p.nnz == 3000 and p.shape == (200, 150)
    lengths = np.sort(np.diff(p.indptr))[::-1]
    assert lengths[0] > 10 * np.median(lengths)  # skewed
    assert (sparse.powerlaw_rows(200, 150, 3000, alpha=1.5, seed=7) != p).nnz == 0
    b = sparse.banded(50, 2)
    i, j = np.nonzero(b.toarray())
    assert np.abs(i - j).max() == 2 and b.nnz == 50 * 5 - 2 * (1 + 2)
    r = sparse.rmat(8, 8, seed=1)
    assert r.shape == (256, 256) and 0 < r.nnz <= 8 * 256
    with pytest.raises(WorkloadError, match="n_rows"):
        sparse.powerlaw_rows(0, 5, 5)


def test_stats_match_numpy():
    a = sparse.rmat(7, 4, seed=4)
    st = sparse.stats(a, name="rmat", pad_to=200)
    lengths = np.diff(a.indptr)
    assert int(st.nnz) == a.nnz and int(st.n_rows) == 128
    assert (st.row_lengths[:128] == lengths).all() and (st.row_lengths[128:] == 0).all()
    assert np.allclose(st.quantiles, np.quantile(lengths, sparse.QUANTILES))
    stacked = sparse.stack_stats([st, sparse.stats(sparse.banded(300, 1))])
    assert stacked.row_lengths.shape == (2, 300)


REAL = data_dir()


@pytest.mark.skipif(REAL is None or not (REAL / "matrices").is_dir(),
                    reason="real matrices not available (set PERFJAX_DATA or provide ../shared/data)")
def test_real_matrices_load():
    files = sorted((REAL / "matrices").glob("*.mtx"))
    assert files
    for path in files:
        m = sparse.read_matrix(path)
        reference = sp.csr_array(scipy.io.mmread(path))
        reference.sum_duplicates()
        assert m.shape == reference.shape and m.nnz == reference.nnz, path.name
