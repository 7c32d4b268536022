"""The MoE step-time model against the event-level reference simulator, gradients, batching."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perfjax import hardware
from perfjax.errors import HardwareError
from perfjax.models import pim as model
from perfjax.sim.moe import simulate_layer
from perfjax.workloads import moe

# small layers so the simulator stays fast: experts cut down, shapes of the real models kept
CASES = [
    (replace(moe.model_config("qwen3-30b-a3b"), experts=32), 4),
    (replace(moe.model_config("gpt-oss-120b"), experts=32), 4),
    (replace(moe.model_config("qwen3.5-397b-a17b"), experts=64), 8),
    (moe.model_config("mixtral-8x7b"), 2),
]


def _placements(counts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cold = (counts <= np.median(counts[counts > 0])).astype(float)
    return [np.zeros_like(counts), np.ones_like(counts), cold,
            (rng.random(counts.shape) < 0.5).astype(float)]


@pytest.mark.parametrize("attach", ["separate", "shared"])
@pytest.mark.parametrize("mode", model.MODES)
def test_model_matches_simulator(attach, mode):
    hw = hardware.system("h100", attach=attach)
    rng = np.random.default_rng(0)
    errors = []
    for cfg, devices in CASES:
        for tokens, alpha in [(16, 1.2), (128, 1.0), (512, 0.8)]:
            routing = moe.powerlaw_routing(cfg.experts, cfg.top_k, tokens, alpha, seed=tokens)
            counts = moe.device_counts(cfg, routing, devices)
            for placement in _placements(counts, rng):
                predicted = float(model.layer_times(hw, cfg, counts, placement, mode).critical)
                simulated = simulate_layer(hw, cfg, routing, placement, devices, mode).critical
                errors.append(abs(predicted - simulated) / simulated)
    errors = np.array(errors)
    assert errors.mean() < 0.02, errors.mean()
    assert errors.max() < 0.05, errors.max()


def test_per_device_times_match_simulator():
    hw = hardware.system("h200")
    cfg, devices = CASES[2]
    routing = moe.bimodal_routing(cfg.experts, cfg.top_k, 96, 4, 0.5, seed=1)
    counts = moe.device_counts(cfg, routing, devices)
    placement = (counts < 4).astype(float)
    predicted = np.asarray(model.layer_times(hw, cfg, counts, placement).device)
    simulated = simulate_layer(hw, cfg, routing, placement, devices).expert_phase
    np.testing.assert_allclose(predicted, simulated, rtol=0.05)


def test_gpu_and_pim_expert_times_cross_over_where_the_simulator_says():
    """The token count at which PIM stops beating the GPU, from the model and the simulator."""
    hw = hardware.system("h100")
    cfg = replace(moe.model_config("qwen3-30b-a3b"), experts=1, top_k=1)
    tokens = np.arange(1, 17)
    gpu = np.asarray(model.gpu_expert_time(hw.gpu, cfg, tokens))
    pim = np.asarray(model.pim_expert_time(hw.pim, cfg, tokens))
    sim = []
    for n in tokens:
        routing = np.zeros((n, 1), np.int64)
        on_gpu = simulate_layer(hw, cfg, routing, np.zeros((1, 1)), 1, "serial").critical
        on_pim = simulate_layer(hw, cfg, routing, np.ones((1, 1)), 1, "serial").critical
        sim.append(on_pim < on_gpu)
    launches = model.GROUPED_GEMM_LAUNCHES * hw.gpu.kernel_launch
    model_pim_wins = pim + 2 * hw.link.gpu_pim_latency < gpu + launches
    np.testing.assert_array_equal(model_pim_wins, np.array(sim))
    assert model_pim_wins[0] and not model_pim_wins[-1]


def test_batched_equals_one_at_a_time():
    hw = hardware.system("a100")
    cfg, devices = CASES[0]
    counts = np.stack([moe.device_counts(cfg, moe.powerlaw_routing(cfg.experts, cfg.top_k, 64,
                                                                   1.1, seed=s), devices)
                       for s in range(5)])
    placements = np.random.default_rng(1).random(counts.shape)
    batched = model.batched_layer_times(hw, cfg, jnp.asarray(counts), jnp.asarray(placements))
    vmapped = jax.vmap(lambda c, p: model.layer_times(hw, cfg, c, p).critical)(counts, placements)
    for i in range(5):
        single = model.layer_times(hw, cfg, counts[i], placements[i])
        np.testing.assert_allclose(batched.critical[i], single.critical, rtol=1e-12)
        np.testing.assert_allclose(batched.device[i], single.device, rtol=1e-12)
    np.testing.assert_allclose(vmapped, batched.critical, rtol=1e-12)


@pytest.mark.parametrize("mode", model.MODES)
def test_relaxed_assignment_gradient_matches_finite_differences(mode):
    hw = hardware.system("h100")
    cfg, devices = CASES[0]
    counts = moe.device_counts(cfg, moe.powerlaw_routing(cfg.experts, cfg.top_k, 64, 1.1, 2),
                               devices)
    rng = np.random.default_rng(3)
    placement = jnp.asarray(rng.uniform(0.2, 0.8, counts.shape))

    def total(p):
        return jnp.sum(model.device_objective(hw, cfg, counts, p, mode))

    grad = np.asarray(jax.grad(total)(placement))
    eps = 1e-6
    for d, j in [(0, 0), (1, 3), (2, 5), (3, 7)]:
        step = np.zeros(counts.shape)
        step[d, j] = eps
        fd = (float(total(placement + step)) - float(total(placement - step))) / (2 * eps)
        np.testing.assert_allclose(grad[d, j], fd, rtol=1e-5, atol=1e-12)
    assert np.abs(grad).sum() > 0
    # and with respect to hardware leaves (what a calibration fits)
    def with_leaf(part, field, value):
        return replace(hw, **{part: replace(getattr(hw, part), **{field: value})})

    for part, field in [("gpu", "hbm_bandwidth"), ("pim", "clock"), ("link", "gpu_pim_latency")]:
        value = float(getattr(getattr(hw, part), field))
        leaf_total = lambda v: jnp.sum(model.device_objective(  # noqa: E731
            with_leaf(part, field, v), cfg, counts, placement, mode))
        h = value * 1e-6
        fd = (float(leaf_total(value + h)) - float(leaf_total(value - h))) / (2 * h)
        np.testing.assert_allclose(float(jax.grad(leaf_total)(value)), fd, rtol=1e-4,
                                   atol=1e-9 * abs(float(leaf_total(value))) / value)


def test_bad_hardware_names_the_field():
    hw = hardware.system("h100")
    with pytest.raises(HardwareError, match="link.nvlink_bandwidth"):
        hardware.check_system(replace(hw, link=replace(hw.link, nvlink_bandwidth=0.0)))
    with pytest.raises(HardwareError, match="pim.internal_bandwidth_multiple"):
        hardware.check_system(replace(hw, pim=replace(hw.pim, internal_bandwidth_multiple=-1.0)))
    with pytest.raises(HardwareError, match="unknown GPU 'v100'"):
        hardware.system("v100")
    with pytest.raises(HardwareError, match="attachment"):
        hardware.system("h100", attach="glued")


@pytest.mark.parametrize("case", [0, 2], ids=["routed-only", "shared-expert"])
def test_linear_form_fast_path_equals_the_layer_model(case):
    hw = hardware.system("h100", attach="shared")
    cfg, devices = CASES[case]  # 2 is heterogeneous: a shared expert per device
    counts = np.stack([moe.device_counts(cfg, moe.powerlaw_routing(cfg.experts, cfg.top_k, 48,
                                                                   1.0, seed=s), devices)
                       for s in range(3)])
    placements = np.random.default_rng(2).random((3, 7) + counts.shape[1:]) < 0.5
    for mode in model.MODES:
        fast = model.evaluate_assignments(hw, cfg, jnp.asarray(counts),
                                          jnp.asarray(placements, dtype=float), mode)
        for layer in range(3):
            for n in range(7):
                whole = model.layer_times(hw, cfg, counts[layer], placements[layer, n], mode)
                np.testing.assert_allclose(fast[layer, n], whole.critical, rtol=1e-12)


def test_pipelined_model_matches_simulator():
    rng = np.random.default_rng(5)
    errors = []
    for attach in ("separate", "shared"):
        hw = hardware.system("h100", attach=attach)
        for cfg, devices in CASES[:3]:
            for tokens, chunks in [(32, 2), (256, 4), (1024, 2)]:
                routing = moe.powerlaw_routing(cfg.experts, cfg.top_k, tokens, 1.0, seed=tokens)
                counts = moe.device_counts(cfg, routing, devices)
                chunked = moe.chunk_device_counts(cfg, routing, devices, chunks)
                # chunks partition the batch: routed counts add up, every token counted once
                np.testing.assert_array_equal(chunked.sum(0), counts)
                for placement in _placements(counts, rng)[::2]:
                    predicted = float(model.pipelined_critical(hw, cfg, chunked, placement))
                    simulated = simulate_layer(hw, cfg, routing, placement, devices, "pipelined",
                                               chunks).critical
                    errors.append(abs(predicted - simulated) / simulated)
                    one_chunk = model.pipelined_critical(hw, cfg, counts[None], placement)
                    np.testing.assert_allclose(one_chunk, model.layer_times(
                        hw, cfg, counts, placement).critical, rtol=1e-12)
    errors = np.array(errors)
    assert errors.mean() < 0.03, errors.mean()
    assert errors.max() < 0.10, errors.max()


def test_compiler_options_fall_back_to_none_when_jaxlib_lacks_the_option(monkeypatch):
    from perfjax import arrays

    arrays.elementwise_compiler_options.cache_clear()
    monkeypatch.setattr(arrays, "YNN_OFF", {"xla_cpu_no_such_option_in_any_jaxlib": ""})
    try:
        assert arrays.elementwise_compiler_options() == {}
    finally:
        arrays.elementwise_compiler_options.cache_clear()  # the real probe next time
