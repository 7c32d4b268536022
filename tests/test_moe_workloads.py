"""MoE workloads: real routing traces, generators against numpy references, rescaling, layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from perfjax.data import data_dir
from perfjax.errors import WorkloadError
from perfjax.workloads import moe


def _routing_dir():
    root = data_dir()
    if root is None or not (root / "moe-routing").is_dir():
        pytest.skip("real MoE routing traces (../shared/data/moe-routing) are not on this machine")
    return root / "moe-routing"


def test_real_traces_have_the_documented_shapes_and_ids():
    root = _routing_dir()
    decode = moe.read_traces(root, phase="decode")
    prefill = moe.read_traces(root, phase="prefill")
    assert len(decode) == 120 and len(prefill) == 12  # layers 2-13; 10 decode steps each
    for trace in decode + prefill:
        with np.load(trace.source) as raw:  # independent read of the same file
            np.testing.assert_array_equal(trace.experts, raw["experts"].astype(np.int64))
        assert trace.num_experts == 64 and trace.top_k == 6
        assert trace.experts.shape == ((64, 6) if trace.phase == "decode" else (2048, 6))
        assert 0 <= trace.experts.min() and trace.experts.max() < 64
        # top-k picks distinct experts per token
        assert all(len(set(row)) == 6 for row in trace.experts[:50].tolist())


def test_real_traces_are_skewed():
    counts = moe.expert_counts(moe.read_traces(_routing_dir(), "prefill")[0].experts, 64)
    share = np.sort(counts)[::-1].cumsum() / counts.sum()
    assert counts.sum() == 2048 * 6
    assert share[7] > 8 / 64 * 1.3  # the 8 hottest experts draw clearly more than their share


def _marginals_reference(p: np.ndarray, top_k: int, draws: int, seed: int) -> np.ndarray:
    """Inclusion frequency of each expert under numpy's sequential sampling without replacement."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(p.size)
    for _ in range(draws):
        counts[rng.choice(p.size, top_k, replace=False, p=p)] += 1
    return counts / draws


def test_powerlaw_top1_follows_rank_power_law():
    experts, alpha, tokens = 32, 1.1, 40_000
    routing = moe.powerlaw_routing(experts, 1, tokens, alpha, seed=3)
    p = moe.powerlaw_probabilities(experts, alpha, np.random.default_rng(3))
    observed = moe.expert_counts(routing, experts)
    assert stats.chisquare(observed, p * tokens).pvalue > 1e-3
    ranks = np.arange(1, experts + 1)
    slope = stats.linregress(np.log(ranks), np.log(np.sort(observed)[::-1])).slope
    assert abs(-slope - alpha) < 0.1


def test_powerlaw_topk_matches_numpy_sampling_without_replacement():
    experts, top_k, tokens, alpha = 16, 4, 20_000, 1.2
    routing = moe.powerlaw_routing(experts, top_k, tokens, alpha, seed=5)
    assert all(len(set(r)) == top_k for r in routing[:200].tolist())
    p = moe.powerlaw_probabilities(experts, alpha, np.random.default_rng(5))
    ours = moe.expert_counts(routing, experts) / tokens
    reference = _marginals_reference(p, top_k, 8000, seed=11)
    np.testing.assert_allclose(ours, reference, atol=0.025)


def test_bimodal_hot_experts_draw_their_mass():
    routing = moe.bimodal_routing(64, 1, 50_000, hot_experts=4, hot_mass=0.6, seed=2)
    counts = np.sort(moe.expert_counts(routing, 64))[::-1]
    assert abs(counts[:4].sum() / 50_000 - 0.6) < 0.01
    assert counts[4:].std() / counts[4:].mean() < 0.15  # the tail is flat


