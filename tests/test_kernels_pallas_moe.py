"""Pallas grouped (ragged) expert GEMM and expert FFN against per-expert numpy loops; the
expert-time fit against the spec that generated synthetic measurements.

Kernels run with ``interpret=None`` (interpreted on CPU, Triton on a GPU). Shapes are tiny and
few, since each shape / block combination is one interpret-mode compile.
``test_grouped_matmul_lowers_for_triton`` lowers the compiled variant for CUDA without a GPU.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perfjax import hardware
from perfjax.errors import PerfjaxError, WorkloadError
from perfjax.kernels.pallas import moe
from perfjax.models import pim
from perfjax.workloads import moe as workloads


def reference_grouped_matmul(lhs: np.ndarray, rhs: np.ndarray, sizes) -> np.ndarray:
    """Per-expert loop of numpy matmuls in float64; rows past the groups stay zero."""
    lhs, rhs = np.asarray(lhs, np.float64), np.asarray(rhs, np.float64)
    out = np.zeros((lhs.shape[0], rhs.shape[2]))
    start = 0
    for expert, size in enumerate(sizes):
        out[start:start + size] = lhs[start:start + size] @ rhs[expert]
        start += size
    return out


def operands(sizes, hidden: int, ffn: int, dtype, extra_rows: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = int(np.sum(sizes)) + extra_rows
    lhs = jnp.asarray(rng.standard_normal((tokens, hidden)), dtype)
    rhs = jnp.asarray(rng.standard_normal((len(sizes), hidden, ffn)), dtype)
    return lhs, rhs


BLOCKS = dict(block_m=4, block_k=8, block_n=8)

GROUPS = {
    # Ragged, with empty groups first, inside and last, and groups straddling 4-row tiles.
    "ragged": ([0, 5, 0, 0, 7, 1, 3, 0], 0),
    # One hot expert holds every token, all others empty: the skew of a collapsed router.
    "one-hot-expert": ([0, 0, 0, 0, 0, 0, 19, 0], 0),
    # One token per expert: every tile straddles four groups.
    "one-each": ([1, 1, 1, 1, 1, 1, 1, 1], 0),
    # Three rows past the groups (static padding) must come out zero.
    "padded-rows": ([2, 0, 6, 0, 0, 3, 0, 0], 3),
}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_grouped_matmul_matches_numpy_float64(name):
    """hidden 20 and ffn 12 are not multiples of the 8-wide blocks: edge tiles are masked."""
    sizes, extra = GROUPS[name]
    lhs, rhs = operands(sizes, 20, 12, jnp.float64, extra)
    result = moe.grouped_matmul(lhs, rhs, jnp.asarray(sizes), **BLOCKS)
    assert result.dtype == jnp.float64 and result.shape == (lhs.shape[0], 12)
    np.testing.assert_allclose(result, reference_grouped_matmul(lhs, rhs, sizes),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tokens, experts, dtype, expected", [
    (23, 23, jnp.bfloat16, (16, 128, 128)),       # decode: one token per expert
    (40 * 8, 8, jnp.bfloat16, (64, 128, 128)),    # 40 per expert -> the next power of two
    (4096 * 5, 5, jnp.float16, (128, 64, 128)),   # prefill: capped at 128 rows
    (3, 8, jnp.bfloat16, (16, 128, 128)),         # fewer tokens than experts
    (4096, 4, jnp.float32, (moe.BLOCK_M, moe.BLOCK_K, moe.BLOCK_N)),
    (4096, 4, jnp.float64, (moe.BLOCK_M, moe.BLOCK_K, moe.BLOCK_N)),
])
def test_default_blocks_follow_rows_per_expert(tokens, experts, dtype, expected):
    assert moe.default_blocks(tokens, experts, dtype) == expected


def test_grouped_matmul_default_blocks_bfloat16():
    """No block sizes given: bfloat16 takes default_blocks' 16 x 128 x 128 tiles here (masked
    edges on every side: hidden 150, ffn 130), the result still the per-expert product."""
    sizes = [2, 0, 5, 1]
    lhs, rhs = operands(sizes, 150, 130, jnp.bfloat16, seed=2)
    result = moe.grouped_matmul(lhs, rhs, jnp.asarray(sizes))
    expected = reference_grouped_matmul(lhs.astype(jnp.float64), rhs.astype(jnp.float64), sizes)
    np.testing.assert_allclose(np.asarray(result, np.float64), expected,
                               rtol=0, atol=1e-2 * np.abs(expected).max())


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_grouped_matmul_low_precision_accumulates_in_float32(dtype, tolerance):
    """The reference multiplies the same (rounded) inputs in float64; a float32 accumulator
    leaves only the output's rounding, far below what bfloat16 accumulation over 64 terms
    would give."""
    sizes = [3, 0, 9, 0, 0, 5, 0, 0]
    lhs, rhs = operands(sizes, 64, 8, dtype, seed=1)
    result = moe.grouped_matmul(lhs, rhs, jnp.asarray(sizes), block_m=8, block_k=16, block_n=8)
    assert result.dtype == dtype
    expected = reference_grouped_matmul(lhs.astype(jnp.float64), rhs.astype(jnp.float64), sizes)
    scale = np.abs(expected).max()
    assert np.abs(np.asarray(result, np.float64) - expected).max() <= tolerance * scale


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_work_items_are_the_group_tile_pairs_with_common_rows(name):
    """Brute force: every (group, row tile) pair sharing a row, group-major, the rows past the
    groups as group E; within the static bound of row tiles + E items."""
    sizes, extra = GROUPS[name]
    tokens, block_m, experts = sum(sizes) + extra, 4, len(sizes)
    owner = np.concatenate([np.repeat(np.arange(experts), sizes), np.full(extra, experts)])
    expected = sorted({(int(owner[r]), r // block_m) for r in range(tokens)})
    _, _, group, tile, count = moe._work_items(jnp.asarray(sizes, jnp.int32), tokens, block_m)
    assert len(group) == -(-tokens // block_m) + experts
    assert list(zip(np.asarray(group[:int(count[0])]).tolist(),
                    np.asarray(tile[:int(count[0])]).tolist())) == expected


def test_group_sizes_are_data_one_compile_serves_all_routings():
    """Under jit with traced group sizes, several routings of the same shape reuse one kernel
    and each matches numpy."""
    lhs, rhs = operands([4, 4, 4, 4, 4, 4, 4, 4], 20, 12, jnp.float64, seed=2)
    run = jax.jit(lambda a, b, g: moe.grouped_matmul(a, b, g, **BLOCKS))
    routings = [[4, 4, 4, 4, 4, 4, 4, 4], [32, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 30, 0, 0, 1],
                [3, 0, 0, 0, 0, 0, 0, 0]]
    for sizes in routings:
        result = run(lhs, rhs, jnp.asarray(sizes, jnp.int32))
        np.testing.assert_allclose(result, reference_grouped_matmul(lhs, rhs, sizes),
                                   rtol=1e-12, atol=1e-12)
    assert run._cache_size() == 1


def test_grouped_matmul_agrees_with_ragged_dot_at_default_blocks():
    """Default (GPU-sized) blocks: one tile holding every group, against jax's ragged_dot."""
    sizes = jnp.asarray([2, 0, 9, 4], jnp.int32)
    lhs, rhs = operands([2, 0, 9, 4], 24, 10, jnp.float64, seed=3)
    np.testing.assert_allclose(moe.grouped_matmul(lhs, rhs, sizes),
                               jax.lax.ragged_dot(lhs, rhs, sizes), rtol=1e-12, atol=1e-12)


