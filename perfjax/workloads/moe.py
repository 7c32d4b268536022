"""Mixture-of-Experts workloads: model configurations and token-to-expert routing.

Routing is a ``[tokens, top_k]`` integer array of expert ids (one row per token, its chosen
experts). It comes from the real traces in ``<data>/moe-routing`` (``read_trace``/``read_traces``)
or from generators (``powerlaw_routing``, ``bimodal_routing``), and ``rescale_routing`` maps any of
them to another expert count, top-k and batch by keeping the shape of the expert-popularity curve.
``device_counts`` turns a routing into what the step-time model needs: per-device, per-expert token
counts under expert parallelism (experts split contiguously over D devices, shared experts
replicated on every device and fed that device's own tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfjax.errors import WorkloadError, check_integer
from perfjax.workloads.sparse import check_alpha, check_generated_size, generator_rng

__all__ = ["MoEConfig", "MODELS", "SIEVE_MODELS", "model_config", "RoutingTrace", "read_trace",
           "read_traces", "expert_counts", "powerlaw_routing", "bimodal_routing",
           "rescale_routing", "device_counts", "chunk_device_counts", "check_counts", "slot_ffn",
           "PHASES"]

PHASES = ("decode", "prefill")


@dataclass(frozen=True)
class MoEConfig:
    """Shape of one MoE model's expert layers (SwiGLU experts: gate, up and down projections)."""

    name: str
    layers: int           # MoE layers (dense-FFN layers excluded)
    hidden: int
    experts: int          # routed experts per layer
    top_k: int
    expert_ffn: int       # intermediate size of one routed expert
    shared_experts: int = 0
    shared_ffn: int = 0
    weight_bytes: float = 2.0  # bytes per expert weight (BF16 = 2, FP8 = 1, MXFP4 = 4.25 bits)
    act_bytes: float = 2.0     # bytes per activation element (BF16)
    matrices: int = 3          # gate, up, down

    def expert_params(self, ffn: int | None = None) -> int:
        """Weights of one expert with intermediate size ``ffn`` (default: a routed expert)."""
        return self.matrices * self.hidden * (self.expert_ffn if ffn is None else ffn)


MODELS: dict[str, MoEConfig] = {
    # Qwen/Qwen3-30B-A3B config.json: 48 layers, hidden 2048, 128 experts, 8 per token,
    # moe_intermediate_size 768, no shared expert, BF16
    "qwen3-30b-a3b": MoEConfig("qwen3-30b-a3b", layers=48, hidden=2048, experts=128, top_k=8,
                               expert_ffn=768),
    # openai/gpt-oss-120b config.json and model card: 36 layers, hidden 2880, 128 experts, 4 per
    # token, intermediate 2880; expert weights in MXFP4 (4-bit values + one 8-bit scale per 32)
    "gpt-oss-120b": MoEConfig("gpt-oss-120b", layers=36, hidden=2880, experts=128, top_k=4,
                              expert_ffn=2880, weight_bytes=4.25 / 8),
    # Qwen/Qwen3.5-397B-A17B config.json: 60 layers, hidden 4096, 512 experts, 10 per token plus
    # one shared expert, moe_intermediate_size 1024, shared_expert_intermediate_size 1024, BF16
    "qwen3.5-397b-a17b": MoEConfig("qwen3.5-397b-a17b", layers=60, hidden=4096, experts=512,
                                   top_k=10, expert_ffn=1024, shared_experts=1, shared_ffn=1024),
    # mistralai/Mixtral-8x7B-v0.1 config.json: 32 layers, hidden 4096, 8 experts, 2 per token,
    # intermediate 14336, BF16
    "mixtral-8x7b": MoEConfig("mixtral-8x7b", layers=32, hidden=4096, experts=8, top_k=2,
                              expert_ffn=14336),
    # deepseek-ai/DeepSeek-V3 config.json: 61 layers of which the first 3 are dense (58 MoE),
    # hidden 7168, 256 routed experts, 8 per token, 1 shared, moe_intermediate_size 2048, FP8
    "deepseek-v3": MoEConfig("deepseek-v3", layers=58, hidden=7168, experts=256, top_k=8,
                             expert_ffn=2048, shared_experts=1, shared_ffn=2048, weight_bytes=1.0),
}

# The three models Sieve (Kim et al., arXiv 2605.11277) evaluates, with its published speedups
# over the best state-of-the-art PIM system.
SIEVE_MODELS: dict[str, float] = {"qwen3.5-397b-a17b": 1.3, "gpt-oss-120b": 1.3,
                                  "qwen3-30b-a3b": 1.6}


