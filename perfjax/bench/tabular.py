"""Tabular autotuning benchmark on real measurements (the bacobench TACO/RISE tables).

Protocol (fixed, so results compare across strategies and with published figures):

* every column other than compute_time, energy, iterations, repeats, wait_between_repeats and
  wait_after_run is a parameter: ``permutation`` a Permutation over its length, every other column
  an Ordinal over its sorted distinct values;
* a configuration's objective is the compute_time of the nearest table row, with distance = sum
  over ordinal columns of |rank difference| / (distinct values - 1) + (positions where the
  permutations differ) / n; rows with compute_time <= 0 are failed evaluations;
* quality at budget b = the table's best valid compute_time / the best valid value found in the
  first b evaluations (0 when none is valid); the median over seeds is reported.

Baselines: random search, and Optuna's TPE as the issue's reference measured it (``tpe``: every
ordinal a categorical choice, the loop order a choice among the table's own orders; its figures
reproduce the issue's to within 0.01) and with ordinals as ranks (``tpe-ordinal``).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from perfjax.errors import PerfjaxError, SpaceError, check_executor, check_integer

MEASUREMENT_COLUMNS = ("compute_time", "energy", "iterations", "repeats", "wait_between_repeats",
                       "wait_after_run")
PERMUTATION_COLUMN = "permutation"
DEFAULT_BUDGETS = (10, 20, 40, 60)
STRATEGIES = ("bo", "random", "tpe", "tpe-ordinal")
TPE_ENCODINGS = {"tpe": "categorical", "tpe-ordinal": "ordinal"}


@dataclass
class TabularProblem:
    """A table of measurements as a search space and a nearest-row objective."""

    name: str
    space: Any
    ordinal_columns: tuple[str, ...]
    ranks: np.ndarray          # [rows, ordinal columns] rank of each row's value
    rank_scale: np.ndarray     # [ordinal columns] 1 / (distinct values - 1), 0 for constant columns
    permutations: np.ndarray | None  # [rows, n] loop orders, None when the table has none
    compute_time: np.ndarray   # [rows]
    evaluations: int = 0

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.compute_time) & (self.compute_time > 0)

    @property
    def best(self) -> float:
        """The table's best valid compute_time."""
        return float(self.compute_time[self.valid].min())

    def nearest_row(self, config: dict) -> int:
        """Index of the row nearest to ``config`` under the protocol's distance (first on ties)."""
        distance = np.zeros(len(self.compute_time))
        for j, column in enumerate(self.ordinal_columns):
            values = self.space.params[column].values
            rank = values.index(self.space.params[column].to_entry(config[column]))
            distance += np.abs(self.ranks[:, j] - rank) * self.rank_scale[j]
        if self.permutations is not None:
            perm = np.asarray(config[PERMUTATION_COLUMN], dtype=np.int64)
            distance += (self.permutations != perm).sum(axis=1) / self.permutations.shape[1]
        return int(np.argmin(distance))

    def categories(self) -> dict[str, list[tuple[int, ...]]]:
        """The table's own loop orders (sorted, distinct), the categories the reference TPE
        chooses a permutation from; empty when the table has no permutation column."""
        if self.permutations is None:
            return {}
        return {PERMUTATION_COLUMN: [tuple(int(v) for v in row)
                                     for row in np.unique(self.permutations, axis=0)]}

    def objective(self, config: dict) -> dict:
        """The nearest row's compute_time; compute_time <= 0 is a failed evaluation."""
        self.evaluations += 1
        row = self.nearest_row(config)
        value = float(self.compute_time[row])
        ok = math.isfinite(value) and value > 0
        return {"value": value if ok else math.nan, "valid": ok, "row": row}


_PERMUTATION_TEXT = re.compile(r"\(\s*\d+(\s*,\s*\d+)*\s*,?\s*\)|\[\s*\d+(\s*,\s*\d+)*\s*\]"
                               r"|\d+((\s*,\s*|\s+)\d+)*")


