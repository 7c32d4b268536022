"""The ``perfjax`` command line.

Every failure a user can cause (a bad scenario, a missing file, a bad argument) prints one line
``perfjax: error: ...`` on stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Sequence

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2) like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else a one-line error naming ``what``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")
MAX_SAMPLES = 10**7  # configurations one space command samples (a batch of them is in memory)


def _sample_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"at most {MAX_SAMPLES} configurations per call, got "
                                         f"{text} (run several seeds for more)")
    return value


MAX_SEED = 2**31 - 1 - 2**20  # room for the seed + i offsets the commands derive per run / step


def _seed(text: str) -> int:
    """An argparse type for --seed: an integer in [0, MAX_SEED]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed between 0 and {MAX_SEED}, got {text!r}")
    return value


def _output_path(text: str) -> str:
    """An argparse type for a file the command will write: non-empty, not a directory, and under
    a directory (existing or creatable), checked before any work is done."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, expected a file path")
    _check_parent(path, text)
    return text


def _check_parent(path: Path, text: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    import os
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not writable")
            return


def _output_dir(text: str) -> str:
    """An argparse type for an output directory: non-empty, not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path, got an empty string")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    _check_parent(path, text)
    return text


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choices_list(what: str, allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or text!r} "
                                             f"(known: {', '.join(allowed)})")
        return values
    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perfjax", description="Differentiable performance models, search "
                     "spaces and autotuners in JAX.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    space = commands.add_parser("space", help="check and sample search spaces (BaCO scenario files)",
                                description="Check and sample BaCO/HyperMapper scenario files. "
                                "SCENARIO is a path or builtin:NAME (taco-spmm, taco-mttkrp7, "
                                "rise-mm).")
    space_commands = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND",
                                          parser_class=_Parser)
    check = space_commands.add_parser(
        "check", help="validate a scenario, estimate its feasible fraction and sampling speed",
        description="Validate a scenario, estimate the fraction of its configurations that meet "
                    "the constraints, and measure feasible sampling throughput.")
    check.add_argument("scenario", metavar="SCENARIO")
    check.add_argument("--samples", type=_sample_count, default=100_000,
                       help="configurations to sample for the estimates (default 100000)")
    check.add_argument("--seed", type=_seed, default=0)
    check.add_argument("--json", metavar="OUT", type=_output_path,
                       help="also write the results as JSON to OUT")

    sample = space_commands.add_parser(
        "sample", help="write N feasible configurations as JSON lines to stdout",
        description="Write N feasible configurations as JSON lines (one dict per line keyed by "
                    "parameter name; permutations as lists) to stdout.")
    sample.add_argument("scenario", metavar="SCENARIO")
    sample.add_argument("-n", type=_sample_count, required=True,
                        help=f"how many configurations (at most {MAX_SAMPLES})")
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--prior", action="store_true",
                        help="draw from the parameters' priors instead of uniformly")

    validate = commands.add_parser("validate", help="validate models against real kernels",
                                   description="Validate perfjax's models against instrumented "
                                   "generated kernels.")
    validate_commands = validate.add_subparsers(dest="validate_command", metavar="SUBCOMMAND",
                                                parser_class=_Parser)
    vbalance = validate_commands.add_parser(
        "balance", help="load-balance model vs instrumented C kernels on a directory of matrices",
        description="For every matrix x kernel x strategy x worker count, run the instrumented "
                    "generated kernel (each worker timed alone on one core) and compare with the "
                    "load-balance model, whose costs are calibrated on generated matrices (and, "
                    "when a matrix's data overflow the L2 cache by far, on larger generated "
                    "matrices too: about two minutes more).")
    vbalance.add_argument("--matrices", required=True, metavar="DIR",
                          help="directory of MatrixMarket (.mtx) files to score (and "
                               "NAME/NAME.mtx in its subdirectories, as SuiteSparse unpacks)")
    vbalance.add_argument("--kernels", type=_choices_list("kernel", ("spmv", "spmm")),
                          default=("spmv", "spmm"), help="comma-separated (default spmv,spmm)")
    vbalance.add_argument("--workers", type=_int_list, default=(1, 2, 4, 8, 16, 32, 64),
                          help="comma-separated worker counts (default 1,2,4,8,16,32,64); a "
                               "matrix too small for some is validated at the others")
    vbalance.add_argument("--repeats", type=_positive_int, default=5,
                          help="kernel repetitions per configuration (default 5)")
    vbalance.add_argument("--processes", type=_positive_int, default=2,
                          help="processes per configuration, each worker's time the fastest "
                               "(default 2: a burst of other work on a shared machine slows a "
                               "whole process)")
    vbalance.add_argument("--json", required=True, metavar="OUT", type=_output_path,
                          help="write the report here")

    demo = commands.add_parser("demo", help="an end-to-end tour on built-in workloads",
                               description="An end-to-end tour of perfjax on built-in workloads "
                               "that need no downloaded data.")
    demo.add_argument("--seed", type=_seed, default=0)

    from perfjax import cli_tune
    cli_tune.register(commands)
    from perfjax import cli_moe
    cli_moe.register(commands)
    from perfjax import cli_bench
    cli_bench.register(commands)
    return parser


