"""Encodings of configurations: features for surrogates, a relaxation for gradient search, and
neighbourhoods for local search.

* ``embed`` / ``unembed``: numerics normalized to [0, 1] (on a log scale where asked), one-hot
  categoricals, permutations as Spearman position vectors, Kendall pairwise-order bits or Hamming
  one-hot positions. ``feature_groups`` says which columns belong to which parameter, so kernels
  can treat each group its own way.
* ``relax`` / ``round`` / ``soften`` / ``project``: every parameter as unconstrained reals —
  logit of the normalized value for numerics, logits over values for ordinals and categoricals, a
  position x item score matrix for permutations (made doubly stochastic by Sinkhorn in
  ``soften``). ``round`` maps back to the nearest valid value; ``project`` also enforces the
  constraints.
* ``neighbors``: adjacent ordinal/integer values, every other categorical value, every single swap
  of a permutation, and a small step either way for reals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from perfjax.arrays import is_traced, on_buckets, to_jax
from perfjax.errors import SpaceError
from perfjax.space.params import Categorical, Integer, Ordinal, Parameter, Permutation, Real, positions

# relax() puts the chosen value at this logit above the others: a clear argmax, soft gradients.
ONE_HOT_LOGIT = 4.0
# Normalized numerics are clipped this far inside (0, 1) before the logit, so ends round-trip.
_EDGE = 1e-12


@dataclass(frozen=True)
class FeatureGroup:
    """Columns [start, stop) of the embedding belong to parameter ``name``, encoded as ``encoding``."""

    name: str
    encoding: str  # "numeric", "onehot", "spearman", "kendall" or "hamming"
    start: int
    stop: int


def _perm_encoding(param: Permutation, override: str | None) -> str:
    encoding = (override or param.parametrization).lower()
    if encoding == "naive":
        return "hamming"
    if encoding not in ("spearman", "kendall", "hamming"):
        raise SpaceError(f"unknown permutation encoding {encoding!r} (spearman, kendall, hamming)")
    return encoding


def feature_groups(space, permutation: str | None = None) -> list[FeatureGroup]:
    groups, start = [], 0
    for name, param in space.params.items():
        if isinstance(param, Categorical):
            encoding, width = "onehot", len(param.values)
        elif isinstance(param, Permutation):
            encoding = _perm_encoding(param, permutation)
            n = param.n
            width = {"spearman": n, "kendall": n * (n - 1) // 2, "hamming": n * n}[encoding]
        else:
            encoding, width = "numeric", 1
        groups.append(FeatureGroup(name, encoding, start, start + width))
        start += width
    return groups


def _numeric_range(param: Parameter) -> tuple[float, float, bool]:
    if isinstance(param, Ordinal):
        return float(param.values[0]), float(param.values[-1]), param.log
    return float(param.lo), float(param.hi), param.log


def to_unit(param: Parameter, x: Any) -> jax.Array:
    """Numeric value -> [0, 1] (log scale for log parameters)."""
    lo, hi, log = _numeric_range(param)
    x = jnp.asarray(x, dtype=float)
    if hi == lo:
        return jnp.zeros_like(x)
    if log:
        return (jnp.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (x - lo) / (hi - lo)


def from_unit(param: Parameter, u: Any) -> jax.Array:
    """[0, 1] -> the nearest valid value of a numeric parameter."""
    lo, hi, log = _numeric_range(param)
    u = jnp.clip(jnp.asarray(u, dtype=float), 0.0, 1.0)
    x = _scale(u, lo, hi, log)
    if isinstance(param, Real):
        return x
    if isinstance(param, Integer):
        return jnp.clip(jnp.round(x), lo, hi).astype(jnp.int64)
    # Ordinal: nearest value in the unit (log-aware) scale.
    grid = to_unit(param, param.values_array())
    idx = jnp.argmin(jnp.abs(u[..., None] - grid), axis=-1)
    return jnp.asarray(param.values_array())[idx]


def _scale(u: jax.Array, lo: float, hi: float, log: bool) -> jax.Array:
    """[0, 1] -> [lo, hi] (log scale if asked), hitting both ends exactly (exp(log(hi)) != hi)."""
    x = jnp.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if log else lo + u * (hi - lo)
    return jnp.where(u >= 1.0, hi, jnp.where(u <= 0.0, lo, jnp.clip(x, lo, hi)))


def _ordinal_index(param: Ordinal, column: Any) -> jax.Array:
    return jnp.searchsorted(jnp.asarray(param.values_array()), jnp.asarray(column))


def _on_rows(space, name: str, body, tree: Any) -> Any:
    """``body(tree)`` for a tree of arrays with one row per configuration, compiled once per
    space, encoding and power-of-two row bucket (rows padded with zeros, the result cut back):
    run op by op, each new batch size compiled a dozen small programs again (~0.5 s). Inside a
    trace (``jit``, ``grad``) ``body`` runs inline."""
    if is_traced(tree):
        return body(tree)
    program = space._programs.get(name)
    if program is None:
        program = space._programs[name] = jax.jit(body)
    return on_buckets(program, tree)


def embed(space, batch: Mapping[str, Any], permutation: str | None = None) -> jax.Array:
    batch = space.check_batch(batch)
    feature_groups(space, permutation)  # an unknown encoding is refused here, before compiling
    return _on_rows(space, f"embed/{permutation}", lambda b: _embed(space, b, permutation), batch)


def _embed(space, batch: Mapping[str, Any], permutation: str | None) -> jax.Array:
    parts = []
    for group in feature_groups(space, permutation):
        param, column = space.params[group.name], jnp.asarray(batch[group.name])
        if group.encoding == "numeric":
            parts.append(to_unit(param, column)[:, None])
        elif group.encoding == "onehot":
            parts.append(jax.nn.one_hot(column, len(param.values), dtype=float))
        else:
            parts.append(_embed_permutation(column, group.encoding))
    return jnp.concatenate(parts, axis=1)


def _embed_permutation(perm: jax.Array, encoding: str) -> jax.Array:
    n = perm.shape[1]
    position = positions(perm)  # position[i] = where item i stands
    if encoding == "spearman":
        return position.astype(float) / max(n - 1, 1)
    if encoding == "kendall":
        i, j = np.triu_indices(n, k=1)
        return (position[:, i] < position[:, j]).astype(float)
    return jax.nn.one_hot(position, n, dtype=float).reshape(perm.shape[0], n * n)


def _concrete(x: Any) -> np.ndarray | None:
    """x as numpy when it holds values (None under jit/grad tracing, where checks cannot run)."""
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _check_no_nan(values: np.ndarray | None, what: str) -> None:
    if values is not None and np.isnan(values).any():
        row = np.argwhere(np.isnan(values))[0][0]
        raise SpaceError(f"{what} holds NaN (row {row}): it has no nearest valid value")


def unembed(space, features: Any, permutation: str | None = None) -> dict:
    """Features -> the nearest batch (inverse of ``embed`` on embedded configurations)."""
    groups = feature_groups(space, permutation)
    try:
        features = jnp.asarray(features, dtype=float)
    except (TypeError, ValueError):
        raise SpaceError(f"unembed: features must be a numeric [N, {groups[-1].stop}] array, got "
                         f"{type(features).__name__}") from None
    if features.ndim != 2 or features.shape[1] != groups[-1].stop:
        raise SpaceError(f"unembed: features have shape {tuple(features.shape)}, expected "
                         f"[N, {groups[-1].stop}] for space {space.name!r}")
    values = _concrete(features)
    for group in groups:
        _check_no_nan(None if values is None else values[:, group.start:group.stop],
                      f"unembed: features of parameter {group.name!r}")
    return _on_rows(space, f"unembed/{permutation}",
                    lambda f: _unembed(space, f, permutation), features)


def _unembed(space, features: jax.Array, permutation: str | None) -> dict:
    groups = feature_groups(space, permutation)
    out = {}
    for group in groups:
        param, block = space.params[group.name], features[:, group.start:group.stop]
        if group.encoding == "numeric":
            out[group.name] = from_unit(param, block[:, 0])
        elif group.encoding == "onehot":
            out[group.name] = jnp.argmax(block, axis=1).astype(jnp.int64)
        else:
            n = param.n
            if group.encoding == "spearman":
                score = block
            elif group.encoding == "kendall":  # item i's position = how many items precede it
                i, j = np.triu_indices(n, k=1)
                before = jnp.zeros((block.shape[0], n, n)).at[:, j, i].set(block).at[:, i, j].set(1 - block)
                score = before.sum(axis=2)
            else:
                score = jnp.argmax(block.reshape(-1, n, n), axis=2).astype(float)
            out[group.name] = jnp.argsort(score, axis=1, stable=True).astype(jnp.int64)
    return out


# ------------------------------------------------------------------------------ relaxation

def relax(space, batch: Mapping[str, Any]) -> dict:
    """A batch as unconstrained reals (see module docstring); ``round(relax(b))`` equals ``b``
    (log-scaled reals up to float rounding, ~1e-15 relative)."""
    return _on_rows(space, "relax", lambda b: _relax(space, b), space.check_batch(batch))


def _relax(space, batch: Mapping[str, Any]) -> dict:
    out = {}
    for name, param in space.params.items():
        column = jnp.asarray(batch[name])
        if isinstance(param, (Real, Integer)):
            u = jnp.clip(to_unit(param, column), _EDGE, 1 - _EDGE)
            out[name] = jnp.log(u) - jnp.log1p(-u)
        elif isinstance(param, Ordinal):
            out[name] = ONE_HOT_LOGIT * jax.nn.one_hot(_ordinal_index(param, column), len(param.values))
        elif isinstance(param, Categorical):
            out[name] = ONE_HOT_LOGIT * jax.nn.one_hot(column, len(param.values))
        else:  # score[position, item]
            out[name] = ONE_HOT_LOGIT * jax.nn.one_hot(column, param.n)
    return out


def round(space, relaxed: Mapping[str, Any]) -> dict:  # noqa: A001 - the natural name
    """Relaxed values -> the nearest valid values (constraints are not enforced: see project)."""
    relaxed = _check_relaxed(space, relaxed, "round")
    for name in space.names:
        _check_no_nan(_concrete(relaxed[name]), f"round: relaxed values of parameter {name!r}")
    return _on_rows(space, "round", lambda z: _round(space, z), relaxed)


def _round(space, relaxed: Mapping[str, Any]) -> dict:
    out = {}
    for name, param in space.params.items():
        z = relaxed[name]
        if isinstance(param, (Real, Integer)):
            out[name] = from_unit(param, jax.nn.sigmoid(z))
        elif isinstance(param, Ordinal):
            out[name] = jnp.asarray(param.values_array())[jnp.argmax(z, axis=-1)]
        elif isinstance(param, Categorical):
            out[name] = jnp.argmax(z, axis=-1).astype(jnp.int64)
        else:
            out[name] = greedy_assignment(jnp.clip(z, -1e300, 1e300))  # -inf would be re-picked
    return out


def _check_relaxed(space, relaxed: Mapping[str, Any], what: str) -> dict:
    """Check a relaxed batch's keys and shapes (what ``relax`` returns); return float arrays."""
    from perfjax.space.space import check_keys

    check_keys(space, relaxed, f"{what}: relaxed values", f"{what}: relaxed values")
    out, sizes = {}, set()
    for name, param in space.params.items():
        try:
            z = jnp.asarray(relaxed[name], dtype=float)
        except (TypeError, ValueError):
            raise SpaceError(f"{what}: relaxed values of parameter {name!r} are not numbers") from None
        if isinstance(param, (Real, Integer)):
            want = ()
        elif isinstance(param, (Ordinal, Categorical)):
            want = (len(param.values),)
        else:
            want = (param.n, param.n)
        if z.ndim != 1 + len(want) or tuple(z.shape[1:]) != want:
            raise SpaceError(f"{what}: relaxed values of parameter {name!r} have shape "
                             f"{tuple(z.shape)}, expected [N{''.join(f', {w}' for w in want)}]")
        sizes.add(z.shape[0])
        out[name] = z
    if len(sizes) > 1:
        raise SpaceError(f"{what}: relaxed values have different row counts: {sorted(sizes)}")
    return out