def load_table(path: str | Path) -> TabularProblem:
    """Read a bacobench CSV table into a :class:`TabularProblem` (errors name the file). Every
    column but the measurements is a parameter: ``permutation`` a Permutation, a numeric column an
    Ordinal over its sorted distinct values, a text column (e.g. a schedule kind) an Ordinal over
    the ranks 0..k-1 of its sorted distinct strings, a True/False column one over 0 and 1; an
    empty parameter cell is an error naming its row."""
    import pandas as pd

    from perfjax.space import Ordinal, Permutation, Space

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # rows with more fields than the header: an error, not a silent index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)
    except (OSError, ValueError, pd.errors.ParserWarning) as exc:
        raise PerfjaxError(f"{path}: cannot read table: {' '.join(str(exc).split())}") from None
    if "compute_time" not in frame.columns:
        raise PerfjaxError(f"{path}: no compute_time column (columns: {list(frame.columns)})")
    parameters = [c for c in frame.columns if c not in MEASUREMENT_COLUMNS]
    if not parameters:
        raise PerfjaxError(f"{path}: no parameter columns")
    compute_time = pd.to_numeric(frame["compute_time"], errors="coerce").to_numpy(float)
    garbled = np.nonzero(np.isnan(compute_time) & frame["compute_time"].notna().to_numpy())[0]
    if len(garbled):  # empty cells are failed runs; text is a malformed table
        raise PerfjaxError(f"{path}: compute_time of data row {int(garbled[0]) + 1} is not a "
                           f"number: {frame['compute_time'].iloc[garbled[0]]!r}")
    if not (np.isfinite(compute_time) & (compute_time > 0)).any():
        raise PerfjaxError(f"{path}: no row has a valid (positive) compute_time")
    params, ordinals, ranks, scales, perms = {}, [], [], [], None
    try:
        for column in parameters:
            if column == PERMUTATION_COLUMN:
                text = [str(s).strip() for s in frame[column]]
                bad = [t for t in text if not _PERMUTATION_TEXT.fullmatch(t)]
                if bad:
                    raise PerfjaxError(f"{path}: column {column!r}: {bad[0]!r} is not a loop "
                                       f"order such as '(0, 2, 1)'")
                rows = [tuple(int(v) for v in t.strip("()[] ").replace(",", " ").split())
                        for t in text]
                n = len(rows[0])
                perms = np.asarray(rows, dtype=np.int64)
                if perms.ndim != 2 or not (np.sort(perms, axis=1) == np.arange(n)).all():
                    raise PerfjaxError(f"{path}: column {column!r} holds a value that is not a "
                                       f"permutation of 0..{n - 1}")
                params[column] = Permutation(n)
                continue
            cells = frame[column]
            empty = np.nonzero(cells.isna().to_numpy())[0]
            if len(empty):
                raise PerfjaxError(f"{path}: column {column!r}: data row {int(empty[0]) + 1} has "
                                   "no value")
            if pd.api.types.is_bool_dtype(cells):
                cells = cells.astype(np.int64)  # False < True: 0 and 1
            numbers = pd.to_numeric(cells, errors="coerce")
            if numbers.notna().all():
                values = numbers.to_numpy()
                distinct = np.unique(values)
                params[column] = Ordinal(distinct.tolist())
                ranks.append(np.searchsorted(distinct, values))
            else:  # text (e.g. a schedule kind): an Ordinal over the ranks of its sorted values
                labels = cells.astype(str).str.strip().to_numpy()
                distinct, rank = np.unique(labels, return_inverse=True)
                params[column] = Ordinal(list(range(len(distinct))))
                ranks.append(rank)
            ordinals.append(column)
            scales.append(1.0 / (len(distinct) - 1) if len(distinct) > 1 else 0.0)
    except (ValueError, TypeError) as exc:
        raise PerfjaxError(f"{path}: column {column!r}: {exc}") from None
    except SpaceError as exc:
        raise PerfjaxError(f"{path}: {exc}") from None
    space = Space(params, name=path.stem)
    rank_matrix = (np.stack(ranks, axis=1) if ranks else np.zeros((len(frame), 0), np.int64))
    return TabularProblem(path.stem, space, tuple(ordinals), rank_matrix, np.asarray(scales),
                          perms, compute_time)