def model_config(name: str) -> MoEConfig:
    """The configuration of model ``name`` (one of ``MODELS``)."""
    if not isinstance(name, str):
        raise WorkloadError(f"MoE model name must be a string (known: {', '.join(MODELS)}), got "
                            f"{name!r}")
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise WorkloadError(f"unknown MoE model {name!r} (known: {', '.join(MODELS)})") from None


@dataclass(frozen=True)
class RoutingTrace:
    """One routing step read from a trace file: ``experts`` is [tokens, top_k] expert ids."""

    experts: np.ndarray
    num_experts: int
    top_k: int
    phase: str
    source: str


def _phase_of(path: Path) -> str:
    parts = {p.lower() for p in path.parts}
    if "prefill" in parts:
        return "prefill"
    if "decode" in parts or "token" in path.stem:
        return "decode"
    return "decode"


def read_trace(path: str | Path) -> RoutingTrace:
    """Read one ``.npz`` routing trace (arrays ``experts`` [tokens, top_k], ``num_experts``,
    ``top_k``) and check its shape and expert ids."""
    path = Path(path)
    try:
        archive = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        reason = ("not a .npz archive" if "pickle" in str(exc) else str(exc))
        raise WorkloadError(f"routing trace {path}: cannot read ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise WorkloadError(f"routing trace {path}: a single array, expected a .npz archive with "
                            f"arrays experts, num_experts and top_k")
    try:
        with archive:
            missing = [k for k in ("experts", "num_experts", "top_k") if k not in archive]
            if missing:
                raise WorkloadError(f"routing trace {path}: missing array(s) {', '.join(missing)}")
            experts = np.asarray(archive["experts"])
            num_experts = int(archive["num_experts"])
            top_k = int(archive["top_k"])
            weights = np.asarray(archive["weights"]) if "weights" in archive else None
    except WorkloadError:
        raise
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise WorkloadError(f"routing trace {path}: cannot read ({exc})") from None
    _check_routing(experts, num_experts, top_k, f"routing trace {path}")
    ordered = np.sort(experts, axis=1)
    repeated = np.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))[0]
    if len(repeated):
        raise WorkloadError(f"routing trace {path}: token {int(repeated[0])} lists an expert more "
                            f"than once (a token's top_k experts are distinct)")
    if weights is not None and (weights.shape != experts.shape
                                or not np.issubdtype(weights.dtype, np.number)
                                or not np.isfinite(weights).all()):
        raise WorkloadError(f"routing trace {path}: gate weights must be finite numbers shaped "
                            f"like experts {list(experts.shape)}, got {list(weights.shape)} "
                            f"{weights.dtype}")
    return RoutingTrace(experts.astype(np.int64), num_experts, top_k, _phase_of(path), str(path))


def _check_routing(experts: np.ndarray, num_experts: int, top_k: int, what: str) -> None:
    if num_experts < 1 or top_k < 1:
        raise WorkloadError(f"{what}: num_experts and top_k must be positive, got "
                            f"{num_experts} and {top_k}")
    if experts.ndim != 2 or experts.shape[1] != top_k or experts.shape[0] < 1:
        raise WorkloadError(f"{what}: experts must have shape [tokens, top_k={top_k}], got "
                            f"{list(experts.shape)}")
    if not np.issubdtype(experts.dtype, np.integer):
        raise WorkloadError(f"{what}: expert ids must be integers, got dtype {experts.dtype}")
    if experts.min() < 0 or experts.max() >= num_experts:
        raise WorkloadError(f"{what}: expert ids must lie in [0, {num_experts}), found "
                            f"{int(experts.min())}..{int(experts.max())}")