def test_zero_rows_or_columns_give_empty_results():
    lhs, rhs = operands([0, 0], 8, 4, jnp.float32)
    assert moe.grouped_matmul(lhs, rhs, jnp.zeros(2, jnp.int32)).shape == (0, 4)


def reference_expert_ffn(tokens, expert_ids, w_gate, w_up, w_down, routing_weights):
    """Token by token, expert by expert, in float64 numpy."""
    tokens, w_gate, w_up, w_down = (np.asarray(a, np.float64)
                                    for a in (tokens, w_gate, w_up, w_down))
    out = np.zeros_like(tokens)
    for t, x in enumerate(tokens):
        for e, weight in zip(np.asarray(expert_ids[t]), np.asarray(routing_weights[t], float)):
            gate, up = x @ w_gate[e], x @ w_up[e]
            out[t] += weight * ((gate / (1 + np.exp(-gate)) * up) @ w_down[e])
    return out


def ffn_operands(n_tokens, hidden, ffn, experts, top_k, dtype, hot_expert=None, seed=0):
    rng = np.random.default_rng(seed)
    if hot_expert is None:
        ids = np.stack([rng.choice(experts, top_k, replace=False) for _ in range(n_tokens)])
    else:  # every token's first choice is the hot expert, the rest spread
        ids = np.stack([[hot_expert, *rng.choice(np.setdiff1d(np.arange(experts), hot_expert),
                                                 top_k - 1, replace=False)]
                        for _ in range(n_tokens)])
    weights = rng.dirichlet(np.ones(top_k), n_tokens)
    scale = hidden ** -0.5
    return (jnp.asarray(rng.standard_normal((n_tokens, hidden)), dtype), jnp.asarray(ids),
            jnp.asarray(rng.standard_normal((experts, hidden, ffn)) * scale, dtype),
            jnp.asarray(rng.standard_normal((experts, hidden, ffn)) * scale, dtype),
            jnp.asarray(rng.standard_normal((experts, ffn, hidden)) * ffn ** -0.5, dtype),
            jnp.asarray(weights))


