"""``perfjax moe``: compare expert-placement policies for an MoE model on GPUs with HBM-PIM.

For every routing step (real traces rescaled to the model, or generated), every policy in
``perfjax.schedulers.experts.POLICIES`` places the experts, the step-time model scores the layer,
and the event-level reference simulator replays it; the report gives tokens/s and time per output
token per policy, the dynamic policy's gain over the best static one, and the model's error
against the simulator.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfjax.errors import WorkloadError

MAX_TOKENS = 2**20  # tokens per step (--batch): beyond any serving batch, and the routing fits
DEFAULT_STEPS = 12  # generated routing steps (the real data holds 12 layers per decode step)


@dataclass(frozen=True)
class RoutingSource:
    """Routing steps for one model: [tokens, top_k] expert ids each, already rescaled."""

    steps: list[np.ndarray]
    description: str


def routing_steps(spec: str, cfg: Any, tokens: int, phase: str, seed: int = 0,
                  steps: int = DEFAULT_STEPS) -> RoutingSource:
    """Resolve ``--routing``: a trace FILE (.npz), a DIR of traces, or ``powerlaw:ALPHA``."""
    from perfjax.workloads import moe

    if spec.startswith("powerlaw:"):
        text = spec.split(":", 1)[1]
        try:
            alpha = float(text)
        except ValueError:
            raise WorkloadError(f"--routing {spec}: ALPHA must be a number, got {text!r}") from None
        routings = [moe.powerlaw_routing(cfg.experts, cfg.top_k, tokens, alpha, seed + i)
                    for i in range(steps)]
        return RoutingSource(routings, f"power law alpha={alpha}")
    path = Path(spec)
    if not path.exists():
        raise WorkloadError(f"--routing {spec}: no such file or directory (or powerlaw:ALPHA)")
    traces = moe.read_traces(path, phase=None if path.is_file() else phase)
    routings = [moe.rescale_routing(t.experts, t.num_experts, cfg.experts, cfg.top_k, tokens,
                                    seed + i) for i, t in enumerate(traces)]
    return RoutingSource(routings, f"{len(traces)} trace(s) from {spec}")


def compare_policies(hw: Any, cfg: Any, routings: list[np.ndarray], devices: int,
                     phase: str = "decode", mode: str = "overlapped", simulate: bool = True,
                     chunks: int = 4) -> dict[str, Any]:
    """Model (and simulator) tokens/s and time per output token of every placement policy.

    ``mode`` serial | overlapped | pipelined (``chunks`` token chunks; placements are then chosen
    for the overlapped layer and evaluated pipelined)."""
    import jax.numpy as jnp

    from perfjax.models import pim as model
    from perfjax.schedulers import experts as schedulers
    from perfjax.sim.moe import simulate_layer
    from perfjax.workloads import moe

    counts = moe.check_counts(np.stack([moe.device_counts(cfg, r, devices) for r in routings]))
    tokens = routings[0].shape[0]
    place_mode = "overlapped" if mode == "pipelined" else mode
    if mode == "pipelined":
        chunked = jnp.asarray(np.stack([moe.chunk_device_counts(cfg, r, devices, chunks)
                                        for r in routings]))
    policies: dict[str, Any] = {}
    errors: list[float] = []
    for policy in schedulers.POLICIES:
        placements = np.stack([np.asarray(schedulers.place(policy, hw, cfg, jnp.asarray(c), phase,
                                                           place_mode)) for c in counts])
        placements = placements * (counts > 0)
        if mode == "pipelined":
            critical = np.asarray(model.batched_pipelined_critical(hw, cfg, chunked,
                                                                   jnp.asarray(placements)))
        else:
            critical = np.asarray(model.batched_layer_times(hw, cfg, jnp.asarray(counts),
                                                            jnp.asarray(placements), mode).critical)
        row = model.step_metrics(critical, cfg, tokens)
        row["pim_fraction"] = float(placements.sum() / max((counts > 0).sum(), 1))
        if simulate:
            simulated = np.array([simulate_layer(hw, cfg, r, pl, devices, mode, chunks).critical
                                  for r, pl in zip(routings, placements)])
            errors.extend(np.abs(critical - simulated) / simulated)
            sim_row = model.step_metrics(simulated, cfg, tokens)
            row["sim_tokens_per_s"] = sim_row["tokens_per_s"]
            row["sim_time_per_token_ms"] = sim_row["time_per_token_ms"]
        policies[policy] = row
    best_static = max(policies[p]["tokens_per_s"] for p in schedulers.STATIC_POLICIES)
    return {
        "model": cfg.name,
        "policies": policies,
        "dynamic_over_best_static": policies["dynamic"]["tokens_per_s"] / best_static,
        "model_vs_sim_mape": float(100.0 * np.mean(errors)) if errors else float("nan"),
        "gpus": devices, "tokens_per_step": tokens, "phase": phase, "mode": mode,
        "chunks": chunks if mode == "pipelined" else 1,
        "steps": len(routings),
    }


def register(commands: Any) -> None:
    """Add the ``moe`` subcommand to the CLI's subparsers."""
    from perfjax.cli import _output_path, _seed
    from perfjax.cli import _positive_int as _positive
    from perfjax.workloads.moe import MODELS, PHASES

    moe = commands.add_parser(
        "moe", help="expert placement between GPU and HBM-PIM for an MoE model",
        description="Compare GPU-only, static PIM offload (AttAcc/NeuPIMs), static Op/B "
                    "threshold (Duplex) and dynamic (Sieve-style) expert placement for one MoE "
                    "model on D GPUs with attached HBM-PIM: step-time model and event-level "
                    "reference simulator.")
    moe.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    moe.add_argument("--routing", required=True, metavar="FILE|DIR|powerlaw:ALPHA",
                     help="a routing trace (.npz), a directory of traces, or powerlaw:ALPHA")
    moe.add_argument("--batch", type=_positive, default=None,
                     help="tokens per step (default 256 for decode, 2048 for prefill)")
    moe.add_argument("--phase", choices=PHASES, default="decode")
    moe.add_argument("--gpus", type=_positive, default=8, help="expert-parallel GPUs (default 8)")
    moe.add_argument("--gpu", default="h100", help="h100, h200 or a100 (default h100)")
    moe.add_argument("--mode", choices=("serial", "overlapped", "pipelined"),
                     default="overlapped", help="GPU/PIM overlap (default overlapped)")
    moe.add_argument("--chunks", type=_positive, default=4,
                     help="token chunks of --mode pipelined (default 4)")
    moe.add_argument("--pim-multiple", type=float, default=4.0,
                     help="PIM internal bandwidth over external (default 4, Aquabolt-XL)")
    moe.add_argument("--pim-attach", choices=("separate", "shared"), default="separate",
                     help="PIM stacks beside the GPU's HBM (default) or in it (bank conflicts)")
    moe.add_argument("--seed", type=_seed, default=0)
    moe.add_argument("--no-sim", action="store_true", help="skip the reference simulator")
    moe.add_argument("--json", required=True, metavar="OUT", type=_output_path,
                     help="write the report here")