def _version() -> str:
    from perfjax import __version__
    return f"perfjax {__version__}"


def _space_check(args: argparse.Namespace) -> int:
    from perfjax import scenarios

    started = time.perf_counter()
    space = scenarios.resolve(args.scenario)
    with _naming(args.scenario):
        fraction, stderr = space.estimate_feasible_fraction(args.samples, seed=args.seed)
        space.sample(args.samples, seed=args.seed + 1)  # compiles; the timed run below reuses it
    t0 = time.perf_counter()
    batch = space.sample(args.samples, seed=args.seed + 2)
    batch[space.names[0]].block_until_ready()
    rate = args.samples / (time.perf_counter() - t0)
    default_violations = space.constraint_report(space.default())
    result = {
        "scenario": args.scenario,
        "parameters": len(space),
        "constraints": len(space.constraints),
        "feasible_fraction": fraction,
        "feasible_fraction_stderr": stderr,
        "samples_per_s": rate,
        "space_size": space.size(),
        "sampling_order": list(space.sampling_order),
        "default_feasible": not default_violations,
        "default_violates": default_violations,
        "seconds": time.perf_counter() - started,
    }
    kinds = ", ".join(f"{n}:{p.kind}" for n, p in space.params.items())
    print(f"scenario        {args.scenario} ({space.name})")
    print(f"parameters      {len(space)}  [{kinds}]")
    print(f"constraints     {len(space.constraints)}")
    print(f"space size      {space.size():.4g} configurations")
    print(f"feasible        {fraction:.4g} +- {stderr:.2g} of the space")
    print(f"sampling        {rate:,.0f} feasible configurations/s ({args.samples} sampled)")
    print(f"sampling order  {' -> '.join(space.sampling_order)}")
    print(f"default         {'feasible' if not default_violations else 'violates ' + '; '.join(default_violations)}")
    if args.json:
        _write_json(args.json, result)
    return 0


def _space_sample(args: argparse.Namespace) -> int:
    from perfjax import scenarios

    space = scenarios.resolve(args.scenario)
    with _naming(args.scenario):
        batch = space.sample(args.n, seed=args.seed, use_prior=args.prior)
    out = sys.stdout
    for config in space.to_dicts(batch):
        out.write(json.dumps(config) + "\n")
    out.flush()
    return 0


@contextlib.contextmanager
def _naming(scenario: str) -> Iterator[None]:
    """Errors found after loading (e.g. no feasible point) also name the scenario."""
    from perfjax.errors import SpaceError
    try:
        yield
    except SpaceError as exc:
        raise SpaceError(f"scenario {scenario}: {exc}") from None


def _validate_balance(args: argparse.Namespace) -> int:
    from perfjax.progress import ProgressLine
    from perfjax.validate import balance

    matrices = balance.load_matrices(args.matrices)
    settings = balance.Settings(kernels=tuple(args.kernels), workers=tuple(sorted(args.workers)),
                                repeats=args.repeats, processes=args.processes)
    # before the progress bar: one line if a matrix is too small for the worker counts, a
    # one-line warning if it is validated at fewer of them
    balance.check_workers(matrices, settings)
    # every matrix's measurements are kept as they complete: a rerun after a kill resumes
    log = balance.MeasurementLog(Path(args.json).with_name(Path(args.json).name + ".partial.jsonl"))
    if len(log):
        print(f"resuming: {len(log)} matrices measured before are read from {log.path}",
              file=sys.stderr)
    # a live bar on a terminal; in a log, a line every 30 s
    with ProgressLine("validate balance", "config", leave=False) as bar:
        def progress(label: str) -> None:
            bar.update(postfix=label)
        with warnings.catch_warnings():  # check_workers warned already
            warnings.simplefilter("ignore", balance.FewerWorkersWarning)
            report = balance.validate(matrices, settings, progress=progress, log=log)
    _write_json(args.json, report)
    log.path.unlink(missing_ok=True)  # the report holds everything now
    print(f"{'matrix':<26}{'spearman':>9}{'MAPE %':>9}  work exact  imbalance at P={max(args.workers)}")
    for name, row in report["matrices"].items():
        imbalance = " ".join(f"{k}={v:.2f}" for k, v in row["imbalance"].items())
        memory = sorted(k for k, v in row["regime"].items() if v == "memory")
        notes = (f"  [P<={max(row['workers'])}: too small for more]"
                 if max(row["workers"]) < max(args.workers) else "") + (
            f"  [memory regime: {','.join(memory)}]" if memory else "") + (
            "  [over twice the size of every calibration matrix: extrapolated]"
            if row["extrapolated"] else "")
        print(f"{name:<26}{row['spearman']:9.3f}{row['mape']:9.1f}  {str(row['work_exact']):<10}  "
              f"{imbalance}{notes}")
    calibrated = report["calibration"]
    print(f"median spearman {report['median_spearman']:.3f}, median MAPE "
          f"{report['median_mape']:.1f}% (costs calibrated on "
          f"{', '.join(calibrated['matrices'])}"
          + (f"; matrices beyond the L2 cache on {', '.join(calibrated['memory']['matrices'])}"
             if calibrated["memory"] else "") + ")")
    return 0