@pytest.mark.parametrize("hot_expert", [None, 5])
def test_expert_ffn_matches_numpy(hot_expert):
    """Top-2 routing of 9 tokens over 6 experts; with a hot expert taking every token."""
    args = ffn_operands(9, 16, 12, 6, 2, jnp.float64, hot_expert=hot_expert)
    result = moe.expert_ffn(*args, **BLOCKS)
    assert result.shape == (9, 16) and result.dtype == jnp.float64
    np.testing.assert_allclose(result, reference_expert_ffn(*args), rtol=1e-10, atol=1e-12)


def test_expert_ffn_bfloat16():
    args = ffn_operands(9, 16, 12, 6, 2, jnp.bfloat16, seed=1)
    result = moe.expert_ffn(*args, **BLOCKS)
    assert result.dtype == jnp.bfloat16
    expected = reference_expert_ffn(*args)
    # Three bfloat16 roundings (gate/up, hidden activation, down) of ~0.4% each.
    assert np.abs(np.asarray(result, np.float64) - expected).max() <= 3e-2 * np.abs(expected).max()


def test_grouped_matmul_lowers_for_triton():
    """The compiled variant lowers to a Triton GPU kernel (checked here without a GPU), for dot
    tiles (16 and the defaults) and multiply-and-sum tiles, in bfloat16 and float32."""
    pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
    sizes = jnp.asarray([10, 0, 40], jnp.int32)
    for dtype in (jnp.bfloat16, jnp.float32):
        lhs, rhs = jnp.ones((50, 40), dtype), jnp.ones((3, 40, 24), dtype)
        for blocks in (dict(block_m=16, block_k=16, block_n=16), {},
                       dict(block_m=4, block_k=4, block_n=4)):
            call = jax.jit(lambda a, b, g, kw=blocks: moe.grouped_matmul(a, b, g, interpret=False,
                                                                         **kw))
            text = call.trace(lhs, rhs, sizes).lower(lowering_platforms=("cuda",)).as_text()
            assert "triton" in text, (dtype, blocks)


def test_grouped_matmul_k_loop_has_a_static_trip_count(monkeypatch, capsys):
    """The Triton module's K loop runs a compile-time number of steps, its bound built from
    constants. A bound computed in the kernel (jnp.where(live, steps, 0)) made the loop run no
    step at all on an H100 with jax 0.11 - zeros out, every test here passing in interpret
    mode - so this checks, without a GPU, that the lowering keeps a static bound."""
    pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
    from jax.experimental import pallas as pl

    class DebugPallas:  # the kernel module's ``pl`` with pallas_call printing its Triton module
        def __getattr__(self, name):
            return getattr(pl, name)

        @staticmethod
        def pallas_call(*args, **kwargs):
            return pl.pallas_call(*args, **kwargs, debug=True)

    monkeypatch.setattr(moe, "pl", DebugPallas())
    # shapes no other test uses, so that jit traces (and prints) the kernel afresh
    lhs, rhs = jnp.ones((41, 48), jnp.bfloat16), jnp.ones((5, 48, 40), jnp.bfloat16)
    sizes = jnp.asarray([9, 0, 20, 0, 12], jnp.int32)
    jax.jit(lambda a, b, g: moe.grouped_matmul(a, b, g, interpret=False, block_m=16, block_k=16,
                                               block_n=16)).trace(lhs, rhs, sizes).lower(
        lowering_platforms=("cuda",))
    text = capsys.readouterr().out
    if "The Triton module" not in text:
        pytest.skip("this JAX's pallas_call(debug=True) prints no Triton module")
    lines = text[text.index("The Triton module"):].splitlines()
    loops = [(i, re.search(r"scf\.for %\w+ = (%\w+) to (%\w+) step (%\w+)", line))
             for i, line in enumerate(lines) if "scf.for" in line]
    assert len(loops) == 1 and loops[0][1] and not any("scf.while" in line for line in lines)

    def constant(name: str, before: int) -> bool:
        """Whether ``name``'s last definition above line ``before`` (SSA names are reused
        across regions) is a constant or a sum of constants."""
        at = next(i for i in range(before - 1, -1, -1)
                  if re.match(rf"\s*{name} = ", lines[i]))
        op = lines[at].split("=", 1)[1].strip()
        return op.startswith("arith.constant") or (
            op.startswith("arith.addi") and all(constant(a, at) for a in
                                                re.findall(r"%\w+", op.split(":")[0])))

    at, loop = loops[0]
    assert all(constant(bound, at) for bound in loop.groups()), lines[at]


