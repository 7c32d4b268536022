"""``perfjax bench tabular``: compare search strategies on a table of real measurements."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``bench`` command (subcommand ``tabular``) to the CLI's subparsers."""
    from perfjax.bench.tabular import STRATEGIES
    from perfjax.cli import (_Parser, _choices_list, _non_negative_int, _output_path,
                             _positive_int)

    bench = commands.add_parser("bench", help="benchmark search strategies on real measurements",
                                description="Benchmark perfjax's search strategies.")
    sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", parser_class=_Parser)
    tabular = sub.add_parser(
        "tabular", help="strategies on a bacobench table (nearest-row objective)",
        description="Run each strategy for SEEDS seeds on a table of measured configurations "
                    "(every non-measurement column a parameter; a configuration scores the "
                    "compute_time of its nearest row) and report the median quality "
                    "(table best / best found) at budgets 10, 20, 40 and 60.")
    tabular.add_argument("table", metavar="TABLE.csv")
    tabular.add_argument("--strategies", type=_choices_list("strategy", STRATEGIES),
                         default=("bo", "random", "tpe"), help="comma-separated (default bo,random,tpe)")
    tabular.add_argument("--seeds", type=_positive_int, default=10, help="seeds per strategy (default 10)")
    tabular.add_argument("--first-seed", type=_non_negative_int, default=0,
                         help="first seed (default 0): later ones score a change on fresh seeds")
    tabular.add_argument("--budget", type=_positive_int, default=60,
                         help="evaluations per run (default 60)")
    tabular.add_argument("--bo-options", type=_json_object, default=None, metavar="JSON",
                         help="keyword arguments for the bo strategy, an ablation: e.g. "
                              "'{\"improvement_margin\": 0.0}' (recorded in the report)")
    tabular.add_argument("--json", metavar="OUT", type=_output_path,
                         help="also write the report as JSON to OUT")
    tabular.add_argument("--jobs", type=_positive_int, default=1,
                         help="seeds run in parallel processes (default 1); the same report, "
                              "but suggestion times include their contention for the cores")


def _json_object(text: str) -> dict:
    """A JSON object from the command line (argparse type: a bad one is a one-line error)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Execute ``perfjax bench tabular``; returns the exit status."""
    from perfjax.bench import tabular
    from perfjax.cli import _write_json
    from perfjax.errors import PerfjaxError

    if getattr(args, "bench_command", None) != "tabular":
        raise PerfjaxError("bench: missing subcommand (known: tabular; see perfjax bench --help)")
    if not Path(args.table).is_file():
        raise PerfjaxError(f"{args.table}: no such table file")

    def progress(name: str, seed: int, seconds: float) -> None:
        print(f"  {name} seed {seed}: {seconds:.1f} s", file=sys.stderr, flush=True)

    options = {"bo": args.bo_options} if args.bo_options else None
    pool = tabular.seed_pool(args.jobs)
    try:
        report = tabular.benchmark(args.table, args.strategies, seeds=args.seeds,
                                   budget=args.budget, progress=progress,
                                   first_seed=args.first_seed, options=options, executor=pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    budgets = list(next(iter(report["strategies"].values()))["quality"])
    print(f"table {report['table']}: median quality (table best / best found) over "
          f"{args.seeds} seeds from seed {args.first_seed}"
          + (f"; bo options {json.dumps(args.bo_options)}" if args.bo_options else ""))
    print(f"{'strategy':<12}" + "".join(f"{'@' + b:>8}" for b in budgets) + f"{'s/suggest':>11}")
    for name, row in report["strategies"].items():
        print(f"{name:<12}" + "".join(f"{row['quality'][b]:8.3f}" for b in budgets)
              + f"{row['seconds_per_suggestion']:11.3f}")
    if args.seeds > 1:  # how far the medians move with the seeds alone
        last = budgets[-1]
        spans = ", ".join(f"{name} {low:.3f}-{high:.3f}" for name, (_, low, high) in (
            (name, tabular.median_interval(row["per_seed"][last]))
            for name, row in report["strategies"].items()))
        print(f"90% bootstrap intervals over seeds of the median @{last}: {spans}")
    if args.json:
        _write_json(args.json, report)
    return 0
