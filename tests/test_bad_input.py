"""Bad input found by an adversarial audit of the command line: each case is one line on stderr,
exit status 2 (143 for SIGTERM), nothing half-written, and the good path next to it still works."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from perfjax import cli
from perfjax.errors import PerfjaxError, WorkloadError
from perfjax.workloads import moe, sparse


def one_line_error(capsys, contains: str = "") -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("perfjax") and contains in err, err
    return err


# -- matrices ------------------------------------------------------------------------------------

def write_mtx(path: Path, text: str) -> Path:
    path.write_text("%%MatrixMarket matrix coordinate " + text)
    return path


@pytest.mark.parametrize("header, body, message", [
    ("complex general\n", "2 2 1\n1 1 1.0 2.0\n", "complex values are not supported"),
    ("real symmetric\n", "3 4 1\n1 1 1.0\n", "declared symmetric but not square (3 x 4)"),
    ("real general\n", "100000000000 100000000000 1\n1 1 1.0\n", "exceeds the largest"),
    ("real general\n", "2 2 2\n1 1 nan\n2 2 1.0\n", "1 value(s) are NaN or infinite"),
    ("real general\n", "2 2 2\n1 1 inf\n2 2 1.0\n", "1 value(s) are NaN or infinite"),
])
def test_matrices_no_kernel_can_take_are_refused_naming_the_file(tmp_path, header, body, message):
    path = write_mtx(tmp_path / "m.mtx", header + body)
    with pytest.raises(WorkloadError, match="matrix file .*m.mtx") as info:
        sparse.read_matrix(path)
    assert message in str(info.value)


def test_a_good_symmetric_matrix_still_reads_as_scipy_does(tmp_path):
    path = write_mtx(tmp_path / "s.mtx", "real symmetric\n3 3 2\n1 1 2.0\n3 1 5.0\n")
    expected = scipy.io.mmread(path).toarray()
    np.testing.assert_array_equal(sparse.read_matrix(path).toarray(), expected)


# -- routing traces -------------------------------------------------------------------------------

def trace(tmp_path: Path, name: str = "t.npz", **arrays) -> Path:
    experts = np.array([[0, 1], [2, 3], [1, 0]])
    base = {"experts": experts, "num_experts": 4, "top_k": 2,
            "weights": np.full(experts.shape, 0.5, np.float32)}
    base.update(arrays)
    np.savez(tmp_path / name, **{k: v for k, v in base.items() if v is not None})
    return tmp_path / name


def test_routing_traces_that_are_not_a_router_output_are_refused(tmp_path):
    good = moe.read_trace(trace(tmp_path))
    assert good.experts.shape == (3, 2)
    assert moe.read_trace(trace(tmp_path, weights=None)).num_experts == 4  # weights optional
    cases = {
        "a token lists an expert more than once": trace(tmp_path, "dup.npz",
                                                        experts=np.array([[1, 1]]),
                                                        weights=None),
        "gate weights must be finite": trace(tmp_path, "nan.npz",
                                             weights=np.full((3, 2), np.nan)),
        "shaped like experts": trace(tmp_path, "shape.npz", weights=np.ones((10, 2))),
    }
    for message, path in cases.items():
        words = message.split()
        with pytest.raises(WorkloadError, match=f"routing trace {path}") as info:
            moe.read_trace(path)
        assert all(w in str(info.value) for w in words[-3:])
    np.save(tmp_path / "plain.npy", np.zeros((3, 2), np.int64))
    with pytest.raises(WorkloadError, match="a single array, expected a .npz archive"):
        moe.read_trace(tmp_path / "plain.npy")
    (tmp_path / "junk.npz").write_bytes(b"\x00not an archive" * 10)
    with pytest.raises(WorkloadError, match="junk.npz: cannot read"):
        moe.read_trace(tmp_path / "junk.npz")


# -- command line ------------------------------------------------------------------------------

SCENARIO = {"input_parameters": {"a": {"parameter_type": "ordinal", "values": [1, 2, 4],
                                       "parameter_default": 1}}}


@pytest.fixture()
def scenario(tmp_path) -> Path:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SCENARIO))
    return path


def status_of(argv: list[str]) -> int:
    """cli.main's exit status, whether it returns it or argparse exits."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, message", [
    (["space", "check", "{s}", "--seed", "-1"], "expected a seed between 0 and"),
    (["space", "check", "{s}", "--seed", "99999999999999999999999"], "expected a seed"),
    (["space", "sample", "{s}", "-n", "2", "--seed", "-3"], "expected a seed"),
    (["demo", "--seed", "-1"], "expected a seed"),
    (["moe", "--model", "qwen3-30b-a3b", "--routing", "powerlaw:1.1", "--seed", "-1",
      "--json", "{t}/m.json"], "expected a seed"),
    (["moe", "--model", "qwen3-30b-a3b", "--routing", "powerlaw:1.1", "--batch", "1000000000",
      "--json", "{t}/m.json"], "at most 1048576 tokens per step"),
    (["moe", "--model", "qwen3-30b-a3b", "--routing", "powerlaw:1.1", "--pim-multiple", "inf",
      "--json", "{t}/m.json"], "positive finite number"),
    (["space", "check", "{s}", "--json", ""], "expected a file path, got an empty string"),
    (["space", "check", "{s}", "--json", "{s}/x.json"], "s.json is not a directory"),
    (["space", "check", "{t}"], "cannot read it"),
    (["space", "check", ""], "scenario path is empty"),
    (["space", "sample", "{s}", "-n", "100000000000000"], "at most 10000000 configurations"),
    (["space", "check", "{s}", "--samples", "20000000"], "at most 10000000 configurations"),
    (["space"], "space: missing subcommand"),
    (["validate"], "validate: missing subcommand"),
    ([], "missing command"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, message, scenario, tmp_path, capsys):
    argv = [a.format(s=scenario, t=tmp_path) for a in argv]
    assert status_of(argv) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "m.json").exists()


