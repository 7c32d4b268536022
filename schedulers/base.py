"""The one interface every search strategy speaks: ``ask(n)`` configurations, ``tell`` results.

Configurations are plain dicts keyed by parameter name (permutations as tuples of ints), results
are ``{"value": float, "valid": bool}`` with value nan when invalid. Strategies always minimize;
``perfjax.tune`` negates values for maximization.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from perfjax.errors import SpaceError, check_integer


@runtime_checkable
class Strategy(Protocol):
    """A search strategy: proposes configurations and learns from their results."""

    def ask(self, n: int) -> list[dict]:
        """``n`` configurations to evaluate next (dicts keyed by parameter name)."""
        ...

    def tell(self, configs: list[dict], results: list[dict]) -> None:
        """Results of evaluated configurations: ``{"value": float, "valid": bool}`` each."""
        ...


def plain_config(space, config: Mapping[str, Any]) -> dict:
    """A configuration with plain Python values: permutations as tuples of ints, numbers as
    int/float (numpy scalars and lists from JSON normalized)."""
    out = {}
    for name, param in space.params.items():
        value = config[name]
        if param.kind == "permutation":
            out[name] = tuple(int(v) for v in value)
        elif isinstance(value, list) and param.kind == "categorical":
            out[name] = _categorical_value(param, value)
        elif hasattr(value, "item"):
            out[name] = value.item()
        else:
            out[name] = value
    return out


def _categorical_value(param, value: list) -> Any:
    """The categorical's own value for ``value`` read back from JSON, which stores tuples as
    lists: ``[8, 8]`` -> ``(8, 8)`` when the categorical holds ``(8, 8)`` (a value it does not
    hold comes back as a hashable tuple, for the domain checks to name)."""
    def plain(v):
        return tuple(plain(x) for x in v) if isinstance(v, (list, tuple)) else v

    key = plain(value)
    for v in param.values:
        if isinstance(v, (list, tuple)) and plain(v) == key:
            return v
    return key


def config_key(space, config: Mapping[str, Any]) -> tuple:
    """A hashable identity of a configuration (for de-duplication). Categoricals by index: their
    values may be equal in Python yet distinct (0 and False, 1 and 1.0)."""
    def part(name: str) -> Any:
        param = space.params[name]
        if param.kind == "permutation":
            return tuple(int(v) for v in config[name])
        if param.kind == "categorical":
            return ("categorical", param.index_of(config[name]))
        return config[name]
    return tuple(part(n) for n in space.names)


# A space whose random draws keep repeating configurations already tried is enumerated, when it
# has at most this many configurations, to find those left (or to learn that none is).
EXHAUSTION_CHECK_LIMIT = 200_000


def untried_configs(space, tried: Callable[[Mapping[str, Any]], np.ndarray]
                    ) -> dict[str, np.ndarray] | None:
    """Every feasible configuration of ``space`` for which ``tried(batch)`` (a boolean per row) is
    False, as one struct-of-arrays batch (possibly empty), by enumerating the space; None when the
    space is too large to enumerate (more than ``EXHAUSTION_CHECK_LIMIT`` configurations)."""
    if space.enumerable_size() > EXHAUSTION_CHECK_LIMIT:
        return None
    parts = []
    for chunk in space.enumerate():
        chunk = {k: np.asarray(v) for k, v in chunk.items()}
        left = ~np.asarray(tried(chunk), dtype=bool)
        parts.append({k: v[left] for k, v in chunk.items()})  # empty parts keep the columns' shapes
    return {k: np.concatenate([p[k] for p in parts]) for k in space.names}


def batch_to_configs(space, batch: Mapping[str, Any]) -> list[dict]:
    """A struct-of-arrays batch as a list of plain configuration dicts."""
    return [plain_config(space, c) for c in space.to_dicts(batch)]


def check_configs(space, configs: Sequence[Any], where: str) -> None:
    """SpaceError naming the configuration (and parameter) unless every one of ``configs`` is a
    dict holding each parameter of ``space``."""
    for i, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise SpaceError(f"{where}: configuration {i} must be a dict keyed by parameter name, "
                             f"got {type(config).__name__} {config!r}")
        missing = [n for n in space.names if n not in config]
        if missing:
            raise SpaceError(f"{where}: configuration {i} has no parameter "
                             f"{', '.join(map(repr, missing))}: {dict(config)!r}")


def check_tell(configs: Sequence[Mapping], results: Sequence[Mapping],
               space=None) -> list[tuple[float, bool]]:
    """Validate ``tell`` arguments; return (value, valid) pairs with invalid values as nan.
    A result is a dict with a 'value' (and optionally 'valid') or, as an objective may return
    to ``perfjax.tune``, a plain number (nan / inf: a failed evaluation). With ``space``, each
    configuration must be a dict holding every parameter."""
    for what, items in (("configurations", configs), ("results", results)):
        if isinstance(items, (Mapping, str, bytes)) or not hasattr(items, "__len__"):
            raise SpaceError(f"tell: {what} must be a list, got {type(items).__name__}")
    if len(configs) != len(results):
        raise SpaceError(f"tell: {len(configs)} configurations but {len(results)} results")
    if space is not None:
        check_configs(space, configs, "tell")
    out = []
    for i, result in enumerate(results):
        if isinstance(result, (int, float, np.integer, np.floating)) and not isinstance(result,
                                                                                        bool):
            result = {"value": result}
        if not isinstance(result, Mapping) or "value" not in result:
            raise SpaceError(f"tell: result {i} must be a number or a dict with a 'value', "
                             f"got {result!r}")
        try:
            value = float(result["value"])
        except (TypeError, ValueError, OverflowError):
            raise SpaceError(f"tell: result {i}: 'value' must be a number, "
                             f"got {result['value']!r}") from None
        valid = bool(result.get("valid", True)) and math.isfinite(value)
        out.append((value if valid else math.nan, valid))
    return out


def check_count(n: Any) -> int:
    return check_integer(n, "ask: the number of configurations", 1)
