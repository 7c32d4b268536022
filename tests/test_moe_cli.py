"""``perfjax moe``: the JSON report's schema and values, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfjax.cli import main
from perfjax.data import data_dir

POLICIES = {"gpu_only", "static_pim", "static_threshold", "dynamic"}


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_report(report, model):
    assert report["model"] == model
    assert set(report["policies"]) == POLICIES
    for row in report["policies"].values():
        assert row["tokens_per_s"] > 0 and row["time_per_token_ms"] > 0
        # one step of B tokens takes TPOT: tokens/s = B / TPOT
        np.testing.assert_allclose(row["tokens_per_s"] * row["time_per_token_ms"] / 1e3,
                                   report["tokens_per_step"], rtol=1e-9)
    best_static = max(report["policies"][p]["tokens_per_s"]
                      for p in ("gpu_only", "static_pim", "static_threshold"))
    np.testing.assert_allclose(report["dynamic_over_best_static"],
                               report["policies"]["dynamic"]["tokens_per_s"] / best_static)
    assert report["dynamic_over_best_static"] >= 1 - 1e-9
    # the simulator replays the same placements: its tokens/s agree within the MAPE
    assert 0 <= report["model_vs_sim_mape"] < 5
    for row in report["policies"].values():
        assert abs(row["sim_tokens_per_s"] / row["tokens_per_s"] - 1) < 0.05


def test_powerlaw_report(tmp_path, capsys):
    out = tmp_path / "moe.json"
    code, stdout, _ = _run(["moe", "--model", "mixtral-8x7b", "--routing", "powerlaw:1.1",
                            "--batch", "32", "--gpus", "2", "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    _check_report(report, "mixtral-8x7b")
    assert "dynamic over best static" in stdout


def test_real_trace_report(tmp_path, capsys):
    root = data_dir()
    if root is None or not (root / "moe-routing").is_dir():
        pytest.skip("real MoE routing traces (../shared/data/moe-routing) are not on this machine")
    trace = sorted((root / "moe-routing" / "decode").glob("*.npz"))[0]
    out = tmp_path / "real.json"
    code, _, _ = _run(["moe", "--model", "qwen3-30b-a3b", "--routing", str(trace), "--batch",
                       "64", "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    _check_report(report, "qwen3-30b-a3b")
    assert report["steps"] == 1


def _bad_trace(tmp_path, name, experts):
    path = tmp_path / name
    np.savez(path, experts=experts, num_experts=64, top_k=6)
    return str(path)


@pytest.mark.parametrize("case", ["model", "shape", "range", "alpha", "gpus", "batch", "missing",
                                  "multiple", "gpu"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    out = str(tmp_path / "x.json")
    base = {"--model": "qwen3-30b-a3b", "--routing": "powerlaw:1.1", "--json": out}
    expect = {
        "model": ({"--model": "llama-moe"}, "llama-moe"),
        "shape": ({"--routing": _bad_trace(tmp_path, "shape.npz", np.zeros((8, 5), np.uint8))},
                  "shape.npz"),
        "range": ({"--routing": _bad_trace(tmp_path, "range.npz", np.full((8, 6), 99, np.uint8))},
                  "range.npz"),
        "alpha": ({"--routing": "powerlaw:steep"}, "powerlaw:steep"),
        "gpus": ({"--gpus": "3"}, "3 devices"),
        "batch": ({"--batch": "-4"}, "--batch"),
        "missing": ({"--routing": str(tmp_path / "nowhere")}, "nowhere"),
        "multiple": ({"--pim-multiple": "0"}, "--pim-multiple"),
        "gpu": ({"--gpu": "b200"}, "b200"),
    }[case]
    args = {**base, **expect[0]}
    argv = ["moe"] + [x for kv in args.items() for x in kv] + ["--no-sim"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects before main's handler (bad --batch)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert expect[1] in lines[0]
