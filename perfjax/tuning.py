"""``perfjax.tune``: the evaluation loop every strategy runs in, writing a resumable study.

Every evaluation is appended (fsync'ed) to the study before the next one starts, so a killed run
loses nothing: rerunning with the same study replays its records into the strategy and goes on
until the budget is spent.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from perfjax.errors import (PerfjaxError, SpaceError, StudyError, check_executor,
                            check_integer)
from perfjax.space import Space
from perfjax.study import Record, Study


@dataclass(frozen=True)
class TuneProgress:
    """What ``callback`` sees after each evaluation (``evaluation`` counts from 1, replays included)."""

    evaluation: int
    budget: int
    config: dict
    value: float
    valid: bool
    error: str | None
    best_value: float
    best_config: dict | None
    seconds: float
    suggest_seconds: float


@dataclass(frozen=True)
class TuneResult:
    """The best valid configuration found (None/nan if no evaluation was valid) and every record."""

    best_config: dict | None
    best_value: float
    records: list[Record]
    study_path: str | None
    exhausted: bool = False  # the strategy had no configuration left before the budget was spent


def _evaluate(objective: Callable, config: dict) -> tuple[float, bool, str | None, dict, dict]:
    """Run the objective once; never raises for the objective's own failures.

    Returns (value, valid, error, extra numeric values, extra metadata).
    """
    try:
        out = objective(dict(config))
    except Exception as exc:  # a crashing objective is a failed evaluation, not a failed run
        return math.nan, False, f"{type(exc).__name__}: {exc}", {}, {}
    extra_values: dict[str, float] = {}
    metadata: dict[str, Any] = {}
    valid = True
    error = None
    if isinstance(out, Mapping):
        if "value" not in out:
            return math.nan, False, f"objective returned a dict without 'value': {sorted(out)}", {}, {}
        valid = bool(out.get("valid", True))
        if out.get("error") is not None:
            error = str(out["error"])
        for key, item in out.items():
            if key in ("value", "valid", "error"):
                continue
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                try:
                    extra_values[str(key)] = float(item)
                except OverflowError:
                    error = f"objective returned {key!r} = {_too_large(item)}"
                    return math.nan, False, error, {}, {}
            else:
                metadata[str(key)] = item if isinstance(item, (str, bool, type(None))) else repr(item)
        out = out["value"]
    try:
        value = float(out)
    except OverflowError:
        return math.nan, False, f"objective returned {_too_large(out)}", {}, {}
    except (TypeError, ValueError):
        return math.nan, False, f"objective returned {type(out).__name__}, not a number", {}, {}
    if not math.isfinite(value):
        if valid:
            error = f"objective returned {value}"
        valid = False
    if not valid and error is None:
        error = "objective marked the evaluation invalid"
    return value, valid, error, extra_values, metadata


def _timed_evaluate(objective: Callable, config: dict) -> tuple:
    """``_evaluate`` and the seconds it took, where it runs (an executor's worker, for one)."""
    started = time.perf_counter()
    out = _evaluate(objective, config)
    return out + (time.perf_counter() - started,)


def _executor_failure(exc: BaseException) -> str:
    """The failed evaluation's message for an exception raised by the executor itself (a
    worker that died, a lost connection), not by the objective, which ``_evaluate`` catches."""
    return f"executor: {type(exc).__name__}: {exc}"


def _cannot_send(exc: BaseException) -> bool:
    """Whether the executor failed to ship the objective or a configuration to its workers."""
    return isinstance(exc, pickle.PicklingError) or "pickle" in str(exc).lower()


def _too_large(value: Any) -> str:
    """How an objective's number too large for a float is named in its failure message."""
    what = (f"an integer of {len(str(abs(value)))} digits" if isinstance(value, int)
            else f"a {type(value).__name__}")
    return f"{what}, too large for a float"


def _open_study(study: Any, space) -> tuple[Study | None, bool]:
    """(study, owned): a Study object is used as given (its stored space, if any, must be
    ``space``); a path is opened (and closed by tune)."""
    if study is None:
        return None, False
    if isinstance(study, Study):
        study.check_space(space.to_baco_json())
        return study, False
    if isinstance(study, (str, os.PathLike)):
        return Study(study, space=space.to_baco_json(), metadata={"space_name": space.name}), True
    raise PerfjaxError(f"study must be None, a path or a perfjax.study.Study, got {type(study).__name__}")


def check_replay(space, log: Study, records: list[Record], configs: list[dict]) -> None:
    """SpaceError naming the study and record unless every stored configuration is one of
    ``space``; StudyError if valid records lack the objective "value" tune reads."""
    try:
        space.from_dicts(configs)
    except SpaceError:
        for record, config in zip(records, configs):  # find the record at fault
            try:
                space.from_dicts([config])
            except SpaceError as exc:
                reason = str(exc).removeprefix("configuration 0: ")
                raise SpaceError(f"{log.path}: record {record.id} has configuration "
                                 f"{record.config!r}, not one of this space ({reason})") from None
        raise
    unnamed = [r for r in records if r.valid and "value" not in r.values]
    if unnamed:
        names = sorted({name for r in unnamed for name in r.values})
        held = ", ".join(map(repr, names)) if names else "no objective"
        raise StudyError(f"{log.path}: {len(unnamed)} valid records (the first is record "
                         f"{unnamed[0].id}) have no objective 'value': records hold {held}, "
                         "tune reads 'value'")


# Columns every study table has besides the parameters (Study.to_pandas): the objective "value"
# tune writes, the record id and the fixed columns.
RESERVED_NAMES = ("id", "value", "valid", "error", "wall_time", "timestamp")


def tune(space, objective: Callable[[dict], Any], *, strategy: Any = "bo", budget: int,
         study: Any = None, seed: int = 0, batch: int = 1, minimize: bool = True,
         callback: Callable[[TuneProgress], None] | None = None, executor: Any = None,
         **strategy_options: Any) -> TuneResult:
    """Search ``space`` for the configuration that minimizes (or maximizes) ``objective``.

    ``strategy`` is a name ("bo", "random", "exhaustive") or any object with ``ask``/``tell``.
    ``budget`` counts evaluations, including those replayed from an existing ``study``.
    ``batch`` configurations are asked at a time (BO: kriging believer), evaluated in order, or
    all at once on ``executor``: any ``concurrent.futures.Executor`` (a thread or process pool,
    loky, Dask's ``client.get_executor()``, mpi4py's ``MPIPoolExecutor``). With an executor
    each evaluation is recorded as it completes, so a killed run loses only those in flight; a
    process pool needs a picklable objective (a module-level function) and the "spawn" start
    method (``mp_context=multiprocessing.get_context("spawn")``: JAX's threads make fork
    unsafe). The objective returns a float or ``{"value": float, "valid": bool, ...}``; an
    exception, NaN or inf is a failed evaluation whose message is recorded, and the run goes
    on; so does a worker that dies mid-evaluation (the evaluations in flight on a broken pool
    fail), until the executor takes no more work: then a PerfjaxError, the study intact.
    """
    from perfjax.schedulers.base import check_configs, check_tell, plain_config
    from perfjax.schedulers.search import make_strategy

    if not isinstance(space, Space):
        raise SpaceError(f"tune: space must be a perfjax.Space, got {type(space).__name__}")
    clash = [n for n in space.names if n in RESERVED_NAMES]
    if clash:  # the study table would hold two columns of that name (Study.to_pandas refuses)
        raise SpaceError(f"tune: parameter name {clash[0]!r} is one of the study's own columns "
                         f"({', '.join(RESERVED_NAMES)}); rename the parameter")
    if not callable(objective):
        raise SpaceError(f"tune: objective must be a callable taking a configuration dict, "
                         f"got {type(objective).__name__}")
    if callback is not None and not callable(callback):
        raise SpaceError(f"tune: callback must be None or a callable, "
                         f"got {type(callback).__name__}")
    budget = check_integer(budget, "tune: budget")
    batch = check_integer(batch, "tune: batch", 1)
    check_executor(executor, "tune: executor")
    if seed is not None:  # None: a fresh, unreproducible seed
        seed = check_integer(seed, "tune: seed")
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, space, seed=seed, **strategy_options)
    elif strategy_options:
        raise SpaceError(f"tune: options {sorted(strategy_options)} need a strategy name, "
                         "not a strategy object")
    elif not (hasattr(strategy, "ask") and hasattr(strategy, "tell")):
        raise SpaceError(f"tune: strategy must be a name or have ask/tell, got {type(strategy).__name__}")
    sign = 1.0 if minimize else -1.0
    log, owned = _open_study(study, space)
    records: list[Record] = []
    exhausted = False
    best_value, best_config = math.nan, None

    def consider(config: dict, value: float, valid: bool) -> None:
        nonlocal best_value, best_config
        if valid and (best_config is None or sign * value < sign * best_value):
            best_value, best_config = value, config

    try:
        if log is not None and len(log):
            configs, results = [], []
            for record in log.records:
                try:
                    config = plain_config(space, record.config)
                except (KeyError, TypeError, ValueError):
                    raise SpaceError(f"{log.path}: record {record.id} has configuration "
                                     f"{record.config!r}, not one of this space") from None
                value = record.values.get("value", math.nan)
                valid = record.valid and math.isfinite(value)
                configs.append(config)
                results.append({"value": sign * value if valid else math.nan, "valid": valid})
                records.append(record)
                consider(config, value, valid)
            check_replay(space, log, records, configs)
            check_tell(configs, results)
            strategy.tell(configs, results)
        while len(records) < budget:
            started = time.perf_counter()
            configs = strategy.ask(min(batch, budget - len(records)))
            if not isinstance(configs, (list, tuple)):
                raise SpaceError(f"tune: strategy.ask returned {type(configs).__name__}, "
                                 "not a list of configurations")
            suggest_seconds = (time.perf_counter() - started) / max(len(configs), 1)
            if not configs:  # an exhausted strategy: every configuration of a small space tried
                exhausted = True
                break
            check_configs(space, configs, "tune: strategy.ask")
            configs = [plain_config(space, c) for c in configs]
            results: list[Any] = [None] * len(configs)
            for i, (value, valid, error, extra, metadata, seconds) in _outcomes(
                    objective, configs, executor):
                config = configs[i]
                values = {"value": value, **{k: v for k, v in extra.items() if k != "value"}}
                if log is not None:
                    record = log.append(config, values, valid=valid, error=error,
                                        wall_time=seconds, metadata=metadata)
                else:
                    record = Record(id=len(records), config=dict(config), values=values, valid=valid,
                                    error=error, wall_time=seconds, metadata=metadata,
                                    timestamp=time.time())
                records.append(record)
                consider(config, value, valid)
                results[i] = {"value": sign * value if valid else math.nan, "valid": valid}
                if callback is not None:
                    callback(TuneProgress(len(records), budget, config, value, valid, error,
                                          best_value, best_config, seconds, suggest_seconds))
            strategy.tell(configs, results)
    finally:
        if owned:
            log.close()
    return TuneResult(best_config, best_value, records, None if log is None else str(log.path),
                      exhausted)