@jax.jit
def greedy_assignment(score: jax.Array) -> jax.Array:
    """Score matrices [N, n, n] (position x item) -> permutations, taking the best remaining
    (position, item) pair n times. Exact on one-hot scores and jit-friendly."""
    n = score.shape[-1]
    rows = jnp.arange(score.shape[0])

    def pick(state, _):
        s, perm = state
        flat = jnp.argmax(s.reshape(s.shape[0], -1), axis=1)
        pos, item = flat // n, flat % n
        perm = perm.at[rows, pos].set(item)
        s = s.at[rows, pos, :].set(-jnp.inf).at[rows, :, item].set(-jnp.inf)
        return (s, perm), None

    (_, perm), _ = jax.lax.scan(pick, (score, jnp.zeros(score.shape[:2], jnp.int64)), None, length=n)
    return perm


@jax.jit
def sinkhorn(log_score: jax.Array, tolerance: float = 1e-9, max_iterations: int = 5000) -> jax.Array:
    """Doubly-stochastic matrices from score matrices (log-space Sinkhorn normalization),
    iterated until every row and column sums to 1 within ``tolerance`` (sharp, low-temperature
    scores need many more iterations than soft ones)."""
    def normalize(z):
        z = z - jax.nn.logsumexp(z, axis=-1, keepdims=True)
        return z - jax.nn.logsumexp(z, axis=-2, keepdims=True)

    def error(z):  # columns are exact after normalize(); rows are what is left to converge
        return jnp.max(jnp.abs(jnp.exp(jax.nn.logsumexp(z, axis=-1)) - 1.0))

    def body(state):
        z, i = state
        return normalize(z), i + 1

    z, _ = jax.lax.while_loop(lambda s: (error(s[0]) > tolerance) & (s[1] < max_iterations),
                              body, (normalize(log_score), 0))
    return jnp.exp(z)


