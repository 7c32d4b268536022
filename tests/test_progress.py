"""perfjax.progress: a live tqdm bar on a terminal, complete plain lines anywhere else."""

from __future__ import annotations

import io
import re

from perfjax import progress as progress_module
from perfjax.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_one_per_update_without_carriage_returns():
    out = io.StringIO()
    with ProgressLine("tune spmv m", "eval", total=3, file=out, interval=0) as bar:
        for n, best in ((1, "best 2 ms"), (2, "best 1.5 ms"), (3, "best 1.5 ms")):
            bar.update(n=n, postfix=best)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")
    assert [line.split(" [")[0] for line in lines] == [
        "tune spmv m: 1/3 evals, best 2 ms", "tune spmv m: 2/3 evals, best 1.5 ms",
        "tune spmv m: 3/3 evals, best 1.5 ms"]
    assert all(re.search(r" \[\d+:\d\d\]$", line) for line in lines)  # elapsed m:ss


def test_plain_lines_are_throttled_and_the_last_state_is_written_on_close(monkeypatch):
    clock = iter(float(t) for t in [0, 0, 1, 2, 31, 32, 33, 34])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    with ProgressLine("validate balance", "config", file=out, interval=30) as bar:
        for step in range(5):  # at t = 0, 1, 2, 31, 32
            bar.update(postfix=f"matrix {step}")
    lines = out.getvalue().splitlines()
    # the first update, the first one 30 s after it, and the final state when closing (t = 33)
    assert lines == ["validate balance: 1 configs, matrix 0 [0:00]",
                     "validate balance: 4 configs, matrix 3 [0:31]",
                     "validate balance: 5 configs, matrix 4 [0:33]"]


def test_nothing_new_nothing_written_on_close():
    out = io.StringIO()
    bar = ProgressLine("x", "eval", total=2, file=out, interval=0)
    bar.update()
    bar.close()
    assert [line.split(" [")[0] for line in out.getvalue().splitlines()] == ["x: 1/2 evals"]


def test_a_terminal_gets_the_live_bar():
    out = Terminal()
    with ProgressLine("tune spmm m", "eval", total=4, file=out, interval=0) as bar:
        bar.update(n=2, postfix="best 1 ms")
    text = out.getvalue()
    assert "\r" in text and "2/4" in text and "best 1 ms" in text


def test_no_stream_no_output(monkeypatch, capsys):
    """With stderr closed (sys.stderr is None) nothing is written, and never to stdout."""
    monkeypatch.setattr(progress_module.sys, "stderr", None)
    with ProgressLine("tune spmv m", "eval", total=2, interval=0) as bar:
        bar.update(n=1, postfix="best 1 ms")
        bar.update(n=2)
    assert capsys.readouterr().out == ""
