"""``perfjax tune SCENARIO --kernel spmm --matrix FILE --budget 60 --out DIR``: tune a generated
C kernel's schedule on a real matrix.

DIR receives the study (``study.jsonl``, append-only: rerunning with the same DIR resumes it and
counts its evaluations against the budget), ``convergence.png`` (best time so far against the
evaluation, the default schedule as a horizontal line) and ``summary.json`` (best and default
configurations and times, speedup). A live progress line on stderr shows the evaluation, the
best time so far and the time per evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from perfjax.cli import write_atomic

STUDY_FILE = "study.jsonl"
PLOT_FILE = "convergence.png"
SUMMARY_FILE = "summary.json"
MODEL_KERNELS = ("spmv", "spmm")  # the kernels the load-balance model prices (--model-prior)


def register(commands: Any) -> None:
    """Add the ``tune`` subcommand to the CLI's subparsers ``commands``."""
    from perfjax.bench.kernel_tuning import DEFAULT_WIDTH, KERNELS, STATISTICS
    from perfjax.cli import _output_dir, _positive_int, _seed

    tune = commands.add_parser(
        "tune", help="tune a generated C kernel's schedule on a matrix (study, plot, summary)",
        description="Tune the schedule of one of perfjax's generated C/OpenMP kernels on a "
                    "MatrixMarket matrix. SCENARIO is a BaCO scenario file or builtin:NAME "
                    "(kernel-spmm, kernel-spmv, kernel-sddmm); its parameters must be ones the "
                    "kernel knows. DIR gets study.jsonl (rerun to resume), convergence.png and "
                    "summary.json.")
    tune.add_argument("scenario", metavar="SCENARIO")
    tune.add_argument("--kernel", required=True, choices=KERNELS)
    tune.add_argument("--matrix", required=True, metavar="FILE", help="MatrixMarket (.mtx) file")
    tune.add_argument("--budget", type=_positive_int, default=60,
                      help="evaluations, those of a resumed study included (default 60)")
    tune.add_argument("--out", required=True, metavar="DIR", type=_output_dir,
                      help="output directory")
    tune.add_argument("--strategy", default="bo", choices=("bo", "random"),
                      help="search strategy (default bo)")
    tune.add_argument("--seed", type=_seed, default=0)
    tune.add_argument("--width", type=_positive_int, default=DEFAULT_WIDTH,
                      help=f"K, columns of the dense operands of spmm / sddmm (default "
                           f"{DEFAULT_WIDTH})")
    tune.add_argument("--repeats", type=_positive_int, default=9,
                      help="timed kernel repetitions per evaluation (default 9)")
    tune.add_argument("--statistic", choices=STATISTICS, default="median",
                      help="an evaluation's value: the median of its repetitions (default) or "
                           "the fastest (robust on a busy machine)")
    tune.add_argument("--model-prior", action=argparse.BooleanOptionalAction, default=None,
                      help="the load-balance model (calibrated first on generated matrices, "
                           "~15-20 s) as the GP's prior mean: on by default for bo on spmv and "
                           "spmm, where plain bo lost to random search on 2 of 3 real matrices "
                           "(benchmarks/tune_kernels.py); --no-model-prior runs plain bo")


def run(args: argparse.Namespace) -> int:
    """Run ``perfjax tune``; bad input raises a PerfjaxError (the CLI prints one line, exit 2)."""
    from perfjax import scenarios, tune
    from perfjax.bench.kernel_tuning import KernelObjective, default_result
    from perfjax.errors import PerfjaxError
    from perfjax.progress import ProgressLine
    from perfjax.study import Study

    from perfjax.errors import SpaceError

    space = scenarios.resolve(args.scenario)
    try:
        objective = KernelObjective(args.kernel, args.matrix, space=space, width=args.width,
                                    repeats=args.repeats, seed=args.seed,
                                    statistic=args.statistic)
    except SpaceError as exc:  # name the scenario as the user wrote it, not its internal name
        message = str(exc).removeprefix(f"scenario {space.name!r}: ")
        raise SpaceError(f"scenario {args.scenario}: {message}") from None
    options = {}
    if args.model_prior is None:  # default: the model prior wherever the model prices the kernel
        args.model_prior = args.strategy == "bo" and args.kernel in MODEL_KERNELS
    if args.model_prior:
        from perfjax.bench.kernel_tuning import (ModelPrior, calibrate_model,
                                                 calibration_cache_dir, check_model_kernel)
        if args.strategy != "bo":
            raise PerfjaxError("--model-prior needs --strategy bo")
        check_model_kernel(args.kernel)
        cached = calibration_cache_dir()
        print("calibrating the load-balance model on generated matrices"
              + (f" (measurements kept in {cached})" if cached else "") + " ...", file=sys.stderr)
        options["prior_mean"] = ModelPrior(objective, calibrate_model(args.kernel, args.width))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerfjaxError(f"--out {out}: cannot create the directory: "
                           f"{exc.strerror or exc}") from None
    # Opened here, before any output, so a study of another space fails as one line.
    measurement = _measurement(args)
    study = Study(out / STUDY_FILE, space=space.to_baco_json(),
                  metadata={"space_name": space.name, **measurement})
    try:
        _check_resume(study, space, measurement)
        label = f"tune {args.kernel} {Path(args.matrix).stem}"
        # a live bar on a terminal; in a log, one line per evaluation
        with ProgressLine(label, "eval", total=args.budget,
                          initial=min(len(study), args.budget), interval=0) as bar:
            def progress(step) -> None:
                best = "none valid yet" if step.best_config is None else \
                    f"best {step.best_value * 1e3:.4g} ms"
                bar.update(n=step.evaluation, postfix=f"{best}, last {step.seconds:.2f} s/eval")
            result = tune(space, objective, strategy=args.strategy, budget=args.budget,
                          study=study, seed=args.seed, callback=progress, **options)
    finally:
        study.close()
    default = default_result(space, objective, result.records)
    summary = _summary(args, result, objective.default_config(), default)
    plot_convergence(result.records, default["value"] if default["valid"] else None,
                     out / PLOT_FILE, title=f"{args.kernel} on {Path(args.matrix).name} "
                                            f"({args.strategy}"
                                            f"{' + model prior' if args.model_prior else ''}, "
                                            f"seed {args.seed})")
    write_atomic(out / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    best, base = summary["best_seconds"], summary["default_seconds"]
    print(f"evaluations  {summary['evaluations']} ({summary['valid_evaluations']} valid)"
          + (", every configuration of the space tried" if result.exhausted else ""))
    print(f"default      {_ms(base)}" + ("" if default["valid"] else
                                         f" (failed: {default.get('error')})"))
    print(f"best         {_ms(best)}  {json.dumps(summary['best_config'])}")
    if summary["speedup"] is not None:
        print(f"speedup      {summary['speedup']:.3g}x over the default schedule")
    print(f"wrote        {out / STUDY_FILE}, {out / PLOT_FILE}, {out / SUMMARY_FILE}")
    return 0


# What a study's values depend on besides the configuration: resuming a study with any of
# these changed would mix measurements of different experiments.
MEASUREMENT_KEYS = ("kernel", "matrix_sha256", "width", "repeats", "statistic")


def _measurement(args: argparse.Namespace) -> dict:
    import hashlib
    digest = hashlib.sha256()
    with open(args.matrix, "rb") as handle:  # read_matrix above has checked the file
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"kernel": args.kernel, "matrix": str(args.matrix),
            "matrix_sha256": digest.hexdigest(), "width": args.width, "repeats": args.repeats,
            "statistic": args.statistic}


