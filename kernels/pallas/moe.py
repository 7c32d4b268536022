"""Mixture-of-experts kernels in Pallas: a grouped (ragged) expert GEMM and the expert FFN built on
it, plus a least-squares fit of a GPU expert-time model to measured kernel times.

Grouped GEMM: ``lhs`` [tokens, hidden] holds token rows sorted by expert, ``group_sizes`` [E]
says how many rows each expert owns (in order), and row r of the result is ``lhs[r] @ rhs[g]``
for the expert g owning row r. Groups are ragged, so a row tile of ``block_m`` rows may straddle
several groups. The grid's first axis is the *work item*: a (group, row tile) pair with rows in
common, listed group-major outside the kernel (a cumulative sum and a binary search over tiny
arrays, as megablox's ``gmm`` builds its group metadata); the second is the column tile of
``block_n``. A program multiplies its row tile by its expert's weights over K steps of
``block_k``, with rows outside the group masked to zero on load and on store, in a float32
(float64 for float64) accumulator. Items sharing a tile store disjoint rows, so programs never
race and need no atomics, and nothing is padded or copied. There are at most (row tiles + E)
items, a static bound (the slack items do nothing); empty groups have none. One pseudo-group
after the last covers rows past ``sum(group_sizes)`` and stores zeros there. Unlike one program
per row tile looping over its groups, small token counts still give E x column-tiles programs -
the decode regime where the weights' HBM bandwidth is everything.

What this JAX version's Pallas imposes (jax 0.10 and 0.11), as for ``sparse``:

* The Triton backend (asked for explicitly) has no scalar prefetch, so group starts / ends and
  each work item's group and tile are ordinary inputs read with scalar loads inside the kernel.
* Triton loads power-of-two arrays: ``block_m`` / ``block_k`` / ``block_n`` are powers of two.
  Shapes need not be multiples of them: edge tiles load and store with masks (``other=0``)
  instead of Pallas blocks, which Triton would read past the array's end.
* Triton's ``dot`` needs tiles of at least 16 (N >= 8 for float64); smaller tiles (interpret-mode
  tests) are multiplied by a broadcast multiply-and-sum.
* The K loop has a static trip count and idle work items branch around it (``pl.when``): with a
  trip count computed in the kernel the loop ran no step on an H100 (jax 0.11), a failure
  interpret mode cannot show (``test_grouped_matmul_k_loop_has_a_static_trip_count`` checks
  the lowered Triton module instead). All of ``tests/test_kernels_pallas*.py`` passed compiled
  on an H100 on 2026-11-26.
* Off GPU, ``pallas_call`` runs only with ``interpret=True``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from perfjax.errors import PerfjaxError, WorkloadError
from perfjax.kernels.pallas.sparse import _is_power_of_two, _resolve_interpret

BLOCK_M = 64
"""Rows (tokens) per tile for 4- and 8-byte dtypes when ``block_m`` is not given."""

BLOCK_K = 64
"""Reduction (hidden) width of one K step for 4- and 8-byte dtypes when not given."""

BLOCK_N = 64
"""Columns (FFN outputs) per tile for 4- and 8-byte dtypes when not given."""


def default_blocks(tokens: int, experts: int, dtype) -> tuple[int, int, int]:
    """(block_m, block_k, block_n) for ``tokens`` rows over ``experts`` groups of ``dtype``.

    For 2-byte dtypes the row tile follows the mean rows per expert (a power of two in 16..128)
    and the column tile is 128, with a K step of 128 for short row tiles and 64 for 128-row ones.
    Measured on an H100 (jax 0.11, bfloat16, Qwen3-30B-A3B and GPT-OSS-120B expert shapes, one
    expert layer against ``jax.lax.ragged_dot``, ``benchmarks/moe_gpu.py``): 128/64/128 took
    0.12-0.42x ragged_dot's time at 4096 tokens per expert where 64/64/64 took 0.22-0.70x (one
    sweep, side by side). At 1-8 tokens per expert no choice stood out: row tiles of 16 with K
    steps of 64-512, column tiles of 64 or 128 and 3-5 pipeline stages all took 0.86-2.0x
    ragged_dot's time (1.3-2.0x on the Qwen shape, 0.86-1.3x on GPT-OSS's), differences within
    run-to-run noise. Nor did splitting each program's K loop over 2-16 programs (float32
    partial sums added afterwards; 0.28-0.43 ms per layer at 1-16 tokens for every split on
    2026-11-27, so that variant was not kept): decode is not short of programs. A sweep of the
    weights streamed (54-1614 MiB, one token per expert) put the layer at a fixed ~0.29 ms plus
    2.1-2.7 TB/s, against ragged_dot's 0.11-0.25 ms plus 1.5-2.0 TB/s: what the kernel loses at
    decode is per-layer fixed cost (two launches and the work-item arithmetic around each), not
    streaming (``benchmarks/results/h100_moe_decode.txt``). Wider dtypes keep 64/64/64 (three
    pipeline stages of wider tiles would not fit an SM's shared memory).
    """
    if jnp.dtype(dtype).itemsize > 2:
        return BLOCK_M, BLOCK_K, BLOCK_N
    per_expert = max(1, tokens // max(1, experts))
    block_m = min(128, max(16, pl.next_power_of_2(per_expert)))
    return block_m, (64 if block_m >= 128 else 128), 128


_INDEX = jnp.int32
_DTYPES = ("bfloat16", "float16", "float32", "float64")


# ------------------------------------------------------------------------------- validation


def _check_blocks(what: str, **blocks) -> None:
    for name, value in blocks.items():
        if not _is_power_of_two(value):
            raise WorkloadError(f"{what}: {name} must be a power of two (Triton loads "
                                f"power-of-two arrays), got {value!r}")


def _floating(x, name: str, what: str, ndim: int) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise WorkloadError(f"{what}: {name} must have {ndim} dimensions, got shape {x.shape}")
    if x.dtype.name not in _DTYPES:
        raise WorkloadError(f"{what}: {name} dtype {x.dtype} is not one of {', '.join(_DTYPES)}")
    return x


def _concrete(x) -> np.ndarray | None:
    """``x``'s values when known now, None under tracing (values are then not checked)."""
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _check_group_sizes(group_sizes, experts: int, tokens: int, what: str) -> jax.Array:
    group_sizes = jnp.asarray(group_sizes)
    if group_sizes.shape != (experts,):
        raise WorkloadError(f"{what}: group_sizes must have shape ({experts},) (one per expert "
                            f"of rhs), got {group_sizes.shape}")
    if group_sizes.dtype.kind not in "iu":
        raise WorkloadError(f"{what}: group_sizes dtype {group_sizes.dtype} is not integer")
    values = _concrete(group_sizes)
    if values is not None:
        if (values < 0).any():
            raise WorkloadError(f"{what}: group_sizes has negative entries at experts "
                                f"{np.flatnonzero(values < 0)[:8].tolist()}")
        if int(values.sum()) > tokens:
            raise WorkloadError(f"{what}: group_sizes sum to {int(values.sum())}, more than the "
                                f"{tokens} rows of lhs")
    return group_sizes.astype(_INDEX)


# ------------------------------------------------------------------------------ grouped GEMM


def _accumulator_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.float64 if dtype == jnp.float64 else jnp.float32)


