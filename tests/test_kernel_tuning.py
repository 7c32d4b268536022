"""Real-kernel tuning: SpMM / SDDMM loop orders against scipy / numpy, the kernel scenarios'
legality constraints against a brute-force rule, the objective, and ``perfjax tune`` end to end."""

from __future__ import annotations

import functools
import itertools
import json
import math

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from kernels_c_common import EDGE_MATRICES, needs_cc
from perfjax import scenarios
from perfjax.bench import kernel_tuning
from perfjax.bench.kernel_tuning import KernelObjective
from perfjax.cli import main
from perfjax.errors import PerfjaxError, SpaceError
from perfjax.kernels.c import KernelError, KernelSpec, OpSpec, sddmm, spmm
from perfjax.schedulers.partition import partition
from perfjax.space import Space
from perfjax.workloads.sparse import powerlaw_rows

pytestmark = needs_cc

ALL_ORDERS = list(itertools.permutations(range(5)))  # items (i0, i1, k, j0, j1)


def legal_by_hand(order, partition_mode: bool) -> bool:
    """The rule written out: i0 first (the parallel loop), k after i1, j1 after j0, and with an
    explicit partition both j loops after i1."""
    at = {item: order.index(item) for item in range(5)}
    ok = at[0] == 0 and at[1] < at[2] and at[3] < at[4]
    return ok and (not partition_mode or at[1] < at[3])


SCHEDULE_ORDERS = [o for o in ALL_ORDERS if legal_by_hand(o, False)]
PARTITION_ORDERS = [o for o in ALL_ORDERS if legal_by_hand(o, True)]


def _matrix() -> sp.csr_array:
    """Skewed rows, empty rows and a K (13) that no unroll divides: every tail path runs."""
    a = sp.csr_array(powerlaw_rows(90, 70, 700, seed=3))
    dense = a.toarray()
    dense[[0, 5, 6, 89]] = 0.0
    return sp.csr_array(dense)


def test_legal_orders_are_counted_and_illegal_ones_raise():
    assert len(SCHEDULE_ORDERS) == 6 and len(PARTITION_ORDERS) == 3  # 4!/(2!2!) and 3!/2!
    for order in ALL_ORDERS:
        for schedule in ("static", None):
            legal = legal_by_hand(order, schedule is None)
            for make in (lambda: KernelSpec("spmm", 2, schedule, loop_order=order),
                         lambda: OpSpec("sddmm", 2, schedule, loop_order=order)):
                if legal:
                    assert make().loop_order == order
                else:
                    with pytest.raises(KernelError, match="illegal"):
                        make()
    with pytest.raises(KernelError, match="loop_order applies"):
        KernelSpec("spmv", loop_order=(0, 1, 2, 3, 4))
    with pytest.raises(KernelError, match="permutation of 0..4"):
        KernelSpec("spmm", schedule="static", loop_order=(0, 1, 2, 3, 3))