def _check_resume(study, space, measurement: dict) -> None:
    """Refuse to resume a study measured differently (another matrix, kernel, width, repeats or
    statistic) or holding configurations outside the space, before anything is measured."""
    from perfjax.errors import PerfjaxError
    from perfjax.tuning import check_replay
    stored = study.header["metadata"]
    changed = [key for key in MEASUREMENT_KEYS
               if key in stored and stored[key] != measurement[key]]
    if changed:
        what = ", ".join(f"{key} {stored[key]!r} -> {measurement[key]!r}" for key in changed
                         if key != "matrix_sha256")
        if "matrix_sha256" in changed:
            what = ", ".join(filter(None, [f"another matrix ({stored.get('matrix')} -> "
                                           f"{measurement['matrix']}, contents differ)", what]))
        raise PerfjaxError(f"{study.path}: this study was measured with different settings "
                           f"({what}); use another --out to start a new study")
    records = study.records
    check_replay(space, study, records, [r.config for r in records])  # tune's own check, early


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.4g} ms"


def _summary(args: argparse.Namespace, result, default_config: dict, default: dict) -> dict:
    """What summary.json holds."""
    valid = [r for r in result.records if r.valid]
    failures = Counter(str(r.error).split(":")[0] for r in result.records if not r.valid)
    best = result.best_value if result.best_config is not None else None
    base = default["value"] if default["valid"] else None
    return {
        "kernel": args.kernel, "matrix": str(args.matrix), "scenario": args.scenario,
        "strategy": args.strategy, "model_prior": bool(args.model_prior), "seed": args.seed,
        "budget": args.budget,
        "width": args.width, "repeats": args.repeats, "statistic": args.statistic,
        "evaluations": len(result.records), "valid_evaluations": len(valid),
        "space_exhausted": bool(result.exhausted),
        "failures": dict(failures.most_common(5)),
        "best_config": result.best_config, "best_seconds": best,
        "default_config": default_config, "default_seconds": base,
        "default_error": None if default["valid"] else default.get("error"),
        "speedup": base / best if best and base else None,
        "study": result.study_path,
    }


def plot_convergence(records: list, default_seconds: float | None, path: Path,
                     title: str = "") -> None:
    """Write a PNG of every valid evaluation's time and the best so far (log scale, ms) against
    the evaluation number, with the default schedule's time as a horizontal line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    steps = list(range(1, len(records) + 1))
    values = [r.values.get("value", math.nan) * 1e3 if r.valid else math.nan for r in records]
    best, running = [], math.inf
    for value in values:
        running = min(running, value) if math.isfinite(value) else running
        best.append(running if math.isfinite(running) else math.nan)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, values, "o", ms=3, alpha=0.4, color="tab:gray", label="evaluation")
    ax.step(steps, best, where="post", color="tab:blue", label="best so far")
    failed = [s for s, r in zip(steps, records) if not r.valid]
    if failed:  # marked at the bottom of the plot: a failed run has no time
        finite = [v for v in values if math.isfinite(v)] + \
            ([default_seconds * 1e3] if default_seconds is not None else [])
        low = min(finite, default=1.0)
        ax.plot(failed, [low] * len(failed), "x", color="tab:red", label="failed")
    if default_seconds is not None:
        ax.axhline(default_seconds * 1e3, color="tab:orange", ls="--", label="default schedule")
    ax.set_yscale("log")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("kernel time (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=110, format="png")
    finally:
        plt.close(fig)
    write_atomic(Path(path), buffer.getvalue())