def _tile_matmul(a: jax.Array, b: jax.Array, acc_dtype) -> jax.Array:
    """``a @ b`` accumulated in ``acc_dtype``: Triton ``dot`` where it takes the tile, a broadcast
    multiply-and-sum below that."""
    (m, k), n = a.shape, b.shape[1]
    min_n = 8 if a.dtype == jnp.float64 else 16
    if m >= 16 and k >= 16 and n >= min_n:
        # HIGHEST keeps float32 in IEEE (not TF32); low-precision inputs take the default.
        precision = lax.Precision.HIGHEST if a.dtype in (jnp.float32, jnp.float64) else None
        return jnp.dot(a, b, precision=precision, preferred_element_type=acc_dtype)
    return jnp.sum(a.astype(acc_dtype)[:, :, None] * b.astype(acc_dtype)[None, :, :], axis=1)


def _grouped_matmul_kernel(group_start_ref, group_end_ref, work_group_ref, work_tile_ref,
                           work_count_ref, lhs_ref, rhs_ref, out_ref, *, block_m: int,
                           block_k: int, block_n: int):
    """One program: work item ``program_id(0)`` - group g's rows inside row tile t - times
    column tile ``program_id(1)``; it stores only those rows, so items sharing a tile write
    disjoint rows. Group ``experts`` is the rows past the last group: it stores zeros."""
    w, j = pl.program_id(0), pl.program_id(1)
    tokens, hidden = lhs_ref.shape
    experts, _, ffn = rhs_ref.shape
    acc_dtype = _accumulator_dtype(lhs_ref.dtype)
    g, t = work_group_ref[w], work_tile_ref[w]
    live = w < work_count_ref[0]  # items past the count (the static bound's slack) do nothing
    expert = jnp.minimum(g, experts - 1)
    row_tile = pl.ds(pl.multiple_of(t * block_m, block_m), block_m)
    col_tile = pl.ds(pl.multiple_of(j * block_n, block_n), block_n)
    rows = t * block_m + lax.broadcasted_iota(_INDEX, (block_m,), 0)
    row_in_group = (rows >= group_start_ref[g]) & (rows < group_end_ref[g])
    col_inside = j * block_n + lax.broadcasted_iota(_INDEX, (block_n,), 0) < ffn

    def k_step(kb, acc):
        k_slice = pl.ds(pl.multiple_of(kb * block_k, block_k), block_k)
        k_inside = kb * block_k + lax.broadcasted_iota(_INDEX, (block_k,), 0) < hidden
        a = pltriton.load(lhs_ref.at[row_tile, k_slice],
                          mask=row_in_group[:, None] & k_inside[None, :], other=0)
        b = pltriton.load(rhs_ref.at[expert, k_slice, col_tile],
                          mask=k_inside[:, None] & col_inside[None, :], other=0)
        return acc + _tile_matmul(a, b, acc_dtype)

    store_mask = row_in_group[:, None] & col_inside[None, :]

    # Branches, not a trip count of zero: a K loop whose bound is computed in the kernel
    # (jnp.where(live, steps, 0)) ran no step at all on an H100 with jax 0.11's Triton lowering.
    @pl.when(live & (g < experts))
    def _():
        acc = lax.fori_loop(0, pl.cdiv(hidden, block_k), k_step,
                            jnp.zeros((block_m, block_n), acc_dtype))
        pltriton.store(out_ref.at[row_tile, col_tile], acc.astype(out_ref.dtype), mask=store_mask)

    @pl.when(live & (g == experts))  # the rows past the last group
    def _():
        pltriton.store(out_ref.at[row_tile, col_tile], jnp.zeros((block_m, block_n),
                                                                 out_ref.dtype), mask=store_mask)


