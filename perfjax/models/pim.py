"""Step-time model of one MoE layer on D GPUs with attached HBM-PIM, in pure JAX.

Inputs: a ``System`` pytree (``perfjax.hardware``), a static ``MoEConfig``, per-device per-slot
token counts ``counts`` [D, M] (``perfjax.workloads.moe.device_counts``: E/D routed experts then
the shared ones) and an assignment ``pim`` [D, M] in [0, 1] (1: the expert runs on PIM, 0: on the
GPU; fractions are the relaxation gradients flow through). Per device:

* GPU: a roofline per expert (compute on the token count padded to the MMA tile at the achievable
  FLOP/s, weights plus activations at the achievable HBM bandwidth) and two grouped-GEMM launches
  (gate+up, then down);
* PIM: one weight sweep per ``tokens_per_pass`` tokens, each limited by the in-bank bandwidth or
  the processing units' MAC rate, plus a command overhead per sweep;
* GPU-PIM operand and result transfers;
* overlap: ``serial`` runs the GPU, then every PIM expert with its transfers one after another;
  (``pipelined_critical`` adds chunk pipelining: dispatch, experts and combine of token chunks
  follow one another, each chunk overlapped as below);
  ``overlapped`` runs the GPU and the PIM side concurrently, except that with ``bank_conflict``
  the HBM serves either GPU streaming or PIM execution at any one time, first come first served.

Expert parallelism adds an all-to-all dispatch before and a combine after; the critical path is
the latest (dispatch arrival + expert phase) over devices, then the combine. Everything jits and vmaps over leading batch axes.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from perfjax.arrays import jit_elementwise
from perfjax.errors import WorkloadError
from perfjax.hardware import GPUSpec, PIMSpec, System
from perfjax.workloads.moe import MoEConfig, slot_ffn

__all__ = ["MODES", "GROUPED_GEMM_LAUNCHES", "gpu_expert_time", "gpu_expert_memory_time",
           "pim_expert_time", "SideTotals", "expert_costs", "side_totals", "device_branches",
           "device_time",
           "dispatch_arrival", "totals_from_vector", "placement_linear_form",
           "evaluate_assignments", "pipelined_critical", "batched_pipelined_critical",
           "LayerTimes", "layer_times", "batched_layer_times",
           "device_objective", "step_metrics"]

MODES = ("serial", "overlapped")
# A grouped-GEMM MoE layer is two kernels: the fused gate+up projection and the down projection.
GROUPED_GEMM_LAUNCHES = 2


def _ffn(cfg: MoEConfig, ffn: Any) -> Any:
    return cfg.expert_ffn if ffn is None else ffn


def _expert_flops(cfg: MoEConfig, tokens: Any, ffn: Any) -> Any:
    return 2.0 * cfg.matrices * cfg.hidden * ffn * tokens


def _expert_bytes(cfg: MoEConfig, tokens: Any, ffn: Any) -> Any:
    """Weights once plus activations: read x, write gate/up outputs, read them, write y."""
    weights = cfg.matrices * cfg.hidden * ffn * cfg.weight_bytes
    activations = tokens * (2.0 * cfg.hidden + 3.0 * ffn) * cfg.act_bytes
    return weights + activations


def gpu_expert_time(hw: GPUSpec, cfg: MoEConfig, tokens: Any, ffn: Any = None) -> jax.Array:
    """Seconds the GPU spends on each expert given its token count (0 tokens: 0 s).

    ``tokens`` is any array of counts; ``ffn`` the experts' intermediate size (default the
    routed expert's). Launch overhead is per layer, not per expert (see ``layer_times``).
    """
    tokens = jnp.asarray(tokens, dtype=float)
    ffn = _ffn(cfg, ffn)
    # tensor cores compute whole tiles: the token dimension is padded to the MMA tile height
    padded = jnp.ceil(tokens / hw.mma_tile_m) * hw.mma_tile_m
    compute = _expert_flops(cfg, padded, ffn) / (hw.peak_flops * hw.flops_efficiency)
    memory = _expert_bytes(cfg, tokens, ffn) / (hw.hbm_bandwidth * hw.bandwidth_efficiency)
    return jnp.where(tokens > 0, jnp.maximum(compute, memory), 0.0)


def gpu_expert_memory_time(hw: GPUSpec, cfg: MoEConfig, tokens: Any, ffn: Any = None
                           ) -> jax.Array:
    """Seconds of each GPU expert during which its HBM traffic occupies the banks."""
    tokens = jnp.asarray(tokens, dtype=float)
    memory = _expert_bytes(cfg, tokens, _ffn(cfg, ffn)) / (hw.hbm_bandwidth *
                                                           hw.bandwidth_efficiency)
    return jnp.where(tokens > 0, memory, 0.0)


def pim_expert_time(pim: PIMSpec, cfg: MoEConfig, tokens: Any, ffn: Any = None) -> jax.Array:
    """Seconds the PIM stacks spend on each expert: weight sweeps plus command overhead."""
    tokens = jnp.asarray(tokens, dtype=float)
    ffn = _ffn(cfg, ffn)
    sweeps = jnp.ceil(tokens / pim.tokens_per_pass)
    weight_bytes = cfg.matrices * cfg.hidden * ffn * cfg.weight_bytes
    per_sweep_stream = weight_bytes / pim.internal_bandwidth
    per_sweep_compute = _expert_flops(cfg, pim.tokens_per_pass, ffn) / pim.peak_flops
    per_sweep = jnp.maximum(per_sweep_stream, per_sweep_compute) + pim.command_overhead
    return jnp.where(tokens > 0, sweeps * per_sweep, 0.0)


def _pim_bytes(cfg: MoEConfig, tokens: Any) -> Any:
    """Operands to PIM plus results back: one hidden vector each way per token."""
    return 2.0 * tokens * cfg.hidden * cfg.act_bytes


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LayerTimes:
    """Seconds for one MoE layer; [..., D] per device, [...] for the layer."""

    gpu: Any        # GPU busy time (launches + experts)
    pim: Any        # PIM execution time
    transfer: Any   # GPU-PIM transfer time on the PIM side's path
    device: Any     # the device's expert phase, overlap and contention included
    dispatch: Any   # [..., D] arrival of each device's dispatched tokens
    combine: Any    # all-to-all after the experts
    critical: Any   # max over devices of (dispatch + expert phase), then the combine


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SideTotals:
    """Sums over a device's experts on each side; [..., D] or any batch shape."""

    gpu_work: Any    # GPU expert seconds (no launches)
    gpu_memory: Any  # of which the HBM is busy
    gpu_experts: Any  # experts on the GPU (relaxed: sum of fractions)
    pim_work: Any    # PIM expert seconds
    pim_bytes: Any   # GPU-PIM operand + result bytes
    pim_experts: Any  # experts on PIM
    pim_local_work: Any  # PIM seconds of shared experts, whose tokens need no dispatch
    pim_local_experts: Any