class OptunaTPE:
    """Optuna's TPE sampler behind the ask/tell protocol (a benchmark baseline: unconstrained
    spaces only).

    ``encoding="categorical"`` (the default, the issue's reference TPE): every ordinal is
    suggested as a categorical choice of its values, and a permutation as a choice among
    ``choices[name]`` (the table's own loop orders, from :meth:`TabularProblem.categories`) or
    all n! orders. With the bacobench tables this reproduces the TPE figures the issue quotes
    to within 0.01 (spmm 0.82 / 0.90, sddmm 0.81 / 0.87, ttv 0.18 / 0.24, mttkrp 0.31 / 0.62 at
    budgets 20 / 60, seeds 0-9). ``encoding="ordinal"`` suggests ordinals as integer ranks, so
    TPE's kernel density sees their order; strategy ``tpe-ordinal`` (the TPE of this project's
    reports before the reference was reproduced) uses it with all n! loop orders: stronger on
    some tables (mttkrp 0.63 / 0.77), weaker on others (sddmm 0.78 / 0.84). Integers and reals
    are suggested as such under both encodings."""

    ENCODINGS = ("categorical", "ordinal")

    def __init__(self, space, *, seed: int = 0, encoding: str = "categorical",
                 choices: Mapping[str, Sequence[Any]] | None = None):
        try:
            import optuna
        except ImportError:
            raise PerfjaxError("strategy 'tpe' needs optuna: pip install 'perfjax[bench]'") from None
        if space.constraints:
            raise SpaceError(f"strategy 'tpe': space {space.name!r} has constraints, which this "
                             "baseline does not model")
        if encoding not in self.ENCODINGS:
            raise SpaceError(f"strategy 'tpe': unknown encoding {encoding!r} "
                             f"(known: {', '.join(self.ENCODINGS)})")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.encoding = encoding
        self._optuna = optuna
        self._study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        self._trials: dict[int, Any] = {}
        self._perms: dict[str, list[str]] = {}
        choices = dict(choices or {})
        stray = sorted(set(choices) - {n for n, p in space.params.items()
                                       if p.kind == "permutation"})
        if stray:
            raise SpaceError(f"strategy 'tpe': choices given for {stray}, which are not "
                             "permutation parameters")
        for name, param in space.params.items():
            if param.kind != "permutation":
                continue
            if name in choices:
                orders = [tuple(int(v) for v in order) for order in choices[name]]
                if not orders or any(sorted(o) != list(range(param.n)) for o in orders):
                    raise SpaceError(f"strategy 'tpe': choices for {name!r} must be non-empty "
                                     f"permutations of 0..{param.n - 1}")
            elif param.n > 7:
                raise SpaceError(f"strategy 'tpe': permutation {name!r} of {param.n} items has "
                                 "too many orders to list as categories")
            else:
                orders = list(itertools.permutations(range(param.n)))
            self._perms[name] = [",".join(map(str, p)) for p in dict.fromkeys(orders)]

    def _suggest(self, trial) -> dict:
        config = {}
        for name, param in self.space.params.items():
            if param.kind == "permutation":
                text = trial.suggest_categorical(name, self._perms[name])
                config[name] = tuple(int(v) for v in text.split(","))
            elif param.kind == "categorical" or (param.kind == "ordinal"
                                                 and self.encoding == "categorical"):
                i = trial.suggest_categorical(name, list(range(len(param.values))))
                config[name] = param.values[i]
            elif param.kind == "ordinal":
                config[name] = param.values[trial.suggest_int(name, 0, len(param.values) - 1)]
            elif param.kind == "integer":
                config[name] = trial.suggest_int(name, int(param.lo), int(param.hi), log=param.log)
            else:
                config[name] = trial.suggest_float(name, param.lo, param.hi, log=param.log)
        return config

    def ask(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            trial = self._study.ask()
            config = self._suggest(trial)
            self._trials.setdefault(_key(config), []).append(trial)
            out.append(config)
        return out

    def tell(self, configs: list[dict], results: list[dict]) -> None:
        for config, result in zip(configs, results):
            pending = self._trials.get(_key(config))
            if not pending:
                continue  # evaluations this sampler did not suggest (a replayed study)
            trial = pending.pop(0)
            if result.get("valid", True) and math.isfinite(result["value"]):
                self._study.tell(trial, float(result["value"]))
            else:
                self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)


def _key(config: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                        for k, v in config.items()))


def make_baseline(name: str, space, seed: int, options: Mapping[str, Any] | None = None,
                  choices: Mapping[str, Sequence[Any]] | None = None):
    """A strategy for the benchmark: perfjax's own ("bo", "random", ...) or Optuna's TPE ("tpe"
    with the reference's categorical encoding, "tpe-ordinal" with ordinals as ranks; see
    :class:`OptunaTPE`, whose ``choices`` these are); ``options`` are keyword arguments of
    perfjax's strategy (e.g. BayesOpt's), checked by name."""
    if name in TPE_ENCODINGS:
        if options:
            raise SpaceError(f"strategy {name!r} takes no options, got {sorted(options)}")
        # the reference TPE chooses among the table's loop orders; tpe-ordinal (the baseline
        # of earlier reports) among all n! of them
        return OptunaTPE(space, seed=seed, encoding=TPE_ENCODINGS[name],
                         choices=choices if name == "tpe" else None)
    from perfjax.schedulers.search import make_strategy
    return make_strategy(name, space, seed=seed, **dict(options or {}))