def soften(space, relaxed: Mapping[str, Any], temperature: float = 1.0, key=None) -> dict:
    """Differentiable soft configuration: numerics as continuous values, ordinals and categoricals
    as probability vectors, permutations as doubly-stochastic [position, item] matrices. With a
    ``key``, Gumbel noise is added first (Gumbel-softmax / Gumbel-Sinkhorn sampling)."""
    if isinstance(temperature, (int, float, np.integer, np.floating)) and (
            isinstance(temperature, bool) or not 0 < temperature < math.inf):
        raise SpaceError(f"soften: temperature must be a positive finite number, got {temperature!r}")
    relaxed = _check_relaxed(space, relaxed, "soften")
    if key is not None:
        from perfjax.space.space import _as_key
        key = _as_key(key)
    out = {}
    keys = dict(zip(space.names, jax.random.split(key, len(space.names)))) if key is not None else {}
    for name, param in space.params.items():
        z = relaxed[name]
        if isinstance(param, (Real, Integer)):
            out[name] = _scale(jax.nn.sigmoid(z), *_numeric_range(param))
            continue
        if name in keys:
            z = z + jax.random.gumbel(keys[name], z.shape)
        if isinstance(param, Permutation):
            out[name] = sinkhorn(z / temperature)
        else:
            out[name] = jax.nn.softmax(z / temperature, axis=-1)
    return out


