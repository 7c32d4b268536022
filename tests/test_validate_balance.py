"""`perfjax validate balance` end to end on small generated matrices (real runs of the C kernels)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from perfjax.cli import main
from perfjax.errors import PerfjaxError
from perfjax.validate import balance
from perfjax.workloads import sparse

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")


def test_validate_reports_exact_work_and_ranks_strategies(tmp_path, capsys):
    for name, matrix in {"skewed": sparse.powerlaw_rows(3000, 3000, 30_000, alpha=1.2, seed=5),
                         "regular": sparse.banded(3000, 3, seed=6)}.items():
        scipy.io.mmwrite(tmp_path / f"{name}.mtx", matrix)
    # a matrix of 10 rows (a directory of real matrices can hold one): validated at the worker
    # counts every strategy can split it among, with a warning naming it
    scipy.io.mmwrite(tmp_path / "ten.mtx", sparse.banded(10, 1, seed=7))
    calibration = {k: v for k, v in balance.calibration_matrices().items() if k.endswith("-s")}
    settings = balance.Settings(kernels=("spmv",), workers=(1, 4, 16), repeats=3)
    with pytest.warns(balance.FewerWorkersWarning, match=r"matrix ten \(10 rows, 28 nonzeros\) "
                      r"is too small for P=16: validated at P=1,4"):
        report = balance.validate(balance.load_matrices(tmp_path), settings, calibration)
    assert set(report["matrices"]) == {"skewed", "regular", "ten"}
    for name, row in report["matrices"].items():
        assert row["work_exact"] is True
        assert row["workers"] == ([1, 4] if name == "ten" else [1, 4, 16])
        assert row["configs"] == 5 * len(row["workers"])
        assert set(row["imbalance"]) == set(balance.STRATEGIES)  # all of them, at the largest P
        assert row["imbalance"]["merge_path"] <= 1.01 + (name == "ten") * 0.2
        assert -1.0 <= row["spearman"] <= 1.0 and row["mape"] >= 0
    # On the skewed matrix row blocks leave some worker far more work than merge path does.
    assert report["matrices"]["skewed"]["imbalance"]["row_blocks"] > 1.5
    (tmp_path / "ten.mtx").unlink()
    scipy.io.mmwrite(tmp_path / "three.mtx", sparse.banded(3, 1, seed=7))
    out = tmp_path / "report.json"
    with warnings.catch_warnings():  # shown (the suite turns warnings into errors)
        warnings.simplefilter("always", balance.FewerWorkersWarning)
        assert main(["validate", "balance", "--matrices", str(tmp_path), "--kernels", "spmv",
                     "--workers", "1,2,4", "--repeats", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert {"matrices", "median_spearman", "median_mape"} <= set(saved)
    assert saved["matrices"]["three"]["workers"] == [1, 2]
    captured = capsys.readouterr()
    assert "median spearman" in captured.out
    assert "[P<=2: too small for more]" in [line for line in captured.out.splitlines()
                                            if line.startswith("three ")][0]
    # one warning line before the progress; stderr is no terminal here: plain progress lines
    # (the first and the last), no redraws
    lines = captured.err.splitlines()
    assert lines[0] == ("perfjax: warning: matrix three (3 rows, 7 nonzeros) is too small for "
                        "P=4: validated at P=1,2")
    assert "\r" not in captured.err and lines[1].startswith("validate balance: 1 configs, ")
    assert not any("warning" in line for line in lines[1:])  # said once


def test_validate_bad_input_is_one_line(tmp_path, capsys):
    assert main(["validate", "balance", "--matrices", str(tmp_path / "nope"), "--json",
                 str(tmp_path / "o.json")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["validate", "balance", "--matrices", str(tmp_path / "empty"), "--json",
                 str(tmp_path / "o.json")]) == 2
    assert "no .mtx file" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mtx").write_text("not a matrix\n")
    assert main(["validate", "balance", "--matrices", str(tmp_path / "bad"), "--json",
                 str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "x.mtx" in err and "\n" not in err.strip()
    assert not (tmp_path / "o.json").exists()  # nothing half-written
    with pytest.raises(SystemExit) as info:
        main(["validate", "balance", "--matrices", str(tmp_path), "--kernels", "spmx",
              "--json", "o.json"])
    assert info.value.code == 2


def test_calibration_recovers_known_costs_and_predictor_capacity():
    """Synthetic workers timed by known costs and a known branch-predictor capacity: the fit must
    find that capacity among the candidates and the costs that produced the times."""
    import numpy as np

    from perfjax.models import balance as model

    rng = np.random.default_rng(0)
    truth = np.array([0.4, 0.3, 6.0, 0.2, 1.0, 12.0, 0.8, 7.0, 5.0]) * 1e-9
    branch = model.COST_TERMS.index("per_branch_miss")
    rows = []
    for information in (2_000, 8_000, 30_000, 60_000):  # bytes of compressed row lengths
        for kernel in ("spmv", "spmm"):
            raw = rng.uniform(0, 1, (40, len(model.COST_TERMS))) * [1e4, 3e3, 2, 20, 1, 1, 2e3,
                                                                    2e3, 1e3]
            scaled = raw.copy()
            scaled[:, branch] *= max(0.0, 1.0 - 4_000 / information)
            rows.append(dict(kernel=kernel, features=raw, length_bytes=information,
                             worker_seconds=scaled @ truth))
    fitted = balance.calibrate(rows)
    assert fitted.predictor_bytes == 4_000
    assert fitted.residual < 1e-12
    for kernel in ("spmv", "spmm"):
        assert np.allclose(np.asarray(fitted[kernel].vector()), truth, rtol=1e-6)
    assert np.allclose(fitted.predict(rows[0]), rows[0]["worker_seconds"])


def test_bin_rows_choice_follows_predicted_branch_misses():
    """Binning is chosen where short rows of varied lengths mispredict (many rows, more than
    the predictor learns), never for constant lengths or a fully learned pattern, and the
    chosen B is the candidate with the largest predicted saving (checked by brute force)."""
    import numpy as np

    from perfjax.models.balance import BalanceCost

    cost = BalanceCost(per_nnz=4e-10, per_row=1e-10, per_segment=0.0, per_search=0.0, fixup=0.0,
                       launch=0.0, per_miss=1e-10, per_branch_miss=1e-8)
    fitted = balance.Calibration({"spmv": cost}, predictor_bytes=1000.0, residual=0.0)
    skewed = sparse.powerlaw_rows(20000, 20000, 120000, alpha=1.0, seed=3)
    lengths = np.diff(skewed.indptr)
    ends = sparse.row_misses(skewed, predictor_bytes=1000.0)[:, 1]
    gains = {b: 1e-8 * ends[lengths <= b].sum() - 4e-10 * np.count_nonzero(lengths <= b)
             for b in (2, 4, 8)}
    assert fitted.bin_rows(skewed, "spmv") == max(gains, key=gains.get)
    assert fitted.bin_rows(sparse.banded(20000, 2, seed=1), "spmv") is None
    learned = balance.Calibration({"spmv": cost}, predictor_bytes=1e6, residual=0.0)
    assert learned.bin_rows(skewed, "spmv") is None


def test_single_thread_time_prices_every_row_plain_and_binned(monkeypatch):
    """Brute force over the rows: each nonzero costs per_nnz, each row end per_row, each
    predicted L1 miss per_miss and L2 miss per_l2_miss, each mispredicted end per_branch_miss; a binned row (length
    <= B, empty rows included: the kernel bins lengths 0 .. B) drops its mispredict and pays
    one nonzero more; plus one launch. With measured BinningCost instead: a binned row keeps
    its nonzeros, end and misses, saves per_change per predicted mispredict and pays
    per_binned_row, and every row pays per_row when any is binned."""
    import numpy as np

    from perfjax.models.balance import BalanceCost

    cost = BalanceCost(per_nnz=4e-10, per_row=1e-10, per_segment=0.0, per_search=0.0, fixup=0.0,
                       launch=2e-6, per_miss=3e-10, per_branch_miss=1e-8, per_l2_miss=2e-9)
    measured = balance.BinningCost(per_change=6e-9, per_binned_row=5e-10, per_row=3e-10)
    matrix = sparse.powerlaw_rows(3000, 3000, 15000, alpha=1.0, seed=4)
    lengths = np.diff(matrix.indptr)
    # an L2 of 8 KiB: the 24 KB vector overflows it, so the L2 term is priced too
    monkeypatch.setattr(sparse, "l2_cache_bytes", lambda default=0: 8192)
    misses = sparse.row_misses(matrix, predictor_bytes=500.0)
    assert misses[:, 2].sum() > 0.1 * matrix.nnz
    for binning in (None, measured):
        fitted = balance.Calibration({"spmv": cost}, predictor_bytes=500.0, residual=0.0,
                                     binning=binning)
        for top in (0, 2, 8):
            total = 2e-6
            for length, (cache, branch, l2) in zip(lengths, misses):
                binned = top > 0 and length <= top
                if binning is None:
                    total += (4e-10 * (length + binned) + 1e-10 + 3e-10 * cache + 2e-9 * l2
                              + 1e-8 * (0.0 if binned else branch))
                else:
                    total += (4e-10 * length + 1e-10 + 3e-10 * cache + 2e-9 * l2
                              + 1e-8 * branch)
                    total += (3e-10 if top else 0.0) + ((5e-10 - 6e-9 * branch) if binned
                                                        else 0.0)
            assert np.isclose(fitted.single_thread_time(matrix, "spmv", bin_rows=top), total,
                              rtol=1e-12)
    from perfjax.errors import WorkloadError

    with pytest.raises(WorkloadError,
                       match=r"no calibrated costs for kernel 'spmm' \(calibrated: spmv\)"):
        fitted.single_thread_time(matrix, "spmm")
    with pytest.raises(WorkloadError, match="bin_rows"):
        fitted.single_thread_time(matrix, "spmv", bin_rows=-1)
    with pytest.raises(WorkloadError, match="no calibrated costs"):
        fitted.bin_rows(matrix, "sddmm")


def test_binning_costs_are_recovered_by_the_fit_and_steer_the_pick():
    """fit_binning recovers the BinningCost that produced synthetic plain/binned times
    (exactly, with the predictor's unlearned share applied); bin_rows follows the costs: plain
    rows where the overhead outweighs the saving; SpMM keeps the a-priori rule."""
    import numpy as np

    from perfjax.models.balance import BalanceCost

    cost = BalanceCost(per_nnz=4e-10, per_row=1e-10, per_segment=0.0, per_search=0.0, fixup=0.0,
                       launch=2e-6, per_miss=3e-10, per_branch_miss=1e-8)
    # the fit: times built from known costs on matrices of different learnability
    truth = balance.BinningCost(per_change=7e-9, per_binned_row=4e-10, per_row=2e-10)
    rows = []
    for seed, (n, nnz) in enumerate(((2000, 8000), (20000, 120000), (6000, 60000))):
        m = sparse.powerlaw_rows(n, n, nnz, alpha=1.1, seed=seed)
        info, changes = sparse.length_information(m), sparse.length_changes(m)
        for top in (2, 4, 8):
            short = np.diff(m.indptr) <= top
            saved = changes[short].sum() * sparse.unlearned_share(info, 1500.0)
            plain = 1e-9 * m.nnz + 5e-10 * n
            binned = (plain - truth.per_change * saved + truth.per_binned_row * short.sum()
                      + truth.per_row * n)
            rows.append(dict(matrix=str(seed), bin_rows=top, plain=plain, binned=binned,
                             lengths=np.diff(m.indptr), changes=changes, length_bytes=info))
    got = balance.fit_binning(rows, 1500.0)
    assert np.allclose([got.per_change, got.per_binned_row, got.per_row],
                       [truth.per_change, truth.per_binned_row, truth.per_row], rtol=1e-6)
    skewed = sparse.powerlaw_rows(20000, 20000, 120000, alpha=1.0, seed=3)
    cheap = balance.Calibration({"spmv": cost}, 500.0, 0.0,
                                binning=balance.BinningCost(8e-9, 1e-10, 1e-11))
    assert cheap.bin_rows(skewed, "spmv") is not None
    dear = balance.Calibration({"spmv": cost}, 500.0, 0.0,
                               binning=balance.BinningCost(1e-10, 5e-9, 1e-9))
    assert dear.bin_rows(skewed, "spmv") is None
    assert dear.binning_for("spmm") is None and dear.binning_for("spmv") is dear.binning


def test_an_interrupted_validation_resumes_from_its_measurement_log(tmp_path, monkeypatch):
    matrices = {"a_first": sparse.banded(1500, 2, seed=1),
                "b_second": sparse.powerlaw_rows(1500, 1500, 12_000, alpha=1.2, seed=2)}
    calibration = {k: v for k, v in balance.calibration_matrices().items() if k.endswith("-s")}
    settings = balance.Settings(kernels=("spmv",), workers=(1, 2), repeats=1, processes=1)
    path = tmp_path / "log.jsonl"

    def stop_at_second(label):  # a kill once the first scored matrix is on disk
        if label.startswith("b_second"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        balance.validate(matrices, settings, calibration, progress=stop_at_second, log=path)
    log = balance.MeasurementLog(path)
    assert len(log) == len(calibration) + 1
    kept = log.get(log.key("scored", "a_first", matrices["a_first"], settings))
    # a kill mid-write leaves a torn last line: it is dropped, and the next record follows it
    with open(path, "ab") as f:
        f.write(b'{"key": "torn by a ki')
    measured = []
    real = balance.measure_matrix

    def counting(name, matrix, settings, progress=None):
        measured.append(name)
        return real(name, matrix, settings, progress)
    monkeypatch.setattr(balance, "measure_matrix", counting)
    report = balance.validate(matrices, settings, calibration, log=path)
    assert measured == ["b_second"]  # everything else was read back
    assert set(report["matrices"]) == set(matrices)
    assert all(row["work_exact"] for row in report["matrices"].values())
    again = balance.MeasurementLog(path)
    assert len(again) == len(calibration) + 2
    back = again.get(again.key("scored", "a_first", matrices["a_first"], settings))
    for old, new in zip(kept, back, strict=True):
        assert old.keys() == new.keys()
        for k in old:
            assert np.array_equal(old[k], new[k]) if isinstance(old[k], np.ndarray) \
                else old[k] == new[k]
    # what the measurements depend on: other settings or another matrix give another key
    key = balance.MeasurementLog.key("scored", "a_first", matrices["a_first"], settings)
    changed = matrices["a_first"].copy()
    changed.data[0] += 1.0
    assert key != balance.MeasurementLog.key("scored", "a_first", changed, settings)
    assert key != balance.MeasurementLog.key("scored", "a_first", matrices["a_first"],
                                             balance.Settings(kernels=("spmv",), workers=(1, 4)))
    assert key != balance.MeasurementLog.key("calibration", "a_first", matrices["a_first"],
                                             settings)


def test_a_corrupt_measurement_log_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_text('{"key": "k", "rows": []}\nnot json\n{"key": "j", "rows": []}\n')
    with pytest.raises(PerfjaxError, match=r"log.jsonl: line 2 is not a measurement record"):
        balance.MeasurementLog(path)
    # a complete last record that only lacks its newline is data: kept, the newline added
    path.write_text('{"key": "k", "rows": []}\n{"key": "j", "rows": []}')
    assert len(balance.MeasurementLog(path)) == 2
    assert path.read_text() == '{"key": "k", "rows": []}\n{"key": "j", "rows": []}\n'
    # through the CLI: one line, exit status 2, and a finished run removes its log
    scipy.io.mmwrite(tmp_path / "m.mtx", sparse.banded(800, 2, seed=3))
    out = tmp_path / "r.json"
    (tmp_path / "r.json.partial.jsonl").write_text("garbage\n")
    assert main(["validate", "balance", "--matrices", str(tmp_path), "--kernels", "spmv",
                 "--workers", "1,2", "--repeats", "1", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "r.json.partial.jsonl: line 1" in err and "\n" not in err
    (tmp_path / "r.json.partial.jsonl").unlink()
    assert main(["validate", "balance", "--matrices", str(tmp_path), "--kernels", "spmv",
                 "--workers", "1,2", "--repeats", "1", "--json", str(out)]) == 0
    assert out.exists() and not (tmp_path / "r.json.partial.jsonl").exists()


def plain_extrapolates(calibration) -> bool:
    return calibration.extrapolated("spmv", 8.1e6) and not calibration.extrapolated("spmv", 7.9e6)


def test_memory_regime_prices_matrices_beyond_the_boundary():
    """A calibration with a memory regime prices each run by its footprint: the cache costs up
    to the boundary (the geometric mean of the two calibration sets' nearest footprints), the
    memory costs beyond it, flagged as extrapolated past twice the largest run it was fitted
    on."""
    from perfjax.models.balance import BalanceCost

    small, large = BalanceCost(per_nnz=1e-9), BalanceCost(per_nnz=5e-9)
    memory = balance.Calibration({"spmv": large}, 0.0, 0.0, largest={"spmv": 1e8})
    fitted = balance.Calibration({"spmv": small}, 0.0, 0.0, memory=memory,
                                 boundary={"spmv": 1e7}, largest={"spmv": 4e6})
    features = np.zeros((2, len(balance.balance.COST_TERMS)))
    features[:, 0] = [100.0, 300.0]  # nonzeros per worker
    row = dict(kernel="spmv", features=features, length_bytes=0)
    for size, cost, name in ((5e6, 1e-9, "cache"), (2e7, 5e-9, "memory")):
        assert np.allclose(fitted.predict(dict(row, footprint=size)), cost * features[:, 0])
        assert fitted.regime_name("spmv", size) == name
    assert not fitted.extrapolated("spmv", 5e6) and not fitted.extrapolated("spmv", 1.9e8)
    assert fitted.extrapolated("spmv", 2.1e8)  # over twice the largest memory calibration run
    assert plain_extrapolates(balance.Calibration({"spmv": small}, 0.0, 0.0,
                                                  largest={"spmv": 4e6}))
    plain = balance.Calibration({"spmv": small}, 0.0, 0.0)  # no memory regime: always itself
    assert plain.regime("spmv", 1e12) is plain
    # the boundary between two sets of generated matrices, and a matrix's footprint
    settings = balance.Settings(kernels=("spmv",))
    a, b = sparse.banded(100, 1, seed=0), sparse.banded(10_000, 1, seed=0)
    bound = balance.regime_boundary({"a": a}, {"b": b}, settings)["spmv"]
    assert np.isclose(bound, np.sqrt(balance.footprint(a, "spmv") * balance.footprint(b, "spmv")))
    assert balance.footprint(a, "spmv") == a.nnz * 12 + 101 * 8 + 200 * 8
    assert balance.footprint(a, "spmm", 4) == a.nnz * 12 + 101 * 8 + 200 * 8 * 4


def test_validate_calibrates_a_memory_regime_when_asked(tmp_path):
    """memory=True measures the memory calibration set too (here two small stand-ins): the
    report names both sets and the boundary, and each scored matrix its regime."""
    calibration = {k: v for k, v in balance.calibration_matrices().items() if k.endswith("-s")}
    stand_ins = {"big-band": sparse.banded(20_000, 3, seed=1),
                 "big-random": sparse.uniform_random(20_000, 20_000, 3e-4, seed=1)}
    scored = {"tiny": sparse.banded(1000, 2, seed=3),
              "large": sparse.uniform_random(30_000, 30_000, 3e-4, seed=3)}
    settings = balance.Settings(kernels=("spmv",), workers=(1, 2), repeats=1, processes=1)
    report = balance.validate(scored, settings, calibration, memory_calibration=stand_ins,
                              memory=True)
    memory = report["calibration"]["memory"]
    assert memory["matrices"] == sorted(stand_ins) and memory["boundary_bytes"]["spmv"] > 0
    assert len(memory["costs"]["spmv"]) == len(balance.balance.COST_TERMS)
    assert report["matrices"]["tiny"]["regime"] == {"spmv": "cache"}
    assert report["matrices"]["large"]["regime"] == {"spmv": "memory"}
    # 30k rows against stand-ins of 20k: within twice their size
    assert report["matrices"]["large"]["extrapolated"] is False
    # without a matrix beyond the boundary, the default (memory=None) measures no memory set
    small_only = balance.validate({"tiny": scored["tiny"]}, settings, calibration,
                                  memory_calibration=stand_ins)
    assert small_only["calibration"]["memory"] is None
    with pytest.raises(PerfjaxError, match="overlap"):
        balance.validate({"big-band": scored["tiny"]}, settings, calibration,
                         memory_calibration=stand_ins)


def test_each_worker_time_is_the_fastest_of_the_processes(monkeypatch):
    """settings.processes instrumented runs per configuration: each worker's time is its
    fastest over them (a burst that slows one whole process does not enter the fit)."""
    import dataclasses

    real = balance._run_kernel
    calls = []

    def slowed(kernel, matrix, operand, part, settings, **mode):
        result = real(kernel, matrix, operand, part, settings, **mode)
        if not mode.get("sequential"):
            return result
        calls.append(1)
        slow = np.arange(part.workers) % 2 == len(calls) % 2  # other workers slowed each time
        return dataclasses.replace(result, worker_seconds=np.where(slow, 1.0, 1e-3))
    monkeypatch.setattr(balance, "_run_kernel", slowed)
    settings = balance.Settings(kernels=("spmv",), workers=(4,), strategies=("merge_path",),
                                repeats=1, processes=3)
    rows = balance.measure_matrix("m", sparse.banded(500, 2, seed=0), settings)
    assert len(calls) == 3 and np.allclose(rows[0]["worker_seconds"], 1e-3)
    with pytest.raises(PerfjaxError, match="processes must be a positive integer"):
        balance.check_workers({}, dataclasses.replace(settings, processes=0))


def test_rows_without_a_footprint_flag_no_extrapolation():
    """Rows built without ``footprint`` (hand-made, as in a notebook) calibrate as before and
    flag nothing: the calibrated size is unknown, not zero."""
    from perfjax.models import balance as model

    rng = np.random.default_rng(1)
    rows = [dict(kernel="spmv", features=rng.uniform(1, 2, (8, len(model.COST_TERMS))),
                 length_bytes=100, worker_seconds=rng.uniform(1, 2, 8)) for _ in range(4)]
    fitted = balance.calibrate(rows)
    assert fitted.largest is None and not fitted.extrapolated("spmv", 1e12)
    assert balance.score([dict(r, matrix="m", workers=8, work_exact=True, imbalance=1.0,
                               strategy="merge_path") for r in rows],
                         fitted)["m"]["extrapolated"] is False


def test_worker_counts_follow_each_matrix_size():
    """check_workers: every matrix at the requested worker counts all strategies can split it
    among (checked against the partitioners one by one); fewer than two left (or the one asked
    for, when one is) is an error naming the matrix; nothing is measured."""
    from perfjax.errors import WorkloadError
    from perfjax.schedulers import partition

    matrices = {"big": sparse.banded(200, 2, seed=0), "forty": sparse.banded(40, 1, seed=1),
                "sparse5": sparse.uniform_random(30, 30, 0.006, seed=2)}
    settings = balance.Settings(workers=(64, 1, 2, 4, 8, 16, 32))
    with pytest.warns(balance.FewerWorkersWarning) as caught:
        counts = balance.check_workers(matrices, settings)
    for name, matrix in matrices.items():
        expected = []
        for w in sorted(settings.workers):
            try:
                for strategy in settings.strategies:
                    partition.partition(strategy, matrix, w, chunk=settings.chunk)
                expected.append(w)
            except WorkloadError:
                pass
        assert counts[name] == tuple(expected) == balance.matrix_workers(matrix, settings)
    assert counts["big"] == (1, 2, 4, 8, 16, 32, 64) and counts["forty"] == (1, 2, 4, 8, 16, 32)
    assert len(caught) == 2 and all("validated at P=1," in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balance.check_workers(matrices, settings, warn=False) == counts
    nnz = matrices["sparse5"].nnz
    with pytest.raises(WorkloadError, match=r"matrix one \(1 rows, 1 nonzeros\): row_blocks cannot "
                       r"split it among 2 workers .*only P=1 to validate it at"):
        balance.check_workers({"one": scipy.sparse.csr_matrix(np.ones((1, 1)))}, settings,
                              warn=False)
    with pytest.raises(WorkloadError, match=r"matrix forty .*among 64 workers.*no worker count"):
        balance.check_workers(matrices, balance.Settings(workers=(64,)))
    assert nnz < 32 and counts["sparse5"][-1] <= nnz


def test_dense_array_files_beside_the_matrices_are_left_out(tmp_path, capsys):
    """SuiteSparse ships right-hand sides and coordinates as dense (array-format) .mtx files
    beside a matrix: a directory scan leaves them out with a warning naming them; a directory of
    only such files is a one-line error."""
    from perfjax.errors import PerfjaxWarning, WorkloadError

    matrix = sparse.banded(300, 2, seed=0)
    scipy.io.mmwrite(tmp_path / "m.mtx", matrix)
    scipy.io.mmwrite(tmp_path / "m_b.mtx", np.arange(300.0).reshape(300, 1))
    scipy.io.mmwrite(tmp_path / "m_coord.mtx", np.ones((300, 2)))
    with pytest.warns(PerfjaxWarning, match=r"left out 2 dense \(array format\) file\(s\), not "
                      r"sparse matrices: m_b.mtx, m_coord.mtx"):
        loaded = balance.load_matrices(tmp_path)
    assert list(loaded) == ["m"] and (loaded["m"] != matrix).nnz == 0
    (tmp_path / "m.mtx").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfjaxWarning)
        with pytest.raises(WorkloadError, match="holds no sparse .mtx file"):
            balance.load_matrices(tmp_path)
        assert main(["validate", "balance", "--matrices", str(tmp_path), "--json",
                     str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no sparse .mtx file" in err and "\n" not in err
    assert not (tmp_path / "o.json").exists()


def test_suitesparse_archives_unpacked_side_by_side_are_found(tmp_path):
    """NAME/NAME.mtx in subdirectories (SuiteSparse's archive layout) beside top-level files;
    the other files of a subdirectory are not matrices to score; two matrices of one name are
    an error naming both files."""
    from perfjax.errors import WorkloadError

    top = sparse.banded(200, 2, seed=1)
    inner = sparse.powerlaw_rows(300, 300, 1500, alpha=1.1, seed=2)
    scipy.io.mmwrite(tmp_path / "top.mtx", top)
    (tmp_path / "inner").mkdir()
    scipy.io.mmwrite(tmp_path / "inner" / "inner.mtx", inner)
    scipy.io.mmwrite(tmp_path / "inner" / "inner_b.mtx", sparse.banded(300, 1, seed=3))
    (tmp_path / "other").mkdir()  # no other/other.mtx: not a matrix folder
    scipy.io.mmwrite(tmp_path / "other" / "x.mtx", top)
    loaded = balance.load_matrices(tmp_path)
    assert list(loaded) == ["inner", "top"]  # by name, wherever each lies
    assert (loaded["inner"] != inner).nnz == 0 and (loaded["top"] != top).nnz == 0
    scipy.io.mmwrite(tmp_path / "inner.mtx", top)
    with pytest.raises(WorkloadError, match=r"two matrices named 'inner' \(.*inner.mtx and "
                       r".*inner/inner.mtx\)"):
        balance.load_matrices(tmp_path)
