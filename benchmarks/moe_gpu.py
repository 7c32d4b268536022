"""Pallas grouped expert GEMM (perfjax.kernels.pallas.moe) against jax.lax.ragged_dot on a GPU,
and the GPU expert-time curve of the MoE model (perfjax.models.pim) fitted to the measurements.

On a GPU: for each model's expert shape (Qwen3-30B-A3B: hidden 2048, expert FFN 768; GPT-OSS-120B:
2880 and 2880) and each token count per expert n = 1, 2, 4, ..., --max-tokens, runs the expert
part of a grouped-GEMM MoE layer - a fused gate+up grouped GEMM, SwiGLU, a down grouped GEMM, as
the model counts it (``pim.GROUPED_GEMM_LAUNCHES`` launches) - over E experts of n tokens each,
with E chosen so that the weights (--weight-mib, by default 200 and 800 MiB, 4x and 16x an
H100's 50 MiB L2) stream from HBM rather than from L2; each size is a table of its own. Both
variants are compiled, checked against each other, and timed best of --repeats after a warm-up,
each call ended by block_until_ready. Prints milliseconds per layer
and the Pallas / ragged_dot ratio (below 1: Pallas faster). If the Pallas kernel fails to compile,
that is listed at the end (exit status 1) and ragged_dot is still timed and fitted.

Then it fits ``flops_efficiency``, ``bandwidth_efficiency`` and ``kernel_launch`` of the GPU's
spec (``perfjax.hardware``, picked from the device name) so that
``launches * kernel_launch + E * gpu_expert_time(gpu, cfg, n)`` matches each kernel's measured
layer times over all weight sizes together (least squares on log time, ``fit_expert_time``),
and prints the fitted leaves with the curve's error before and after. Two weight sizes are what
separate a layer's fixed cost (launches, the XLA glue around them) from its streaming rate: at
one size and few tokens both are constant and the fit cannot tell them apart. The model config
is the published one with bfloat16 weights, since that is what the kernel streams (GPT-OSS ships
MXFP4).

Without a GPU it says so on one line, runs the kernel once in interpret mode on a tiny case
against a per-expert numpy loop (exit status 1 on a wrong result) and exits 0.

Usage: python benchmarks/moe_gpu.py [--models qwen3-30b-a3b gpt-oss-120b] [--max-tokens 4096]
       [--repeats 10] [--weight-mib 200 800] [--block-m M --block-k K --block-n N]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

import perfjax  # noqa: F401  (float64 on: the interpret check is exact to 1e-12)
from perfjax import hardware
from perfjax.errors import PerfjaxError
from perfjax.kernels.pallas import moe as kmoe
from perfjax.kernels.pallas.sparse import _is_power_of_two
from perfjax.models import pim
from perfjax.workloads import moe as wmoe
# The sibling script's timer (this folder is on sys.path when a script here runs): one timing
# rule for every kernel benchmark.
from pallas_sparse import best_seconds, describe, report_failures

FITTED_LEAVES = ("flops_efficiency", "bandwidth_efficiency", "kernel_launch")


def expert_layer(matmul):
    """The experts of one layer on sorted tokens: fused gate+up GEMM, SwiGLU, down GEMM."""

    def layer(x, w_gate_up, w_down, group_sizes):
        gate_up = matmul(x, w_gate_up, group_sizes).astype(jnp.float32)
        gate, up = jnp.split(gate_up, 2, axis=1)
        return matmul((jax.nn.silu(gate) * up).astype(x.dtype), w_down, group_sizes)

    return jax.jit(layer)


def gpu_spec_name() -> str:
    """The ``perfjax.hardware`` GPU closest to the device (H100 when unrecognised)."""
    kind = jax.devices()[0].device_kind.lower()
    return next((name for name in hardware.GPUS if name in kind), "h100")


def time_model(cfg: wmoe.MoEConfig, args, weight_mib: float,
               failures: list[str]) -> dict[str, np.ndarray]:
    """Layer seconds of each kernel per token count for ``weight_mib`` of expert weights; prints
    one row per count. If the Pallas kernel fails (compile or launch error) it is dropped with
    a line in ``failures``."""
    hidden, ffn = cfg.hidden, cfg.expert_ffn
    expert_bytes = cfg.matrices * hidden * ffn * 2  # bfloat16 weights
    experts = max(1, math.ceil(weight_mib * 2**20 / expert_bytes))
    key_gate_up, key_down, key_x = jax.random.split(jax.random.key(0), 3)
    w_gate_up = (jax.random.normal(key_gate_up, (experts, hidden, 2 * ffn), jnp.float32)
                 * hidden ** -0.5).astype(jnp.bfloat16)
    w_down = (jax.random.normal(key_down, (experts, ffn, hidden), jnp.float32)
              * ffn ** -0.5).astype(jnp.bfloat16)
    blocks = dict(block_m=args.block_m, block_k=args.block_k, block_n=args.block_n)
    kernels = {
        "pallas": expert_layer(lambda a, b, g: kmoe.grouped_matmul(a, b, g, **blocks)),
        "ragged_dot": expert_layer(jax.lax.ragged_dot),
    }
    counts = 2 ** np.arange(int(math.log2(args.max_tokens)) + 1)
    print(f"{cfg.name}: hidden {hidden}, expert FFN {ffn}, {experts} experts "
          f"({experts * expert_bytes / 2**20:.0f} MiB of bfloat16 weights)")
    print(f"{'tokens/expert':>13} {'pallas [ms]':>12} {'ragged_dot [ms]':>16} {'ratio':>7}")
    seconds = {name: [] for name in kernels}
    for n in counts:
        x = jax.random.normal(key_x, (int(n) * experts, hidden), jnp.float32).astype(jnp.bfloat16)
        group_sizes = jnp.full((experts,), n, jnp.int32)
        try:
            reference = np.asarray(kernels["ragged_dot"](x, w_gate_up, w_down, group_sizes),
                                   np.float32)
        except Exception as failure:  # noqa: BLE001 - e.g. out of memory: XLA's GPU ragged_dot
            # is a masked dense product over [tokens, experts, hidden]; nothing left to compare
            print(f"  ragged_dot failed at {n} tokens per expert ({describe(failure)}); "
                  "this table stops here", flush=True)
            counts = counts[:len(seconds["ragged_dot"])]
            break
        if "pallas" in kernels:
            try:  # a kernel this GPU's compiler rejects is reported; ragged_dot is still fitted
                actual = np.asarray(kernels["pallas"](x, w_gate_up, w_down, group_sizes),
                                    np.float32)
            except Exception as failure:  # noqa: BLE001 - any compile or launch error
                failures.append(f"{cfg.name} n={n} pallas: {describe(failure)}")
                del kernels["pallas"], seconds["pallas"]
            else:
                error = (np.abs(actual - reference).max() / max(np.abs(reference).max(), 1e-30))
                if not error <= 2e-2:  # two bfloat16 roundings of intermediate and output
                    raise SystemExit(f"{cfg.name} n={n}: Pallas differs from ragged_dot by "
                                     f"{error:.2e}")
        for name, fn in kernels.items():
            seconds[name].append(best_seconds(fn, x, w_gate_up, w_down, group_sizes,
                                              repeats=args.repeats))
        pallas = seconds["pallas"][-1] if "pallas" in seconds else float("nan")
        ragged = seconds["ragged_dot"][-1]
        print(f"{n:>13} {pallas * 1e3:12.3f} {ragged * 1e3:16.3f} {pallas / ragged:7.2f}",
              flush=True)
    return {"tokens": counts.astype(float), "experts": np.full(len(counts), float(experts)),
            **{name: np.asarray(s) for name, s in seconds.items()}}


def fit_model_curve(cfg: wmoe.MoEConfig, tables: list[dict], spec_name: str) -> None:
    """Fit the GPU spec's achievable fractions and launch cost to each kernel's layer times,
    the points of every weight size (``time_model`` table) together."""
    start = hardware.gpu(spec_name)
    bf16_cfg = dataclasses.replace(cfg, weight_bytes=2.0, act_bytes=2.0)
    tokens = np.concatenate([table["tokens"] for table in tables])
    experts = jnp.asarray(np.concatenate([table["experts"] for table in tables]))

    def layer_time(gpu, token_counts):  # point i: experts[i] experts of token_counts[i] tokens
        return (pim.GROUPED_GEMM_LAUNCHES * gpu.kernel_launch
                + experts * pim.gpu_expert_time(gpu, bf16_cfg, token_counts))

    for kernel in ("pallas", "ragged_dot"):
        if not all(kernel in table for table in tables):
            continue
        seconds = np.concatenate([table[kernel] for table in tables])
        try:
            result = kmoe.fit_expert_time(layer_time, start, tokens, seconds, fit=FITTED_LEAVES)
        except PerfjaxError as error:  # a diverged fit is a finding, not a crash
            print(f"  fit {spec_name} to {kernel}: failed ({error})")
            continue
        fitted = ", ".join(f"{leaf} {float(getattr(start, leaf)):.3g} -> "
                           f"{float(getattr(result.params, leaf)):.3g}" for leaf in FITTED_LEAVES)
        predicted = np.asarray(layer_time(result.params, jnp.asarray(tokens)))
        worst = float(np.abs(predicted / seconds - 1).max())
        print(f"  fit {spec_name} to {kernel} ({len(tables)} weight sizes): {fitted}; rms log "
              f"error {result.rms_log_error_before:.3f} -> {result.rms_log_error:.3f}, worst "
              f"point {100 * worst:.1f}% off")


def gpu_benchmark(args) -> None:
    spec_name = gpu_spec_name()
    blocks = "/".join(str(b or "auto") for b in (args.block_m, args.block_k, args.block_n))
    print(f"device: {jax.devices()[0].device_kind} (spec: {spec_name}); bfloat16; best of "
          f"{args.repeats}; blocks m/k/n {blocks} (auto: kernels.pallas.moe.default_blocks)")
    failures: list[str] = []
    for name in args.models:
        cfg = wmoe.model_config(name)
        tables = [time_model(cfg, args, mib, failures) for mib in args.weight_mib]
        fit_model_curve(cfg, tables, spec_name)
    report_failures(failures)


def interpret_check() -> None:
    """The kernel in interpret mode on skewed groups (one hot expert, empty ones, a straddled
    tile, a padded row), against a per-expert numpy loop."""
    sizes = [0, 6, 0, 1, 0, 0, 9, 0]
    rng = np.random.default_rng(0)
    lhs = rng.standard_normal((sum(sizes) + 1, 24))
    rhs = rng.standard_normal((len(sizes), 24, 10))
    expected, start = np.zeros((lhs.shape[0], 10)), 0
    for expert, size in enumerate(sizes):
        expected[start:start + size] = lhs[start:start + size] @ rhs[expert]
        start += size
    result = np.asarray(kmoe.grouped_matmul(lhs, rhs, np.asarray(sizes), block_m=4, block_k=8,
                                            block_n=8, interpret=True))
    error = float(np.abs(result - expected).max() / np.abs(expected).max())
    print(f"interpret mode grouped_matmul: relative error {error:.1e} against numpy "
          f"({'ok' if error <= 1e-12 else 'WRONG'})")
    if not error <= 1e-12:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["qwen3-30b-a3b", "gpt-oss-120b"],
                        help=f"expert shapes to time (known: {', '.join(wmoe.MODELS)})")
    parser.add_argument("--max-tokens", type=int, default=4096,
                        help="largest token count per expert (a power of two)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--weight-mib", type=float, nargs="+", default=[200.0, 800.0],
                        help="expert weights per layer to stream (MiB), one table each; larger "
                             "than L2, two or more sizes to separate fixed cost from bandwidth")
    parser.add_argument("--block-m", type=int, default=None)
    parser.add_argument("--block-k", type=int, default=None)
    parser.add_argument("--block-n", type=int, default=None)
    args = parser.parse_args()
    try:  # unknown names and bad block sizes fail before any timing
        for name in args.models:
            wmoe.model_config(name)
        kmoe._check_blocks("moe_gpu.py", **{f"--block-{axis}": getattr(args, f"block_{axis}")
                                            for axis in "mkn"
                                            if getattr(args, f"block_{axis}") is not None})
    except PerfjaxError as error:
        parser.error(str(error))
    if any(not mib > 0 for mib in args.weight_mib):
        parser.error(f"--weight-mib must be positive, got {args.weight_mib}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not _is_power_of_two(args.max_tokens):
        parser.error(f"--max-tokens must be a power of two, got {args.max_tokens}")
    if jax.default_backend() != "gpu":
        print(f"no GPU present (JAX backend: {jax.default_backend()}): skipping the timings and "
              "the model fit, checking the kernel in interpret mode only")
        interpret_check()
        return
    gpu_benchmark(args)


if __name__ == "__main__":
    main()