def test_rescale_keeps_the_popularity_curve():
    source = moe.powerlaw_routing(64, 6, 10_000, 1.1, seed=0)
    rescaled = moe.rescale_routing(source, 64, 512, 10, 12_000, seed=1)
    assert rescaled.shape == (12_000, 10)
    assert rescaled.min() >= 0 and rescaled.max() < 512
    assert all(len(set(r)) == 10 for r in rescaled[:200].tolist())

    def top_share(routing, experts, fraction):
        counts = np.sort(moe.expert_counts(routing, experts))[::-1]
        return counts[: int(experts * fraction)].sum() / counts.sum()

    # top-k without replacement flattens marginals a little; the skew must survive
    assert abs(top_share(rescaled, 512, 0.25) - top_share(source, 64, 0.25)) < 0.06
    assert top_share(rescaled, 512, 0.25) > 0.4


def test_device_counts_match_a_python_loop():
    cfg = moe.model_config("qwen3.5-397b-a17b")
    routing = moe.powerlaw_routing(cfg.experts, cfg.top_k, 37, 1.0, seed=4)
    devices = 8
    per_device = cfg.experts // devices
    expected = np.zeros((devices, per_device + 1))
    for t, row in enumerate(routing):
        for e in row:
            expected[e // per_device, e % per_device] += 1
        expected[t % devices, per_device] += 1  # the shared expert runs where the token sits
    np.testing.assert_array_equal(moe.device_counts(cfg, routing, devices), expected)


def test_model_configs_match_published_shapes():
    q = moe.model_config("Qwen3-30B-A3B")
    assert (q.layers, q.hidden, q.experts, q.top_k, q.expert_ffn) == (48, 2048, 128, 8, 768)
    # Qwen3-30B-A3B: ~30.5 B parameters, of which the routed experts are most
    assert 28e9 < q.expert_params() * q.experts * q.layers < 30.5e9
    for name in moe.MODELS:
        cfg = moe.model_config(name)
        assert cfg.top_k <= cfg.experts


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_bad_traces_name_the_file(tmp_path):
    wrong_shape = _write(tmp_path, "shape.npz", experts=np.zeros((4, 5), np.uint8),
                         num_experts=64, top_k=6)
    out_of_range = _write(tmp_path, "range.npz", experts=np.full((4, 6), 70, np.uint8),
                          num_experts=64, top_k=6)
    negative = _write(tmp_path, "neg.npz", experts=-np.ones((4, 6), np.int64), num_experts=64,
                      top_k=6)
    missing = _write(tmp_path, "missing.npz", experts=np.zeros((4, 6), np.uint8))
    in_range = r"\[0, 64\)"
    for path, words in [(wrong_shape, "shape"), (out_of_range, in_range), (negative, in_range),
                        (missing, "missing")]:
        with pytest.raises(WorkloadError, match=words) as info:
            moe.read_trace(path)
        assert str(path) in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(WorkloadError, match="garbage.npz"):
        moe.read_trace(garbage)
    with pytest.raises(WorkloadError, match="no such file"):
        moe.read_traces(tmp_path / "absent")


def test_bad_generator_arguments_and_models():
    with pytest.raises(WorkloadError, match="unknown MoE model 'gpt-5'"):
        moe.model_config("gpt-5")
    with pytest.raises(WorkloadError, match="alpha"):
        moe.powerlaw_routing(8, 2, 10, -1.0)
    with pytest.raises(WorkloadError, match="top_k=9 exceeds"):
        moe.powerlaw_routing(8, 9, 10, 1.0)
    with pytest.raises(WorkloadError, match="hot_experts"):
        moe.bimodal_routing(8, 2, 10, hot_experts=8, hot_mass=0.5)
    with pytest.raises(WorkloadError, match="cannot split"):
        moe.device_counts(moe.model_config("mixtral-8x7b"), np.zeros((3, 2), int), 3)


def test_negative_or_nan_counts_are_rejected():
    with pytest.raises(WorkloadError, match="counts must be finite and non-negative, found -1"):
        moe.check_counts(np.array([[3.0, -1.0]]))
    with pytest.raises(WorkloadError, match="my counts"):
        moe.check_counts(np.array([np.nan]), "my counts")
    np.testing.assert_array_equal(moe.check_counts([0, 2]), [0.0, 2.0])
