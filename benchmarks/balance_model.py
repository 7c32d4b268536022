"""Load-balance model throughput: (matrix, strategy, worker count) evaluations per second.

Evaluates every strategy x worker count on a set of matrices with ``balance.evaluate_grid``
(after compilation; the per-matrix prefix sums prepared once, as a design-space exploration
reuses them for every configuration and cost vector) and, side by side, computes the same
partitions with the numpy partitioners of ``perfjax.schedulers.partition`` (the reference the
model's counters are tested against). Prints evaluations per second per strategy, overall, the
ratio model / numpy, and whether the target (>= 1e6 evaluations/s) is met.

Also prints the rate of pricing the cached counters under many cost vectors (what a calibration
or a gradient search over cost terms does: the partitions do not depend on the cost), and the
time of dynamic chunks' greedy chain alone, the bound it sets on the whole grid's rate.

Usage: python benchmarks/balance_model.py [--matrices DIR] [--workers 1,2,4,8,16,32,64] [--chunk 16]
       [--costs 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import perfjax  # noqa: F401  (JAX x64)
from perfjax.data import data_dir
from perfjax.models import balance
from perfjax.schedulers import partition
from perfjax.workloads import sparse


def best_time(fn, repeats: int = 20) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - started)
    return best


def load(directory: Path | None) -> dict:
    if directory is not None and directory.is_dir():
        from perfjax.validate.balance import load_matrices
        return load_matrices(directory)  # *.mtx and SuiteSparse's NAME/NAME.mtx
    print("no real matrices found: using generated ones")
    return {name: sparse.generated(name) for name in ("powerlaw-4k", "rmat-12", "banded-4k")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", default=None)
    parser.add_argument("--workers", default="1,2,4,8,16,32,64")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--costs", type=int, default=256,
                        help="cost vectors priced at once on the cached counters")
    args = parser.parse_args()
    default = (data_dir() or Path("missing")) / "matrices"
    matrices = load(Path(args.matrices) if args.matrices else default)
    workers = [int(w) for w in args.workers.split(",")]
    stacked = sparse.stack_stats([sparse.stats(m) for m in matrices.values()])
    prepared = balance.prepare(stacked)
    cost = balance.BalanceCost()
    count = len(matrices) * len(workers)
    print(f"{len(matrices)} matrices (up to {stacked.row_lengths.shape[1]} rows), workers "
          f"{workers}, chunk {args.chunk}; evaluations per second after compile")
    print(f"{'strategy':<16}{'model /s':>12}{'numpy /s':>12}{'ratio':>8}")
    model_total = numpy_total = 0.0
    for name in balance.STRATEGY_CODES:
        t_model = best_time(lambda: balance.evaluate_grid(prepared, [name], workers, [args.chunk],
                                                          cost, max(workers)))
        def reference():
            for m in matrices.values():
                for w in workers:
                    partition.partition(name, m, w, chunk=args.chunk).items()
        t_numpy = best_time(reference, repeats=2)
        model_total, numpy_total = model_total + t_model, numpy_total + t_numpy
        print(f"{name:<16}{count / t_model:12.3g}{count / t_numpy:12.3g}{t_numpy / t_model:8.1f}")
        if name == "dynamic_chunks":
            dynamic_seconds = t_model
    all_at_once = best_time(lambda: balance.evaluate_grid(prepared, list(balance.STRATEGY_CODES),
                                                          workers, [args.chunk], cost, max(workers)))
    with_prepare = best_time(lambda: balance.evaluate_grid(stacked, list(balance.STRATEGY_CODES),
                                                           workers, [args.chunk], cost, max(workers)))
    n_all = count * len(balance.STRATEGY_CODES)
    print(f"all strategies in one call: {n_all / all_at_once:.3g} evaluations/s "
          f"({n_all / with_prepare:.3g}/s including the prefix sums); numpy partitioners "
          f"{n_all / numpy_total:.3g}/s; ratio {numpy_total / all_at_once:.1f}x")
    width = stacked.row_lengths.shape[1]
    misses = np.stack([np.pad(sparse.gather_misses(m), (0, width - m.shape[0]))
                       for m in matrices.values()])
    prepared_misses = balance.prepare(stacked, misses)
    with_misses = best_time(lambda: balance.evaluate_grid(
        prepared_misses, list(balance.STRATEGY_CODES), workers, [args.chunk], cost, max(workers)))
    print(f"all strategies with the cache-miss term (row misses given): "
          f"{n_all / with_misses:.3g} evaluations/s")
    # A calibration, sensitivity study or gradient search over cost terms prices the same
    # partitions under many cost vectors: the counters once, then one matrix product per batch.
    features = balance.grid_features(prepared, list(balance.STRATEGY_CODES), workers, [args.chunk],
                                     max(workers))
    costs = np.random.default_rng(0).uniform(0.5, 2.0, (args.costs, len(balance.COST_TERMS))) \
        * np.asarray(cost.vector())
    pricing = best_time(lambda: balance.price_grid(features, costs))
    print(f"pricing the cached counters under {args.costs} cost vectors: "
          f"{n_all * args.costs / pricing:.3g} evaluations/s (counters computed once: "
          f"{n_all / all_at_once:.3g}/s above)")
    # The exact greedy assignment of dynamic chunks is one dependent step per chunk: the
    # matrices' chunk sequences are packed end to end into a few lanes (all lanes and worker
    # counts advance together), a sequential chain of about the largest matrix's chunks. Timed
    # alone (the same scan on lanes of the same shape) it bounds the whole grid's rate.
    rows = tuple(int(r) for r in np.asarray(stacked.n_rows))
    padded = int(stacked.row_lengths.shape[1])
    lanes, packs = balance._lane_packing(rows, padded, (args.chunk,))
    steps = int(packs[0][0].shape[0])
    chain_lanes = lanes * len(workers)
    keys0 = jnp.tile(jnp.arange(max(workers), dtype=jnp.int32), (chain_lanes, 1))
    adds = jnp.asarray(np.random.default_rng(0).integers(1, 100, (steps, chain_lanes))
                       * max(workers), jnp.int32)
    restarts = jnp.zeros((steps, chain_lanes), bool)
    chain = jax.jit(balance._greedy_heads)
    chain_seconds = best_time(lambda: chain(adds, restarts, keys0))
    print(f"dynamic chunks: {len(rows)} matrices packed into {lanes} lanes x {len(workers)} worker "
          f"counts, a chain of {steps} dependent greedy steps per call: the chain alone "
          f"{chain_seconds * 1e3:.2f} ms ({chain_seconds / steps * 1e6:.2f} us a step), the whole "
          f"dynamic evaluation {dynamic_seconds * 1e3:.2f} ms; the chain alone allows at most "
          f"{n_all / chain_seconds:.3g} evaluations/s of all strategies at this batch")
    print(f"target >= 1e6 evaluations/s (counters and pricing per evaluation): "
          f"{'met' if n_all / all_at_once >= 1e6 else 'MISSED'}")


if __name__ == "__main__":
    main()
