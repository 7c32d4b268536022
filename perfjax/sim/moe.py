"""Event-level reference simulator of one MoE layer on D GPUs with attached HBM-PIM.

It shares only the hardware specs (``perfjax.hardware``) and workload definitions
(``perfjax.workloads.moe``: model shapes, routing, the expert-to-device layout) with the step-time
model in ``perfjax.models.pim``, none of its formulas. It builds explicit tasks and plays them
through a heapq event queue with resources taken first-come-first-served:

* every token sits on device ``t % D``; each (source, destination) pair of devices exchanges one
  dispatch message with exactly the token-expert pairs it carries, over the source's NVLink egress
  port and the destination's ingress port (matching rounds in ring order), and one combine
  message back after the destination's experts finish;
* the GPU stream runs two grouped-GEMM kernels (gate+up, then down), each a launch followed by one
  task per expert and matrix whose token dimension is padded to the MMA tile;
* each PIM expert is an operand write over the GPU-PIM path, one task per PIM stack (its slice of
  the weights swept once per ``tokens_per_pass`` tokens by 32-byte column reads of every
  processing unit, capped by the stack's in-bank bandwidth) and a result read;
* with ``bank_conflict`` a GPU expert task holds every PIM stack (its weights are interleaved
  over all banks), so GPU streaming and PIM execution exclude each other.

Resources serve tasks first-come-first-served; a blocked compute task reserves its resources so
that later ones cannot starve it, while link messages are work-conserving (NVSwitch ports take
whichever message can go).

Slow and explicit on purpose: it is the reference the model is checked against.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from perfjax.errors import WorkloadError
from perfjax.hardware import System
from perfjax.workloads.moe import MoEConfig

__all__ = ["SimResult", "simulate_layer"]

COLUMN_BYTES = 32  # one column access of a 256-bit processing unit (16 FP16 lanes)


@dataclass
class _Task:
    name: str
    duration: float
    resources: tuple[str, ...]
    deps: list[int] = field(default_factory=list)
    delay: float = 0.0            # arrival delay after the resources are released (latency)
    reserve: bool = True          # when blocked, hold back later tasks wanting its resources
    waiting_on: int = 0
    ready_at: float = 0.0
    start: float = math.nan
    end: float = math.nan         # resources released
    done: float = math.nan        # dependents may start
    children: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SimResult:
    """Seconds: the layer's critical path, each device's expert phase, and each device's
    dispatch arrival and finish times."""

    critical: float
    expert_phase: np.ndarray
    dispatch_done: np.ndarray
    finish: np.ndarray
    tasks: int


class _Simulation:
    def __init__(self) -> None:
        self.tasks: list[_Task] = []

    def add(self, name: str, duration: float, resources: tuple[str, ...] = (),
            deps: list[int] | None = None, delay: float = 0.0, reserve: bool = True) -> int:
        self.tasks.append(_Task(name, max(float(duration), 0.0), resources, list(deps or []),
                                delay, reserve))
        return len(self.tasks) - 1

    def run(self) -> None:
        for i, task in enumerate(self.tasks):
            task.waiting_on = len(task.deps)
            for d in task.deps:
                self.tasks[d].children.append(i)
        busy: set[str] = set()
        # ready tasks grouped by resource signature, FIFO inside a group
        groups: dict[tuple[str, ...], list[int]] = {}
        events: list[tuple[float, int, str, int]] = []
        seq = 0
        now = 0.0

        def make_ready(i: int, t: float) -> None:
            self.tasks[i].ready_at = t
            groups.setdefault(self.tasks[i].resources, []).append(i)

        for i, task in enumerate(self.tasks):
            if task.waiting_on == 0:
                make_ready(i, 0.0)
        while True:
            # start what can start: group heads in order of readiness; a blocked head reserves
            # its resources so that later tasks cannot starve it
            reserved: set[str] = set()
            heads = sorted((q[0] for q in groups.values() if q),
                           key=lambda i: (self.tasks[i].ready_at, i))
            for i in heads:
                task = self.tasks[i]
                need = set(task.resources)
                if need & busy or need & reserved:
                    if task.reserve:
                        reserved |= need
                    continue
                groups[task.resources].pop(0)
                busy |= need
                task.start = now
                task.end = now + task.duration
                heapq.heappush(events, (task.end, seq, "release", i))
                seq += 1
            if not events:
                break
            now, _, kind, i = heapq.heappop(events)
            task = self.tasks[i]
            if kind == "release":
                busy -= set(task.resources)
                heapq.heappush(events, (now + task.delay, seq, "done", i))
                seq += 1
            else:
                task.done = now
                for c in task.children:
                    self.tasks[c].waiting_on -= 1
                    if self.tasks[c].waiting_on == 0:
                        make_ready(c, now)
        unfinished = [t.name for t in self.tasks if math.isnan(t.done)]
        if unfinished:
            raise RuntimeError(f"simulation deadlocked on {unfinished[:3]}")


def _gpu_matrix_seconds(hw: System, cfg: MoEConfig, tokens: int, rows: int, cols: int) -> float:
    padded = math.ceil(tokens / float(hw.gpu.mma_tile_m)) * float(hw.gpu.mma_tile_m)
    flops = 2.0 * padded * rows * cols
    traffic = rows * cols * cfg.weight_bytes + tokens * (rows + cols) * cfg.act_bytes
    return max(flops / (float(hw.gpu.peak_flops) * float(hw.gpu.flops_efficiency)),
               traffic / (float(hw.gpu.hbm_bandwidth) * float(hw.gpu.bandwidth_efficiency)))


def _pim_stack_seconds(hw: System, cfg: MoEConfig, tokens: int, ffn: int) -> float:
    """One stack's share of a PIM expert: every unit sweeps its column slice of the weights."""
    pim = hw.pim
    stacks = int(pim.stacks)
    units_per_stack = int(pim.channels_per_stack * pim.banks_per_channel / pim.banks_per_unit)
    weight_bytes = cfg.matrices * cfg.hidden * ffn * cfg.weight_bytes
    stack_bytes = weight_bytes / stacks
    columns_per_unit = math.ceil(stack_bytes / (units_per_stack * COLUMN_BYTES))
    macs_per_column = COLUMN_BYTES / cfg.weight_bytes * float(pim.tokens_per_pass)
    cycles = columns_per_unit * max(1.0, macs_per_column / float(pim.lanes_per_unit))
    unit_seconds = cycles / float(pim.clock)
    stack_internal = float(pim.external_bandwidth) * float(pim.internal_bandwidth_multiple)
    sweep = max(unit_seconds, stack_bytes / stack_internal) + float(pim.command_overhead)
    return math.ceil(tokens / float(pim.tokens_per_pass)) * sweep