def run(args: argparse.Namespace) -> int:
    """Run ``perfjax moe``; errors are PerfjaxError (the CLI prints one line, exit 2)."""
    from perfjax import hardware
    from perfjax.cli import _write_json
    from perfjax.errors import HardwareError
    from perfjax.workloads import moe

    cfg = moe.model_config(args.model)
    if not 0 < args.pim_multiple < float("inf"):
        raise HardwareError(f"--pim-multiple must be a positive finite number, got "
                            f"{args.pim_multiple}")
    hw = hardware.check_system(hardware.system(args.gpu, args.pim_multiple, args.pim_attach))
    tokens = args.batch or (256 if args.phase == "decode" else 2048)
    if tokens > MAX_TOKENS:
        raise WorkloadError(f"--batch {tokens}: at most {MAX_TOKENS} tokens per step")
    source = routing_steps(args.routing, cfg, tokens, args.phase, args.seed)
    report = compare_policies(hw, cfg, source.steps, args.gpus, args.phase, args.mode,
                              simulate=not args.no_sim, chunks=args.chunks)
    report["routing"] = source.description
    report["gpu"], report["pim_attach"] = args.gpu, args.pim_attach
    _write_json(args.json, report)
    print(f"{cfg.name}: {args.phase}, {tokens} tokens/step, {args.gpus} x {args.gpu} + HBM-PIM "
          f"({args.pim_multiple:g}x, {args.pim_attach}), {source.description}, {args.mode}")
    print(f"{'policy':<18}{'tokens/s':>12}{'TPOT ms':>10}{'on PIM':>8}")
    for name, row in report["policies"].items():
        print(f"{name:<18}{row['tokens_per_s']:12.0f}{row['time_per_token_ms']:10.3f}"
              f"{row['pim_fraction']:8.2f}")
    print(f"dynamic over best static {report['dynamic_over_best_static']:.3f}x; model vs "
          f"simulator MAPE {report['model_vs_sim_mape']:.2f}%")
    return 0