ONES_2x4, ONES_3x4x2 = np.ones((2, 4)), np.ones((3, 4, 2))


@pytest.mark.parametrize("call, message", [
    (lambda: moe.grouped_matmul(np.ones(4), ONES_3x4x2, [1, 1, 0]), "lhs must have 2"),
    (lambda: moe.grouped_matmul(ONES_2x4, np.ones((3, 5, 2)), [1, 1, 0]), "4 columns (hidden)"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2.astype(np.float32), [1, 1, 0]),
     "rhs dtype float32"),
    (lambda: moe.grouped_matmul(ONES_2x4.astype(int), ONES_3x4x2, [1, 1, 0]), "lhs dtype"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [1, 1]), "group_sizes must have shape (3,)"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [1.0, 1.0, 0.0]), "not integer"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [3, -1, 0]), "negative entries at experts [1]"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [1, 1, 1]), "sum to 3, more than the 2"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [1, 1, 0], block_m=6), "block_m"),
    (lambda: moe.grouped_matmul(ONES_2x4, ONES_3x4x2, [1, 1, 0], interpret="no"), "interpret"),
    (lambda: moe.grouped_matmul(ONES_2x4, np.ones((0, 4, 2)), []), "no experts"),
    (lambda: moe.expert_ffn(ONES_2x4, [[0], [3]], ONES_3x4x2, ONES_3x4x2, np.ones((3, 2, 4)),
                            np.ones((2, 1))), "expert_ids must lie in [0, 3)"),
    (lambda: moe.expert_ffn(ONES_2x4, [[0], [-1]], ONES_3x4x2, ONES_3x4x2, np.ones((3, 2, 4)),
                            np.ones((2, 1))), "got [-1]"),
    (lambda: moe.expert_ffn(ONES_2x4, [[0], [1]], ONES_3x4x2, ONES_3x4x2, np.ones((3, 4, 2)),
                            np.ones((2, 1))), "w_down must have shape (3, 2, 4)"),
    (lambda: moe.expert_ffn(ONES_2x4, [[0], [1]], ONES_3x4x2, np.ones((2, 4, 2)),
                            np.ones((3, 2, 4)), np.ones((2, 1))), "w_up must have shape"),
    (lambda: moe.expert_ffn(ONES_2x4, [0, 1], ONES_3x4x2, ONES_3x4x2, np.ones((3, 2, 4)),
                            np.ones((2, 1))), "expert_ids must be [2, top_k]"),
    (lambda: moe.expert_ffn(ONES_2x4, [[0], [1]], ONES_3x4x2, ONES_3x4x2, np.ones((3, 2, 4)),
                            np.ones((2, 2))), "routing_weights must have"),
])
def test_bad_arguments_raise_workload_errors(call, message):
    with pytest.raises(WorkloadError, match=re.escape(message)) as info:
        call()
    assert isinstance(info.value, PerfjaxError)


# ------------------------------------------------------------------------- expert-time fit

HIDDEN, FFN = 2048, 768


def roofline_expert_time(spec: dict, tokens: jax.Array) -> jax.Array:
    """A three-GEMM SwiGLU expert on a roofline GPU: launch + max(compute, weight+activation
    traffic), bfloat16 operands."""
    flops = 2.0 * 3 * tokens * HIDDEN * FFN
    bytes_moved = 2.0 * (3 * HIDDEN * FFN + tokens * (2 * HIDDEN + 3 * FFN))
    compute = flops / (spec["peak_flops"] * spec["compute_fraction"])
    memory = bytes_moved / (spec["hbm_bandwidth"] * spec["memory_fraction"])
    return spec["launch"] + jnp.maximum(compute, memory)


TRUE_SPEC = {"peak_flops": 989e12, "compute_fraction": 0.6, "hbm_bandwidth": 3.35e12,
             "memory_fraction": 0.8, "launch": 4e-6}
TOKEN_COUNTS = 2.0 ** np.arange(13)  # 1 .. 4096, as the benchmark measures