def _outcomes(objective: Callable, configs: list[dict], executor: Any):
    """(index, outcome) per configuration: in order when ``executor`` is None, else all
    submitted at once and yielded as they complete."""
    if executor is None:
        for i, config in enumerate(configs):
            yield i, _timed_evaluate(objective, config)
        return
    futures, submitted = {}, time.perf_counter()
    for i, config in enumerate(configs):
        try:
            futures[executor.submit(_timed_evaluate, objective, config)] = i
        except Exception as exc:  # a shut-down or broken pool: nothing more can run
            for future in futures:
                future.cancel()
            raise PerfjaxError(f"tune: the executor took no more work ({type(exc).__name__}: "
                               f"{exc}); the evaluations so far are recorded") from None
    pending = (as_completed(futures) if all(isinstance(f, Future) for f in futures)
               else list(futures))  # a look-alike future without as_completed: in order
    for future in pending:
        i = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:
            if _cannot_send(exc):
                raise PerfjaxError(f"tune: the executor could not send the objective or a "
                                   f"configuration to its workers ({type(exc).__name__}: {exc});"
                                   " a process pool needs a module-level objective") from None
            outcome = (math.nan, False, _executor_failure(exc), {}, {},
                       time.perf_counter() - submitted)  # the time until the failure showed
        yield i, outcome


__all__ = ["tune", "TuneResult", "TuneProgress"]