def project(space, relaxed: Mapping[str, Any], seed: Any = 0, candidates: int = 512) -> dict:
    """Round, then replace every infeasible row by the nearest feasible configuration (in the
    embedding) among its feasible neighbours and ``candidates`` feasible samples."""
    rounded = {k: np.asarray(v) for k, v in round(space, relaxed).items()}
    ok = np.asarray(space.feasible(rounded))
    if ok.all():
        return {k: to_jax(v) for k, v in rounded.items()}
    bad = np.nonzero(~ok)[0]
    target = np.asarray(embed(space, {k: v[bad] for k, v in rounded.items()}))
    pool = {k: np.asarray(v) for k, v in space.sample(candidates, seed=seed).items()}
    pool_features = np.asarray(embed(space, pool))
    best_dist = ((target[:, None, :] - pool_features[None, :, :]) ** 2).sum(-1)
    best_idx = best_dist.argmin(axis=1)
    choice = {k: v[best_idx] for k, v in pool.items()}
    best = best_dist[np.arange(len(bad)), best_idx]
    near, parent = space.neighbors({k: v[bad] for k, v in rounded.items()}, feasible_only=True)
    if len(parent):
        near = {k: np.asarray(v) for k, v in near.items()}
        parent = np.asarray(parent)
        dist = ((np.asarray(embed(space, near)) - target[parent]) ** 2).sum(-1)
        for row in np.unique(parent):
            mine = np.nonzero(parent == row)[0]
            j = mine[dist[mine].argmin()]
            if dist[j] < best[row]:
                best[row] = dist[j]
                for k in choice:
                    choice[k][row] = near[k][j]
    for k in rounded:
        rounded[k] = rounded[k].copy()
        rounded[k][bad] = choice[k]
    return {k: to_jax(v) for k, v in rounded.items()}


