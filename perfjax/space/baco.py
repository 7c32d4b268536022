"""BaCO / HyperMapper scenario files <-> Space.

Reads ``input_parameters`` (``parameter_type`` real/integer/ordinal/categorical/permutation,
``values``, ``parameter_default``, ``transform: "log"``, ``constraints``, ``dependencies``,
``prior``/``prior_parameters``, ``parametrization``) and an optional top-level ``constraints``
list. Every other key (optimizer settings, ``feasible_output``, ...) is kept verbatim in
``Space.extra`` and written back by ``to_baco_json``; unknown per-parameter keys are ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from perfjax.errors import SpaceError
from perfjax.space.params import Categorical, Integer, Ordinal, Parameter, Permutation, Real
from perfjax.space.space import Space

_TYPES = ("real", "integer", "ordinal", "categorical", "permutation")


class _DuplicateKey(Exception):
    """A JSON object of a scenario repeats a key."""


def _refuse_duplicate_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_scenario(source: Any) -> tuple[dict, str]:
    """Return (scenario dict, label for messages) from a path, JSON text or dict."""
    if isinstance(source, Mapping):
        return dict(source), "<dict>"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        label, text = "<json text>", source
    elif isinstance(source, (str, os.PathLike)):
        label = str(source)
        if not label.strip():
            raise SpaceError("scenario path is empty")
        try:
            text = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"scenario {label}: cannot read it ({exc.__class__.__name__}: "
                             f"{getattr(exc, 'strerror', None) or exc})") from None
    else:
        raise SpaceError(f"a scenario must be a path, JSON text or dict, got {type(source).__name__}")
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise SpaceError(f"scenario {label}: not valid JSON (line {exc.lineno}, column "
                         f"{exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise SpaceError(f"scenario {label}: JSON nested too deeply to read") from None
    except _DuplicateKey as exc:
        raise SpaceError(f"scenario {label}: key {exc.args[0]!r} appears twice in one JSON object "
                         f"(the last would silently win)") from None
    if not isinstance(data, dict):
        raise SpaceError(f"scenario {label}: the top level must be a JSON object")
    return data, label


def from_baco_json(source: Any) -> Space:
    data, label = load_scenario(source)
    try:
        return _build(data)
    except SpaceError as exc:
        raise SpaceError(f"scenario {label}: {exc}") from None


def _build(data: dict) -> Space:
    inputs = data.get("input_parameters")
    if not isinstance(inputs, dict) or not inputs:
        raise SpaceError("'input_parameters' must be a non-empty object")
    params: dict[str, Parameter] = {}
    constraints: list[tuple[str, str | None]] = []
    dependencies: dict[str, list[str]] = {}
    for name, spec in inputs.items():
        if not isinstance(spec, dict):
            raise SpaceError(f"parameter {name!r}: its definition must be an object")
        params[name] = _parameter(name, spec)
        for text in _string_list(name, spec, "constraints"):
            constraints.append((text, name))
        deps = _string_list(name, spec, "dependencies")
        if deps:
            dependencies[name] = deps
    for text in _string_list(None, data, "constraints"):
        constraints.append((text, None))
    extra = {k: v for k, v in data.items() if k not in ("input_parameters", "constraints")}
    return Space(params, constraints, dependencies=dependencies,
                 name=str(data.get("application_name", "space")), extra=extra)


def _string_list(owner: str | None, spec: dict, key: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    where = f"parameter {owner!r}: " if owner else ""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpaceError(f"{where}'{key}' must be a list of strings, got {value!r}")
    return value


def _parameter(name: str, spec: dict) -> Parameter:
    kind = spec.get("parameter_type")
    if kind not in _TYPES:
        raise SpaceError(f"parameter {name!r}: unknown parameter_type {kind!r} (known: "
                         f"{', '.join(_TYPES)})")
    if "values" not in spec:
        what = "the item count, e.g. [5]" if kind == "permutation" else "its values"
        raise SpaceError(f"parameter {name!r}: 'values' is missing ({kind} needs {what})")
    values = spec["values"]
    default = spec.get("parameter_default")
    log = spec.get("transform", "none") == "log"
    if spec.get("transform", "none") not in ("none", "log"):
        raise SpaceError(f"parameter {name!r}: unknown transform {spec['transform']!r} "
                         "(known: none, log)")
    prior = spec.get("prior")
    prior_parameters = spec.get("prior_parameters") or ()
    if kind in ("real", "integer"):
        if not isinstance(values, list) or len(values) != 2:
            raise SpaceError(f"parameter {name!r}: a {kind} parameter needs values [min, max], "
                             f"got {values!r}")
        cls = Real if kind == "real" else Integer
        return cls(values[0], values[1], log=log, default=default, prior=prior,
                   prior_parameters=prior_parameters, name=name)
    if kind == "ordinal":
        return Ordinal(values, default=default, log=log, prior=prior,
                       prior_parameters=prior_parameters, name=name)
    if kind == "categorical":
        return Categorical(values, default=default, prior=prior,
                           prior_parameters=prior_parameters, name=name)
    size = values[0] if isinstance(values, list) and len(values) == 1 else values
    return Permutation(size, default=default,
                       parametrization=spec.get("parametrization", "spearman"), name=name)


def to_baco_json(space: Space) -> dict[str, Any]:
    """The space as a BaCO scenario dict; constraints without an owner go to the first parameter
    they name, so that BaCO itself (which has no global list) reads them too."""
    owned: dict[str, list[str]] = {name: [] for name in space.names}
    for c in space.constraints:
        owner = c.owner if c.owner in owned else next(n for n in space.names if n in c.params)
        owned[owner].append(c.text)
    inputs: dict[str, Any] = {}
    for name, param in space.params.items():
        spec: dict[str, Any] = {"parameter_type": param.kind}
        if isinstance(param, (Real, Integer)):
            spec["values"] = [param.lo, param.hi]
        elif isinstance(param, (Ordinal, Categorical)):
            spec["values"] = list(param.values)
        else:
            spec["values"] = [param.n]
            spec["parametrization"] = param.parametrization
        if param.default is not None:
            spec["parameter_default"] = list(param.default) if isinstance(param, Permutation) \
                else param.default
        if getattr(param, "log", False):
            spec["transform"] = "log"
        if param.prior is not None:
            spec["prior"] = list(param.prior) if isinstance(param.prior, tuple) else param.prior
        if param.prior_parameters:
            spec["prior_parameters"] = list(param.prior_parameters)
        if owned[name]:
            spec["constraints"] = owned[name]
        if name in space.dependencies:
            spec["dependencies"] = list(space.dependencies[name])
        inputs[name] = spec
    return {**space.extra, "application_name": space.name, "input_parameters": inputs}
