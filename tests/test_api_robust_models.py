"""Bad input to the sparse, balance, MoE and hardware APIs raises a perfjax error naming it.

Regression tests of an adversarial-input audit: CSC matrices read as rows by the partitioners,
load-balance configurations that silently dropped work, placements that accepted typos and
negative counts, hardware specs with NaN leaves, generators that died with MemoryError. Valid
results are compared with independent numpy / brute-force expectations.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import perfjax  # noqa: F401  (JAX x64)
from perfjax import hardware
from perfjax.errors import HardwareError, WorkloadError
from perfjax.models import balance
from perfjax.schedulers import experts, partition
from perfjax.workloads import moe, sparse

NAN = float("nan")


def skewed(n_rows: int = 50, n_cols: int = 200, nnz: int = 600) -> sp.csr_array:
    return sparse.powerlaw_rows(n_rows, n_cols, nnz, alpha=1.5, seed=1)


def row_block_work(dense: np.ndarray, workers: int) -> list[list[int]]:
    """Brute force: worker p owns rows [p*n//P, (p+1)*n//P) and their nonzeros."""
    n = dense.shape[0]
    out = []
    for p in range(workers):
        lo, hi = p * n // workers, (p + 1) * n // workers
        out.append([hi - lo, int(np.count_nonzero(dense[lo:hi]))])
    return out


# ------------------------------------------------------------------------------ partition


def test_partition_reads_any_scipy_format_and_dense_as_rows():
    matrix = skewed()
    dense = matrix.toarray()
    expected = row_block_work(dense, 2)
    for given in (matrix, sp.csc_array(matrix), sp.coo_array(matrix), sp.csc_matrix(matrix),
                  dense):
        assert partition.partition("row_blocks", given, 2).work().tolist() == expected
    reference = partition.partition("merge_path", matrix, 3).work()
    for given in (sp.csc_array(matrix), dense):
        np.testing.assert_array_equal(partition.partition("merge_path", given, 3).work(), reference)
    # every worker's merge-path items: rows + nonzeros split evenly (brute force total)
    assert reference.sum() == dense.shape[0] + np.count_nonzero(dense)


@pytest.mark.parametrize("indptr, match", [
    (np.array([0, 5, 3, 9]), "never decrease"),
    (np.array([0, 2.7, 5.2]), "integers"),
    (np.array([2, 3, 4]), "start at 0"),
    (np.zeros((2, 2, 2), dtype=np.int64), "1-D"),
])
def test_partition_refuses_bad_indptr(indptr, match):
    with pytest.raises(WorkloadError, match=match):
        partition.partition("merge_path", indptr, 2)


def test_merge_path_refuses_inconsistent_levels():
    with pytest.raises(WorkloadError, match="pointer array 0"):
        partition.merge_path([np.array([0, 2, 5]), np.array([0, 1, 3])], 2)


def test_weighted_merge_path_refuses_wrong_length_weights():
    matrix = skewed()
    with pytest.raises(WorkloadError, match="600"):
        partition.weighted_merge_path(matrix, 2, np.ones(3), 1.0)
    with pytest.raises(WorkloadError, match="50"):
        partition.weighted_merge_path(matrix, 2, 1.0, np.ones(7))


# -------------------------------------------------------------------------------- balance


@pytest.fixture(scope="module")
def small():
    matrix = sparse.powerlaw_rows(64, 64, 500, seed=0)
    return matrix, sparse.stats(matrix)


def test_evaluate_matches_numpy_partitioner(small):
    matrix, st = small
    cost = balance.BalanceCost()
    for name, code in balance.STRATEGY_CODES.items():
        expected = partition.partition(name, matrix, 4, chunk=4).work()
        for strategy in (code, name):
            work = balance.evaluate(st.row_lengths, st.n_rows, strategy, 4, 4, cost, 8)["work"]
            np.testing.assert_array_equal(np.asarray(work.rows)[:4], expected[:, 0])
            np.testing.assert_array_equal(np.asarray(work.nnz)[:4], expected[:, 1])


def test_evaluate_batch_under_vmap_still_runs(small):
    matrix, st = small
    batch = balance.evaluate_batch(np.stack([st.row_lengths] * 2), np.array([64, 64]),
                                   np.array([4, 0]), np.array([3, 5]), np.array([1, 1]),
                                   balance.BalanceCost(), 8, None)
    assert np.asarray(batch["work"].nnz).sum(axis=1).tolist() == [500, 500]
    expected = partition.partition("row_blocks", matrix, 5).work()
    np.testing.assert_array_equal(np.asarray(batch["work"].nnz)[1, :5], expected[:, 1])


@pytest.mark.parametrize("change, match", [
    (dict(workers=0), "workers=0"),
    (dict(workers=-2), "workers=-2"),
    (dict(workers=16), "max_workers=8"),
    (dict(workers=2.7), "workers must be an integer"),
    (dict(workers=True), "workers must be an integer"),
    (dict(strategy=9), "strategy code 9"),
    (dict(strategy=-1), "strategy code -1"),
    (dict(strategy=jnp.asarray(9)), "strategy code 9"),
    (dict(strategy="mergepath"), "unknown strategy 'mergepath'"),
    (dict(chunk=0), "chunk"),
    (dict(n_rows=1000), "n_rows=1000"),
    (dict(n_rows=10), "nonzero lengths past row 10"),
    (dict(row_misses=np.ones(3)), "row_misses has 3 rows"),
    (dict(max_workers=0), "max_workers"),
])
def test_evaluate_refuses_bad_configurations(small, change, match):
    _, st = small
    args = dict(row_lengths=st.row_lengths, n_rows=st.n_rows, strategy=4, workers=4, chunk=4,
                cost=balance.BalanceCost(), max_workers=8, row_misses=None)
    args.update(change)
    with pytest.raises(WorkloadError, match=match):
        balance.evaluate(**args)


@pytest.mark.parametrize("term, value", [("per_nnz", "a"), ("per_row", math.nan),
                                          ("launch", math.inf), ("fixup", 1j)])
def test_balance_cost_refuses_values_that_are_never_costs(term, value):
    with pytest.raises(WorkloadError, match=f"BalanceCost.{term} must be a finite number"):
        balance.BalanceCost(**{term: value})


def test_balance_cost_still_works_as_a_pytree_under_grad_and_vmap_axes():
    terms = len(balance.COST_TERMS)
    grads = jax.grad(lambda c: jnp.sum(c.vector() * jnp.arange(float(terms))))(
        balance.BalanceCost())
    assert float(grads.per_row) == 1.0  # COST_TERMS order: per_row is the second term
    assert float(grads.per_l2_miss) == terms - 1.0  # and per_l2_miss the last
    axes = balance.BalanceCost(0, *([None] * (terms - 1)))  # an in_axes prefix holds None leaves
    out = jax.vmap(lambda c: c.vector(), in_axes=(axes,))(balance.BalanceCost(per_nnz=jnp.ones(3)))
    assert out.shape == (3, terms)


def test_predict_names_what_it_needs(small):
    with pytest.raises(WorkloadError, match="BalanceCost and a WorkerWork.*NoneType"):
        balance.predict(balance.BalanceCost(), None)


def test_worker_work_refuses_static_strategy_out_of_range(small):
    _, st = small
    with pytest.raises(WorkloadError, match="strategy code 9"):
        balance.worker_work(st.row_lengths, st.n_rows, 9, 4, 1, 8)


def test_prepare_refuses_inconsistent_input(small):
    matrix, st = small
    with pytest.raises(WorkloadError, match="row_misses"):
        balance.prepare(st, row_misses=np.ones(3))
    with pytest.raises(WorkloadError, match="row misses"):
        balance.prepare(st, row_misses=np.ones(65))  # more rows than the row lengths
    bad_rows = sparse.SparseStats(np.int64(10), st.n_cols, st.nnz, st.row_lengths, st.quantiles)
    with pytest.raises(WorkloadError, match="n_rows=10"):
        balance.prepare(bad_rows)
    too_many = sparse.SparseStats(np.int64(1000), st.n_cols, st.nnz, st.row_lengths, st.quantiles)
    with pytest.raises(WorkloadError, match="n_rows=1000"):
        balance.prepare(too_many)
    for wrong in (None, matrix, [st, st]):
        with pytest.raises(WorkloadError, match="SparseStats"):
            balance.prepare(wrong)
    # misses covering the real rows and padded: accepted, same as the full-width array
    padded = sparse.stats(matrix, pad_to=80)
    misses = sparse.row_misses(matrix)
    a = balance.prepare(padded, misses)
    b = balance.prepare(padded, np.pad(misses, ((0, 16), (0, 0))))
    np.testing.assert_array_equal(np.asarray(a.miss_prefix), np.asarray(b.miss_prefix))


@pytest.mark.parametrize("change, match", [
    (dict(strategies=[]), "empty"),
    (dict(strategies="merge_path"), r"pass \['merge_path'\]"),
    (dict(strategies=None), "list of names"),
    (dict(strategies=["mergepath"]), "unknown strategies"),
    (dict(workers=[2.7]), "integers"),
    (dict(workers=[NAN]), "integers"),
    (dict(workers=[16]), "max_workers=8"),
    (dict(chunks=["a"]), "integers"),
    (dict(chunks=[0]), ">= 1"),
])
def test_evaluate_grid_refuses_bad_arguments(small, change, match):
    _, st = small
    args = dict(stats=sparse.stack_stats([st]), strategies=["merge_path"], workers=[2, 4],
                chunks=[1], cost=balance.BalanceCost(), max_workers=8)
    args.update(change)
    with pytest.raises(WorkloadError, match=match):
        balance.evaluate_grid(**args)


def test_price_grid_refuses_costs_of_the_wrong_width(small):
    matrix, st = small
    features = balance.grid_features(sparse.stack_stats([st]), ["merge_path"], [2], [1], 8)
    with pytest.raises(WorkloadError, match=rf"\[K, {len(balance.COST_TERMS)}\]"):
        balance.price_grid(features, jnp.ones((3, 5)))
    # the right width: the slowest worker's priced items (numpy partition as the expectation)
    work = partition.merge_path(matrix, 2).work()  # [P, (rows, nnz)]
    costs = np.zeros((1, len(balance.COST_TERMS)))
    costs[0, :2] = [1.0, 2.0]  # per_nnz, per_row
    priced = np.asarray(balance.price_grid(features, costs))
    assert priced.ravel()[0] == pytest.approx(max(work[:, 1] * 1.0 + work[:, 0] * 2.0))


# ------------------------------------------------------------------------------------ MoE


@pytest.fixture(scope="module")
def moe_case():
    hw = hardware.system("h100")
    cfg = moe.model_config("mixtral-8x7b")  # 8 experts: 2 slots per device on 4 devices
    routing = moe.powerlaw_routing(cfg.experts, cfg.top_k, 32, alpha=1.1, seed=0)
    return hw, cfg, moe.device_counts(cfg, routing, 4)


def test_place_checks_phase_and_counts(moe_case):
    hw, cfg, counts = moe_case
    assert np.all(np.asarray(experts.place("static_pim", hw, cfg, counts, "decode")) == 1)
    assert np.all(np.asarray(experts.place("static_pim", hw, cfg, counts, "prefill")) == 0)
    with pytest.raises(WorkloadError, match="'decod'"):
        experts.place("static_pim", hw, cfg, counts, phase="decod")
    for policy in ("dynamic", "gpu_only", "static_threshold"):
        with pytest.raises(WorkloadError, match="non-negative"):
            experts.place(policy, hw, cfg, -counts)
        with pytest.raises(WorkloadError, match="nan"):
            experts.place(policy, hw, cfg, counts * NAN)
    with pytest.raises(WorkloadError, match=r"expected shape \[4, 2\], got \[4, 1\]"):
        experts.place("dynamic", hw, cfg, counts[:, :1])
    with pytest.raises(WorkloadError, match=r"got shape \[2\]"):
        experts.place("dynamic", hw, cfg, counts[0])
    with pytest.raises(HardwareError, match="System"):
        experts.place("dynamic", None, cfg, counts)


def test_place_dynamic_is_the_brute_force_optimum(moe_case):
    hw, cfg, counts = moe_case
    from perfjax.models import pim
    placed = np.asarray(experts.place("dynamic", hw, cfg, counts))
    # brute force by hand: every 0/1 placement of each device's 2 slots, scored by the model
    best = []
    for d in range(counts.shape[0]):
        scores = {}
        for bits in range(4):
            candidate = np.zeros_like(counts)
            candidate[d] = [(bits >> 0) & 1, (bits >> 1) & 1]
            device = np.asarray(pim.layer_times(hw, cfg, counts, candidate).device)[d]
            scores[bits] = float(device)
        best.append(min(scores.values()))
    chosen = np.asarray(pim.layer_times(hw, cfg, counts, placed).device)
    np.testing.assert_allclose(chosen, best, rtol=1e-9)


def test_brute_force_checks_counts_shape(moe_case):
    hw, cfg, counts = moe_case
    with pytest.raises(WorkloadError, match=r"expected shape \[4, 2\], got \[4, 1\]"):
        experts.brute_force(hw, cfg, counts[:, :1])
    with pytest.raises(WorkloadError, match=r"\[devices, slots\]"):
        experts.brute_force(hw, cfg, counts[0])
    with pytest.raises(WorkloadError, match="non-negative"):
        experts.brute_force(hw, cfg, -counts)


def test_moe_names_and_sizes():
    with pytest.raises(WorkloadError, match="MoE model name"):
        moe.model_config(None)
    with pytest.raises(WorkloadError, match="tokens=1000000000"):
        moe.powerlaw_routing(128, 8, 10**9, 1.1)
    with pytest.raises(WorkloadError, match="alpha"):
        moe.powerlaw_routing(128, 8, 10, "1.1")
    with pytest.raises(WorkloadError, match="seed"):
        moe.powerlaw_routing(128, 8, 10, 1.1, seed=-1)
    with pytest.raises(WorkloadError, match="tokens must be an integer"):
        moe.powerlaw_routing(128, 8, 10.0, 1.1)
    with pytest.raises(WorkloadError, match="devices must be an integer"):
        moe.device_counts(moe.model_config("mixtral-8x7b"), np.zeros((4, 2), int), 2.0)


# ------------------------------------------------------------------------------- hardware


@pytest.mark.parametrize("multiple", [-4.0, 0.0, NAN, math.inf, "4", None, True])
def test_system_refuses_bad_internal_bandwidth_multiple(multiple):
    with pytest.raises(HardwareError, match="internal_bandwidth_multiple"):
        hardware.system("h100", internal_bandwidth_multiple=multiple)


def test_system_accepts_valid_and_traced_multiple():
    hw = hardware.check_system(hardware.system("h100", internal_bandwidth_multiple=9))
    assert hw.pim.internal_bandwidth == pytest.approx(5 * 3.35e12 / 5 * 9)
    traced = jax.jit(lambda m: hardware.system("h100", m).pim.internal_bandwidth)(4.0)
    assert float(traced) == pytest.approx(3.35e12 * 4)
    # traced leaves are skipped by check_system
    peak = jax.jit(lambda h: hardware.check_system(h).gpu.peak_flops)(hardware.system("a100"))
    assert float(peak) == 312e12


@pytest.mark.parametrize("value, match", [
    (NAN, "finite"), (math.inf, "finite"), (-1.0, "positive"), ("fast", "must be a number"),
    (None, "must be a number"), (1 + 2j, "must be a number"),
])
def test_check_system_refuses_bad_leaves(value, match):
    hw = hardware.system("h100")
    bad = hardware.with_fields(hw, gpu=hardware.with_fields(hw.gpu, hbm_bandwidth=value))
    with pytest.raises(HardwareError, match=f"gpu.hbm_bandwidth.*{match}"):
        hardware.check_system(bad)


def test_hardware_names_and_fields():
    for call in (lambda: hardware.system(None), lambda: hardware.check_system(None),
                 lambda: hardware.gpu(5)):
        with pytest.raises(HardwareError):
            call()
    hw = hardware.system("h100")
    with pytest.raises(HardwareError, match="hbm_bandwith.*fields: peak_flops, hbm_bandwidth"):
        hardware.with_fields(hw.gpu, hbm_bandwith=1e12)
    with pytest.raises(HardwareError, match="dict"):
        hardware.with_fields({"a": 1}, a=2)
    with pytest.raises(HardwareError, match="type"):
        hardware.with_fields(hardware.GPUSpec, peak_flops=1.0)
    assert hardware.with_fields(hw.gpu, hbm_bandwidth=1e12).hbm_bandwidth == 1e12


# ----------------------------------------------------------------------------- generators


@pytest.mark.parametrize("call, match", [
    (lambda: sparse.powerlaw_rows(10**12, 10, 20), "n_rows=1000000000000"),
    (lambda: sparse.powerlaw_rows(10**6, 10**6, 10**11), "nnz=100000000000"),
    (lambda: sparse.rmat(40), "vertices"),
    (lambda: sparse.banded(10**12, 1), "n=1000000000000"),
    (lambda: sparse.uniform_random(10**6, 10**6, 0.5), "nnz=500000000000"),
    (lambda: sparse.random_tensor3((4, 4, 4), 2**40), "nnz"),
    (lambda: sparse.random_tensor3((2**40, 2**40, 2**40), 5), "entries"),
])
def test_generators_refuse_sizes_that_cannot_fit(call, match):
    with pytest.raises(WorkloadError, match=match):
        call()


def test_generators_refuse_allocations_beyond_available_memory(monkeypatch):
    monkeypatch.setattr(sparse, "_available_memory", lambda: 2**20)  # 1 MiB left
    with pytest.raises(WorkloadError, match="GiB of memory available"):
        sparse.uniform_random(2000, 2000, 0.5)
    with pytest.raises(WorkloadError, match="GiB of memory available"):
        moe.powerlaw_routing(128, 8, 100000, 1.1)


@pytest.mark.parametrize("call, match", [
    (lambda: sparse.powerlaw_rows(10, 10, 20, alpha=NAN), "alpha"),
    (lambda: sparse.powerlaw_rows(10, 10, 20, alpha="a"), "alpha"),
    (lambda: sparse.powerlaw_rows(10, 10, 20, seed=-1), "seed"),
    (lambda: sparse.powerlaw_rows(10, 10, 20, seed=1.5), "seed"),
    (lambda: sparse.banded(5, 10), "bandwidth 10"),
    (lambda: sparse.banded(5, 1, seed=-1), "seed"),
    (lambda: sparse.rmat(4, seed=-1), "seed"),
    (lambda: sparse.uniform_random(10, 10, NAN), "density"),
    (lambda: sparse.uniform_random(10, 10, 0.5, seed=-3), "seed"),
    (lambda: sparse.random_tensor3((4, 4, 4), 5, alpha=NAN), "alpha"),
    (lambda: sparse.stats(sp.csr_array((0, 0))), "no rows"),
    (lambda: sparse.stats(None), "matrix"),
    (lambda: sparse.stats(skewed(), pad_to=100.5), "pad_to"),
    (lambda: sparse.stack_stats([]), "no statistics"),
])
def test_generator_and_stats_arguments(call, match):
    with pytest.raises(WorkloadError, match=match):
        call()


def test_valid_generators_still_match_numpy():
    full = sparse.banded(5, 5)  # bandwidth n: every entry (as n - 1)
    assert full.nnz == 25
    band = sparse.banded(6, 2).toarray()
    i, j = np.indices((6, 6))
    np.testing.assert_array_equal(band != 0, np.abs(i - j) <= 2)
    matrix = sparse.powerlaw_rows(20, 30, 100, alpha=0.0, seed=3)
    assert matrix.nnz == 100 and np.diff(matrix.indptr).max() - np.diff(matrix.indptr).min() <= 1