def read_traces(path: str | Path, phase: str | None = None) -> list[RoutingTrace]:
    """All traces under ``path`` (a file or a directory searched recursively), sorted by name;
    only those of ``phase`` when given."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.rglob("*.npz"))
    else:
        raise WorkloadError(f"routing {path}: no such file or directory")
    traces = [read_trace(f) for f in files]
    if phase is not None:
        traces = [t for t in traces if t.phase == phase]
    if not traces:
        raise WorkloadError(f"routing {path}: no {phase + ' ' if phase else ''}traces (*.npz)")
    return traces


def expert_counts(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """Tokens routed to each expert: [num_experts] integers."""
    return np.bincount(np.asarray(experts).ravel(), minlength=num_experts)[:num_experts]


def _check_sizes(num_experts: int, top_k: int, tokens: int) -> None:
    for name, value in (("experts", num_experts), ("top_k", top_k), ("tokens", tokens)):
        check_integer(value, f"routing: {name}", None, error=WorkloadError)
    if num_experts < 1 or tokens < 1 or top_k < 1:
        raise WorkloadError(f"routing: experts, top_k and tokens must be positive, got "
                            f"{num_experts}, {top_k}, {tokens}")
    if top_k > num_experts:
        raise WorkloadError(f"routing: top_k={top_k} exceeds the number of experts {num_experts}")
    # Gumbel keys, their sum and argsort: about three float64/int64 [tokens, experts] arrays
    check_generated_size("routing", 32.0 * tokens * num_experts, experts=num_experts,
                         tokens=tokens)


def _sample_without_replacement(probabilities: np.ndarray, top_k: int, tokens: int,
                                rng: np.random.Generator) -> np.ndarray:
    """top_k distinct experts per token, drawn successively in proportion to ``probabilities``
    (Gumbel top-k: the same law as sequential sampling without replacement)."""
    logits = np.log(np.maximum(probabilities, 1e-300))
    gumbel = rng.gumbel(size=(tokens, probabilities.size))
    return np.argsort(-(logits + gumbel), axis=1)[:, :top_k].astype(np.int64)


def powerlaw_probabilities(num_experts: int, alpha: float, rng: np.random.Generator
                           ) -> np.ndarray:
    """Popularity p_i proportional to rank^-alpha, ranks shuffled over expert ids."""
    alpha = check_alpha(alpha, "routing powerlaw", non_negative=True)
    weights = np.arange(1, num_experts + 1, dtype=float) ** -alpha
    return rng.permutation(weights / weights.sum())


def powerlaw_routing(num_experts: int, top_k: int, tokens: int, alpha: float,
                     seed: int = 0) -> np.ndarray:
    """[tokens, top_k] routing whose expert popularity follows a power law rank^-alpha
    (alpha ~ 1.01-1.2 as measured for DeepSeek and Qwen experts)."""
    _check_sizes(num_experts, top_k, tokens)
    rng = generator_rng(seed, "routing powerlaw")
    return _sample_without_replacement(powerlaw_probabilities(num_experts, alpha, rng), top_k,
                                       tokens, rng)


def bimodal_probabilities(num_experts: int, hot_experts: int, hot_mass: float,
                          rng: np.random.Generator) -> np.ndarray:
    """``hot_experts`` share ``hot_mass`` of the popularity equally; the rest share the remainder."""
    if not 0 < hot_experts < num_experts or not 0.0 < hot_mass < 1.0:
        raise WorkloadError(f"routing bimodal: need 0 < hot_experts < {num_experts} and "
                            f"0 < hot_mass < 1, got {hot_experts} and {hot_mass}")
    p = np.full(num_experts, (1.0 - hot_mass) / (num_experts - hot_experts))
    p[:hot_experts] = hot_mass / hot_experts
    return rng.permutation(p)


def bimodal_routing(num_experts: int, top_k: int, tokens: int, hot_experts: int,
                    hot_mass: float, seed: int = 0) -> np.ndarray:
    """[tokens, top_k] routing where a few hot experts draw most tokens and a long tail the rest."""
    _check_sizes(num_experts, top_k, tokens)
    rng = generator_rng(seed, "routing bimodal")
    return _sample_without_replacement(
        bimodal_probabilities(num_experts, hot_experts, hot_mass, rng), top_k, tokens, rng)


def rescale_routing(experts: np.ndarray, num_experts: int, new_experts: int, new_top_k: int,
                    tokens: int, seed: int = 0) -> np.ndarray:
    """Resample a routing for another expert count, top-k and batch, keeping its popularity curve.

    The measured popularity, sorted descending, is read as a cumulative share over the rank
    fraction; the new experts take equal slices of that curve (linear interpolation), ranks are
    shuffled over ids, and tokens draw ``new_top_k`` distinct experts from it.
    """
    _check_sizes(new_experts, new_top_k, tokens)
    counts = np.sort(expert_counts(experts, num_experts))[::-1].astype(float)
    # a small floor keeps never-chosen experts reachable (their measured share is only an upper
    # bound of zero over a finite trace)
    counts = counts + 1e-3 * max(counts.sum(), 1.0) / num_experts
    share = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    rank_fraction = np.linspace(0.0, 1.0, num_experts + 1)
    cumulative = np.interp(np.linspace(0.0, 1.0, new_experts + 1), rank_fraction, share)
    rng = generator_rng(seed, "rescale_routing")
    probabilities = rng.permutation(np.diff(cumulative))
    return _sample_without_replacement(probabilities, new_top_k, tokens, rng)


def slot_ffn(cfg: MoEConfig, devices: int) -> np.ndarray:
    """Intermediate size of each expert slot on a device: E/D routed slots, then shared ones."""
    _check_devices(cfg, devices)
    return np.array([cfg.expert_ffn] * (cfg.experts // devices) +
                    [cfg.shared_ffn] * cfg.shared_experts, dtype=float)


def _check_devices(cfg: MoEConfig, devices: int) -> None:
    check_integer(devices, "devices", None, error=WorkloadError)
    if devices < 1 or cfg.experts % devices:
        raise WorkloadError(f"devices: {cfg.name} has {cfg.experts} experts, which {devices} "
                            f"devices cannot split evenly")


def device_counts(cfg: MoEConfig, experts: np.ndarray, devices: int) -> np.ndarray:
    """Per-device, per-slot token counts [devices, E/D + shared] of one routing step.

    Routed expert e lives on device e // (E/D); token t sits on device t % D, which also runs the
    shared experts for it.
    """
    experts = np.asarray(experts)
    _check_routing(experts, cfg.experts, experts.shape[1] if experts.ndim == 2 else cfg.top_k,
                   f"routing for {cfg.name}")
    _check_devices(cfg, devices)
    routed = expert_counts(experts, cfg.experts).reshape(devices, cfg.experts // devices)
    local_tokens = np.bincount(np.arange(experts.shape[0]) % devices, minlength=devices)
    shared = np.repeat(local_tokens[:, None], cfg.shared_experts, axis=1)
    return np.concatenate([routed, shared], axis=1).astype(float)


def chunk_device_counts(cfg: MoEConfig, experts: np.ndarray, devices: int, chunks: int
                        ) -> np.ndarray:
    """Per-chunk ``device_counts`` [chunks, devices, slots]: token t belongs to chunk
    t * chunks // tokens (contiguous chunks, as a chunk-pipelined layer splits its batch)."""
    experts = np.asarray(experts)
    if not 1 <= chunks <= experts.shape[0]:
        raise WorkloadError(f"chunks: need 1 <= chunks <= tokens ({experts.shape[0]}), got {chunks}")
    chunk_of = np.arange(experts.shape[0]) * chunks // experts.shape[0]
    per_device = cfg.experts // devices
    out = []
    for c in range(chunks):
        rows = np.flatnonzero(chunk_of == c)
        counts = device_counts(cfg, experts[rows], devices)
        # the shared experts run where each token sits: t % devices over the whole batch
        counts[:, per_device:] = np.bincount(rows % devices, minlength=devices)[:, None]
        out.append(counts)
    return np.stack(out)