def _write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON (NaN and infinities as null: strict JSON) atomically."""
    write_atomic(Path(path), (json.dumps(_strict(payload), indent=2, allow_nan=False) + "\n")
                 .encode())


def _strict(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    import math
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename,
    so a kill mid-write never leaves a half-written file; failures raise PerfjaxError."""
    import os
    import uuid
    from perfjax.errors import PerfjaxError
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a fresh name opened exclusively (not mkstemp, whose 0600 mode would outlive the rename:
        # the report gets the permissions the umask gives any new file)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        blocking = next((p for p in path.absolute().parents if p.exists() and not p.is_dir()),
                        None)
        what = f"{blocking} is not a directory" if blocking else exc.strerror or exc
        raise PerfjaxError(f"cannot write {path}: {what}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so cleanup (temporary build directories, the study's lock)
    runs before the process exits."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings in the CLI: one line, no source excerpt."""
    stream = sys.stderr if file is None else file
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"perfjax: warning: {' '.join(str(message).split())}\n")


def main(argv: Sequence[str] | None = None, *, compilation_cache: bool = False) -> int:
    """Run the command line; returns the exit status. One-line warnings and SIGTERM handling
    are installed for the command's duration only (``main`` may run inside a notebook or test).
    ``compilation_cache``: turn on JAX's persistent compilation cache first (the executable
    does; it changes JAX's configuration for the rest of the process)."""
    import signal

    shown, terminate = warnings.showwarning, None
    warnings.showwarning = _one_line_warning
    with contextlib.suppress(ValueError):  # not the main thread: keep the default
        terminate = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv, compilation_cache)
    finally:
        warnings.showwarning = shown
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def _main(argv: Sequence[str] | None, compilation_cache: bool = False) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print("perfjax: error: missing command (see perfjax --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    for command, sub, known in (("space", "space_command", "check, sample"),
                                ("validate", "validate_command", "balance")):
        if args.command == command and getattr(args, sub) is None:
            print(f"perfjax: error: {command}: missing subcommand (known: {known}; see "
                  f"perfjax {command} --help)", file=sys.stderr)
            return EXIT_BAD_INPUT
    if compilation_cache:  # after parsing: --help and usage errors need no JAX
        from perfjax import compilation_cache as cache
        cache.enable()
    from perfjax.errors import PerfjaxError
    try:
        if args.command == "space":
            return {"check": _space_check, "sample": _space_sample}[args.space_command](args)
        if args.command == "validate":
            return _validate_balance(args)
        if args.command == "tune":
            from perfjax.cli_tune import run
            return run(args)
        if args.command == "moe":
            from perfjax import cli_moe
            return cli_moe.run(args)
        if args.command == "bench":
            from perfjax import cli_bench
            return cli_bench.run(args)
        if args.command == "demo":
            from perfjax.demo import run_demo
            return run_demo(seed=args.seed)
    except PerfjaxError as exc:
        print(f"perfjax: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `perfjax space sample ... | head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    except _Terminated:
        print("perfjax: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("perfjax: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        detail = " ".join(str(exc).split())[:200]
        print(f"perfjax: error: out of memory: the input is too large for this machine"
              f"{f' ({detail})' if detail else ''}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RecursionError:
        print("perfjax: error: an input is nested too deeply to read", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        import errno
        if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EIO,
                                                          errno.EDQUOT):
            raise
        # writing the results to stdout failed (e.g. a full disk): no traceback
        with contextlib.suppress(OSError, ValueError):
            print(f"perfjax: error: cannot write the output: {exc.strerror or exc}",
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    raise AssertionError(f"unhandled command {args.command}")


def console_main() -> int:
    """The ``perfjax`` executable: ``main`` with JAX's persistent compilation cache on
    (``perfjax.compilation_cache``: ~/.cache/perfjax/jax, ``PERFJAX_JAX_CACHE=off`` to disable),
    so a command compiles its programs once, not on every run."""
    return main(compilation_cache=True)


if __name__ == "__main__":
    sys.exit(console_main())