def expert_costs(hw: System, cfg: MoEConfig, counts: Any, ffn: Any) -> tuple[Any, ...]:
    """Per-slot (GPU seconds, GPU HBM seconds, PIM seconds, GPU-PIM bytes, active, local) for
    counts [..., M] in the slot layout (the last ``cfg.shared_experts`` slots are local)."""
    counts = jnp.asarray(counts, dtype=float)
    slots = counts.shape[-1] if counts.ndim else 1
    local = (jnp.arange(slots) >= slots - cfg.shared_experts).astype(float)
    return (gpu_expert_time(hw.gpu, cfg, counts, ffn), gpu_expert_memory_time(hw.gpu, cfg, counts,
                                                                              ffn),
            pim_expert_time(hw.pim, cfg, counts, ffn), _pim_bytes(cfg, counts),
            (counts > 0).astype(float), jnp.broadcast_to(local, counts.shape))


def side_totals(costs: tuple[Any, ...], pim: Any) -> SideTotals:
    """Sum per-expert costs over the last axis for placement ``pim`` (1: PIM, 0: GPU)."""
    g, g_mem, p, nbytes, active, local = costs
    on_gpu = (1.0 - pim) * active
    on_pim = pim * active
    return SideTotals(jnp.sum(on_gpu * g, -1), jnp.sum(on_gpu * g_mem, -1),
                      jnp.sum(on_gpu, -1), jnp.sum(on_pim * p, -1),
                      jnp.sum(on_pim * nbytes, -1), jnp.sum(on_pim, -1),
                      jnp.sum(on_pim * local * p, -1), jnp.sum(on_pim * local, -1))


