"""`perfjax validate balance` end to end on small generated matrices (real runs of the C kernels)."""

from __future__ import annotations

import json
import shutil

import pytest
import scipy.io

from perfjax.cli import main
from perfjax.validate import balance
from perfjax.workloads import sparse

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")


def test_validate_reports_exact_work_and_ranks_strategies(tmp_path, capsys):
    for name, matrix in {"skewed": sparse.powerlaw_rows(3000, 3000, 30_000, alpha=1.2, seed=5),
                         "regular": sparse.banded(3000, 3, seed=6)}.items():
        scipy.io.mmwrite(tmp_path / f"{name}.mtx", matrix)
    calibration = {k: v for k, v in balance.calibration_matrices().items() if k.endswith("-s")}
    settings = balance.Settings(kernels=("spmv",), workers=(1, 4, 16), repeats=3)
    report = balance.validate(balance.load_matrices(tmp_path), settings, calibration)
    assert set(report["matrices"]) == {"skewed", "regular"}
    for row in report["matrices"].values():
        assert row["work_exact"] is True
        assert row["imbalance"]["merge_path"] <= 1.01
        assert -1.0 <= row["spearman"] <= 1.0 and row["mape"] >= 0
    # On the skewed matrix row blocks leave some worker far more work than merge path does.
    assert report["matrices"]["skewed"]["imbalance"]["row_blocks"] > 1.5
    out = tmp_path / "report.json"
    assert main(["validate", "balance", "--matrices", str(tmp_path), "--kernels", "spmv",
                 "--workers", "1,2", "--repeats", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert {"matrices", "median_spearman", "median_mape"} <= set(saved)
    assert "median spearman" in capsys.readouterr().out


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


def test_calibration_recovers_known_costs_and_predictor_reach():
    """Synthetic workers timed by known costs and a known branch-predictor reach: the fit must
    find that reach among the candidates and the costs that produced the times."""
    import numpy as np

    from perfjax.models import balance as model

    rng = np.random.default_rng(0)
    truth = np.array([0.4, 0.3, 6.0, 0.2, 1.0, 12.0, 0.8, 7.0]) * 1e-9
    rows = []
    for n_rows in (2_000, 8_000, 30_000, 60_000):
        for kernel in ("spmv", "spmm"):
            raw = rng.uniform(0, 1, (40, len(model.COST_TERMS))) * [1e4, 3e3, 2, 20, 1, 1, 2e3, 2e3]
            scaled = raw.copy()
            scaled[:, -1] *= max(0.0, 1.0 - 4_000 / n_rows)
            rows.append(dict(kernel=kernel, features=raw, n_rows=n_rows,
                             worker_seconds=scaled @ truth))
    fitted = balance.calibrate(rows)
    assert fitted.predictor_rows == 4_000
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
    fitted = balance.Calibration({"spmv": cost}, predictor_rows=1000.0, residual=0.0)
    skewed = sparse.powerlaw_rows(20000, 20000, 120000, alpha=1.0, seed=3)
    lengths = np.diff(skewed.indptr)
    ends = sparse.row_misses(skewed, predictor_rows=1000.0)[:, 1]
    gains = {b: 1e-8 * ends[lengths <= b].sum() - 4e-10 * np.count_nonzero(lengths <= b)
             for b in (2, 4, 8)}
    assert fitted.bin_rows(skewed, "spmv") == max(gains, key=gains.get)
    assert fitted.bin_rows(sparse.banded(20000, 2, seed=1), "spmv") is None
    learned = balance.Calibration({"spmv": cost}, predictor_rows=1e6, residual=0.0)
    assert learned.bin_rows(skewed, "spmv") is None
