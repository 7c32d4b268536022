"""Hardware specifications as pytrees: GPUs, HBM-PIM stacks and the links between them.

Every field is a pytree leaf (a float), so a calibration can fit it and ``jax.grad`` can
differentiate a model with respect to it. Defaults come from published specifications; the source
of each is cited beside it. ``system(gpu="h100")`` assembles one GPU with its attached HBM-PIM
stacks and its links, the machine the MoE step-time model (``perfjax.models.pim``) and the
reference simulator (``perfjax.sim.moe``) both describe.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import jax
import numpy as np

from perfjax.errors import HardwareError

__all__ = ["GPUSpec", "PIMSpec", "LinkSpec", "System", "GPUS", "ATTACHMENTS", "gpu", "pim_for",
           "link_for", "system", "check_system", "with_fields"]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GPUSpec:
    """One GPU: peak dense throughput, HBM bandwidth, achievable fractions, launch cost."""

    peak_flops: Any           # dense BF16 FLOP/s
    hbm_bandwidth: Any        # bytes/s, all stacks
    hbm_stacks: Any           # HBM stacks on the package
    flops_efficiency: Any     # fraction of peak a large GEMM reaches
    bandwidth_efficiency: Any  # fraction of HBM bandwidth a streaming kernel reaches
    kernel_launch: Any        # seconds per kernel launch
    mma_tile_m: Any           # rows a tensor-core tile pads the token dimension to


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class PIMSpec:
    """HBM-PIM stacks attached to one GPU (bank-level processing units, Aquabolt-XL style)."""

    stacks: Any                 # PIM-enabled HBM stacks per GPU
    channels_per_stack: Any
    banks_per_channel: Any
    banks_per_unit: Any         # banks sharing one processing unit
    lanes_per_unit: Any         # FP16 MAC lanes per processing unit
    clock: Any                  # processing-unit clock, Hz
    external_bandwidth: Any     # bytes/s per stack seen by the host
    internal_bandwidth_multiple: Any  # in-bank bandwidth over the external bandwidth
    command_overhead: Any       # seconds of PIM mode switch + command issue per GEMV pass
    tokens_per_pass: Any        # input vectors one weight sweep serves (GEMV units: 1)
    bank_conflict: Any          # 1: GPU accesses and PIM execution exclude each other; 0: separate

    @property
    def internal_bandwidth(self) -> Any:
        """Aggregate in-bank bandwidth of all stacks, bytes/s."""
        return self.stacks * self.external_bandwidth * self.internal_bandwidth_multiple

    @property
    def units(self) -> Any:
        """Processing units over all stacks."""
        return self.stacks * self.channels_per_stack * self.banks_per_channel / self.banks_per_unit

    @property
    def peak_flops(self) -> Any:
        """Aggregate FP16 FLOP/s of all processing units (one MAC = 2 FLOPs)."""
        return self.units * self.lanes_per_unit * 2.0 * self.clock


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LinkSpec:
    """GPU-GPU links (NVLink through NVSwitch) and the GPU-PIM operand path."""

    nvlink_bandwidth: Any   # bytes/s per direction per GPU
    nvlink_latency: Any     # seconds from the last byte sent to its arrival
    gpu_pim_bandwidth: Any  # bytes/s for operands written to / results read from PIM
    gpu_pim_latency: Any    # seconds per GPU-PIM transfer


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class System:
    """One GPU, its attached HBM-PIM and its links; D such devices form an expert-parallel group."""

    gpu: GPUSpec
    pim: PIMSpec
    link: LinkSpec


GPUS: dict[str, GPUSpec] = {
    # NVIDIA H100 SXM5 datasheet: 989 TFLOPS dense BF16 (1,979 with sparsity), 3.35 TB/s HBM3,
    # 5 active HBM3 stacks (5120-bit bus).
    "h100": GPUSpec(peak_flops=989.4e12, hbm_bandwidth=3.35e12, hbm_stacks=5.0,
                    # ~75% of peak for large cuBLAS BF16 GEMMs and ~90% of HBM bandwidth for
                    # streaming kernels (Luo et al., "Benchmarking and Dissecting the Nvidia Hopper
                    # GPU Architecture", IPDPS 2024)
                    flops_efficiency=0.75, bandwidth_efficiency=0.90,
                    # ~4 us per launch on the critical path (CUDA launch latency measured in the
                    # same Hopper study; CUDA graphs lower it, kept conservative)
                    kernel_launch=4e-6,
                    # token rows per tile of a decode-size fused-MoE grouped GEMM (vLLM's Triton
                    # fused_moe default config: BLOCK_SIZE_M = 16 when tokens <= experts)
                    mma_tile_m=16.0),
    # NVIDIA H200 SXM datasheet: same GH100 compute (989 TFLOPS dense BF16), 4.8 TB/s HBM3e,
    # 6 stacks (141 GB).
    "h200": GPUSpec(peak_flops=989.4e12, hbm_bandwidth=4.8e12, hbm_stacks=6.0,
                    flops_efficiency=0.75, bandwidth_efficiency=0.90, kernel_launch=4e-6,
                    mma_tile_m=16.0),
    # NVIDIA A100 SXM4 80GB datasheet: 312 TFLOPS dense BF16, 2.039 TB/s HBM2e, 5 stacks.
    "a100": GPUSpec(peak_flops=312e12, hbm_bandwidth=2.039e12, hbm_stacks=5.0,
                    # ~80% of peak GEMM, ~90% of bandwidth (Jia et al. style microbenchmarks,
                    # NVIDIA A100 whitepaper's STREAM-like figures)
                    flops_efficiency=0.80, bandwidth_efficiency=0.90, kernel_launch=4e-6,
                    # the same fused_moe tile (mma.sync m16n8k16 on Ampere)
                    mma_tile_m=16.0),
}

# NVLink per GPU, per direction: H100/H200 NVLink 4 = 900 GB/s bidirectional (datasheets);
# A100 NVLink 3 = 600 GB/s bidirectional.
_NVLINK_PER_DIRECTION = {"h100": 450e9, "h200": 450e9, "a100": 300e9}


def gpu(name: str) -> GPUSpec:
    """The published spec of GPU ``name`` (h100, h200, a100)."""
    if not isinstance(name, str):
        raise HardwareError(f"GPU name must be a string (known: {', '.join(GPUS)}), got {name!r}")
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise HardwareError(f"unknown GPU {name!r} (known: {', '.join(GPUS)})") from None


ATTACHMENTS = ("separate", "shared")


def pim_for(gpu_spec: GPUSpec, internal_bandwidth_multiple: float = 4.0,
            attach: str = "separate") -> PIMSpec:
    """HBM-PIM for one GPU: as many stacks as the GPU has HBM stacks, either attached beside its
    HBM (``separate``) or replacing it (``shared``: GPU and PIM contend for the banks)."""
    _check_attach(attach)
    return PIMSpec(
        stacks=gpu_spec.hbm_stacks,
        # HBM3 (JESD238): 16 channels per stack, 2 pseudo-channels x 16 banks = 32 banks/channel
        channels_per_stack=16.0, banks_per_channel=32.0,
        # Samsung Aquabolt-XL HBM-PIM (Kwon et al., ISSCC 2021; Lee et al., ISCA 2021): one
        # programmable computing unit per 2 banks, 16-lane FP16 SIMD (256-bit), 300 MHz
        banks_per_unit=2.0, lanes_per_unit=16.0, clock=300e6,
        external_bandwidth=gpu_spec.hbm_bandwidth / gpu_spec.hbm_stacks,
        # Aquabolt-XL: bank-level parallelism gives 4x the off-chip bandwidth; AttAcc (ASPLOS 2024)
        # evaluates higher multiples (pass 9.0 or 16.0 to study them)
        internal_bandwidth_multiple=internal_bandwidth_multiple,
        # Aquabolt-XL switches SB -> AB -> AB-PIM mode and programs its CRF with a handful of DRAM
        # commands (each ~tRC = 45 ns in HBM2) per kernel: ~0.2 us per GEMV pass
        command_overhead=0.2e-6,
        # GEMV units: each input vector needs one sweep of the weights (AttAcc, NeuPIMs)
        tokens_per_pass=1.0,
        # shared: all-bank PIM mode blocks normal reads and writes to those banks (Aquabolt-XL) and
        # the GPU's weights are interleaved over every bank, so the two exclude each other;
        # separate: the GPU streams its own HBM while the PIM stacks compute
        bank_conflict=1.0 if attach == "shared" else 0.0)


def _check_attach(attach: str) -> None:
    if attach not in ATTACHMENTS:
        raise HardwareError(f"unknown PIM attachment {attach!r} (known: {', '.join(ATTACHMENTS)})")


def link_for(gpu_name: str, gpu_spec: GPUSpec, attach: str = "separate") -> LinkSpec:
    """NVLink and GPU-PIM path defaults for ``gpu_name``."""
    _check_attach(attach)
    nvlink = _NVLINK_PER_DIRECTION[gpu_name.lower()]
    # a few microseconds for a small NVLink/NVSwitch message (NCCL all-to-all latency floor)
    nvlink_latency = 3e-6
    if attach == "shared":
        # PIM operands are written through the GPU's own HBM interface (Aquabolt-XL fills its
        # GRFs with ordinary WR commands): HBM bandwidth, ~0.5 us HBM access latency seen by an SM
        # (~480 cycles at 1.98 GHz, Hopper study above)
        path_bandwidth, path_latency = gpu_spec.hbm_bandwidth, 0.5e-6
    else:
        # PIM stacks on a GPU-attached high-bandwidth link (AttAcc pairs GPUs with HBM-PIM devices
        # over such an interconnect): an NVLink-class port
        path_bandwidth, path_latency = nvlink, nvlink_latency
    return LinkSpec(nvlink_bandwidth=nvlink, nvlink_latency=nvlink_latency,
                    gpu_pim_bandwidth=path_bandwidth, gpu_pim_latency=path_latency)


def _positive_finite(value: Any) -> bool:
    """Whether ``value`` is a real number (not a bool), finite and > 0."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return (array.ndim == 0 and array.dtype != bool and np.issubdtype(array.dtype, np.number)
            and not np.iscomplexobj(array) and bool(np.isfinite(array)) and bool(array > 0))