def device_branches(hw: System, totals: SideTotals, mode: str = "overlapped",
                    head_start: Any = 0.0) -> tuple[tuple[jax.Array, jax.Array, jax.Array], ...]:
    """The engines whose longest span is a device's expert phase: (GPU, PIM side, shared banks)
    when overlapped, the one serial chain otherwise (see ``device_time``). Each is (lead, busy,
    trail): waiting before the engine starts, the engine busy, and latency after it is free."""
    if mode not in MODES:
        raise WorkloadError(f"mode must be one of {MODES}, got {mode!r}")
    any_gpu = jnp.minimum(totals.gpu_experts, 1.0)
    any_pim = jnp.minimum(totals.pim_experts, 1.0)
    any_local = jnp.minimum(totals.pim_local_experts, 1.0)
    gpu = GROUPED_GEMM_LAUNCHES * hw.gpu.kernel_launch * any_gpu + totals.gpu_work
    bytes_time = totals.pim_bytes / hw.link.gpu_pim_bandwidth
    latency = hw.link.gpu_pim_latency
    if mode == "serial":
        # every PIM expert waits for its operands, runs, and returns its results in turn
        zero = jnp.zeros_like(gpu)
        return ((zero, gpu + totals.pim_work + bytes_time + 2.0 * latency * totals.pim_experts,
                 zero),)
    # transfers pipeline behind PIM execution: only the first operands and last results show;
    # shared experts' PIM work may start before the dispatch arrives
    routed_start = jnp.maximum(latency * any_pim,
                               latency * any_local + totals.pim_local_work - head_start)
    routed_work = totals.pim_work - totals.pim_local_work
    # shared banks, first come first served: the PIM experts, ready one operand write after the
    # dispatch, hold the banks while the GPU launches its first kernel; the GPU's expert work
    # and its second launch follow them
    first_launch = hw.gpu.kernel_launch * any_gpu
    pim_first = jnp.maximum(first_launch, routed_start + routed_work)
    contended = hw.pim.bank_conflict * (pim_first + gpu - first_launch)
    zero = jnp.zeros_like(gpu)
    return ((zero, gpu, zero), (routed_start, routed_work + bytes_time, latency * any_pim),
            (zero, contended, zero))


def device_time(hw: System, totals: SideTotals, mode: str = "overlapped",
                head_start: Any = 0.0) -> jax.Array:
    """A device's expert-phase seconds, from its dispatch arrival on, given its side totals.

    ``head_start``: seconds between the layer's start and this device's dispatch arrival, during
    which PIM may already run the shared experts (their tokens are local).
    """
    spans = [lead + busy + trail for lead, busy, trail in device_branches(hw, totals, mode,
                                                                          head_start)]
    return functools.reduce(jnp.maximum, spans)


TOTALS_FIELDS = 8  # SideTotals as a vector: its fields in declaration order
# the totals evaluate_assignments gets from its matmul: gpu_work, gpu_experts, pim_work, pim_bytes
_MATMUL_FIELDS = (0, 2, 3, 4)


def totals_from_vector(v: Any) -> SideTotals:
    """SideTotals from a [..., 8] vector (fields in declaration order)."""
    return SideTotals(*(v[..., i] for i in range(TOTALS_FIELDS)))


def placement_linear_form(hw: System, cfg: MoEConfig, counts: Any) -> tuple[jax.Array, jax.Array]:
    """Side totals are linear in the placement: totals(pim) = base + sum_m pim_m * delta_m.

    Returns ``base`` [..., D, 8] (everything on the GPU) and ``delta`` [..., D, M, 8] (what moving
    slot m to PIM changes), so that many assignments of one layer cost one contraction.
    """
    counts = jnp.asarray(counts, dtype=float)
    g, g_mem, p, nbytes, active, local = expert_costs(hw, cfg, counts,
                                                      slot_ffn(cfg, counts.shape[-2]))
    zero = jnp.zeros_like(g)
    on_gpu = jnp.stack([g, g_mem, active, zero, zero, zero, zero, zero], -1) * active[..., None]
    on_pim = jnp.stack([zero, zero, zero, p, nbytes, active, local * p, local], -1)
    on_pim = on_pim * active[..., None]
    return jnp.sum(on_gpu, axis=-2), on_pim - on_gpu


