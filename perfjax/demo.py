"""``perfjax demo``: the end-to-end tour on built-in workloads that need no downloaded data.

Each capability of perfjax contributes one section; a section prints what it did and the numbers
a researcher would want to see, and fails loudly if a check it makes does not hold.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _header(index: int, total: int, title: str) -> None:
    print(f"\n[{index}/{total}] {title}\n" + "-" * (len(title) + 8))


def section_spaces(seed: int) -> None:
    from perfjax import Space, scenarios
    from perfjax.study import Study

    scenario = scenarios.scenario("taco-spmm")
    space = Space.from_baco_json(scenario)
    kinds = ", ".join(f"{n} ({p.kind})" for n, p in space.params.items())
    print(f"TACO SpMM schedule space, read from a BaCO scenario: {kinds}")
    for c in space.constraints:
        print(f"  constraint: {c.text}")

    n = 100_000
    space.sample(n, seed=seed)  # compile once; the timed call reuses the compiled sampler
    t0 = time.perf_counter()
    batch = space.sample(n, seed=seed + 1)
    batch[space.names[0]].block_until_ready()
    seconds = time.perf_counter() - t0
    feasible = np.asarray(space.feasible(batch))
    assert feasible.all(), "sampler returned an infeasible configuration"
    fraction, stderr = space.estimate_feasible_fraction(65536, seed=seed)
    print(f"sampled {n:,} feasible configurations in {seconds:.2f} s ({n / seconds:,.0f}/s); "
          f"the vectorized check agrees on all {feasible.sum():,}")
    print(f"feasible share of the {space.size():,.0f}-configuration space: "
          f"{100 * fraction:.2f}% +- {100 * stderr:.2f}%")
    first = space.to_dicts({k: v[:2] for k, v in batch.items()})
    for config in first:
        print(f"  {json.dumps(config)}")

    features = space.embed(batch, permutation="kendall")
    groups = ", ".join(f"{g.name}:{g.encoding}[{g.stop - g.start}]"
                       for g in space.feature_groups("kendall"))
    print(f"surrogate features {tuple(features.shape)}: {groups}")
    relaxed = space.relax(batch)
    back = space.round(relaxed)
    same = all(np.allclose(np.asarray(back[k]), np.asarray(batch[k])) for k in space.names)
    assert same, "round(relax(batch)) != batch"
    soft = space.soften({k: v[:1] for k, v in relaxed.items()}, temperature=2.0)
    print(f"relaxation for gradient search: round(relax(batch)) == batch: {same}; "
          f"soft permutation rows sum to {np.asarray(soft['permutation'][0]).sum(1).round(6)}")
    neighbours, parent = space.neighbors({k: v[:1] for k, v in batch.items()})
    print(f"local search: configuration 0 has {len(parent)} feasible one-move neighbours")

    rise = scenarios.load("rise-mm")
    fraction, stderr = rise.estimate_feasible_fraction(32768, seed=seed)
    t0 = time.perf_counter()
    rise_batch = rise.sample(10_000, seed=seed)
    seconds = time.perf_counter() - t0
    assert np.asarray(rise.feasible(rise_batch)).all()
    print(f"RISE/ELEVATE MM space (ten integers in [1, 1024]): feasible share {fraction:.2g} "
          f"(+- {stderr:.1g}), so rejection sampling would need ~{1 / fraction:.0e} draws per point; "
          f"forward-checked sampling drew 10,000 feasible points in {seconds:.1f} s "
          f"(first call includes JIT compilation)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.jsonl"
        with Study(path, space=space.to_baco_json()) as study:
            for config in space.to_dicts({k: v[:20] for k, v in batch.items()}):
                # A stand-in objective for the tour: the real kernels arrive with their own section.
                cost = config["chunk_size"] / config["unroll_factor"] + config["omp_num_threads"] ** 0.5
                study.append(config, cost, wall_time=0.0)
        reopened = Study(path, read_only=True)
        best = reopened.best()
        print(f"study log: {len(reopened)} records written with fsync, reopened from {path.name}; "
              f"best value {best.values['value']:.2f}")


def section_balance(seed: int) -> None:
    import jax.numpy as jnp

    from perfjax.models import balance
    from perfjax.schedulers import partition
    from perfjax.workloads import sparse

    matrix = sparse.powerlaw_rows(20_000, 20_000, 400_000, alpha=1.1, seed=seed)
    lengths = np.diff(matrix.indptr)
    print(f"generated power-law matrix: {matrix.shape[0]:,} rows, {matrix.nnz:,} nonzeros; the "
          f"longest row holds {lengths.max():,} ({100 * lengths.max() / matrix.nnz:.1f}% of all)")
    stats = sparse.stats(matrix)
    print(f"{'strategy':<16}" + "".join(f"{f'P={p}':>9}" for p in (2, 8, 32, 64))
          + "   (imbalance: max / mean merged work; the model's count equals the partitioner's)")
    for strategy, code in balance.STRATEGY_CODES.items():
        cells = []
        for workers in (2, 8, 32, 64):
            part = partition.partition(strategy, matrix, workers, chunk=64)
            work = balance.worker_work_jit(stats.row_lengths, stats.n_rows, jnp.asarray(code),
                                           workers, 64, max_workers=64)
            exact = (np.asarray(work.rows)[:workers] == part.work()[:, 0]).all() and \
                (np.asarray(work.nnz)[:workers] == part.work()[:, 1]).all()
            assert exact, f"model and partitioner disagree for {strategy}, P={workers}"
            cells.append(f"{part.imbalance():9.2f}")
        print(f"{strategy:<16}" + "".join(cells))

    import shutil
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        print("no C compiler found: skipping the measured part of this section")
        return
    from perfjax.bench import kernel_tuning
    from perfjax.validate import balance as validation

    # the calibration `perfjax tune` uses for its model prior (its measurements cached in
    # kernel_tuning.calibration_cache_dir(): a second demo or tune run fits them again)
    fitted = kernel_tuning.calibrate_model("spmv")
    cached = kernel_tuning.calibration_cache_dir()
    cached = cached if cached is not None and cached.is_dir() else None  # not made: a warning
    print("generated C SpMV, each of 8 workers timed alone on one core; model costs calibrated on "
          "the generated matrices of perfjax.validate.balance.calibration_matrices (skewed, "
          "graph-like, banded, random; not this matrix"
          + (f"; measurements kept in {cached}" if cached else "") + "):")
    for strategy in ("row_blocks", "merge_path"):
        rows = validation.measure_matrix("demo", matrix, validation.Settings(
            kernels=("spmv",), workers=(8,), strategies=(strategy,), repeats=5))
        row = rows[0]
        predicted = fitted.predict(row) * 1e6
        measured = row["worker_seconds"] * 1e6
        print(f"  {strategy:<11} predicted us " + " ".join(f"{v:6.0f}" for v in predicted))
        print(f"  {'':<11} measured  us " + " ".join(f"{v:6.0f}" for v in measured)
              + f"   makespan {measured.max():.0f} us, work counters exact: {row['work_exact']}")
    from perfjax.kernels import c as ckernels

    top = fitted.bin_rows(matrix, "spmv")
    x = np.random.default_rng(seed).standard_normal(matrix.shape[1])
    plain = ckernels.spmv(matrix, x, repeats=50)
    predicted = fitted.single_thread_time(matrix, "spmv")
    line = (f"single-thread SpMV, plain rows: predicted {predicted * 1e6:.0f} us, measured "
            f"{plain.best * 1e6:.0f} us")
    if top is None:
        line += "; the model predicts no gain from row-length binning here"
    else:
        binned = ckernels.spmv(matrix, x, repeats=50, bin_rows=top)
        predicted_binned = fitted.single_thread_time(matrix, "spmv", bin_rows=top)
        line += (f"\n  rows of <= {top} nonzeros binned by length (the model's pick: no "
                 f"mispredicted loop exits): predicted {predicted_binned * 1e6:.0f} us "
                 f"({predicted / predicted_binned:.2f}x), measured {binned.best * 1e6:.0f} us "
                 f"({plain.best / binned.best:.2f}x); the branch-miss term is the model's "
                 "least certain (README)")
    print(line)


def section_tuning(seed: int) -> None:
    import shutil

    import perfjax
    from perfjax.bench import kernel_tuning
    from perfjax.workloads import sparse

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        print("no C compiler found: skipping the kernel-tuning section")
        return
    matrix = sparse.powerlaw_rows(4_000, 4_000, 60_000, alpha=1.2, seed=seed)
    # the fastest of 20 timed runs (a few ms in all): on a shared machine, preemption only ever
    # adds time, and a burst of other work can spoil a whole short process
    objective = kernel_tuning.KernelObjective("spmm", matrix, repeats=20, seed=seed,
                                              statistic="min")
    space = objective.space
    print(f"tuning the generated C SpMM (K={objective.width}) on a {matrix.shape[0]:,}-row power-law "
          f"matrix; space: {', '.join(space.params)}")
    default = None  # BO evaluates the default first: one measurement for both strategies
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("bo", "random"):
            started = time.perf_counter()
            result = perfjax.tune(space, objective, strategy=strategy, budget=10, seed=seed,
                                  study=Path(tmp) / f"{strategy}.jsonl")
            elapsed = time.perf_counter() - started
            if default is None:
                measured = kernel_tuning.default_result(space, objective, result.records)
                default = measured["value"] if measured["valid"] else float("nan")
                print(f"  default schedule: {default * 1e3:.3f} ms (BO's own evaluation of it; "
                      f"repeated timings on a shared machine differ by 10-30%)")
            failed = sum(not r.valid for r in result.records)
            print(f"  {strategy:<6} best of 10: {result.best_value * 1e3:.3f} ms "
                  f"({default / result.best_value:.2f}x the default, {failed} failed "
                  f"evaluations, {elapsed:.1f} s): {result.best_config}")


def section_moe(seed: int) -> None:
    from perfjax import hardware
    from perfjax.cli_moe import compare_policies, routing_steps
    from perfjax.workloads import moe

    hw = hardware.system("h100")
    print("Decode step of one MoE layer on 8 H100s with HBM-PIM (4x internal bandwidth), "
          "256 tokens, power-law routing (alpha 1.2); the model vs the event-level simulator:")
    print(f"  {'model':<20}" + "".join(f"{p:>18}" for p in ("gpu_only", "static_pim",
                                                              "static_threshold", "dynamic"))
          + "   dynamic/best static   model vs sim")
    for name in ("qwen3-30b-a3b", "gpt-oss-120b", "qwen3.5-397b-a17b"):
        cfg = moe.model_config(name)
        routing = routing_steps("powerlaw:1.2", cfg, 256, "decode", seed=seed, steps=3)
        report = compare_policies(hw, cfg, routing.steps, devices=8)
        cells = "".join(f"{report['policies'][p]['tokens_per_s']:>12,.0f} tok/s"
                        for p in ("gpu_only", "static_pim", "static_threshold", "dynamic"))
        print(f"  {name:<20}{cells}   {report['dynamic_over_best_static']:>10.2f}x"
              f"{report['model_vs_sim_mape']:>14.1f}% MAPE")


SECTIONS = [("Search spaces: constraints, feasible sampling, encodings, study log", section_spaces),
            ("Load balance: partitioning a skewed matrix, the model's per-worker work",
             section_balance),
            ("Autotuning: Bayesian optimization vs random search on a generated C kernel",
             section_tuning),
            ("MoE on GPU + HBM-PIM: expert placement policies, model vs reference simulator",
             section_moe)]


def run_demo(seed: int = 0) -> int:
    print("perfjax demo: a tour on built-in workloads (no downloaded data needed)")
    started = time.perf_counter()
    for i, (title, section) in enumerate(SECTIONS, start=1):
        _header(i, len(SECTIONS), title)
        section(seed)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s")
    return 0