def _work_items(group_sizes: jax.Array, tokens: int, block_m: int):
    """The (group, row tile) pairs with rows in common, group-major, as int32 arrays: group
    starts / ends [E + 1] (group E: the rows past the last group), per item its group and tile
    [row tiles + E], and the item count [1] (at most row tiles + E; the rest is slack)."""
    experts = group_sizes.shape[0]
    sizes = jnp.append(group_sizes, tokens - jnp.sum(group_sizes)).astype(_INDEX)
    ends = jnp.cumsum(sizes).astype(_INDEX)
    starts = ends - sizes
    first_tile = starts // block_m
    tiles = jnp.where(sizes > 0, (ends - 1) // block_m - first_tile + 1, 0)
    items_through = jnp.cumsum(tiles).astype(_INDEX)  # items of groups 0..g
    item = jnp.arange(pl.cdiv(tokens, block_m) + experts, dtype=_INDEX)
    # Item i belongs to the first group whose cumulative count exceeds i (empty groups: none).
    group = jnp.minimum(jnp.searchsorted(items_through, item, side="right"), experts)
    tile = first_tile[group] + item - (items_through[group] - tiles[group])
    tile = jnp.clip(tile, 0, pl.cdiv(tokens, block_m) - 1).astype(_INDEX)
    return starts, ends, group.astype(_INDEX), tile, items_through[-1:]


@functools.partial(jax.jit, static_argnames=("block_m", "block_k", "block_n", "interpret"))
def _grouped_matmul(lhs, rhs, group_sizes, block_m: int, block_k: int, block_n: int,
                    interpret: bool) -> jax.Array:
    """Work items plus the kernel, jitted: traced once per shape, dtype and block sizes."""
    tokens, ffn = lhs.shape[0], rhs.shape[2]
    structure = _work_items(group_sizes, tokens, block_m)
    return pl.pallas_call(
        functools.partial(_grouped_matmul_kernel, block_m=block_m, block_k=block_k,
                          block_n=block_n),
        grid=(structure[2].shape[0], pl.cdiv(ffn, block_n)),
        out_shape=jax.ShapeDtypeStruct((tokens, ffn), lhs.dtype),
        interpret=interpret,
        # Eight warps for tiles of 128 x 128 or more, as Triton's own matmul configurations do.
        compiler_params=pltriton.CompilerParams(num_warps=8 if block_m * block_n >= 128 * 128
                                                else 4, num_stages=3),
        name="grouped_matmul",
    )(*structure, lhs, rhs)


def grouped_matmul(lhs, rhs, group_sizes, *, block_m: int | None = None,
                   block_k: int | None = None, block_n: int | None = None,
                   interpret: bool | None = None) -> jax.Array:
    """Ragged grouped matmul: row r of ``lhs`` [tokens, hidden] times ``rhs[g]`` [hidden, ffn]
    for the group g owning it; groups are consecutive runs of ``group_sizes[g]`` rows.

    ``lhs`` holds tokens sorted by expert; ``rhs`` is [experts, hidden, ffn] of the same
    floating dtype (bfloat16, float16, float32, float64), accumulated in float32 (float64 for
    float64). Rows past ``sum(group_sizes)`` give zeros (room for static padding). Block sizes
    are powers of two; those not given come from ``default_blocks`` (static shapes only).
    ``interpret=None`` interprets off GPU and compiles (Triton) on GPU.
    Returns [tokens, ffn] in ``lhs``'s dtype - ``jax.lax.ragged_dot(lhs, rhs, group_sizes)``.

    Raises WorkloadError for mismatched shapes or dtypes, bad block sizes and (when known, i.e.
    not under tracing) negative group sizes or sizes summing to more than ``tokens``.
    """
    what = "grouped_matmul"
    lhs = _floating(lhs, "lhs", what, 2)
    rhs = _floating(rhs, "rhs", what, 3)
    if rhs.shape[1] != lhs.shape[1]:
        raise WorkloadError(f"{what}: rhs is [experts, hidden, ffn] = {rhs.shape} but lhs has "
                            f"{lhs.shape[1]} columns (hidden)")
    if rhs.dtype != lhs.dtype:
        raise WorkloadError(f"{what}: rhs dtype {rhs.dtype} differs from lhs dtype {lhs.dtype}")
    if rhs.shape[0] == 0:
        raise WorkloadError(f"{what}: rhs has no experts")
    defaults = default_blocks(lhs.shape[0], rhs.shape[0], lhs.dtype)
    block_m, block_k, block_n = (default if given is None else given for given, default
                                 in zip((block_m, block_k, block_n), defaults))
    _check_blocks(what, block_m=block_m, block_k=block_k, block_n=block_n)
    group_sizes = _check_group_sizes(group_sizes, rhs.shape[0], lhs.shape[0], what)
    if 0 in (*lhs.shape, rhs.shape[2]):
        return jnp.zeros((lhs.shape[0], rhs.shape[2]), lhs.dtype)
    return _grouped_matmul(lhs, rhs, group_sizes, block_m, block_k, block_n,
                           _resolve_interpret(interpret))


# -------------------------------------------------------------------------------- expert FFN


def expert_ffn(tokens, expert_ids, w_gate, w_up, w_down, routing_weights, *,
               block_m: int | None = None, block_k: int | None = None,
               block_n: int | None = None,
               interpret: bool | None = None) -> jax.Array:
    """The expert part of an MoE layer with SwiGLU experts, on ``grouped_matmul``.

    ``tokens`` [T, hidden]; ``expert_ids`` [T, top_k] integer experts each token is routed to;
    ``routing_weights`` [T, top_k] its gate weights; ``w_gate`` / ``w_up`` [E, hidden, ffn] and
    ``w_down`` [E, ffn, hidden]. Token copies are sorted by expert (stable argsort), run through
    ``silu(x @ w_gate[e]) * (x @ w_up[e]) @ w_down[e]`` as three grouped GEMMs (SwiGLU in
    float32, float64 for float64), unsorted and summed per token with the routing weights in
    that precision. Returns
    [T, hidden] in ``tokens``'s dtype.

    Raises WorkloadError for mismatched shapes or dtypes and (when known) expert ids outside
    [0, E).
    """
    what = "expert_ffn"
    tokens = _floating(tokens, "tokens", what, 2)
    w_gate = _floating(w_gate, "w_gate", what, 3)
    w_up = _floating(w_up, "w_up", what, 3)
    w_down = _floating(w_down, "w_down", what, 3)
    expert_ids, routing_weights = jnp.asarray(expert_ids), jnp.asarray(routing_weights)
    n_tokens, hidden = tokens.shape
    experts, _, ffn = w_gate.shape
    expected = {"w_gate": (experts, hidden, ffn), "w_up": (experts, hidden, ffn),
                "w_down": (experts, ffn, hidden)}
    for name, weight in (("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        if weight.shape != expected[name]:
            raise WorkloadError(f"{what}: {name} must have shape {expected[name]} for "
                                f"{n_tokens} x {hidden} tokens and w_gate {w_gate.shape}, got "
                                f"{weight.shape}")
        if weight.dtype != tokens.dtype:
            raise WorkloadError(f"{what}: {name} dtype {weight.dtype} differs from tokens dtype "
                                f"{tokens.dtype}")
    if expert_ids.ndim != 2 or expert_ids.shape[0] != n_tokens:
        raise WorkloadError(f"{what}: expert_ids must be [{n_tokens}, top_k], got shape "
                            f"{expert_ids.shape}")
    if expert_ids.dtype.kind not in "iu":
        raise WorkloadError(f"{what}: expert_ids dtype {expert_ids.dtype} is not integer")
    if routing_weights.shape != expert_ids.shape:
        raise WorkloadError(f"{what}: routing_weights must have expert_ids' shape "
                            f"{expert_ids.shape}, got {routing_weights.shape}")
    ids = _concrete(expert_ids)
    if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= experts):
        bad = ids[(ids < 0) | (ids >= experts)]
        raise WorkloadError(f"{what}: expert_ids must lie in [0, {experts}) (experts of w_gate), "
                            f"got {bad[:8].tolist()}")
    blocks = dict(block_m=block_m, block_k=block_k, block_n=block_n, interpret=interpret)

    top_k = expert_ids.shape[1]
    flat_ids = expert_ids.reshape(-1).astype(_INDEX)
    order = jnp.argsort(flat_ids, stable=True)  # copy i of the sorted rows is flat copy order[i]
    group_sizes = jnp.bincount(flat_ids, length=experts).astype(_INDEX)
    x = tokens[order // top_k]
    compute_dtype = _accumulator_dtype(tokens.dtype)
    gate = grouped_matmul(x, w_gate, group_sizes, **blocks).astype(compute_dtype)
    up = grouped_matmul(x, w_up, group_sizes, **blocks).astype(compute_dtype)
    hidden_act = (jax.nn.silu(gate) * up).astype(tokens.dtype)
    down = grouped_matmul(hidden_act, w_down, group_sizes, **blocks)
    copies = jnp.zeros_like(down).at[order].set(down).reshape(n_tokens, top_k, hidden)
    combined = jnp.einsum("tkh,tk->th", copies.astype(compute_dtype),
                          routing_weights.astype(compute_dtype))
    return combined.astype(tokens.dtype)


# --------------------------------------------------------------------- fitting a time model


class ExpertTimeFit(NamedTuple):
    """Result of ``fit_expert_time``: the fitted parameter pytree, the names of the leaves that
    were fitted, and the root-mean-square error of log(time) before and after."""

    params: Any
    fitted: tuple[str, ...]
    rms_log_error_before: float
    rms_log_error: float


def _leaf_name(path) -> str:
    """A pytree path as a dotted name: ``gpu.hbm_bandwidth``, ``layers.0.flops``."""
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(re.sub(r"\W", "", str(key)))
    return ".".join(parts)


def fit_expert_time(time_fn: Callable[[Any, jax.Array], jax.Array], params, tokens, seconds, *,
                    fit: Sequence[str], steps: int = 300) -> ExpertTimeFit:
    """Fit leaves ``fit`` of ``params`` so that ``time_fn(params, tokens)`` matches ``seconds``.

    ``time_fn(params, tokens)`` is a pure JAX function giving a time per entry of the token
    count vector ``tokens`` - e.g. ``lambda hw, n: pim.gpu_expert_time(hw, model_cfg, n)``.
    Least squares on log time (a 10 us point counts as much as a 10 ms one), with the fitted
    leaves in log space (they stay positive, and peak FLOP/s and launch latency, 15 orders of
    magnitude apart, get comparable steps), minimized by L-BFGS (optax) for ``steps`` steps.
    A name in ``fit`` selects every leaf whose dotted path (``gpu.hbm_bandwidth``) or last
    component equals it. Leaves not fitted keep their values.

    Raises PerfjaxError for mismatched or non-positive measurements, a name matching no leaf, or
    a fitted leaf that is not positive.
    """
    tokens = np.asarray(tokens, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    if tokens.ndim != 1 or seconds.shape != tokens.shape or tokens.size == 0:
        raise PerfjaxError(f"fit_expert_time: tokens {tokens.shape} and seconds {seconds.shape} "
                           "must be equal-length non-empty vectors")
    if not (np.isfinite(seconds).all() and (seconds > 0).all()):
        raise PerfjaxError("fit_expert_time: seconds must be finite and positive")
    if isinstance(fit, str) or not fit:
        raise PerfjaxError(f"fit_expert_time: fit must be a non-empty sequence of leaf names, "
                           f"got {fit!r}")
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_leaf_name(path) for path, _ in leaves_with_paths]
    chosen = [i for i, name in enumerate(names) if name in fit or name.split(".")[-1] in fit]
    unknown = [f for f in fit if not any(n == f or n.split(".")[-1] == f for n in names)]
    if unknown:
        raise PerfjaxError(f"fit_expert_time: fit names {unknown} match no leaf of params "
                           f"(leaves: {names})")
    leaves = [jnp.asarray(leaf, dtype=float) for _, leaf in leaves_with_paths]
    for i in chosen:
        if not bool(jnp.all(leaves[i] > 0)):
            raise PerfjaxError(f"fit_expert_time: leaf {names[i]} must be positive to be fitted "
                               f"in log space, got {leaves[i]}")

    def rebuild(log_values):
        new = list(leaves)
        for i, value in zip(chosen, log_values):
            new[i] = jnp.exp(value)
        return jax.tree_util.tree_unflatten(treedef, new)

    token_counts, log_seconds = jnp.asarray(tokens), jnp.log(jnp.asarray(seconds))

    def loss(log_values):
        predicted = time_fn(rebuild(log_values), token_counts)
        return jnp.mean((jnp.log(predicted) - log_seconds) ** 2)

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def minimize(start):
        def step(carry, _):
            log_values, state = carry
            value, grad = value_and_grad(log_values, state=state)
            updates, state = optimizer.update(grad, state, log_values, value=value, grad=grad,
                                              value_fn=loss)
            return (optax.apply_updates(log_values, updates), state), None

        (best, _), _ = lax.scan(step, (start, optimizer.init(start)), length=steps)
        return best

    start = [jnp.log(leaves[i]) for i in chosen]
    best = minimize(start)
    before, after = float(loss(start)), float(loss(best))
    if not math.isfinite(after):
        raise PerfjaxError("fit_expert_time: the fit diverged (non-finite loss); check that "
                           "time_fn gives positive times for these parameters")
    return ExpertTimeFit(params=rebuild(best), fitted=tuple(names[i] for i in chosen),
                         rms_log_error_before=math.sqrt(before), rms_log_error=math.sqrt(after))