@pytest.mark.parametrize("unroll", [1, 4])
@pytest.mark.parametrize("order", SCHEDULE_ORDERS, ids=lambda o: "".join(map(str, o)))
def test_spmm_and_sddmm_loop_orders_match_scipy_in_schedule_mode(order, unroll):
    a = _matrix()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((a.shape[1], 13))
    XR = rng.standard_normal((a.shape[0], 13))
    m = spmm(a, X, schedule="dynamic", chunk=2, chunk_size=3, threads=2, unroll=unroll,
             loop_order=order, instrument=True, check=False)
    assert m.ok, m.reason
    np.testing.assert_allclose(m.output, a @ X, rtol=1e-12, atol=1e-12)
    # Counted per chunk, so every row and nonzero once whatever the loop order.
    assert m.worker_rows.sum() == a.shape[0] and m.worker_nnz.sum() == a.nnz
    s = sddmm(a, XR, X, schedule="static", chunk_size=4, threads=2, unroll=unroll,
              loop_order=order, check=False)
    assert s.ok, s.reason
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    expected = a.data * np.einsum("ij,ij->i", XR[rows], X[a.indices])
    np.testing.assert_allclose(s.output, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", PARTITION_ORDERS, ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("strategy", ["merge_path", "nnz_split"])
def test_spmm_and_sddmm_loop_orders_match_scipy_in_partition_mode(order, strategy):
    a = _matrix()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((a.shape[1], 13))
    XR = rng.standard_normal((a.shape[0], 13))
    part = partition(strategy, a, 3)  # cuts rows: carries in SpMM, split rows in SDDMM
    m = spmm(a, X, part, unroll=4, loop_order=order, check=False)
    assert m.ok, m.reason
    np.testing.assert_allclose(m.output, a @ X, rtol=1e-12, atol=1e-12)
    s = sddmm(a, XR, X, part, unroll=4, loop_order=order, check=False)
    assert s.ok, s.reason
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    np.testing.assert_allclose(s.output, a.data * np.einsum("ij,ij->i", XR[rows], X[a.indices]),
                               rtol=1e-12, atol=1e-12)


def test_loop_orders_on_edge_matrices():
    for name, make in EDGE_MATRICES.items():
        a = make()
        X = np.random.default_rng(2).standard_normal((a.shape[1], 5))
        for order in SCHEDULE_ORDERS:
            m = spmm(a, X, schedule="guided", threads=2, unroll=2, loop_order=order, check=False)
            assert m.ok, (name, order, m.reason)
            np.testing.assert_allclose(m.output, a @ X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["spmm", "sddmm"])
def test_scenario_constraints_admit_exactly_the_legal_loop_orders(kernel):
    space = kernel_tuning.space(kernel)
    for part, legal in (("omp", SCHEDULE_ORDERS), ("merge_path", PARTITION_ORDERS)):
        configs = [{**space.default(), "partition": part, "permutation": list(o)}
                   for o in ALL_ORDERS]
        feasible = np.asarray(space.feasible(space.from_dicts(configs)))
        assert [o for o, ok in zip(ALL_ORDERS, feasible) if ok] == legal
    # Every sampled configuration is one the kernel accepts (no illegal order reaches it).
    for config in space.to_dicts(space.sample(200, seed=0)):
        KernelSpec("spmm", config["unroll_factor"],
                   None if config["partition"] != "omp" else config["omp_scheduling_type"],
                   loop_order=tuple(config["permutation"]))


def test_spmv_scenario_has_no_loop_order_and_threads_go_past_the_cores():
    space = scenarios.load("kernel-spmv")
    assert "permutation" not in space.names
    threads = space.params["omp_num_threads"].values_array().tolist()
    cores = scenarios._cores()
    assert threads == [*range(1, cores + 1), 2 * cores]
    assert space.default()["omp_num_threads"] == cores


@pytest.fixture(scope="module")
def small():
    return sp.csr_array(powerlaw_rows(400, 300, 3000, seed=1))


@pytest.mark.parametrize("kernel", ["spmm", "spmv", "sddmm"])
def test_objective_times_the_default_and_a_sampled_schedule(small, kernel):
    objective = KernelObjective(kernel, small, width=8, repeats=3)
    for config in [objective.default_config(),
                   *objective.space.to_dicts(objective.space.sample(2, seed=4))]:
        result = objective(config)
        assert result["valid"] is True, (config, result)
        assert math.isfinite(result["value"]) and result["value"] > 0
        assert result["best_seconds"] <= result["value"]


def test_spmv_row_length_binning_runs_the_binned_kernel_with_the_rows_dealt(small, monkeypatch):
    """bin_rows > 0 runs the binned kernel, dealing chunk_size * omp_chunk_size rows of a bin at
    a time (no TACO row chunks); the scenario allows it with the omp loop only."""
    objective = KernelObjective("spmv", small, repeats=2)
    import perfjax.kernels.c as kernels
    real, calls = kernels.spmv, []

    def recording(*a, **k):
        calls.append(k)
        return real(*a, **k)
    monkeypatch.setattr(kernels, "spmv", recording)
    config = {**objective.default_config(), "bin_rows": 4, "omp_scheduling_type": "dynamic",
              "chunk_size": 8, "omp_chunk_size": 2}
    assert objective(config)["valid"] is True
    assert calls[-1]["bin_rows"] == 4 and calls[-1]["chunk"] == 16
    assert "chunk_size" not in calls[-1] and calls[-1]["schedule"] == "dynamic"
    space = objective.space
    both = space.from_dicts([{**config, "partition": "merge_path", "omp_scheduling_type": "static"},
                             config])
    assert np.asarray(space.feasible(both)).tolist() == [False, True]
    result = objective({**config, "partition": "merge_path"})
    assert result["valid"] is False and "bin_rows applies to the omp partition" in result["error"]


def test_objective_statistic_min_is_the_fastest_repetition(small, monkeypatch):
    objective = KernelObjective("spmv", small, repeats=4, statistic="min")
    import perfjax.kernels.c as kernels
    real = kernels.spmv
    seen = []

    def recording(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]
    monkeypatch.setattr(kernels, "spmv", recording)
    result = objective(objective.default_config())
    assert len(seen[0].seconds) == 5  # one warm-up repetition, then the 4 timed ones
    assert result["value"] == min(seen[0].seconds[1:]) == result["best_seconds"]
    with pytest.raises(PerfjaxError, match="statistic"):
        KernelObjective("spmv", small, statistic="mean")


def test_objective_marks_wrong_crashing_and_rejected_schedules_invalid(small, monkeypatch):
    objective = KernelObjective("spmm", small, width=4, repeats=2)
    config = objective.default_config()
    import perfjax.kernels.c as kernels
    real = kernels.spmm
    for hook, words in (("wrong", "wrong answer"), ("segv", "SIGSEGV")):
        monkeypatch.setattr(kernels, "spmm", functools.partial(real, _debug=hook))
        result = objective(config)
        assert result["valid"] is False and math.isnan(result["value"])
        assert words in result["error"], result
    monkeypatch.setattr(kernels, "spmm", real)
    # More workers than the 3 rows there are: the partitioner refuses, the run goes on.
    tiny = KernelObjective("spmm", sp.csr_array(np.eye(3)), width=2, repeats=1)
    result = tiny({**config, "partition": "row_blocks", "omp_num_threads": 4})
    assert result["valid"] is False and "workers=4" in result["error"]


def test_user_scenarios_may_fix_parameters_but_not_invent_them(small, tmp_path):
    subset = {"application_name": "mine", "input_parameters": {
        "unroll_factor": {"parameter_type": "ordinal", "values": [2, 4], "parameter_default": 4},
        "omp_num_threads": {"parameter_type": "ordinal", "values": [1], "parameter_default": 1},
    }}
    objective = KernelObjective("spmm", small, space=Space.from_baco_json(subset), width=4)
    full = objective.full_config(objective.default_config())
    assert full["unroll_factor"] == 4 and full["omp_num_threads"] == 1
    assert full["chunk_size"] == 16 and full["permutation"] == [0, 1, 2, 3, 4]
    assert objective(objective.default_config())["valid"]
    with pytest.raises(SpaceError, match="omp_monotonic"):
        KernelObjective("spmm", small, space=scenarios.load("taco-spmm"))
    bad = {"application_name": "bad", "input_parameters": {
        "unroll_factor": {"parameter_type": "ordinal", "values": [4, 16]}}}
    with pytest.raises(SpaceError, match=r"unroll_factor has value\(s\) 16 .*allowed: 1, 2, 4, 8"):
        KernelObjective("spmm", small, space=Space.from_baco_json(bad))
    bins = {"application_name": "bins", "input_parameters": {
        "bin_rows": {"parameter_type": "ordinal", "values": [0, 32], "parameter_default": 0}}}
    with pytest.raises(SpaceError, match=r"bin_rows has value\(s\) 32 .*0 \(off\) or 1..16"):
        KernelObjective("spmv", small, space=Space.from_baco_json(bins))
    with pytest.raises(SpaceError, match="unknown parameter\\(s\\) bin_rows for the spmm"):
        KernelObjective("spmm", small, space=Space.from_baco_json(bins))
    with pytest.raises(SpaceError, match="unknown kernel 'spgemm'"):
        KernelObjective("spgemm", small)


def _study_values(path) -> list:
    """Every evaluation's value in the study file, read as plain JSON lines."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["values"]["value"], row["valid"]) for row in rows if "config" in row]


def test_cli_tune_writes_study_plot_summary_and_resumes(tmp_path, capsys):
    matrix = tmp_path / "m.mtx"
    scipy.io.mmwrite(matrix, powerlaw_rows(300, 300, 2400, seed=2))
    out = tmp_path / "out"
    args = ["tune", "builtin:kernel-spmm", "--kernel", "spmm", "--matrix", str(matrix),
            "--budget", "4", "--out", str(out), "--strategy", "random", "--width", "4",
            "--repeats", "3"]
    assert main(args) == 0
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = _study_values(out / "study.jsonl")
    assert len(first) == 4
    summary = json.loads((out / "summary.json").read_text())
    valid = [v for v, ok in first if ok]
    assert summary["evaluations"] == 4 and summary["valid_evaluations"] == len(valid)
    assert summary["best_seconds"] == min(valid)
    assert summary["speedup"] == pytest.approx(summary["default_seconds"] / min(valid))
    captured = capsys.readouterr()
    assert "speedup" in captured.out
    # stderr is no terminal here: one plain progress line per evaluation, no bar redraws
    progress = [line for line in captured.err.splitlines() if line.startswith("tune spmm m: ")]
    assert "\r" not in captured.err and [line.split()[3] for line in progress] == [
        "1/4", "2/4", "3/4", "4/4"], captured.err
    assert all("s/eval" in line for line in progress)
    assert main(args[:7] + ["6"] + args[8:]) == 0  # budget 6: resumes, 2 more evaluations
    assert [line.split()[3] for line in capsys.readouterr().err.splitlines()
            if line.startswith("tune spmm m: ")] == ["5/6", "6/6"]
    second = _study_values(out / "study.jsonl")
    assert len(second) == 6 and second[:4] == first
    assert json.loads((out / "summary.json").read_text())["evaluations"] == 6
    capsys.readouterr()
    other = ["tune", "builtin:kernel-spmv", "--kernel", "spmv"] + args[4:]
    assert main(other) == 2  # DIR holds a study of another space: refused before any output
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs" in err, err
    # the same space measured differently would mix experiments: refused, the study untouched
    matrix_b = tmp_path / "b.mtx"
    scipy.io.mmwrite(matrix_b, powerlaw_rows(300, 300, 2400, seed=3))
    for position, value, words in ((5, str(matrix_b), "another matrix"),
                                   (13, "8", "width 4 -> 8"), (15, "5", "repeats 3 -> 5")):
        changed = list(args)
        changed[position] = value
        assert main(changed) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and "another --out" in err, err
    assert _study_values(out / "study.jsonl") == second
    # a record outside the space (edited by hand) is named with the study file, before any run
    lines = (out / "study.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["config"]["chunk_size"] = -999
    (out / "study.jsonl").write_text("\n".join([lines[0], json.dumps(record)] + lines[2:]) + "\n")
    assert main(args[:7] + ["7"] + args[8:]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "study.jsonl" in err and "-999" in err, err


def test_cli_tune_speedup_compares_study_measurements(tmp_path, capsys):
    """With the default schedule in the study (bo tries it first), the summary's default time is
    that evaluation: best == default gives speedup exactly 1, never a re-timing's noise."""
    matrix = tmp_path / "m.mtx"
    scipy.io.mmwrite(matrix, powerlaw_rows(200, 200, 1200, seed=5))
    out = tmp_path / "out"
    assert main(["tune", "builtin:kernel-spmv", "--kernel", "spmv", "--matrix", str(matrix),
                 "--budget", "1", "--out", str(out), "--repeats", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_prior"] is True  # bo on spmv: the calibrated model prior by default
    assert summary["best_config"] == summary["default_config"]
    assert summary["default_seconds"] == summary["best_seconds"] == _study_values(
        out / "study.jsonl")[0][0]
    assert summary["speedup"] == 1.0


@pytest.mark.parametrize("change, words", [
    ({"--matrix": "missing.mtx"}, "missing.mtx"),
    ({"--kernel": "spgemm"}, "invalid choice: 'spgemm'"),
    ({"SCENARIO": "nope.json"}, "nope.json"),
    ({"SCENARIO": "builtin:taco-spmm"}, "omp_monotonic"),
    ({"--budget": "0"}, "positive integer"),
])
def test_cli_tune_bad_input_is_one_line_and_status_2(tmp_path, capsys, change, words):
    matrix = tmp_path / "m.mtx"
    scipy.io.mmwrite(matrix, sp.random(20, 20, density=0.2, random_state=0))
    options = {"SCENARIO": "builtin:kernel-spmm", "--kernel": "spmm", "--matrix": str(matrix),
               "--budget": "2", "--out": str(tmp_path / "out")}
    for key, value in change.items():
        options[key] = str(tmp_path / value) if value.endswith((".mtx", ".json")) else value
    argv = ["tune", options.pop("SCENARIO")] + [t for kv in options.items() for t in kv]
    try:  # argparse's own errors exit through SystemExit, perfjax's return the status
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("perfjax") and words in err, err


def test_model_prior_prices_each_configuration_like_the_model(small):
    """ModelPrior's table lookup against the model evaluated one configuration at a time."""
    import jax.numpy as jnp

    from perfjax import tune
    from perfjax.models import balance
    from perfjax.validate.balance import Calibration
    from perfjax.workloads import sparse

    cost = balance.BalanceCost(per_nnz=2e-9, per_row=1e-9, per_segment=5e-8, per_search=1e-9,
                               fixup=1e-8, launch=1e-6, per_miss=3e-9, per_branch_miss=7e-9)
    calibration = Calibration({"spmm": cost}, predictor_bytes=100.0, residual=0.0)
    objective = KernelObjective("spmm", small, width=8, repeats=1)
    prior = kernel_tuning.ModelPrior(objective, calibration, cores=2)
    batch = objective.space.sample(24, seed=2)
    predicted = prior(batch)
    stats = sparse.stats(objective.matrix)
    misses = sparse.row_misses(objective.matrix, 8, predictor_bytes=100.0)
    for config, value in zip(objective.space.to_dicts(batch), predicted):
        strategy = config["partition"]
        if strategy == "omp":
            strategy = "static_chunks" if config["omp_scheduling_type"] == "static" \
                else "dynamic_chunks"
        threads = config["omp_num_threads"]
        work = balance.worker_work_jit(stats.row_lengths, stats.n_rows,
                                       jnp.asarray(balance.STRATEGY_CODES[strategy]), threads,
                                       config["chunk_size"] * config["omp_chunk_size"],
                                       max_workers=4, row_misses=misses)
        times = np.asarray(balance.predict(cost, work)["times"])
        assert np.isclose(value, max(times.max(), times.sum() / min(threads, 2)), rtol=1e-9)
    # as the Bayesian optimizer's prior mean
    result = tune(objective.space, objective, strategy="bo", budget=8, seed=0, prior_mean=prior)
    assert len(result.records) == 8 and result.best_config is not None
    with pytest.raises(PerfjaxError, match="no spmv costs"):
        kernel_tuning.ModelPrior(KernelObjective("spmv", small), calibration)


@pytest.mark.parametrize("kernel, strategy, words", [("spmm", "random", "needs --strategy bo"),
                                                     ("sddmm", "bo", "not sddmm")])
def test_cli_tune_model_prior_bad_combinations_are_one_line(tmp_path, capsys, kernel, strategy,
                                                            words):
    matrix = tmp_path / "m.mtx"
    scipy.io.mmwrite(matrix, sp.random(20, 20, density=0.2, random_state=0))
    argv = ["tune", f"builtin:kernel-{kernel}", "--kernel", kernel, "--matrix", str(matrix),
            "--budget", "2", "--out", str(tmp_path / "out"), "--strategy", strategy,
            "--model-prior"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("kernel, extra, expected", [("spmm", ["--strategy", "random"], False),
                                                    ("sddmm", [], False),
                                                    ("spmm", ["--no-model-prior"], False)])
def test_cli_tune_model_prior_default_follows_kernel_and_strategy(tmp_path, capsys, kernel,
                                                                  extra, expected):
    """The model prior is on by default only where it applies (bo on spmv / spmm); elsewhere, or
    with --no-model-prior, tune runs without it and says so in summary.json."""
    matrix = tmp_path / "m.mtx"
    scipy.io.mmwrite(matrix, sp.random(30, 30, density=0.2, random_state=1))
    out = tmp_path / "out"
    argv = ["tune", f"builtin:kernel-{kernel}", "--kernel", kernel, "--matrix", str(matrix),
            "--budget", "1", "--out", str(out), "--repeats", "1", "--width", "4"] + extra
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["model_prior"] is expected
    assert "calibrating" not in capsys.readouterr().err


def test_model_prior_prices_row_length_binning(small):
    """One thread: binning B saves the predicted mispredicted exits of the rows of <= B nonzeros
    and costs one nonzero per such row; checked against the miss counts directly."""
    from perfjax.models import balance
    from perfjax.validate.balance import Calibration
    from perfjax.workloads import sparse

    cost = balance.BalanceCost(per_nnz=2e-9, per_row=1e-9, per_segment=5e-8, per_search=1e-9,
                               fixup=1e-8, launch=1e-6, per_miss=3e-9, per_branch_miss=7e-9)
    objective = KernelObjective("spmv", small, repeats=1)
    prior = kernel_tuning.ModelPrior(objective, Calibration({"spmv": cost}, 100.0, 0.0), cores=2)
    base = {**objective.default_config(), "omp_num_threads": 1}
    configs = [{**base, "bin_rows": b} for b in (0, 2, 4, 8)]
    predicted = prior(objective.space.from_dicts(configs))
    ends = sparse.row_misses(small, 1, predictor_bytes=100.0)[:, 1]
    lengths = np.diff(small.indptr)
    for b, value in zip((2, 4, 8), predicted[1:]):
        short = lengths <= b
        saving = 7e-9 * ends[short].sum() - 2e-9 * short.sum()
        assert np.isclose(predicted[0] - value, saving, rtol=1e-9, atol=1e-15), b
    assert len(set(np.round(predicted / predicted[0], 12))) == 4  # each binning priced apart


def test_calibrate_model_keeps_its_measurements_for_the_next_call(tmp_path, monkeypatch):
    """calibrate_model's measurements land in the calibration cache: a second call fits the same
    measurements (identical costs) without running a kernel; cache=False and
    PERFJAX_CALIBRATION_CACHE=off measure; a directory that cannot be made is one warning."""
    from perfjax.errors import PerfjaxWarning
    from perfjax.validate import balance as validation
    from perfjax.workloads import sparse as workloads

    small = {"gen-powerlaw": workloads.powerlaw_rows(600, 600, 4_000, alpha=1.1, seed=0),
             "gen-banded": workloads.banded(500, 2, seed=0),
             "gen-uniform": workloads.uniform_random(800, 800, 4e-3, seed=0)}
    monkeypatch.setattr(validation, "calibration_matrices", lambda seed=0: small)
    measured = []
    real = validation.measure_matrix

    def counted(name, *args, **kwargs):
        measured.append(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(validation, "measure_matrix", counted)
    monkeypatch.setenv(kernel_tuning.CALIBRATION_CACHE_ENV, str(tmp_path / "cal"))
    first = kernel_tuning.calibrate_model("spmm", 8)
    assert sorted(measured) == sorted(small)
    logs = list((tmp_path / "cal").glob("measurements-*.jsonl"))
    assert [p.name for p in logs] == [f"measurements-{kernel_tuning.calibration_fingerprint()}"
                                      ".jsonl"]
    again = kernel_tuning.calibrate_model("spmm", 8)
    assert len(measured) == len(small)  # nothing run again
    np.testing.assert_array_equal(np.asarray(again["spmm"].vector()),
                                  np.asarray(first["spmm"].vector()))
    assert again.predictor_bytes == first.predictor_bytes
    kernel_tuning.calibrate_model("spmm", 16)  # other settings: measured, appended
    assert len(measured) == 2 * len(small)
    kernel_tuning.calibrate_model("spmm", 8, cache=False)
    assert len(measured) == 3 * len(small)
    monkeypatch.setenv(kernel_tuning.CALIBRATION_CACHE_ENV, "off")
    assert kernel_tuning.calibration_cache_dir() is None
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(kernel_tuning.CALIBRATION_CACHE_ENV, str(tmp_path / "file" / "cal"))
    with pytest.warns(PerfjaxWarning, match="cannot create the directory"):
        kernel_tuning.calibrate_model("spmm", 8)
    assert len(measured) == 4 * len(small)