def check_counts(counts: np.ndarray, what: str = "token counts", cfg: MoEConfig | None = None
                 ) -> np.ndarray:
    """``counts`` as floats, or a WorkloadError naming ``what`` when any is negative or not
    finite (the models take counts as data and cannot check them under jit). With ``cfg``, also
    their shape: [..., D, E/D + shared] for D devices that split ``cfg``'s experts evenly."""
    try:
        counts = np.asarray(counts, dtype=float)
    except (TypeError, ValueError):
        raise WorkloadError(f"{what}: counts must be an array of numbers, got "
                            f"{type(counts).__name__}") from None
    if cfg is not None:
        if counts.ndim < 2:
            raise WorkloadError(f"{what}: counts must be [devices, slots] for {cfg.name}, got "
                                f"shape {list(counts.shape)}")
        devices = counts.shape[-2]
        _check_devices(cfg, devices)
        slots = cfg.experts // devices + cfg.shared_experts
        if counts.shape[-1] != slots:
            raise WorkloadError(f"{what}: {cfg.name} on {devices} devices has {slots} expert "
                                f"slots per device (E/D + shared), expected shape "
                                f"[{devices}, {slots}], got {list(counts.shape)}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        bad = counts[~np.isfinite(counts) | (counts < 0)].ravel()[0]
        raise WorkloadError(f"{what}: counts must be finite and non-negative, found {bad}")
    return counts
