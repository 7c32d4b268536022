"""Partition strategies and the load-balance model, checked against a brute-force merge path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from perfjax.errors import WorkloadError
from perfjax.models import balance
from perfjax.schedulers import partition
from perfjax.workloads import sparse


def skewed_with_empty_rows() -> sp.csr_array:
    a = sparse.powerlaw_rows(120, 90, 1500, alpha=1.3, seed=1)
    return sp.csr_array(sp.vstack([sp.csr_array((3, 90)), a, sp.csr_array((4, 90)), a,
                                   sp.csr_array((1, 90))]))


MATRICES = {
    "skewed+empty": skewed_with_empty_rows(),
    "banded": sparse.banded(200, 3),
    "rmat": sparse.rmat(7, 4, seed=2),
    "one-dense-row": sp.csr_array(sp.vstack([sp.csr_array(np.ones((1, 50))),
                                             sp.eye(49, 50, format="csr")])),
}


def merge_sequence(indptr: np.ndarray) -> list[str]:
    """The merge path written out item by item: each row's nonzeros, then its end."""
    seq = []
    for r in range(len(indptr) - 1):
        seq += ["nz"] * int(indptr[r + 1] - indptr[r]) + ["end"]
    return seq


def brute_force_work(indptr: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[int, int]:
    seq = merge_sequence(indptr)
    items = seq[int(start.sum()):int(end.sum())]
    return items.count("end"), items.count("nz")


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("strategy", partition.STRATEGIES)
@pytest.mark.parametrize("workers", [1, 3, 8, 31])
def test_partitions_cover_the_path_once_and_count_exactly(name, strategy, workers):
    matrix = MATRICES[name]
    indptr = matrix.indptr.astype(np.int64)
    part = partition.partition(strategy, matrix, workers, chunk=5)
    # Segments are points on the path, disjoint, covering every item exactly once.
    for (i, j) in np.concatenate([part.start, part.end]):
        assert indptr[i] <= j and (i == len(indptr) - 1 or j <= indptr[i + 1])
    positions = sorted((int(s.sum()), int(e.sum())) for s, e in zip(part.start, part.end))
    assert positions[0][0] == 0 and positions[-1][1] == len(merge_sequence(indptr))
    assert all(a[1] == b[0] for a, b in zip(positions, positions[1:]))
    # Work counters equal the brute-force count of the items each worker walks.
    expected = np.zeros((workers, 2), dtype=np.int64)
    for s, e, p in zip(part.start, part.end, part.owner):
        expected[p] += brute_force_work(indptr, s, e)
    assert (part.work() == expected).all()


@pytest.mark.parametrize("name", sorted(MATRICES))
def test_merge_path_is_balanced_to_one_item(name):
    part = partition.merge_path(MATRICES[name], 16)
    items = part.items()
    assert items.max() - items.min() <= 1


@pytest.mark.parametrize("name", sorted(MATRICES))
def test_weighted_merge_path_equalizes_weighted_shares(name):
    matrix = MATRICES[name]
    indptr = matrix.indptr.astype(np.int64)
    # unit weights: the plain merge path
    unit = partition.weighted_merge_path(matrix, 7, 1.0, 1.0)
    assert np.array_equal(unit.start, partition.merge_path(matrix, 7).start)
    rng = np.random.default_rng(1)
    nz_w, end_w = rng.uniform(0.1, 3.0, matrix.nnz), rng.uniform(0.0, 20.0, matrix.shape[0])
    part = partition.weighted_merge_path(matrix, 5, nz_w, end_w)
    # the brute-force walk: every item's weight, summed per worker along the path
    weights = []
    for r in range(len(indptr) - 1):
        weights += list(nz_w[indptr[r]:indptr[r + 1]]) + [end_w[r]]
    weights = np.array(weights)
    shares = np.array([weights[int(s.sum()):int(e.sum())].sum()
                       for s, e in zip(part.start, part.end)])
    assert np.isclose(shares.sum(), weights.sum())
    target = weights.sum() / 5
    # each split lands on the last path point not past its target: off by under one item
    assert np.all(np.abs(np.cumsum(shares)[:-1] - target * np.arange(1, 5)) <= weights.max())
    with pytest.raises(WorkloadError, match="non-negative"):
        partition.weighted_merge_path(matrix, 2, -1.0, 1.0)


def test_dynamic_chunks_is_greedy_least_loaded():
    matrix = MATRICES["skewed+empty"]
    part = partition.dynamic_chunks(matrix, 4, 3)
    loads = np.zeros(4, dtype=np.int64)
    for s, e, p in zip(part.start, part.end, part.owner):
        assert p == int(np.argmin(loads))  # reference: a plain list scheduler
        loads[p] += (e - s).sum()


def test_static_chunks_round_robin():
    part = partition.static_chunks(MATRICES["banded"], 3, 7)
    assert (part.owner == np.arange(len(part.owner)) % 3).all()
    assert (part.start[:, 0] == np.arange(len(part.owner)) * 7).all()


def test_csf_hierarchical_merge_path_matches_walk():
    tensor = sparse.random_tensor3((25, 15, 9), 600, alpha=1.0, seed=3)
    csf = sparse.CSF.from_coo3(tensor)
    part = partition.merge_path([csf.ptr[0], csf.ptr[1]], 7)
    walk = []  # 0 = slice end, 1 = fiber end, 2 = nonzero
    for s in range(len(csf.ids[0])):
        for f in range(csf.ptr[0][s], csf.ptr[0][s + 1]):
            walk += [2] * int(csf.ptr[1][f + 1] - csf.ptr[1][f]) + [1]
        walk.append(0)
    for p in range(7):
        counts = np.bincount(walk[int(part.start[p].sum()):int(part.end[p].sum())], minlength=3)
        assert (counts == part.work()[p]).all()
    assert part.items().max() - part.items().min() <= 1


def test_nway_split_cuts_every_operand_at_one_coordinate():
    a = sparse.powerlaw_rows(80, 60, 900, alpha=1.2, seed=4)
    b = sparse.uniform_random(80, 60, 0.05, seed=5)
    c = sparse.banded(80, 2)[:, :60]
    part = partition.merge_path_nway([a, b, c], 9)
    work = part.work()
    assert (work.sum(axis=0) == [80, a.nnz, b.nnz, c.nnz]).all()
    assert part.items().max() - part.items().min() <= 3  # at most N - 1 + 1 apart
    # Brute force: every operand's items before a cut are those with a smaller coordinate.
    for point in part.end[:-1]:
        rows_done = point[0]
        for op, count in zip((a, b, c), point[1:]):
            coo = sp.coo_array(op)
            order = np.lexsort((coo.col, coo.row))
            keys = list(zip(coo.row[order], coo.col[order]))
            assert count <= len(keys)
            if 0 < count < len(keys):
                assert keys[count - 1] < keys[count]  # the cut falls between coordinates
        assert rows_done <= 80


def test_bad_arguments():
    m = MATRICES["banded"]
    with pytest.raises(WorkloadError, match="workers=500"):
        partition.row_blocks(m, 500)
    with pytest.raises(WorkloadError, match="workers must be a positive integer"):
        partition.merge_path(m, 0)
    with pytest.raises(WorkloadError, match="chunk"):
        partition.static_chunks(m, 2, 0)
    with pytest.raises(WorkloadError, match="unknown partition strategy"):
        partition.partition("magic", m, 2)
    with pytest.raises(WorkloadError, match="different shapes"):
        partition.merge_path_nway([m, sparse.banded(10, 1)], 2)


# ---------------------------------------------------------------------------------- the model

@pytest.mark.parametrize("name", sorted(MATRICES))
def test_model_counters_equal_partitioner(name):
    matrix = MATRICES[name]
    stats = sparse.stats(matrix, pad_to=256)  # padding must not change a thing
    for strategy, code in balance.STRATEGY_CODES.items():
        for workers in (1, 2, 5, 16):
            for chunk in (1, 6):
                part = partition.partition(strategy, matrix, workers, chunk=chunk)
                eager = workers == 5 and chunk == 1  # static dispatch, no jit, once per strategy
                for work in ([balance.worker_work(stats.row_lengths, stats.n_rows, code, workers,
                                                  chunk, 16)] if eager else []) + [
                        balance.worker_work_jit(stats.row_lengths, stats.n_rows, jnp.asarray(code),
                                                workers, chunk, max_workers=16)]:
                    assert (np.asarray(work.rows)[:workers] == part.work()[:, 0]).all()
                    assert (np.asarray(work.nnz)[:workers] == part.work()[:, 1]).all()
                    assert (np.asarray(work.rows)[workers:] == 0).all()


def test_model_time_is_linear_in_costs_and_differentiable():
    matrix = MATRICES["skewed+empty"]
    stats = sparse.stats(matrix)
    work = balance.worker_work(stats.row_lengths, stats.n_rows, 4, 8, 1, 8)
    part = partition.merge_path(matrix, 8)
    cost = balance.BalanceCost(per_nnz=2.0, per_row=3.0, per_segment=0.0, per_search=0.5,
                               fixup=7.0, launch=11.0)
    times = np.asarray(balance.predict(cost, work)["times"])
    starts_mid_row = part.start[:, 1] > matrix.indptr[part.start[:, 0]]
    search_steps = np.ceil(np.log2(matrix.shape[0] + 1.0))
    expected = (2.0 * part.work()[:, 1] + 3.0 * part.work()[:, 0] + 0.5 * search_steps
                + 7.0 * starts_mid_row + 11.0)
    assert np.allclose(times, expected)
    grad = jax.grad(lambda v: balance.predict(balance.BalanceCost.from_vector(v), work)["makespan"])(
        cost.vector())
    slowest = int(np.argmax(expected))
    assert np.allclose(grad, [part.work()[slowest, 1], part.work()[slowest, 0], 1.0, search_steps,
                              starts_mid_row[slowest], 1.0, 0.0, 0.0, 0.0])


def _gather_misses_reference(matrix, width, cache_bytes):
    """Walk the gathers one by one, remembering when each cache line was last touched."""
    per_line = max(1, 64 // (8 * width))
    lines = -(-8 * width // 64)
    last, out = {}, np.zeros(matrix.shape[0])
    position = 0
    for row in range(matrix.shape[0]):
        for col in matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]:
            line = col // per_line if per_line > 1 else col * lines
            if line not in last or (position - last[line]) * lines > cache_bytes // 64:
                out[row] += 1
            last[line] = position
            position += 1
    return out


@pytest.mark.parametrize("width", [1, 4, 16])
def test_gather_misses_match_a_walk_over_the_gathers(width):
    for name in ("rmat", "skewed+empty", "banded"):
        matrix = MATRICES[name]
        for cache in (1024, 8192):
            ours = sparse.gather_misses(matrix, width, cache_bytes=cache)
            assert np.array_equal(ours, _gather_misses_reference(matrix, width, cache)), name
    # a band walks x in order: only each line's first touch misses, however small the cache
    band = sparse.banded(2000, 2, seed=0)
    assert sparse.gather_misses(band, 1, cache_bytes=4096).sum() == -(-band.shape[1] // 8)
    with pytest.raises(WorkloadError, match="width"):
        sparse.gather_misses(band, 0)


def _misses_reference(matrix, part, row_misses):
    """Walk each segment: the rows whose ends it passes count whole, the row it starts inside
    loses the share of its nonzeros already done, the row it stops inside adds the share done."""
    lengths = np.diff(matrix.indptr)

    def done(row, k):
        if row >= len(lengths) or lengths[row] == 0:
            return 0.0
        return row_misses[row] * (k - matrix.indptr[row]) / lengths[row]

    out = np.zeros(part.workers)
    for (r0, k0), (r1, k1), owner in zip(part.start, part.end, part.owner):
        out[owner] += row_misses[r0:r1].sum() - done(r0, k0) + done(r1, k1)
    return out


def test_length_changes_and_row_misses():
    matrix = MATRICES["skewed+empty"]
    lengths = np.diff(matrix.indptr)
    changes = sparse.length_changes(matrix)
    assert changes[0] == 1.0
    assert all(changes[i] == float(lengths[i] != lengths[i - 1]) for i in range(1, len(lengths)))
    information = sparse.length_information(matrix)
    both = sparse.row_misses(matrix, 4, cache_bytes=4096, predictor_bytes=information / 4)
    assert np.array_equal(both[:, 0], sparse.gather_misses(matrix, 4, cache_bytes=4096))
    assert np.allclose(both[:, 1], 0.75 * changes)
    assert np.array_equal(sparse.row_misses(matrix)[:, 1], changes)  # no capacity: every change
    assert not sparse.row_misses(matrix, predictor_bytes=10 * information)[:, 1].any()
    for bad in (-1, float("nan")):
        with pytest.raises(WorkloadError, match="predictor_bytes"):
            sparse.row_misses(matrix, predictor_bytes=bad)


def test_length_information_tells_patterns_from_random_lengths():
    """The same multiset of row lengths (1..4, 20,000 rows) holds far less information in a
    repeated pattern than shuffled; constant lengths hold least; so a predictor capacity that
    learns the pattern leaves the shuffled lengths mispredicted. Checked against the entropy
    bound: shuffled lengths need at least rows x log2(4) bits, whatever the compressor."""
    pattern = np.tile([1, 3, 2, 4, 2, 2, 1, 3], 2_500)
    shuffled = np.random.default_rng(0).permutation(pattern)

    def matrix(lengths):
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sp.csr_array((np.ones(indptr[-1]), np.zeros(indptr[-1], np.int64), indptr),
                            shape=(len(lengths), 1))

    periodic, random = matrix(pattern), matrix(shuffled)
    constant = matrix(np.full(20_000, 3))
    info = {k: sparse.length_information(m) for k, m in
            (("periodic", periodic), ("random", random), ("constant", constant))}
    entropy_bytes = 20_000 * (-(np.bincount(pattern)[1:] / 20_000 * np.log2(
        np.bincount(pattern)[1:] / 20_000)).sum()) / 8
    assert info["random"] >= entropy_bytes > 20 * info["periodic"]
    assert info["constant"] <= info["periodic"]
    capacity = 2 * info["periodic"]
    assert not sparse.row_misses(periodic, predictor_bytes=capacity)[:, 1].any()
    share = 1 - capacity / info["random"]
    assert np.allclose(sparse.row_misses(random, predictor_bytes=capacity)[:, 1],
                       share * sparse.length_changes(random))
    assert sparse.unlearned_share(100, 400) == 0.0 and sparse.unlearned_share(400, 100) == 0.75


def test_miss_counters_follow_the_partition():
    cost = balance.BalanceCost(per_nnz=1.0, per_row=0.5, per_miss=4.0, per_branch_miss=3.0,
                               per_l2_miss=6.0)
    names = ("rmat", "skewed+empty")
    rows = max(MATRICES[name].shape[0] for name in names) + 7  # one padded length: one compile
    for name in names:
        matrix = MATRICES[name]
        both = sparse.row_misses(matrix, 1, cache_bytes=2048, predictor_bytes=10, l2_bytes=8192)
        misses = both.sum(axis=1)  # the reference sees one kind; the model every kind, summed
        stats = sparse.stats(matrix, pad_to=rows)
        padded = np.pad(both, ((0, rows - matrix.shape[0]), (0, 0)))
        prepared = balance.prepare(sparse.stack_stats([stats]), padded[None])
        grid = balance.evaluate_grid(prepared, list(balance.STRATEGY_CODES), [1, 3, 8], [1, 6],
                                     cost, 8)
        for s, (strategy, code) in enumerate(balance.STRATEGY_CODES.items()):
            for w, workers in enumerate((1, 3, 8)):
                for c, chunk in enumerate((1, 6)):
                    part = partition.partition(strategy, matrix, workers, chunk=chunk)
                    expected = _misses_reference(matrix, part, misses)
                    work = balance.worker_work_jit(stats.row_lengths, stats.n_rows,
                                                   jnp.asarray(code), workers, chunk,
                                                   max_workers=8, row_misses=padded)
                    per_worker = np.asarray(work.misses)[:workers]
                    assert per_worker.shape == (workers, balance.MISS_KINDS)
                    assert np.allclose(per_worker.sum(axis=1), expected), strategy
                    assert np.allclose(per_worker.sum(axis=0), both.sum(axis=0))
                    times = (np.asarray(work.features())[:workers]
                             @ np.asarray(cost.vector()))
                    assert np.allclose(grid["times"][0, s, w, c][:workers], times, rtol=1e-12)


def test_grid_matches_partitioners_and_single_evaluations():
    mats = [MATRICES["banded"], MATRICES["rmat"], MATRICES["skewed+empty"]]
    stacked = sparse.stack_stats([sparse.stats(m) for m in mats])
    cost = balance.BalanceCost(per_nnz=1.3, per_row=0.7, per_segment=2.0, per_search=0.5,
                               fixup=3.0, launch=5.0)
    strategies, workers, chunks = list(balance.STRATEGY_CODES), [1, 3, 4, 7], [1, 5]
    grid = balance.evaluate_grid(stacked, strategies, workers, chunks, cost, 8)
    assert grid["makespan"].shape == (3, 5, 4, 2) and grid["times"].shape == (3, 5, 4, 2, 8)
    prepared = balance.prepare(stacked)
    again = balance.evaluate_grid(prepared, strategies, workers, chunks, cost, 8)
    assert np.array_equal(grid["times"], again["times"])
    # Small matrices take int32 greedy keys; without the size the program keeps int64 keys.
    assert prepared.max_work == max(m.shape[0] + m.nnz for m in mats)
    wide = balance.evaluate_grid(prepared._replace(max_work=-1), strategies, workers, chunks, cost, 8)
    assert np.array_equal(grid["times"], wide["times"])
    for m, matrix in enumerate(mats):
        for s, strategy in enumerate(strategies):
            for w, count in enumerate(workers):
                for c, chunk in enumerate(chunks):
                    items = partition.partition(strategy, matrix, count, chunk=chunk).items()
                    assert np.isclose(float(grid["imbalance"][m, s, w, c]), items.max() / items.mean())
                    # one configuration at a time, compiled once (the stacked rows share a length)
                    single = balance.predict(cost, balance.worker_work_jit(
                        stacked.row_lengths[m], stacked.n_rows[m], jnp.asarray(s), count, chunk,
                        max_workers=8))
                    assert np.allclose(grid["times"][m, s, w, c], single["times"], rtol=1e-12)


def test_grid_static_and_dynamic_chunks_on_every_worker_count_up_to_20():
    """Static chunks sum per residue modulo each group's lcm and fold the sums for each count
    of the group (1..20, lcm 232792560: three groups; [3, 5, 6]: one); both, and the dynamic
    greedy scan, must give every worker exactly the partitioner's work."""
    matrix = MATRICES["rmat"]
    stacked = sparse.stack_stats([sparse.stats(matrix, pad_to=matrix.shape[0] + 5)])
    for workers in (list(range(1, 21)), [3, 5, 6]):
        features = np.asarray(balance.grid_features(stacked, ["static_chunks", "dynamic_chunks"],
                                                    workers, [1, 7], 32))
        for s, strategy in enumerate(("static_chunks", "dynamic_chunks")):
            for w, count in enumerate(workers):
                for c, chunk in enumerate((1, 7)):
                    items = partition.partition(strategy, matrix, count, chunk=chunk).items()
                    model = features[0, s, w, c, :, 0] + features[0, s, w, c, :, 1]
                    assert np.array_equal(model[:count], items), (strategy, count, chunk)
                    assert not model[count:].any()


def test_grid_ignores_row_misses_past_a_matrix_end():
    """Chunk sums read the miss prefix sums at every chunk-th row, past the end too: values
    given for rows that do not exist must not count (prepare zeroes them)."""
    matrix = MATRICES["skewed+empty"]
    n = matrix.shape[0]
    stacked = sparse.stack_stats([sparse.stats(matrix, pad_to=n + 9)])
    misses = np.random.default_rng(0).uniform(0, 3, (n + 9, 2))
    clean = misses.copy()
    clean[n:] = 0
    cost = balance.BalanceCost(per_nnz=1.0, per_miss=2.0, per_branch_miss=1.5)
    args = (list(balance.STRATEGY_CODES), [1, 3, 8], [1, 4], cost, 8)
    dirty = balance.evaluate_grid(balance.prepare(stacked, misses[None]), *args)
    expected = balance.evaluate_grid(balance.prepare(stacked, clean[None]), *args)
    assert np.allclose(dirty["times"], expected["times"], rtol=1e-12)


def test_grid_features_priced_under_many_costs_equal_evaluate_grid():
    mats = [MATRICES["banded"], MATRICES["skewed+empty"]]
    stacked = sparse.stack_stats([sparse.stats(m) for m in mats])
    strategies, workers, chunks = list(balance.STRATEGY_CODES), [1, 3, 8], [2, 5]
    features = balance.grid_features(stacked, strategies, workers, chunks, 8)
    assert features.shape == (2, 5, 3, 2, 8, len(balance.COST_TERMS))
    rng = np.random.default_rng(3)
    costs = rng.uniform(0.0, 2.0, size=(4, len(balance.COST_TERMS)))
    priced = balance.price_grid(features, costs)
    assert priced.shape == (2, 5, 3, 2, 4)
    for k, vector in enumerate(costs):
        grid = balance.evaluate_grid(stacked, strategies, workers, chunks,
                                     balance.BalanceCost.from_vector(vector), 8)
        assert np.allclose(priced[..., k], grid["makespan"], rtol=1e-12)


def test_grid_dynamic_keys_switch_to_int64_before_int32_overflows():
    # keys are load * max_workers + id; int32 holds them while every load stays under the idle
    # workers' load (2^30 / max_workers)
    assert balance._key_bits(10**6, 64) == 32
    assert balance._key_bits(2**30 // 64 - 2, 64) == 32
    assert balance._key_bits(2**30 // 64 - 1, 64) == 64
    assert balance._key_bits(10**6, 1024) == 32 and balance._key_bits(2 * 10**6, 1024) == 64
    assert balance._key_bits(-1, 64) == 64


def test_grid_rejects_bad_arguments():
    stacked = sparse.stack_stats([sparse.stats(MATRICES["banded"])])
    cost = balance.BalanceCost()
    for strategies, workers, chunks, match in ((["zigzag"], [2], [1], "unknown strategies"),
                                               (["row_blocks"], [0], [1], "worker counts"),
                                               (["row_blocks"], [9], [1], "max_workers"),
                                               (["static_chunks"], [2], [0], "chunk sizes")):
        with pytest.raises(WorkloadError, match=match):
            balance.evaluate_grid(stacked, strategies, workers, chunks, cost, 8)


def test_relaxed_work_is_exact_at_row_ends_and_differentiable():
    matrix = MATRICES["skewed+empty"]
    lengths = np.diff(matrix.indptr)
    ends = np.cumsum(lengths) + np.arange(len(lengths))
    diagonals = jnp.asarray([0.0, ends[10] + 1.0, ends[100] + 1.0, ends[-1] + 1.0])
    rows, nnz = balance.relaxed_work(lengths, diagonals)
    assert np.allclose(rows, [11, 90, len(lengths) - 101])
    assert np.allclose(nnz, np.diff([0, matrix.indptr[11], matrix.indptr[101], matrix.nnz]))
    grad = jax.grad(lambda d: jnp.max(balance.relaxed_work(lengths, d)[1]))(diagonals + 0.5)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_dynamic_chunks_packed_lanes_match_the_partitioner_on_many_matrix_sizes():
    """The greedy scan packs several matrices' chunk sequences into one lane (keys reset where a
    matrix starts): every matrix's owners must equal its own greedy assignment."""
    rows = [300, 40, 25, 260, 120, 10, 90, 300, 9]
    mats = [sparse.powerlaw_rows(n, n, 6 * n, alpha=1.2, seed=i) for i, n in enumerate(rows)]
    stacked = sparse.stack_stats([sparse.stats(m) for m in mats])
    lanes, packs = balance._lane_packing(tuple(rows), max(rows), (1, 7))
    assert 2 <= lanes < len(rows)  # some lanes hold several matrices
    for chunk, (matrix, index, used, reset, step_of, lane_of) in zip((1, 7), packs):
        matrix, index, used = np.asarray(matrix), np.asarray(index), np.asarray(used)
        for m, n in enumerate(rows):  # each chunk of m once, in order, in m's lane
            k = -(-n // chunk)
            steps = np.asarray(step_of)[m, :k]
            lane = int(np.asarray(lane_of)[m])
            assert np.array_equal(np.diff(steps), np.ones(k - 1))
            assert (matrix[steps, lane] == m).all() and (index[steps, lane] == np.arange(k)).all()
            assert used[steps, lane].all() and np.asarray(reset)[steps[0], lane]
        assert used.sum() == sum(-(-n // chunk) for n in rows)
    workers, chunks = [1, 2, 3, 8], [1, 7]
    features = np.asarray(balance.grid_features(stacked, ["dynamic_chunks"], workers, chunks, 8))
    for m, matrix in enumerate(mats):
        for w, count in enumerate(workers):
            for c, chunk in enumerate(chunks):
                items = partition.partition("dynamic_chunks", matrix, count, chunk=chunk).items()
                model = features[m, 0, w, c, :count, 0] + features[m, 0, w, c, :count, 1]
                assert np.array_equal(model, items), (m, count, chunk)
