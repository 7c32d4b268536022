"""Throughput of constraint checking and feasible sampling, perfjax vs plain numpy, in one process.

Scenario: builtin:taco-mttkrp7 (six ordinal/categorical schedule knobs and a 7-item loop-order
permutation tied by cross-parameter constraints). Targets on a 2-core machine: >= 1e6
configurations/s checked and >= 2e5 feasible configurations/s sampled.

References, run beside perfjax on the same configurations:
* checking: the constraint strings evaluated column-wise with numpy (how BaCO evaluates them,
  with numexpr), permutation variables P_k / P_ik materialized per batch;
* sampling: vectorized numpy rejection sampling (uniform draws, keep the feasible ones).

Usage: python benchmarks/space_bench.py [--configs 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import perfjax
from perfjax import scenarios


def numpy_feasible(space, batch: dict) -> np.ndarray:
    """Reference check: every constraint text evaluated by Python over numpy columns."""
    namespace: dict = {"abs": np.abs, "min": np.minimum, "max": np.maximum, "where": np.where,
                       "sqrt": np.sqrt, "log": np.log, "exp": np.exp}
    for name, param in space.params.items():
        column = np.asarray(batch[name])
        if param.kind == "permutation":
            position = np.argsort(column, axis=1)
            for k in range(param.n):
                namespace[f"{name}_{k}"] = column[:, k]
                namespace[f"{name}_i{k}"] = position[:, k]
        else:
            namespace[name] = column
    ok = np.ones(len(np.asarray(batch[space.names[0]])), dtype=bool)
    for c in space.constraints:
        text = c.text
        for name, param in space.params.items():  # categorical literals -> indices, as BaCO does
            if param.kind == "categorical":
                for i, v in enumerate(param.values):
                    text = text.replace(f"'{v}'", str(i)).replace(f'"{v}"', str(i))
        ok &= np.asarray(eval(text, {"__builtins__": {}}, namespace), dtype=bool)
    return ok


def uniform_batch(space, n: int, rng: np.random.Generator) -> dict:
    """n configurations drawn uniformly from the domains, ignoring constraints."""
    batch = {}
    for name, param in space.params.items():
        if param.kind == "permutation":
            batch[name] = np.argsort(rng.random((n, param.n)), axis=1)
        elif param.kind == "categorical":
            batch[name] = rng.integers(0, len(param.values), n)
        elif param.kind == "ordinal":
            batch[name] = rng.choice(param.values_array(), n)
        elif param.kind == "integer":
            batch[name] = rng.integers(param.lo, param.hi + 1, n)
        else:
            batch[name] = rng.uniform(param.lo, param.hi, n)
    return batch


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenario", default="builtin:taco-mttkrp7")
    args = parser.parse_args()
    n = args.configs
    space = scenarios.resolve(args.scenario)
    rng = np.random.default_rng(0)
    print(f"perfjax {perfjax.__version__}: {args.scenario}, {len(space)} parameters, "
          f"{len(space.constraints)} constraints, {n:,} configurations, best of {args.repeats}")

    # --- checking: half uniform (mostly infeasible), half feasible configurations
    mixed = uniform_batch(space, n // 2, rng)
    feasible_half = {k: np.asarray(v) for k, v in space.sample(n - n // 2, seed=1).items()}
    batch = {k: np.concatenate([mixed[k], feasible_half[k]]) for k in space.names}
    ours = np.asarray(space.feasible(batch))  # compiles
    reference = numpy_feasible(space, batch)
    assert (ours == reference).all(), "perfjax and the numpy reference disagree"
    t_ours = best_of(args.repeats, lambda: space.feasible(batch).block_until_ready())
    t_ref = best_of(args.repeats, lambda: numpy_feasible(space, batch))
    print(f"check   perfjax {n / t_ours:>14,.0f} configs/s   numpy {n / t_ref:>14,.0f} configs/s   "
          f"ratio {t_ref / t_ours:5.1f}x   (target >= 1e6/s: {'met' if n / t_ours >= 1e6 else 'MISSED'})")

    # --- sampling n feasible configurations
    space.sample(n, seed=2)  # compiles the large-chunk sampler
    t_ours = best_of(args.repeats, lambda: space.sample(n, seed=3)[space.names[0]].block_until_ready())

    def rejection() -> int:
        got, local = 0, np.random.default_rng(1)
        while got < n:
            draw = uniform_batch(space, n, local)
            got += int(numpy_feasible(space, draw).sum())
        return got

    t_ref = best_of(args.repeats, rejection)
    print(f"sample  perfjax {n / t_ours:>14,.0f} feasible/s  numpy {n / t_ref:>14,.0f} feasible/s  "
          f"ratio {t_ref / t_ours:5.1f}x   (target >= 2e5/s: {'met' if n / t_ours >= 2e5 else 'MISSED'})")

    # --- a space where rejection cannot work at all
    rise = scenarios.load("rise-mm")
    fraction, stderr = rise.estimate_feasible_fraction(65536)
    m = 100_000
    rise.sample(m, seed=0)
    t_ours = best_of(1, lambda: rise.sample(m, seed=1)[rise.names[0]].block_until_ready())
    uniform = uniform_batch(rise, m, rng)
    hits = int(numpy_feasible(rise, uniform).sum())
    print(f"rise-mm perfjax {m / t_ours:>14,.0f} feasible/s  numpy rejection: {hits} feasible in "
          f"{m:,} draws (feasible share {fraction:.2g} +- {stderr:.1g})")


if __name__ == "__main__":
    main()
