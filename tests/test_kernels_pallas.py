"""Pallas sparse kernels (merge-path SpMV / SpMM, BSR SpMM) against scipy.

The kernels run with ``interpret=None``: interpreted on CPU, compiled (Triton) on a GPU, so the
same tests check both where a GPU is present. Matrices are small (interpret mode walks every
merge-path item in a jitted loop). ``test_kernels_lower_for_triton`` lowers the compiled variant
for CUDA without a GPU, which catches what Triton refuses (non-power-of-two arrays, float64 dot
tiles below 16 x 16 x 8, scalar prefetch) on any machine.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from perfjax.errors import PerfjaxError, WorkloadError
from perfjax.kernels import pallas as kp
from perfjax.kernels.pallas import sparse as kernels
from perfjax.schedulers.partition import merge_path
from perfjax.workloads import sparse


def empty_rows_and_one_dense_row() -> sp.csr_array:
    """Leading, inner and trailing empty rows, and one dense row that spans several segments."""
    rng = np.random.default_rng(4)
    blocks = [sp.csr_array((3, 150)), sp.csr_array(rng.standard_normal((1, 150))),
              sp.csr_array((5, 150)), sparse.uniform_random(40, 150, 0.03, seed=5),
              sp.csr_array((2, 150))]
    return sp.csr_array(sp.vstack(blocks))


MATRICES = {
    "powerlaw": sparse.powerlaw_rows(300, 250, 3000, alpha=1.3, seed=1),
    "banded": sparse.banded(256, 3, seed=2),
    "uniform": sparse.uniform_random(200, 180, 0.05, seed=3),
    "empty+dense-row": empty_rows_and_one_dense_row(),
}


def dense_operand(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n if k is None else (n, k))


def assert_matches(actual, expected) -> None:
    """Equal to scipy within 1e-10 relative to the result's largest entry, in float64."""
    actual = np.asarray(actual)
    assert actual.dtype == np.float64 and actual.shape == expected.shape
    scale = max(np.abs(expected).max(), 1.0)
    assert np.abs(actual - expected).max() <= 1e-10 * scale


@pytest.mark.parametrize("workers", [1, 3, 8])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_spmv_merge_path_matches_scipy(name, workers):
    matrix = MATRICES[name]
    x = dense_operand(matrix.shape[1], None)
    assert_matches(kp.spmv_merge_path(matrix, x, workers=workers), matrix @ x)


@pytest.mark.parametrize("k, block_k", [(1, 32), (8, 32), (8, 4), (5, 2)])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_spmm_merge_path_matches_scipy(name, k, block_k):
    """One column block, several, and a K padded up to whole blocks."""
    matrix = MATRICES[name]
    X = dense_operand(matrix.shape[1], k, seed=1)
    assert_matches(kp.spmm_merge_path(matrix, X, workers=8, block_k=block_k), matrix @ X)


@pytest.mark.parametrize("block", [(2, 2), (4, 4)])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_bsr_spmm_matches_scipy(name, block):
    """Shapes that are not multiples of the block (powerlaw: 250 columns) are padded."""
    matrix = MATRICES[name]
    X = dense_operand(matrix.shape[1], 8, seed=2)
    assert_matches(kp.bsr_spmm(matrix, X, block=block), matrix @ X)


def test_bsr_spmm_dot_tiles_vectors_and_bsr_input():
    """16 x 16 blocks take the jnp.dot path; a 1-D operand gives a vector; a scipy BSR matrix
    keeps its own blocks."""
    matrix = MATRICES["banded"]
    X = dense_operand(matrix.shape[1], 8, seed=3)
    assert_matches(kp.bsr_spmm(matrix, X, block=(16, 16)), matrix @ X)
    assert_matches(kp.bsr_spmm(matrix, X[:, 0], block=(4, 2)), matrix @ X[:, 0])
    bsr = sp.bsr_array(matrix, blocksize=(8, 4))
    assert kp.block_sparse(bsr).block == (8, 4)
    assert_matches(kp.bsr_spmm(bsr, X), matrix @ X)


def test_matrices_without_nonzeros_give_zeros():
    matrix = sp.csr_array((7, 5))
    x = dense_operand(5, None)
    np.testing.assert_array_equal(kp.spmv_merge_path(matrix, x, workers=3), np.zeros(7))
    np.testing.assert_array_equal(kp.bsr_spmm(matrix, x, block=(2, 2)), np.zeros(7))


