"""The perfjax command line: outputs checked against brute force, errors as one line + status 2."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perfjax.cli import main

# Small enough to enumerate by hand: 4 * 6 * 3! = 144 configurations.
SCENARIO = {
    "application_name": "cli-test",
    "input_parameters": {
        "tile": {"parameter_type": "ordinal", "values": [1, 2, 4, 8], "parameter_default": 2},
        "unroll": {"parameter_type": "integer", "values": [1, 6], "parameter_default": 1,
                   "constraints": ["unroll <= tile"]},
        "order": {"parameter_type": "permutation", "values": [3],
                  "constraints": ["(order_i0 < order_i2) | (tile * unroll >= 8)"]},
    },
}


def brute_force_feasible() -> list[dict]:
    out = []
    for tile, unroll, order in itertools.product([1, 2, 4, 8], range(1, 7),
                                                 itertools.permutations(range(3))):
        position = {item: pos for pos, item in enumerate(order)}
        if unroll <= tile and (position[0] < position[2] or tile * unroll >= 8):
            out.append({"tile": tile, "unroll": unroll, "order": list(order)})
    return out


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "scenario.json"
    path.write_text(json.dumps(SCENARIO))
    return path


def test_space_check_json_matches_brute_force(scenario_file, tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["space", "check", str(scenario_file), "--samples", "20000", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["parameters"] == 3
    exact = len(brute_force_feasible()) / 144
    assert abs(result["feasible_fraction"] - exact) <= 4 * result["feasible_fraction_stderr"] + 1e-3
    assert result["samples_per_s"] > 0
    assert "feasible" in capsys.readouterr().out


def test_space_sample_lines_are_feasible_and_cover_the_space(scenario_file, capsys):
    assert main(["space", "sample", str(scenario_file), "-n", "3000", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3000
    configs = [json.loads(line) for line in lines]
    feasible = brute_force_feasible()
    keys = {json.dumps(c, sort_keys=True) for c in feasible}
    seen = {json.dumps(c, sort_keys=True) for c in configs}
    assert seen <= keys  # only feasible configurations
    assert seen == keys  # 3000 draws over 50-odd configurations reach every one of them


def test_space_sample_is_deterministic(scenario_file, capsys):
    main(["space", "sample", str(scenario_file), "-n", "20", "--seed", "9"])
    first = capsys.readouterr().out
    main(["space", "sample", str(scenario_file), "-n", "20", "--seed", "9"])
    assert capsys.readouterr().out == first


def test_builtin_scenarios_sample(capsys):
    assert main(["space", "sample", "builtin:rise-mm", "-n", "50"]) == 0
    configs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for c in configs:  # the RISE MM constraints, checked by hand
        assert 1024 % c["v5"] == 0 and c["v5"] % 4 == 0 and c["v7"] % c["v3"] == 0
        assert c["v5"] % c["v4"] == 0 and (c["v5"] * c["v8"]) % c["v6"] == 0
        assert 49152 - 4 * c["v5"] * c["v7"] - 4 * c["v5"] * c["v8"] - 4 * c["v7"] * c["v8"] >= 0
        assert c["gs0"] % c["ls0"] == 0 and c["gs1"] % c["ls1"] == 0 and c["ls0"] * c["ls1"] <= 1024


BAD_SCENARIOS = {
    "unknown-type": ({"x": {"parameter_type": "float", "values": [0, 1]}}, "parameter_type"),
    "min-gt-max": ({"x": {"parameter_type": "real", "values": [3, 1]}}, "min 3 > max 1"),
    "bad-log": ({"x": {"parameter_type": "integer", "values": [0, 8], "transform": "log"}},
                "log transform"),
    "bad-default": ({"x": {"parameter_type": "ordinal", "values": [1, 2], "parameter_default": 3}},
                    "not one of"),
    "unknown-name": ({"x": {"parameter_type": "ordinal", "values": [1, 2],
                            "constraints": ["x < y"]}}, "unknown parameter 'y'"),
    "bad-syntax": ({"x": {"parameter_type": "ordinal", "values": [1, 2],
                          "constraints": ["x <"]}}, "does not parse"),
    "perm-no-size": ({"p": {"parameter_type": "permutation"}}, "'values' is missing"),
    "infeasible": ({"a": {"parameter_type": "integer", "values": [1, 10]},
                    "b": {"parameter_type": "integer", "values": [1, 10],
                          "constraints": ["a + b > 100"]}}, "no feasible configuration"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_bad_scenarios_give_one_line_and_status_2(case, tmp_path, capsys):
    params, fragment = BAD_SCENARIOS[case]
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps({"input_parameters": params}))
    assert main(["space", "sample", str(path), "-n", "5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and err.startswith("perfjax: error: ") and fragment in err
    assert str(path) in err


def test_console_script_bad_input_has_no_traceback(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    for args in (["space", "check", str(path)], ["space", "sample", "missing.json", "-n", "2"],
                 ["space", "sample", str(path)], ["space", "sample", str(path), "-n", "-3"]):
        proc = subprocess.run([sys.executable, "-m", "perfjax.cli", *args], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_help_everywhere():
    for args in ([], ["space"], ["space", "check"], ["space", "sample"], ["demo"]):
        proc = subprocess.run([sys.executable, "-m", "perfjax.cli", *args, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage: perfjax" in proc.stdout, args


def test_the_executable_caches_compiled_programs(tmp_path):
    """The perfjax executable keeps JAX's compilation cache (~/.cache/perfjax/jax by default):
    a second run reads its programs from there and prints exactly what the first printed; a
    cache directory that cannot be made is one warning line, and the command still works."""
    import os

    from perfjax import compilation_cache

    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", compilation_cache.ENV)}
    env["HOME"] = str(tmp_path)
    command = [sys.executable, "-m", "perfjax.cli", "space", "sample", "builtin:taco-spmm",
               "-n", "5", "--seed", "3"]

    def run(**extra):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env={**env, **extra})
        assert proc.returncode == 0, proc.stderr
        return proc

    first = run()
    cache = tmp_path / ".cache" / "perfjax" / "jax"
    files = sorted(p.name for p in cache.iterdir())
    assert files and first.stderr == ""
    again = run()
    assert again.stdout == first.stdout and again.stderr == ""
    assert sorted(p.name for p in cache.iterdir()) == files  # nothing compiled anew
    (tmp_path / "file").write_text("")
    blocked = run(PERFJAX_JAX_CACHE=str(tmp_path / "file" / "jax"))
    assert blocked.stdout == first.stdout
    assert blocked.stderr.count("\n") == 1 and "cannot create the directory" in blocked.stderr
    assert "file/jax" in blocked.stderr and "Traceback" not in blocked.stderr


@pytest.mark.parametrize("value, expected", [("off", None), ("OFF", None), ("0", None),
                                             ("", "home"), ("~/jc", "tilde")])
def test_compilation_cache_directory_follows_the_environment(monkeypatch, tmp_path, value,
                                                             expected):
    from perfjax import compilation_cache

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(compilation_cache.ENV, value)
    where = {"home": tmp_path / ".cache" / "perfjax" / "jax", "tilde": tmp_path / "jc"}
    assert compilation_cache.default_dir() == where.get(expected)


def test_demo_runs(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "round(relax(batch)) == batch: True" in out
    assert "demo finished" in out
    assert np.isfinite(float(out.split("feasible share ")[2].split()[0]))
