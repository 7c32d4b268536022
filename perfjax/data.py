"""Where the real data lives: ``$PERFJAX_DATA``, else ``../shared/data`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path | None:
    """The real-data directory, or None when this machine has none (tests then skip)."""
    env = os.environ.get("PERFJAX_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path(__file__).resolve().parents[1]  # the repository root of a checkout
    for candidate in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None