@partial(jit_elementwise, static_argnames=("cfg", "mode"))
def evaluate_assignments(hw: System, cfg: MoEConfig, counts: jax.Array, placements: jax.Array,
                         mode: str = "overlapped") -> jax.Array:
    """Critical path [L, N] of N placements [L, N, D, M] for each of L layers' counts [L, D, M].

    The placement-independent per-expert costs are computed once per layer; each assignment then
    costs one contraction over its experts (the fast path for searches over placements). Jitted
    (``cfg`` and ``mode`` static), with XLA:CPU's YNNPACK fusions off: the per-device times over
    every assignment ran 1.6-1.8x faster in XLA's own loops (512-expert layers, measured in
    ``benchmarks/moe_bench.py`` [2]).
    """
    base, delta = placement_linear_form(hw, cfg, counts)
    placements = jnp.asarray(placements)
    if jnp.issubdtype(placements.dtype, jnp.floating):  # float32 placements: float32 arithmetic
        base, delta = base.astype(placements.dtype), delta.astype(placements.dtype)
    layers, assignments, devices, slots = placements.shape
    # One matmul per layer against a block-diagonal [D*M, D*4] (no transposed copy of the batch),
    # for the four totals that need one: moving a slot to PIM adds as many PIM experts as it
    # takes GPU ones, only the shared slots change the local totals (summed directly), and the
    # GPU's HBM seconds are not read by device_time (NaN here, so a model that starts reading
    # them fails the fast path's test against layer_times instead of going wrong). Half the
    # matmul of all eight totals (measured: see benchmarks/moe_bench.py [2]).
    linear = delta[..., list(_MATMUL_FIELDS)]
    blocks = jnp.einsum("ldmk,de->ldmek", linear, jnp.eye(devices, dtype=delta.dtype))
    blocks = blocks.reshape(layers, devices * slots, devices * len(_MATMUL_FIELDS))
    moved = placements.reshape(layers, assignments, devices * slots) @ blocks
    moved = moved.reshape(layers, assignments, devices, len(_MATMUL_FIELDS))
    base = base[:, None]
    shared = cfg.shared_experts
    local = jnp.einsum("ladm,ldmk->ladk", placements[..., slots - shared:],
                       delta[:, :, slots - shared:, 6:8])  # [L, A, D, 2]; shared is small
    totals = SideTotals(gpu_work=base[..., 0] + moved[..., 0],
                        gpu_memory=jnp.full_like(moved[..., 0], jnp.nan),
                        gpu_experts=base[..., 2] + moved[..., 1],
                        pim_work=moved[..., 2], pim_bytes=moved[..., 3],
                        pim_experts=-moved[..., 1],
                        pim_local_work=local[..., 0], pim_local_experts=local[..., 1])
    arrival = dispatch_arrival(hw, cfg, counts)[:, None, :].astype(moved.dtype)
    device = device_time(hw, totals, mode, arrival)
    return jnp.max(arrival + device, axis=-1) + jnp.max(arrival, axis=-1)


def device_objective(hw: System, cfg: MoEConfig, counts: Any, pim: Any,
                     mode: str = "overlapped", ffn: Any = None, head_start: Any = None
                     ) -> jax.Array:
    """Expert-phase seconds of each device ([..., D]) for counts [..., D, M]; what a placement
    changes. ``head_start`` defaults to each device's dispatch arrival."""
    counts = jnp.asarray(counts, dtype=float)
    if ffn is None:
        ffn = slot_ffn(cfg, counts.shape[-2])
    if head_start is None:
        head_start = dispatch_arrival(hw, cfg, counts)
    costs = expert_costs(hw, cfg, counts, ffn)
    return device_time(hw, side_totals(costs, jnp.asarray(pim, dtype=float)), mode, head_start)