def run_one(problem: TabularProblem, strategy: str, seed: int, budget: int,
            options: Mapping[str, Any] | None = None) -> dict:
    """One tuning run: the objective values in evaluation order (nan when failed) and the
    seconds spent suggesting each configuration. ``options``: the strategy's keyword arguments."""
    from perfjax.tuning import tune

    values, suggest = [], []

    def record(progress) -> None:
        values.append(progress.value if progress.valid else math.nan)
        suggest.append(progress.suggest_seconds)

    tune(problem.space, problem.objective,
         strategy=make_baseline(strategy, problem.space, seed, options, problem.categories()),
         budget=budget,
         callback=record)
    return {"values": values, "suggest_seconds": suggest}


def quality(values: Sequence[float], best: float, budget: int) -> float:
    """best / (best valid value among the first ``budget`` evaluations); 0 if none is valid."""
    head = np.asarray(values[:budget], dtype=float)
    head = head[np.isfinite(head)]
    return float(best / head.min()) if len(head) else 0.0


def seed_pool(jobs: int):
    """A process pool of ``jobs`` workers for ``benchmark(executor=...)`` (the spawn start
    method: JAX's threads make fork unsafe), or None for ``jobs == 1``. Shut it down with
    ``cancel_futures=True`` when done or on an error, so queued seeds do not keep running."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = check_integer(jobs, "jobs", 1, error=PerfjaxError)
    if jobs == 1:
        return None
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


@functools.lru_cache(maxsize=8)
def _cached_table(path: str) -> TabularProblem:
    return load_table(path)


def _run_seed(path: str, strategy: str, seed: int, budget: int,
              options: Mapping[str, Any] | None) -> tuple[dict, float]:
    """One run in an executor's worker (the table loaded once per worker): (run, seconds)."""
    started = time.perf_counter()
    return run_one(_cached_table(path), strategy, seed, budget, options), \
        time.perf_counter() - started


def benchmark(path: str | Path, strategies: Sequence[str] = STRATEGIES, seeds: int = 10,
              budget: int = 60, budgets: Sequence[int] = DEFAULT_BUDGETS, progress=None,
              first_seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
              executor: Any = None) -> dict:
    """Run every strategy for ``seeds`` seeds (``first_seed``, ``first_seed + 1``, ...) on one
    table; the JSON report of the protocol. A later ``first_seed`` scores a change on seeds it
    was not developed on (medians of 10 seeds move by a few hundredths between seed sets).
    ``options`` maps a strategy name to its keyword arguments (an ablation such as
    ``{"bo": {"improvement_margin": 0.0}}``); they are checked before any run starts and
    recorded in that strategy's report.

    ``seconds_per_suggestion`` is the mean time of the last 10 suggestions of each run (the
    latency with close to ``budget`` observations), median over seeds.

    ``executor`` (a ``concurrent.futures`` process pool with the spawn context, say) runs the
    seeds in parallel: the same runs, the same report (seeded), in a fraction of the time; the
    suggestion times then include the runs' contention for the cores.
    """
    if first_seed < 0:
        raise PerfjaxError(f"first_seed must be >= 0, got {first_seed}")
    problem = load_table(path)
    options = {k: dict(v) for k, v in (options or {}).items()}
    stray = sorted(set(options) - set(strategies))
    if stray:
        raise PerfjaxError(f"options given for strategies {stray} that are not run "
                           f"(running: {', '.join(strategies)})")
    for name, kwargs in options.items():  # a bad option fails here, before any run
        try:
            make_baseline(name, problem.space, first_seed, kwargs)
        except PerfjaxError:
            raise
        except (TypeError, ValueError) as exc:
            raise SpaceError(f"strategy {name!r}: bad options {kwargs}: {exc}") from None
    budgets = sorted({b for b in budgets if b <= budget} | {budget})  # the run's own budget too
    report: dict[str, Any] = {"table": problem.name, "strategies": {}, "seeds": seeds,
                              "first_seed": first_seed, "budget": budget}
    check_executor(executor, "executor", PerfjaxError)
    for name in strategies:
        runs = []
        if executor is None:
            for seed in range(first_seed, first_seed + seeds):
                started = time.perf_counter()
                runs.append(run_one(problem, name, seed, budget, options.get(name)))
                if progress is not None:
                    progress(name, seed, time.perf_counter() - started)
        else:
            futures = [executor.submit(_run_seed, str(path), name, seed, budget, options.get(name))
                       for seed in range(first_seed, first_seed + seeds)]
            for seed, future in zip(range(first_seed, first_seed + seeds), futures):
                try:
                    run, seconds = future.result()
                except PerfjaxError:
                    raise
                except Exception as exc:  # a worker that died, a broken pool
                    raise PerfjaxError(f"{problem.name}: {name} seed {seed} failed in the "
                                       f"executor ({type(exc).__name__}: {exc})") from None
                runs.append(run)
                if progress is not None:
                    progress(name, seed, seconds)
        per_seed = {str(b): [quality(r["values"], problem.best, b) for r in runs] for b in budgets}
        report["strategies"][name] = {
            "quality": {b: float(np.median(q)) for b, q in per_seed.items()},
            "per_seed": per_seed,
            "seconds_per_suggestion": float(np.median([np.mean(r["suggest_seconds"][-10:])
                                                       for r in runs])),
        }
        if options.get(name):
            report["strategies"][name]["options"] = options[name]
    return report