def test_float32_operands_compute_in_float32():
    matrix = MATRICES["uniform"].astype(np.float32)
    X = dense_operand(matrix.shape[1], 8).astype(np.float32)
    expected = matrix.astype(np.float64) @ X.astype(np.float64)
    for result in (kp.spmm_merge_path(matrix, X, workers=3), kp.bsr_spmm(matrix, X, block=(4, 4))):
        assert result.dtype == jnp.float32
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_plans_hold_the_partition_and_share_compiled_kernels():
    """The split points are the merge-path partition's; a plan is reusable and traceable, and a
    second matrix of the same shape and nonzero count reuses the compiled kernel."""
    matrix = MATRICES["powerlaw"]
    plan = kp.merge_path_csr(matrix, workers=8)
    part = merge_path(matrix, 8)
    np.testing.assert_array_equal(plan.split_rows, np.append(part.start[:, 0], part.end[-1, 0]))
    np.testing.assert_array_equal(plan.split_nnz, np.append(part.start[:, 1], part.end[-1, 1]))
    assert plan.segment == -(-(matrix.shape[0] + matrix.nnz) // 8)
    x = dense_operand(matrix.shape[1], None)
    assert_matches(jax.jit(lambda v: kp.spmv_merge_path(plan, v))(x), matrix @ x)

    other = sparse.powerlaw_rows(300, 250, 3000, alpha=1.3, seed=9)
    # an eager call compiles into the kernel's own cache (the jitted call above traced it into
    # another computation), so whether this shape is cached does not hang on the tests before
    assert_matches(kp.spmv_merge_path(plan, x), matrix @ x)
    before = kernels._merge_path_spmm._cache_size()
    assert_matches(kp.spmv_merge_path(other, x, workers=8), other @ x)
    assert kernels._merge_path_spmm._cache_size() == before
    assert kp.merge_path_csr(matrix).workers == -(-(300 + 3000) // kp.ITEMS_PER_WORKER)


def test_kernels_lower_for_triton():
    """The compiled variant lowers to a Triton GPU kernel (checked here without a GPU)."""
    pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
    matrix = MATRICES["powerlaw"]
    plan = kp.merge_path_csr(matrix, workers=8)
    calls = {
        "spmv": (lambda x: kp.spmv_merge_path(plan, x, interpret=False), (250,), np.float64),
        "spmm": (lambda X: kp.spmm_merge_path(plan, X, interpret=False), (250, 40), np.float64),
    }
    for dtype in (np.float64, np.float32):  # 2 x 2: multiply-and-sum; 16 x 16: Triton dot
        for block in [(2, 2), (16, 16)]:
            blocks = kp.block_sparse(matrix.astype(dtype), block)
            calls[f"bsr {block} {dtype.__name__}"] = (
                lambda X, b=blocks: kp.bsr_spmm(b, X, interpret=False), (250, 40), dtype)
    for name, (call, shape, dtype) in calls.items():
        operand = jnp.ones(shape, dtype)
        text = jax.jit(call).trace(operand).lower(lowering_platforms=("cuda",)).as_text()
        assert "triton" in text, name


@pytest.mark.parametrize("call, message", [
    (lambda: kp.spmv_merge_path(np.eye(3), np.ones(3)), "scipy.sparse"),
    (lambda: kp.spmv_merge_path(sp.csr_array((0, 3)), np.ones(3)), "no rows"),
    (lambda: kp.spmv_merge_path(sp.eye(3, dtype=complex, format="csr"), np.ones(3)), "not real"),
    (lambda: kp.spmv_merge_path(sp.eye(3, format="csr"), np.ones(4)), "3 columns"),
    (lambda: kp.spmv_merge_path(sp.eye(3, format="csr"), np.ones((3, 1))), "1 dimension"),
    (lambda: kp.spmv_merge_path(sp.eye(3, format="csr"), np.ones(3), workers=0), "workers"),
    (lambda: kp.spmv_merge_path(sp.eye(3, format="csr"), np.ones(3), workers=7), "exceeds"),
    (lambda: kp.spmv_merge_path(sp.eye(3, format="csr"), np.ones(3), interpret="yes"),
     "interpret"),
    (lambda: kp.spmv_merge_path(kp.merge_path_csr(sp.eye(3, format="csr"), 2), np.ones(3),
                                workers=3), "split for 2"),
    (lambda: kp.spmm_merge_path(sp.eye(3, format="csr"), np.ones(3)), "2 dimension"),
    (lambda: kp.spmm_merge_path(sp.eye(3, format="csr"), np.ones((3, 0))), "no columns"),
    (lambda: kp.spmm_merge_path(sp.eye(3, format="csr"), np.ones((3, 2)), block_k=3), "block_k"),
    (lambda: kp.bsr_spmm(sp.eye(4, format="csr"), np.ones((4, 2))), "block=(bm, bn)"),
    (lambda: kp.bsr_spmm(sp.eye(4, format="csr"), np.ones((4, 2)), block=(3, 2)), "powers"),
    (lambda: kp.bsr_spmm(kp.block_sparse(sp.eye(4, format="csr"), (2, 2)), np.ones((4, 2)),
                         block=(4, 4)), "(2, 2) blocks"),
    (lambda: kp.bsr_spmm(sp.eye(4, format="csr"), np.ones((5, 2)), block=(2, 2)), "4 columns"),
])
def test_bad_arguments_raise_workload_errors(call, message):
    with pytest.raises(WorkloadError, match=re.escape(message)) as info:
        call()
    assert isinstance(info.value, PerfjaxError)