def dispatch_arrival(hw: System, cfg: MoEConfig, counts: Any) -> jax.Array:
    """Seconds until each device has received its part of one all-to-all ([..., D]) for counts
    [..., D, M]: tokens spread evenly over D sources, so (D-1)/D of every expert's tokens cross
    NVLink; a port sends and receives at the per-direction rate, the busier direction bounds it."""
    counts = jnp.asarray(counts, dtype=float)
    devices = counts.shape[-2]
    if devices == 1:
        return jnp.zeros(counts.shape[:-1])
    routed = counts[..., : cfg.experts // devices]
    remote = (devices - 1) / devices
    received = jnp.sum(routed, axis=-1) * remote
    sent = jnp.sum(routed, axis=(-1, -2))[..., None] / devices * remote
    port_bytes = jnp.maximum(received, sent) * cfg.hidden * cfg.act_bytes
    return port_bytes / hw.link.nvlink_bandwidth + hw.link.nvlink_latency


def layer_times(hw: System, cfg: MoEConfig, counts: Any, pim: Any,
                mode: str = "overlapped") -> LayerTimes:
    """Times of one MoE layer; ``counts`` and ``pim`` are [..., D, E/D + shared].

    Traced under jit (``batched_layer_times``), so values are not checked here: ``counts`` must
    be finite and non-negative (``perfjax.workloads.moe.check_counts(counts, what, cfg)`` checks
    them and their shape, as the CLI does) and ``pim`` 0/1 or in [0, 1] (relaxed); ``hw`` should
    pass ``perfjax.hardware.check_system``."""
    counts = jnp.asarray(counts, dtype=float)
    pim = jnp.broadcast_to(jnp.asarray(pim, dtype=float), counts.shape)
    ffn = slot_ffn(cfg, counts.shape[-2])
    totals = side_totals(expert_costs(hw, cfg, counts, ffn), pim)
    arrival = dispatch_arrival(hw, cfg, counts)  # the combine moves the same bytes back
    device = device_time(hw, totals, mode, arrival)
    gpu = (GROUPED_GEMM_LAUNCHES * hw.gpu.kernel_launch * jnp.minimum(totals.gpu_experts, 1.0)
           + totals.gpu_work)
    transfer = (totals.pim_bytes / hw.link.gpu_pim_bandwidth + 2.0 * hw.link.gpu_pim_latency
                * (totals.pim_experts if mode == "serial" else jnp.minimum(totals.pim_experts, 1.0)))
    combine = jnp.max(arrival, axis=-1)
    critical = jnp.max(arrival + device, axis=-1) + combine
    return LayerTimes(gpu=gpu, pim=totals.pim_work, transfer=transfer, device=device,
                      dispatch=arrival, combine=combine, critical=critical)


def pipelined_critical(hw: System, cfg: MoEConfig, chunk_counts: Any, pim: Any) -> jax.Array:
    """Critical path of a chunk-pipelined layer: ``chunk_counts`` [..., C, D, M] per token chunk
    (``perfjax.workloads.moe.chunk_device_counts``), one placement ``pim`` [..., D, M].

    Each chunk is dispatched, run (overlapped GPU and PIM, weights streamed again per chunk) and
    combined; a device's port sends the chunks' dispatches back to back, each of a device's
    engines (GPU stream, PIM side, shared banks) takes chunk c after chunk c-1, and the combine of
    chunk c follows the last device's chunk c and the combine of chunk c-1.
    """
    chunk_counts = jnp.asarray(chunk_counts, dtype=float)
    pim = jnp.asarray(pim, dtype=float)
    ffn = slot_ffn(cfg, chunk_counts.shape[-2])
    latency = hw.link.nvlink_latency
    port = dispatch_arrival(hw, cfg, chunk_counts) - latency * (chunk_counts.shape[-2] > 1)
    sent = jnp.cumsum(port, axis=-2)                        # [..., C, D]
    engines_free: list[Any] | None = None
    combined = None
    for c in range(chunk_counts.shape[-3]):
        arrival = sent[..., c, :] + latency * (chunk_counts.shape[-2] > 1)
        totals = side_totals(expert_costs(hw, cfg, chunk_counts[..., c, :, :], ffn), pim)
        # only the first chunk's shared experts find the PIM idle before their dispatch lands
        engines = device_branches(hw, totals, "overlapped", arrival if c == 0 else 0.0)
        # each engine (GPU stream, PIM side, shared banks) takes chunk c once it has finished
        # chunk c-1; its lead (operand writes) and trail (result reads) overlap other chunks
        previous = engines_free or [None] * len(engines)
        engines_free = [arrival + lead + busy if free is None
                        else jnp.maximum(arrival + lead, free) + busy
                        for (lead, busy, _), free in zip(engines, previous)]
        done = functools.reduce(jnp.maximum, [free + trail for free, (_, _, trail)
                                              in zip(engines_free, engines)])
        ready = jnp.max(done, axis=-1)
        ready = ready if combined is None else jnp.maximum(ready, combined)
        combined = ready + jnp.max(port[..., c, :], axis=-1)
    return combined + latency * (chunk_counts.shape[-2] > 1)


batched_pipelined_critical = jax.jit(pipelined_critical, static_argnames=("cfg",))


@partial(jax.jit, static_argnames=("cfg", "mode"))
def batched_layer_times(hw: System, cfg: MoEConfig, counts: jax.Array, pim: jax.Array,
                        mode: str = "overlapped") -> LayerTimes:
    """``layer_times`` compiled once per (cfg, mode, shape); leading axes broadcast."""
    return layer_times(hw, cfg, counts, pim, mode)


def step_metrics(critical_per_layer: Any, cfg: MoEConfig, tokens_per_step: int
                 ) -> dict[str, float]:
    """Tokens/s and time per output token from the critical paths of sampled layers.

    The sampled layers stand for all ``cfg.layers`` MoE layers (mean critical path x layers).
    Only the MoE layers are counted: attention and the rest are the same for every placement.
    """
    step = float(np.mean(np.asarray(critical_per_layer))) * cfg.layers
    return {"tokens_per_s": tokens_per_step / step, "time_per_token_ms": step * 1e3}