# ----------------------------------------------------------------------------- neighbourhoods

def neighbors(space, batch: Mapping[str, Any], *, feasible_only: bool = True,
              real_step: float = 0.03) -> tuple[dict, jax.Array]:
    """Every one-move neighbour of each configuration: (neighbour batch, parent row index)."""
    if isinstance(real_step, bool) or not isinstance(real_step, (int, float, np.integer, np.floating)) \
            or not 0 < real_step <= 1:
        raise SpaceError(f"neighbors: real_step must be a number in (0, 1] (a share of each real "
                         f"range), got {real_step!r}")
    batch = {k: np.asarray(v) for k, v in space.check_batch(batch).items()}
    n = len(batch[space.names[0]])
    moves_cols: list[dict] = []
    moves_parent: list[np.ndarray] = []
    rows = np.arange(n)

    def emit(name: str, new_column: np.ndarray, valid: np.ndarray) -> None:
        keep = valid & np.ones(n, dtype=bool)
        moved = {k: v[keep] for k, v in batch.items()}
        moved[name] = new_column[keep]
        moves_cols.append(moved)
        moves_parent.append(rows[keep])

    for name, param in space.params.items():
        column = batch[name]
        if isinstance(param, Permutation):
            for i in range(param.n):
                for j in range(i + 1, param.n):
                    swapped = column.copy()
                    swapped[:, [i, j]] = swapped[:, [j, i]]
                    emit(name, swapped, np.ones(n, dtype=bool))
        elif isinstance(param, Categorical):
            for value in range(len(param.values)):
                emit(name, np.full(n, value, dtype=np.int64), column != value)
        elif isinstance(param, Real):
            u = np.asarray(to_unit(param, column))
            for step in (-real_step, real_step):
                moved = np.asarray(from_unit(param, np.clip(u + step, 0, 1)))
                emit(name, moved, moved != column)
        else:
            values = space._domain.get(name)  # allowed values in order, None if not enumerated
            if values is None:  # huge integer range: plain +-1
                for step in (-1, 1):
                    moved = column + step
                    emit(name, moved, (moved >= param.lo) & (moved <= param.hi))
            else:
                idx = np.searchsorted(values, column)
                present = (idx < len(values)) & (values[np.minimum(idx, len(values) - 1)] == column)
                for step in (-1, 1):
                    j = idx + step
                    inside = (j >= 0) & (j < len(values))
                    moved = values[np.clip(j, 0, len(values) - 1)]
                    # A value outside the filtered domain moves to the nearest allowed one.
                    if step == 1:
                        moved = np.where(present, moved, values[np.clip(idx, 0, len(values) - 1)])
                        inside = np.where(present, inside, idx < len(values))
                    emit(name, moved, inside)
    out = {k: np.concatenate([m[k] for m in moves_cols]) if moves_cols else batch[k][:0]
           for k in space.names}
    parent = np.concatenate(moves_parent) if moves_parent else np.zeros(0, dtype=np.int64)
    if feasible_only and len(parent):
        ok = np.asarray(space.feasible(out))
        out = {k: v[ok] for k, v in out.items()}
        parent = parent[ok]
    return {k: to_jax(v) for k, v in out.items()}, to_jax(parent)