def test_scenarios_too_deep_or_too_large_for_64_bits(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert cli.main(["space", "check", str(deep)]) == 2
    one_line_error(capsys, "nested too deeply")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"input_parameters": {"a": {"parameter_type": "integer",
                                                           "values": [1, 10**29]}}}))
    assert cli.main(["space", "check", str(huge), "--samples", "10"]) == 2
    one_line_error(capsys, "exceed +-2^62")
    perm = tmp_path / "perm.json"
    perm.write_text(json.dumps({"input_parameters": {"p": {"parameter_type": "permutation",
                                                           "values": [171]}}}))
    out = tmp_path / "perm-report.json"
    assert cli.main(["space", "check", str(perm), "--samples", "20", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["space_size"] is None  # 171! > any float: JSON null


def test_memory_errors_sigterm_and_warnings_from_any_command(monkeypatch, scenario, capsys):
    def runs_out_of_memory(args):
        raise MemoryError("Unable to allocate 745. GiB")
    monkeypatch.setattr(cli, "_space_check", runs_out_of_memory)
    assert cli.main(["space", "check", str(scenario)]) == 2
    one_line_error(capsys, "out of memory")

    def warns(args):
        warnings.warn("line one\n  line two", RuntimeWarning)
        return 0
    monkeypatch.setattr(cli, "_space_check", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["space", "check", str(scenario)]) == 0
    assert capsys.readouterr().err == "perfjax: warning: line one line two\n"

    def terminated(args):
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")
    monkeypatch.setattr(cli, "_space_check", terminated)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["space", "check", str(scenario)]) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "perfjax: terminated\n"


def test_a_full_stdout_is_one_line(scenario):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "perfjax.cli", "space", "sample",
                               str(scenario), "-n", "5000"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "perfjax: error: cannot write the output: No space left on device"


def test_reports_are_strict_json_and_written_whole(tmp_path):
    target = tmp_path / "r.json"
    cli._write_json(str(target), {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}})
    assert json.loads(target.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
    with pytest.raises(PerfjaxError, match="not a directory"):
        cli._write_json(str(target / "x.json"), {})


def test_validate_balance_refuses_more_workers_than_work_before_measuring(tmp_path, capsys):
    matrices = tmp_path / "m"
    matrices.mkdir()
    scipy.io.mmwrite(matrices / "tiny.mtx", sp.coo_array(np.eye(3)))
    out = tmp_path / "vb.json"
    assert cli.main(["validate", "balance", "--matrices", str(matrices), "--kernels", "spmv",
                     "--workers", "1,8", "--json", str(out)]) == 2
    one_line_error(capsys, "matrix tiny (3 rows, 3 nonzeros): row_blocks cannot split it "
                           "among 8 workers")
    assert not out.exists()


def test_bench_tabular_refuses_garbled_tables(tmp_path, capsys):
    cases = {
        "a,compute_time\n1,abc\n2,1.0\n": "compute_time of data row 1 is not a number: 'abc'",
        'permutation,compute_time\n"(0, 1",2.0\n"(1, 0)",1.0\n': "is not a loop order",
        "a,compute_time\n1,1.0,9,9\n2,1.0\n": "cannot read table",
        "a,b,compute_time\n1,2,1.0\n2,,1.0\n": "column 'b': data row 2 has no value",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"t{i}.csv"
        path.write_text(text)
        assert cli.main(["bench", "tabular", str(path), "--strategies", "random",
                         "--seeds", "1", "--budget", "3"]) == 2
        one_line_error(capsys, message)
    # failed runs are data, not garbage: empty, zero and negative times are failed evaluations
    path = tmp_path / "ok.csv"
    path.write_text("a,compute_time\n1,\n2,-1\n3,0\n4,2.0\n")
    assert cli.main(["bench", "tabular", str(path), "--strategies", "random", "--seeds", "1",
                     "--budget", "4"]) == 0


def test_kernel_scenarios_cap_the_thread_count():
    from perfjax.bench.kernel_tuning import MAX_THREADS, check_space
    from perfjax.errors import SpaceError
    from perfjax.space import Ordinal, Space

    check_space("spmv", Space({"omp_num_threads": Ordinal([1, MAX_THREADS])}))
    with pytest.raises(SpaceError, match=f"value\\(s\\) 100000 .*allowed: 1..{MAX_THREADS}"):
        check_space("spmv", Space({"omp_num_threads": Ordinal([2, 100000])}))


def test_main_restores_warning_display_and_sigterm_and_reports_keep_the_umask(scenario,
                                                                              tmp_path):
    import os
    shown, handler = warnings.showwarning, signal.getsignal(signal.SIGTERM)
    out = tmp_path / "report.json"
    assert cli.main(["space", "check", str(scenario), "--samples", "50", "--json",
                     str(out)]) == 0
    assert warnings.showwarning is shown and signal.getsignal(signal.SIGTERM) is handler
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