def simulate_layer(hw: System, cfg: MoEConfig, experts: np.ndarray, pim: np.ndarray,
                   devices: int, mode: str = "overlapped", chunks: int = 1) -> SimResult:
    """Simulate one MoE layer: ``experts`` [tokens, top_k] routing, ``pim`` [D, E/D + shared]
    placement (true/1: PIM), expert parallelism over ``devices``, ``mode`` serial|overlapped|
    pipelined (overlapped within each of ``chunks`` contiguous token chunks, whose dispatch,
    experts and combine follow one another through the shared links and engines)."""
    if mode not in ("serial", "overlapped", "pipelined"):
        raise WorkloadError(f"simulate_layer mode: unknown mode {mode!r} (known: serial, overlapped, pipelined)")
    experts = np.asarray(experts, dtype=np.int64)
    pim = np.asarray(pim) > 0.5
    per_device = cfg.experts // devices
    slots = per_device + cfg.shared_experts
    if pim.shape != (devices, slots):
        raise WorkloadError(f"simulate_layer placement: shape {pim.shape} != {(devices, slots)} "
                            f"(devices x ({per_device} routed + {cfg.shared_experts} shared) slots)")
    chunks = chunks if mode == "pipelined" else 1
    tokens = experts.shape[0]
    source = np.arange(tokens) % devices
    chunk_of = np.arange(tokens) * chunks // tokens
    ffn = [cfg.expert_ffn] * per_device + [cfg.shared_ffn] * cfg.shared_experts
    stacks = [f"stack{s}" for s in range(int(hw.pim.stacks))]
    message = cfg.hidden * cfg.act_bytes
    bw, lat = float(hw.link.nvlink_bandwidth), float(hw.link.nvlink_latency)
    path_bw, path_lat = float(hw.link.gpu_pim_bandwidth), float(hw.link.gpu_pim_latency)
    conflict = float(hw.pim.bank_conflict) >= 0.5

    sim = _Simulation()
    all_arrivals: list[list[int]] = [[] for _ in range(devices)]
    all_finished: list[list[int]] = [[] for _ in range(devices)]
    all_combines: list[list[int]] = [[] for _ in range(devices)]
    gpu_tail: list[list[int]] = [[] for _ in range(devices)]  # stream order across chunks
    for chunk in range(chunks):
        rows = chunk_of == chunk
        chunk_experts, chunk_source = experts[rows], source[rows]
        owner = chunk_experts // per_device
        # pairs[s, d]: token-expert pairs from tokens on s to experts on d
        pairs = np.zeros((devices, devices), dtype=np.int64)
        np.add.at(pairs, (np.repeat(chunk_source, experts.shape[1]), owner.ravel()), 1)
        counts = np.zeros((devices, slots), dtype=np.int64)
        np.add.at(counts, (owner.ravel(), (chunk_experts % per_device).ravel()), 1)
        counts[:, per_device:] = np.bincount(chunk_source, minlength=devices)[:, None]
        arrivals: list[list[int]] = [[] for _ in range(devices)]
        for offset in range(1, devices):  # ring order: each round is a perfect matching
            for src in range(devices):
                d = (src + offset) % devices
                if pairs[src, d]:
                    arrivals[d].append(sim.add(
                        f"dispatch c{chunk} {src}->{d}", pairs[src, d] * message / bw,
                        (f"egress{src}", f"ingress{d}"), delay=lat, reserve=False))
        finished: list[list[int]] = []
        for d in range(devices):
            res = lambda name: f"{name}@{d}"  # noqa: E731 - per-device resource names
            held_stacks = tuple(res(s) for s in stacks)
            gpu_slots = [j for j in range(slots) if counts[d, j] and not pim[d, j]]
            pim_slots = [j for j in range(slots) if counts[d, j] and pim[d, j]]
            ends: list[int] = []
            last_gpu: list[int] = []
            if gpu_slots:
                gpu_res = (res("gpu"),) + (held_stacks if conflict else ())
                prev = sim.add(f"launch gate_up c{chunk} @{d}", float(hw.gpu.kernel_launch),
                               (res("gpu"),), deps=arrivals[d] + gpu_tail[d])
                for j in gpu_slots:
                    prev = sim.add(f"gate_up c{chunk} e{j} @{d}", _gpu_matrix_seconds(
                        hw, cfg, counts[d, j], cfg.hidden, 2 * ffn[j]), gpu_res, deps=[prev])
                prev = sim.add(f"launch down c{chunk} @{d}", float(hw.gpu.kernel_launch),
                               (res("gpu"),), deps=[prev])
                for j in gpu_slots:
                    prev = sim.add(f"down c{chunk} e{j} @{d}", _gpu_matrix_seconds(
                        hw, cfg, counts[d, j], ffn[j], cfg.hidden), gpu_res, deps=[prev])
                last_gpu = gpu_tail[d] = [prev]
                ends.append(prev)
            chain = list(last_gpu) if mode == "serial" else []
            for j in pim_slots:
                operand = counts[d, j] * message / path_bw
                # shared-expert tokens are local; routed ones wait for the dispatch
                wait = arrivals[d] if j < per_device else []
                write = sim.add(f"pim write c{chunk} e{j} @{d}", operand, (res("path"),),
                                deps=wait + chain, delay=path_lat)
                seconds = _pim_stack_seconds(hw, cfg, counts[d, j], ffn[j])
                parts = [sim.add(f"pim c{chunk} e{j} {s} @{d}", seconds, (res(s),), deps=[write])
                         for s in stacks]
                read = sim.add(f"pim read c{chunk} e{j} @{d}", operand, (res("path"),),
                               deps=parts, delay=path_lat)
                ends.append(read)
                if mode == "serial":
                    chain = [read]
            finished.append(ends)
        for offset in range(1, devices):
            for d in range(devices):
                src = (d + offset) % devices
                if pairs[src, d]:
                    all_combines[src].append(sim.add(
                        f"combine c{chunk} {d}->{src}", pairs[src, d] * message / bw,
                        (f"egress{d}", f"ingress{src}"), deps=finished[d] + arrivals[d],
                        delay=lat, reserve=False))
        for d in range(devices):
            all_arrivals[d] += arrivals[d]
            all_finished[d] += finished[d]
    sim.run()

    def latest(ids: list[int], default: float = 0.0) -> float:
        return max((sim.tasks[i].done for i in ids), default=default)

    dispatch_done = np.array([latest(all_arrivals[d]) for d in range(devices)])
    expert_done = np.array([latest(all_finished[d], dispatch_done[d]) for d in range(devices)])
    finish = np.array([max(latest(all_combines[s]), expert_done[s]) for s in range(devices)])
    return SimResult(critical=float(finish.max()), expert_phase=expert_done - dispatch_done,
                     dispatch_done=dispatch_done, finish=finish, tasks=len(sim.tasks))