def median_interval(values: Sequence[float], level: float = 0.9, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """The median of per-seed qualities with a percentile-bootstrap interval at ``level``:
    (median, low, high)."""
    _check_bootstrap(level, resamples)
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or not len(values):
        raise PerfjaxError(f"median_interval: need a non-empty list of values, got {values.shape}")
    draws = _resampled_medians(values, np.random.default_rng(seed), resamples)
    low, high = _percentiles(draws, level)
    return float(np.median(values)), float(low), float(high)


def _check_bootstrap(level: Any, resamples: Any) -> None:
    check_integer(resamples, "resamples", 1, error=PerfjaxError)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise PerfjaxError(f"level must be in (0, 1), got {level!r}")


def _resampled_medians(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The median of each of ``resamples`` resamples of ``values`` with replacement."""
    return np.median(values[rng.integers(0, len(values), (resamples, len(values)))], axis=1)


def _percentiles(draws: np.ndarray, level: float) -> np.ndarray:
    """The central ``level`` interval (low, high) of bootstrap draws."""
    tail = (1 - level) / 2
    return np.quantile(draws, [tail, 1 - tail])


def geomean_ratio(reports: Sequence[Mapping[str, Any]], strategy: str, baseline: str,
                  budget: int | str, level: float = 0.9, resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """Geometric mean over tables of (median quality of ``strategy``) / (median quality of
    ``baseline``) at ``budget``, with a percentile-bootstrap interval at ``level``: each table's
    per-seed qualities of each strategy are resampled with replacement (seeds are independent
    runs), so the interval shows how far the figure moves with the seeds alone. Returns
    (point, low, high). Medians of 10 seeds on the tables whose optimum is one row far ahead of
    the rest (ttv, mttkrp) move by 0.1 or more between seed sets."""
    _check_bootstrap(level, resamples)
    if not reports:
        raise PerfjaxError("geomean_ratio: no table reports given")
    key = str(budget)
    rng = np.random.default_rng(seed)
    point, draws = 0.0, np.zeros(resamples)
    for report in reports:
        rows = report.get("strategies", {})
        table = report.get("table", "?")
        pair = []
        for name in (strategy, baseline):
            try:
                pair.append(np.asarray(rows[name]["per_seed"][key], dtype=float))
            except KeyError:
                raise PerfjaxError(f"table {table}: no per-seed qualities of {name!r} at budget "
                                   f"{key} in the report") from None
        ours, theirs = pair
        point += math.log(max(np.median(ours), 1e-12) / max(np.median(theirs), 1e-12))
        for values, sign in ((ours, 1.0), (theirs, -1.0)):
            draws += sign * np.log(np.maximum(_resampled_medians(values, rng, resamples), 1e-12))
    n = len(reports)
    low, high = _percentiles(draws / n, level)
    return math.exp(point / n), math.exp(low), math.exp(high)


__all__ = ["TabularProblem", "load_table", "OptunaTPE", "run_one", "quality", "benchmark",
           "geomean_ratio", "median_interval", "seed_pool"]
