"""Shared helpers for the search-space tests: an independent plain-Python reference for
constraints and domains, and hypothesis strategies for configurations.

The reference evaluates a constraint the way BaCO's own ``constraints.py`` does: one
configuration at a time, every value a numpy scalar, a permutation ``P`` exposed as ``P_k`` (the
item at position k) and ``P_ik`` (the position of item k), a categorical as its value's index.
It never calls perfjax to decide anything.

A "row" is one configuration at the batch-entry level: reals/integers/ordinals as numbers, a
categorical as its index, a permutation as a tuple of items (item at each position).
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import shutil
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np
from hypothesis import strategies as st


# XLA's classic CPU code emitters instead of its newer fusion emitters: the same programs with the
# same results, compiled in ~40% less time (a sampler program 2.9 s -> 1.7 s), and this suite
# spends ~40% of its CPU time compiling (full suite 631 s -> 524 s on this 2-core machine; the
# compiled code runs slower, which the suite hardly notices; benchmarks and perfjax itself keep
# XLA's defaults). Only where XLA_FLAGS is unset: `XLA_FLAGS= make test` runs with the defaults.
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _fast_compiles() -> None:
    """Set XLA_FLAGS for this run (inherited by the xdist workers and every subprocess) when it is
    unset and this jaxlib knows the flag: an unknown XLA flag aborts the process, so a jaxlib
    that dropped it is probed in a subprocess first and then left with its defaults."""
    if "XLA_FLAGS" in os.environ:
        return
    import subprocess
    import sys

    try:
        probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
        known = subprocess.run([sys.executable, "-c", probe],
                               env={**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAG},
                               capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        known = False
    os.environ["XLA_FLAGS"] = FAST_COMPILE_FLAG if known else ""


def _share_build_caches() -> None:
    """One JAX compilation cache, one C kernel cache and one calibration-measurement cache for
    the whole run, new for each run.

    Both pytest-xdist workers and every subprocess a test starts inherit the directories through
    the environment, so a function the suite compiles again (a new Space or model object traces
    to the same program) is read from disk instead of recompiled, and a generated C program is
    built once per run, not once per test module and worker. Nothing is carried over from an
    earlier run and ~/.cache is never touched; the process that made the directory removes it
    at exit. Tests of the kernel cache itself point PERFJAX_CACHE elsewhere (monkeypatch)."""
    if "PERFJAX_TESTS_CACHE" not in os.environ:
        path = tempfile.mkdtemp(prefix="perfjax-tests-cache-")
        os.environ["PERFJAX_TESTS_CACHE"] = path
        atexit.register(shutil.rmtree, path, True)
    root = os.environ["PERFJAX_TESTS_CACHE"]
    os.environ["PERFJAX_CACHE"] = os.path.join(root, "kernels")
    os.environ["PERFJAX_CALIBRATION_CACHE"] = os.path.join(root, "calibrations")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(root, "jax")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


_fast_compiles()
_share_build_caches()

from perfjax import Categorical, Integer, Ordinal, Permutation, Real  # noqa: E402

REF_FUNCS = {
    "abs": np.abs, "min": np.minimum, "max": np.maximum, "minimum": np.minimum,
    "maximum": np.maximum, "sqrt": np.sqrt, "log": np.log, "log2": np.log2, "log10": np.log10,
    "exp": np.exp, "floor": np.floor, "ceil": np.ceil, "where": np.where, "sin": np.sin,
    "cos": np.cos, "tan": np.tan,
}

_CODE_CACHE: dict[str, Any] = {}


def _code(text: str):
    code = _CODE_CACHE.get(text)
    if code is None:
        code = _CODE_CACHE[text] = compile(text.strip(), "<constraint>", "eval")
    return code


def ref_namespace(params: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a constraint sees for one row, as numpy scalars."""
    ns: dict[str, Any] = {}
    for name, param in params.items():
        value = row[name]
        if isinstance(param, Permutation):
            perm = [int(v) for v in value]
            for k in range(param.n):
                ns[f"{name}_{k}"] = np.int64(perm[k])
                ns[f"{name}_i{k}"] = np.int64(perm.index(k))
        elif isinstance(param, Categorical):
            ns[name] = np.int64(int(value))
        elif isinstance(param, Integer):
            ns[name] = np.int64(int(value))
        elif isinstance(param, Ordinal):
            ints = all(isinstance(v, (int, np.integer)) for v in param.values)
            ns[name] = np.int64(int(value)) if ints else np.float64(float(value))
        else:
            ns[name] = np.float64(float(value))
    return ns


