"""Every notebook's code cells run top to bottom (so the tours cannot rot silently).

The notebooks leave matplotlib's backend alone so that Jupyter shows their figures
inline; this headless run forces the non-interactive Agg backend itself, before any
notebook code imports pyplot, and closes each notebook's figures afterwards.
"""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after the backend is chosen
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")  # nbformat 4.5's pattern for a cell id
# numpy 2 / JAX reprs that should not reach a reader: print plain floats or strings
REPR_CLUTTER = re.compile(r"\bnp\.(float|int|uint|bool|complex)\w*\(|\bArray\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebook = json.loads(path.read_text())
    namespace: dict = {"__name__": "__notebook__"}
    try:
        for i, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "code":
                source, where = "".join(cell["source"]), f"{path.name}[cell {i}]"
                exec(compile(source, where, "exec"), namespace)  # noqa: S102 - own code
    finally:
        plt.close("all")
    printed = capsys.readouterr().out
    assert not REPR_CLUTTER.search(printed), printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean(path: Path) -> None:
    """nbformat 4.5 with a unique id per cell, no stored outputs, no forced backend."""
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    ids = [cell.get("id") for cell in notebook["cells"]]
    assert all(isinstance(i, str) and CELL_ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
            assert "matplotlib.use(" not in "".join(cell["source"]), cell["id"]
