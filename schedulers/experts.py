"""Expert placement between the GPU and its HBM-PIM, per MoE layer and decode step.

A placement is a [D, E/D + shared] array, 1 where the expert runs on PIM and 0 on the GPU, for the
slot layout of ``perfjax.workloads.moe.device_counts``. Policies:

* ``gpu_only``: every expert on the GPU;
* ``static_pim``: every decode expert on PIM, prefill on the GPU (AttAcc / NeuPIMs-style rule);
* ``static_threshold``: an expert goes to PIM when its arithmetic intensity (FLOPs per weight
  byte) is below a fixed Op/B threshold, the crossover of the PIM and GPU rooflines (Duplex's
  rule: the processor is chosen by each operation's Op/B);
* ``dynamic`` (Sieve-style): from the step's token counts, per device, the best threshold
  placement (routed experts sorted by how much the GPU saves over PIM, every split point scored
  from cumulative sums of the experts' contributions, for every placement of the shared experts),
  refined by moves of one, two and (up to 24 experts per device) three experts until none helps;
  with many experts, pairs are drawn from the 32 ranked nearest the split. With at most 16 expert
  slots per device the placement is instead exact: all 2^M placements are scored by meeting in
  the middle (the side totals of every half-placement, summed pairwise), 1.5-3 ms for 8 devices x
  16 slots on this CPU; the heuristic (``exact_up_to=0``) lands within 2e-4 of it. The critical
  path is
  the latest (dispatch arrival + expert phase) over devices, then the combine; the exchanges do
  not depend on the placement, so minimising each device's expert phase minimises the layer;
* ``relaxed``: a sigmoid-relaxed placement optimised with optax (Adam) through the model, then
  threshold-rounded;
* ``brute_force``: every one of the 2^M placements of each device scored with the model (M <= 20),
  the optimum the others are checked against.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from perfjax.arrays import jit_elementwise
from perfjax.errors import HardwareError, WorkloadError
from perfjax.hardware import System
from perfjax.models.pim import (MODES, device_objective, device_time, dispatch_arrival,
                                placement_linear_form, totals_from_vector)
from perfjax.workloads.moe import PHASES, MoEConfig, check_counts, slot_ffn

__all__ = ["POLICIES", "STATIC_POLICIES", "EXACT_UP_TO", "gpu_only", "static_pim",
           "static_threshold", "dynamic", "relaxed", "brute_force", "place"]

STATIC_POLICIES = ("gpu_only", "static_pim", "static_threshold")
POLICIES = STATIC_POLICIES + ("dynamic",)
_RELATIVE_TOLERANCE = 1e-12  # a move must improve by more than this share to count


def gpu_only(counts: Any) -> jax.Array:
    """Every expert on the GPU."""
    return jnp.zeros(jnp.shape(counts))


def static_pim(counts: Any, phase: str = "decode") -> jax.Array:
    """All decode FFN work on PIM, prefill on the GPU (AttAcc / NeuPIMs)."""
    _check_phase(phase)
    return jnp.full(jnp.shape(counts), 1.0 if phase == "decode" else 0.0)


def _check_phase(phase: str) -> None:
    if not isinstance(phase, str) or phase not in PHASES:
        raise WorkloadError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")


def _check_inputs(hw: Any, cfg: Any, counts: Any, what: str) -> np.ndarray:
    """Concrete checks the jitted placements cannot do: a System, a MoEConfig and finite,
    non-negative counts [D, E/D + shared] (``perfjax.workloads.moe.check_counts``)."""
    if not isinstance(hw, System):
        raise HardwareError(f"{what}: expected a hardware System (hardware.system(...)), got "
                            f"{type(hw).__name__}")
    if not isinstance(cfg, MoEConfig):
        raise WorkloadError(f"{what}: expected a MoEConfig (moe.model_config(...)), got "
                            f"{type(cfg).__name__}")
    counts = check_counts(counts, what, cfg)
    if counts.ndim != 2:
        raise WorkloadError(f"{what}: counts must be [devices, slots] (one step), got shape "
                            f"{list(counts.shape)}")
    return counts


def static_threshold(hw: System, cfg: MoEConfig, counts: Any) -> jax.Array:
    """PIM for experts whose FLOPs per weight byte lie below the design-time roofline crossover
    (Duplex): where the PIM's MAC rate equals the GPU's peak HBM bandwidth, I* = F_pim / B_gpu;
    below it the PIM's roofline is under the GPU's."""
    counts = jnp.asarray(counts, dtype=float)
    intensity = 2.0 * counts / cfg.weight_bytes  # FLOPs per weight byte of a SwiGLU expert
    crossover = hw.pim.peak_flops / hw.gpu.hbm_bandwidth
    return (intensity <= crossover).astype(float)


EXACT_UP_TO = 16  # expert slots per device up to which ``dynamic`` enumerates every placement
_TRIPLE_MOVES_UP_TO = 24  # experts per device up to which three-expert moves are searched too
_PAIR_WINDOW = 16  # beyond 2x this many experts, pairs are searched near the threshold split


def _dynamic_device(hw: System, base: jax.Array, delta: jax.Array, head_start: jax.Array,
                    mode: str, shared: int) -> jax.Array:
    """Best placement of one device's experts from its linear form: totals = base + pim @ delta
    (``base`` [8], ``delta`` [M, 8], see ``perfjax.models.pim.placement_linear_form``); its last
    ``shared`` slots are shared experts."""
    slots = delta.shape[0]

    def score(totals: jax.Array) -> jax.Array:
        return device_time(hw, totals_from_vector(totals), mode, head_start)

    routed = slots - shared
    # sort the routed experts: GPU first where PIM would cost most extra (PIM - GPU seconds)
    order = jnp.argsort(-(delta[:routed, 3] + delta[:routed, 0]))
    # every split j (the j first routed experts on the GPU, the rest on PIM) by cumulative sums,
    # for every placement of the few shared experts (wide ones trade against several routed)
    suffix = jnp.cumsum(delta[:routed][order][::-1], axis=0)[::-1]      # [R, 8]: ranks >= j
    suffix = jnp.concatenate([suffix, jnp.zeros((1, 8))])               # [R+1, 8]
    masks = ((jnp.arange(2 ** shared)[:, None] >> jnp.arange(shared)) & 1).astype(float)
    split_totals = base + suffix[None] + (masks @ delta[routed:])[:, None]  # [2^S, R+1, 8]
    scores = score(split_totals).ravel()
    best = jnp.argmin(scores)
    best_mask, best_split = best // (routed + 1), best % (routed + 1)
    placement = jnp.concatenate([(jnp.argsort(order) >= best_split).astype(float),
                                 masks[best_mask]])
    value = scores[best]
    triples = slots <= _TRIPLE_MOVES_UP_TO
    if routed > 2 * _PAIR_WINDOW:
        # many experts: pairs among the routed experts ranked nearest the threshold split only
        start = jnp.clip(best_split - _PAIR_WINDOW, 0, routed - 2 * _PAIR_WINDOW)
        window = jax.lax.dynamic_slice(order, (start,), (2 * _PAIR_WINDOW,))
    else:
        window = jnp.arange(slots)
    paired = window.shape[0]

    def step(state: tuple[Any, ...]) -> tuple[Any, ...]:
        pl, val, _, steps = state
        current = base + pl @ delta
        flip = (1.0 - 2.0 * pl)[:, None] * delta                         # [M, 8]
        # exchange refinement: every move of one, two (and for small M three) experts
        one = score(current + flip)
        near = flip[window]
        two = score(current + near[:, None] + near[None, :])
        two = jnp.where(jnp.eye(paired, dtype=bool), jnp.inf, two)
        candidates = [one, two.ravel()]
        if triples:
            three = score(current + flip[:, None, None] + flip[None, :, None]
                          + flip[None, None, :])
            i, j, k = jnp.meshgrid(*(jnp.arange(slots),) * 3, indexing="ij")
            three = jnp.where((i < j) & (j < k), three, jnp.inf)
            candidates.append(three.ravel())
        vals = jnp.concatenate(candidates)
        best = jnp.argmin(vals)
        better = vals[best] < val * (1.0 - _RELATIVE_TOLERANCE)
        moved = _decode_move(best, slots, window, triples)
        new_pl = jnp.where(moved, 1.0 - pl, pl)
        return (jnp.where(better, new_pl, pl), jnp.where(better, vals[best], val), better,
                steps + 1)

    def keep_going(state: tuple[Any, ...]) -> Any:
        _, _, improved, steps = state
        return improved & (steps < 2 * slots + 2)

    placement, value, _, _ = jax.lax.while_loop(keep_going, step,
                                                (placement, value, jnp.array(True), 0))
    # idle slots: no tokens, nothing to place; report them on the GPU
    active = jnp.any(delta != 0, axis=-1)
    return placement * active


def _bits(width: int) -> jax.Array:
    """Every 0/1 vector of ``width`` entries: [2^width, width], row i the binary digits of i."""
    return jnp.asarray(((np.arange(2 ** width)[:, None] >> np.arange(width)) & 1), dtype=float)


def _exact_device(hw: System, base: jax.Array, delta: jax.Array, head_start: jax.Array,
                  mode: str) -> jax.Array:
    """The optimal placement of one device's M slots by scoring all 2^M of them: the side totals
    are linear in the placement, so those of the first and of the second half's 2^(M/2)
    placements are computed once and added pairwise (meet in the middle)."""
    slots = delta.shape[0]
    half = slots // 2
    low, high = _bits(half), _bits(slots - half)
    totals = base + (low @ delta[:half])[:, None] + (high @ delta[half:])[None]  # [2^h, 2^(M-h), 8]
    best = jnp.argmin(device_time(hw, totals_from_vector(totals), mode, head_start).ravel())
    placement = jnp.concatenate([low[best // high.shape[0]], high[best % high.shape[0]]])
    return placement * jnp.any(delta != 0, axis=-1)


def _decode_move(index: jax.Array, slots: int, window: jax.Array, triples: bool) -> jax.Array:
    """Which experts a flat move index flips: [M] bool (singles, window pairs, triples)."""
    experts = jnp.arange(slots)
    paired = window.shape[0]
    one = index < slots
    pair = index - slots
    in_pair = (index >= slots) & (index < slots + paired * paired)
    flips_pair = (experts == window[pair // paired]) | (experts == window[pair % paired])
    moved = jnp.where(one, experts == index, jnp.where(in_pair, flips_pair, False))
    if triples:
        triple = index - slots - paired * paired
        flips_triple = ((experts == triple // (slots * slots)) | (experts == (triple // slots) % slots)
                        | (experts == triple % slots))
        moved = jnp.where(index >= slots + paired * paired, flips_triple, moved)
    return moved


@partial(jit_elementwise, static_argnames=("cfg", "mode", "exact_up_to"))
def dynamic(hw: System, cfg: MoEConfig, counts: jax.Array, mode: str = "overlapped",
            exact_up_to: int = EXACT_UP_TO) -> jax.Array:
    """Sieve-style placement [D, M] for this step's token counts [D, M] (see module docstring):
    exact for M <= ``exact_up_to`` slots per device (at most 20), threshold + exchange above.
    Jitted (``cfg``, ``mode`` and ``exact_up_to`` static), so the counts are not checked: they
    must be finite and non-negative (``place`` checks them; negative or NaN counts give a
    meaningless placement). Compiled with XLA:CPU's YNNPACK fusions off: a 512-expert decision
    took 0.62-0.65 ms instead of 0.67-0.73 ms, timed side by side (``benchmarks/moe_bench.py``
    [1] times it)."""
    counts = jnp.asarray(counts, dtype=float)
    base, delta = placement_linear_form(hw, cfg, counts)
    arrival = dispatch_arrival(hw, cfg, counts)
    if counts.shape[-1] <= min(exact_up_to, 20):
        return jax.vmap(lambda b, d, h: _exact_device(hw, b, d, h, mode))(base, delta, arrival)
    return jax.vmap(lambda b, d, h: _dynamic_device(hw, b, d, h, mode, cfg.shared_experts))(
        base, delta, arrival)


@partial(jax.jit, static_argnames=("cfg", "mode", "steps"))
def relaxed(hw: System, cfg: MoEConfig, counts: jax.Array, mode: str = "overlapped",
            steps: int = 400, learning_rate: float = 0.2) -> jax.Array:
    """Gradient-relaxed placement: sigmoid(logits) in [0, 1] through the model, optimised with
    Adam, then threshold rounding (every cut of the experts ordered by their relaxed value)."""
    counts = jnp.asarray(counts, dtype=float)
    ffn = slot_ffn(cfg, counts.shape[-2])
    arrival = dispatch_arrival(hw, cfg, counts)
    scale = jnp.max(device_objective(hw, cfg, counts, jnp.zeros_like(counts), mode, ffn, arrival))

    def loss(logits: jax.Array) -> jax.Array:
        times = device_objective(hw, cfg, counts, jax.nn.sigmoid(logits), mode, ffn, arrival)
        return jnp.sum(times) / scale  # devices are independent: the sum has the max's minimisers

    optimizer = optax.adam(learning_rate)
    logits = jnp.zeros_like(counts)

    def body(state: tuple[Any, ...], _: Any) -> tuple[tuple[Any, ...], None]:
        params, opt_state = state
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    (logits, _), _ = jax.lax.scan(body, (logits, optimizer.init(logits)), None, length=steps)
    slots = counts.shape[-1]
    rank = jnp.argsort(jnp.argsort(-logits, axis=-1), axis=-1)          # 0: most PIM-ward
    cuts = (rank[:, None, :] < jnp.arange(slots + 1)[None, :, None]).astype(float)  # [D, M+1, M]
    times = device_objective(hw, cfg, counts[:, None, :], cuts, mode, ffn, arrival[:, None])
    best = jnp.take_along_axis(cuts, jnp.argmin(times, axis=1)[:, None, None], axis=1)[:, 0]
    return best * (counts > 0)


def brute_force(hw: System, cfg: MoEConfig, counts: Any, mode: str = "overlapped"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Optimal placement [D, M] and each device's optimal time by enumerating 2^M placements."""
    counts = _check_inputs(hw, cfg, counts, "brute_force")
    slots = counts.shape[-1]
    if slots > 20:
        raise WorkloadError(f"brute force over {slots} experts per device is too large (max 20)")
    bits = np.asarray(_bits(slots))
    ffn = slot_ffn(cfg, counts.shape[0])
    arrival = dispatch_arrival(hw, cfg, jnp.asarray(counts))
    times = np.asarray(_score_all(hw, cfg, jnp.asarray(counts), jnp.asarray(bits), mode,
                                  jnp.asarray(ffn), arrival))  # [D, 2^M]
    best = times.argmin(axis=1)
    return bits[best], times[np.arange(counts.shape[0]), best]