def ref_constraint(text: str, params: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    ns = ref_namespace(params, row)
    with np.errstate(all="ignore"):
        return bool(eval(_code(text), {"__builtins__": {}}, {**REF_FUNCS, **ns}))  # noqa: S307


def ref_in_domain(params: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    for name, param in params.items():
        v = row[name]
        if isinstance(param, Permutation):
            if sorted(int(x) for x in v) != list(range(param.n)):
                return False
        elif isinstance(param, Categorical):
            if not 0 <= int(v) < len(param.values):
                return False
        elif isinstance(param, Ordinal):
            if not any(float(v) == float(w) for w in param.values):
                return False
        elif isinstance(param, Integer):
            if float(v) != int(v) or not param.lo <= int(v) <= param.hi:
                return False
        else:
            if not param.lo <= float(v) <= param.hi:  # NaN fails too
                return False
    return True


def ref_feasible(params: Mapping[str, Any], constraints: Sequence[str], row: Mapping[str, Any]) -> bool:
    if not ref_in_domain(params, row):
        return False
    return all(ref_constraint(text, params, row) for text in constraints)


def ref_violated(params, constraints, row) -> list[str]:
    return [text for text in constraints if not ref_constraint(text, params, row)]


def ref_category_index(param: Categorical, value: Any) -> int:
    """Index of a plain categorical value (exact type and value match)."""
    for i, v in enumerate(param.values):
        if type(v) is type(value) and v == value:
            return i
    raise AssertionError(f"{value!r} is not a value of {param.values!r}")


def config_to_row(params: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict (as to_dicts writes it) -> a row."""
    row = {}
    for name, param in params.items():
        value = config[name]
        if isinstance(param, Categorical):
            row[name] = ref_category_index(param, value)
        elif isinstance(param, Permutation):
            row[name] = tuple(value)
        else:
            row[name] = value
    return row


def batch_to_rows(params: Mapping[str, Any], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    cols = {k: np.asarray(batch[k]) for k in params}
    n = len(next(iter(cols.values())))
    rows = []
    for i in range(n):
        row = {}
        for name, param in params.items():
            v = cols[name][i]
            row[name] = tuple(int(x) for x in v) if isinstance(param, Permutation) else v.item()
        rows.append(row)
    return rows


def column_dtype(param: Any):
    if isinstance(param, Real):
        return np.float64
    if isinstance(param, Ordinal):
        return np.int64 if all(isinstance(v, int) for v in param.values) else np.float64
    return np.int64


def rows_to_batch(params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    out = {}
    for name, param in params.items():
        if isinstance(param, Permutation):
            out[name] = np.asarray([list(r[name]) for r in rows], dtype=np.int64).reshape(len(rows), param.n)
        else:
            out[name] = np.asarray([r[name] for r in rows], dtype=column_dtype(param))
    return out


def domain_values(param: Any) -> list[Any]:
    """Every row-level value of a finite parameter."""
    if isinstance(param, Permutation):
        return list(itertools.permutations(range(param.n)))
    if isinstance(param, Categorical):
        return list(range(len(param.values)))
    if isinstance(param, Ordinal):
        return list(param.values)
    if isinstance(param, Integer):
        return list(range(param.lo, param.hi + 1))
    raise TypeError(f"{param!r} is not finite")


def brute_force(params: Mapping[str, Any], constraints: Sequence[str]):
    """Yield every feasible row of a finite space (itertools.product + the reference)."""
    names = list(params)
    for combo in itertools.product(*(domain_values(params[n]) for n in names)):
        row = dict(zip(names, combo))
        if all(ref_constraint(t, params, row) for t in constraints):
            yield row


def row_key(params: Mapping[str, Any], row: Mapping[str, Any]) -> tuple:
    return tuple(tuple(int(x) for x in row[n]) if isinstance(p, Permutation) else row[n]
                 for n, p in params.items())


def log_uniform_integer_mass(lo: int, hi: int) -> np.ndarray:
    """Mass of each integer in [lo, hi] under a log-uniform density on [lo - 1/2, hi + 1/2]."""
    k = np.arange(lo, hi + 1, dtype=float)
    mass = np.log(k + 0.5) - np.log(k - 0.5)
    return mass / mass.sum()


# ------------------------------------------------------------------------------ strategies

def value_strategy(param: Any) -> st.SearchStrategy:
    """Any in-domain row-level value, boundaries included."""
    if isinstance(param, Permutation):
        return st.permutations(list(range(param.n))).map(tuple)
    if isinstance(param, Categorical):
        return st.integers(0, len(param.values) - 1)
    if isinstance(param, Ordinal):
        return st.sampled_from(param.values)
    if isinstance(param, Integer):
        return st.integers(param.lo, param.hi)
    bounds = st.sampled_from([float(param.lo), float(param.hi)])
    if param.log:
        inner = st.floats(math.log(param.lo), math.log(param.hi), allow_subnormal=False).map(math.exp).map(
            lambda x: min(max(x, float(param.lo)), float(param.hi)))
    else:
        inner = st.floats(float(param.lo), float(param.hi), allow_subnormal=False)
    return st.one_of(bounds, inner)


def row_strategy(params: Mapping[str, Any]) -> st.SearchStrategy:
    return st.fixed_dictionaries({n: value_strategy(p) for n, p in params.items()})


def mutated_row_strategy(params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> st.SearchStrategy:
    """A given (typically feasible) row with zero or one parameter replaced by any in-domain value:
    configurations right next to the feasibility boundary."""
    names = list(params)

    @st.composite
    def build(draw):
        row = dict(draw(st.sampled_from(list(rows))))
        if draw(st.booleans()):
            name = draw(st.sampled_from(names))
            row[name] = draw(value_strategy(params[name]))
        return row

    return build()