def system(gpu_name: str = "h100", internal_bandwidth_multiple: float = 4.0,
           attach: str = "separate") -> System:
    """One ``gpu_name`` GPU with HBM-PIM stacks and NVLink, all at published defaults.

    ``attach="separate"`` (default) follows Sieve's setting, GPUs with *attached* HBM-PIM stacks
    whose computation and GPU-PIM communication overlap the GPU's; ``"shared"`` puts the PIM in
    the GPU's own HBM (Aquabolt-XL style), where GPU streaming and PIM execution exclude each other.
    """
    spec = gpu(gpu_name)
    if not isinstance(internal_bandwidth_multiple, jax.core.Tracer) \
            and not _positive_finite(internal_bandwidth_multiple):
        raise HardwareError(f"internal_bandwidth_multiple must be a positive finite number, got "
                            f"{internal_bandwidth_multiple!r}")
    return System(gpu=spec, pim=pim_for(spec, internal_bandwidth_multiple, attach),
                  link=link_for(gpu_name, spec, attach))


def check_system(hw: System) -> System:
    """Raise HardwareError naming the field when a rate or size is not a finite positive number
    (non-negative for latencies, overheads and ``bank_conflict``); traced leaves are skipped."""
    if not isinstance(hw, System):
        raise HardwareError(f"expected a hardware System (hardware.system(...)), got "
                            f"{type(hw).__name__}")
    parts = {"gpu": GPUSpec, "pim": PIMSpec, "link": LinkSpec}
    for part_name, kind in parts.items():
        part = getattr(hw, part_name)
        if not isinstance(part, kind):
            raise HardwareError(f"hardware {part_name} must be a {kind.__name__}, got "
                                f"{type(part).__name__}")
        for field, value in vars(part).items():
            if isinstance(value, jax.core.Tracer):
                continue
            try:
                arr = np.asarray(value)
            except (TypeError, ValueError):
                arr = np.asarray(None)
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
                    or np.iscomplexobj(arr):
                raise HardwareError(f"hardware {part_name}.{field} must be a number, got "
                                    f"{value!r}")
            allowed_zero = field in {"kernel_launch", "command_overhead", "nvlink_latency",
                                     "gpu_pim_latency", "bank_conflict"}
            bad = (arr < 0).any() if allowed_zero else (arr <= 0).any()
            if bool(bad) or not np.isfinite(arr).all():
                need = "non-negative" if allowed_zero else "positive"
                raise HardwareError(f"hardware {part_name}.{field} must be finite and {need}, "
                                    f"got {value}")
    return hw


def with_fields(spec: Any, **changes: Any) -> Any:
    """A copy of a spec with some leaves replaced (e.g. a calibrated bandwidth)."""
    if not is_dataclass(spec) or isinstance(spec, type):
        raise HardwareError(f"with_fields needs a hardware spec (GPUSpec, PIMSpec, LinkSpec, "
                            f"System), got {type(spec).__name__}")
    known = [f.name for f in fields(spec)]
    unknown = [name for name in changes if name not in known]
    if unknown:
        raise HardwareError(f"{type(spec).__name__} has no field(s) {', '.join(unknown)} "
                            f"(fields: {', '.join(known)})")
    return replace(spec, **changes)
