"""Progress lines for the long commands (``perfjax tune``, ``perfjax validate balance``).

On a terminal: tqdm's live bar, redrawn in place. On anything else - a pipe, a file, a batch
job's log - a redrawn bar is a run of carriage returns that a log viewer shows as one ever longer
line (or thousands of them), so there the same information comes as plain lines: one at most
every ``interval`` seconds (0: one per update) and one when the run ends, each complete with its
newline.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """Progress of ``desc`` in ``unit`` s (``total`` of them when known), written to ``file``
    (default stderr): ``update()`` counts one more, ``update(n=N)`` sets the count, and
    ``postfix`` (the best value so far, the item just done) is shown after the count. Use as a
    context manager; closing writes the last state where a plain line has not shown it yet.
    Without a stream to write to (stderr closed: ``sys.stderr`` is None) it writes nothing."""

    def __init__(self, desc: str, unit: str, *, total: int | None = None, initial: int = 0,
                 file: TextIO | None = None, interval: float = 30.0, leave: bool = True):
        self.file = sys.stderr if file is None else file
        self.desc, self.unit, self.total, self.interval = desc, unit, total, float(interval)
        self.count, self.postfix = int(initial), ""
        self._started = time.monotonic()
        self._last_line = None  # monotonic time of the last plain line
        self._shown = True  # the state the last plain line showed is the current one
        self._bar = None
        if _is_terminal(self.file):
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.file,
                             dynamic_ncols=True, leave=leave)

    def update(self, n: int | None = None, postfix: str | None = None) -> None:
        self.count = self.count + 1 if n is None else int(n)
        if postfix is not None:
            self.postfix = postfix
        if self.file is None:
            return
        if self._bar is not None:
            self._bar.n = self.count
            self._bar.set_postfix_str(self.postfix, refresh=False)
            self._bar.refresh()
            return
        self._shown = False
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.interval:
            self._write(now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self._shown and self.file is not None:
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        elapsed = int(now - self._started)
        of = "" if self.total is None else f"/{self.total}"
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.count}{of} {self.unit}s{tail} "
              f"[{elapsed // 60}:{elapsed % 60:02d}]", file=self.file, flush=True)
        self._last_line, self._shown = now, True

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(file) -> bool:
    if file is None:
        return False
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