@partial(jax.jit, static_argnames=("cfg", "mode"))
def _score_all(hw: System, cfg: MoEConfig, counts: jax.Array, placements: jax.Array, mode: str,
               ffn: jax.Array, arrival: jax.Array) -> jax.Array:
    return jax.vmap(lambda c, h: device_objective(hw, cfg, c[None, :], placements, mode, ffn, h)
                    )(counts, arrival)


def place(policy: str, hw: System, cfg: MoEConfig, counts: Any, phase: str = "decode",
          mode: str = "overlapped") -> jax.Array:
    """The placement [D, M] that ``policy`` (one of ``POLICIES`` or ``relaxed``) picks.

    Checks, outside jit, ``phase``, ``mode``, ``hw``, ``cfg`` and the counts (finite,
    non-negative, [D, E/D + shared]): WorkloadError / HardwareError naming them."""
    if mode not in MODES:
        raise WorkloadError(f"mode must be one of {MODES}, got {mode!r}")
    _check_phase(phase)
    counts = jnp.asarray(_check_inputs(hw, cfg, counts, f"{policy} placement"))
    table: dict[str, Callable[[], jax.Array]] = {
        "gpu_only": lambda: gpu_only(counts),
        "static_pim": lambda: static_pim(counts, phase),
        "static_threshold": lambda: static_threshold(hw, cfg, counts),
        "dynamic": lambda: dynamic(hw, cfg, counts, mode),
        "relaxed": lambda: relaxed(hw, cfg, counts, mode),
    }
    if policy not in table:
        raise WorkloadError(f"unknown placement policy {policy!r} (known: {', '.join(table)})")
    return table[policy]()