def test_fit_recovers_the_spec_from_synthetic_measurements():
    """Measurements from the true spec with 2% multiplicative noise; the fit starts 2-3x off and
    must land within a few percent on the three identifiable leaves (each fraction multiplies its
    peak, so the fractions stay fixed)."""
    rng = np.random.default_rng(0)
    seconds = np.asarray(roofline_expert_time(TRUE_SPEC, jnp.asarray(TOKEN_COUNTS)))
    seconds = seconds * np.exp(0.02 * rng.standard_normal(seconds.shape))
    start = dict(TRUE_SPEC, peak_flops=400e12, hbm_bandwidth=1.2e12, launch=10e-6)
    result = moe.fit_expert_time(roofline_expert_time, start, TOKEN_COUNTS, seconds,
                                 fit=["peak_flops", "hbm_bandwidth", "launch"])
    assert set(result.fitted) == {"peak_flops", "hbm_bandwidth", "launch"}
    for name in result.fitted:
        assert abs(float(result.params[name]) / TRUE_SPEC[name] - 1) < 0.05, name
    for name in ("compute_fraction", "memory_fraction"):
        assert float(result.params[name]) == TRUE_SPEC[name]
    assert result.rms_log_error < 0.03 < result.rms_log_error_before


def test_fit_without_noise_is_exact_and_reaches_nested_leaves():
    """Noise-free data: the fit lands on the spec; a dotted name selects a nested leaf."""
    nested = lambda params, tokens: roofline_expert_time(params["gpu"], tokens)  # noqa: E731
    seconds = np.asarray(roofline_expert_time(TRUE_SPEC, jnp.asarray(TOKEN_COUNTS)))
    start = {"gpu": dict(TRUE_SPEC, hbm_bandwidth=1e12, launch=1e-6)}
    result = moe.fit_expert_time(nested, start, TOKEN_COUNTS, seconds,
                                 fit=["gpu.hbm_bandwidth", "launch"])
    assert result.fitted == ("gpu.hbm_bandwidth", "gpu.launch")
    for name in ("hbm_bandwidth", "launch"):
        np.testing.assert_allclose(float(result.params["gpu"][name]), TRUE_SPEC[name], rtol=1e-4)
    assert result.rms_log_error < 1e-4


@pytest.mark.parametrize("kwargs, message", [
    (dict(fit=["bandwidth"]), "match no leaf"),
    (dict(fit="launch"), "sequence of leaf names"),
    (dict(seconds=-np.ones(13)), "finite and positive"),
    (dict(seconds=np.ones(3)), "equal-length"),
    (dict(params=dict(TRUE_SPEC, launch=0.0)), "launch must be positive"),
])
def test_fit_rejects_bad_input(kwargs, message):
    args = dict(params=TRUE_SPEC, seconds=np.ones(13), fit=["launch"]) | kwargs
    with pytest.raises(PerfjaxError, match=re.escape(message)):
        moe.fit_expert_time(roofline_expert_time, args["params"], TOKEN_COUNTS, args["seconds"],
                            fit=args["fit"])


def test_fit_recovers_a_gpu_spec_through_the_moe_model():
    """Layer times of the step-time model's GPU expert curve (two grouped-GEMM launches plus 8
    Qwen3-30B-A3B experts) from an H100 spec with changed fractions and launch cost; fitted from
    the published spec, exactly without noise and within 5% with 2% noise."""
    cfg = workloads.model_config("qwen3-30b-a3b")
    published = hardware.gpu("h100")
    true = dataclasses.replace(published, flops_efficiency=0.55, bandwidth_efficiency=0.7,
                               kernel_launch=7e-6)

    def layer_time(gpu, tokens):
        return (pim.GROUPED_GEMM_LAUNCHES * gpu.kernel_launch
                + 8 * pim.gpu_expert_time(gpu, cfg, tokens))

    leaves = ("flops_efficiency", "bandwidth_efficiency", "kernel_launch")
    seconds = np.asarray(layer_time(true, jnp.asarray(TOKEN_COUNTS)))
    noise = np.exp(0.02 * np.random.default_rng(1).standard_normal(seconds.shape))
    for measured, tolerance in ((seconds, 1e-6), (seconds * noise, 0.05)):
        result = moe.fit_expert_time(layer_time, published, TOKEN_COUNTS, measured, fit=leaves)
        for leaf in leaves:
            assert abs(float(getattr(result.params, leaf)) / getattr(true, leaf) - 1) < tolerance
        assert float(result.params.hbm_bandwidth) == published.hbm_bandwidth
