"""Worker for the resume test in test_tune.py: tunes a small space into a study until killed.

Usage: python tune_kill_worker.py STUDY_PATH BUDGET

Prints each evaluation number once its record is on disk (the callback runs after the append).
"""

from __future__ import annotations

import sys


def space():
    from perfjax import Ordinal, Permutation, Space
    return Space({"tile": Ordinal([1, 2, 4, 8, 16, 32]), "unroll": Ordinal([1, 2, 3, 4]),
                  "order": Permutation(3)}, constraints=["unroll <= tile"])


def objective(config: dict) -> float:
    return abs(config["tile"] - 8) + abs(config["unroll"] - 2) + config["order"][0]


def dies_on_tile_16(config: dict) -> float:
    """An objective whose process dies (no exception, no result) on tile 16: a crashing worker
    of a process pool in test_tune.py."""
    import os

    if config["tile"] == 16:
        os._exit(3)
    return objective(config)


def main(path: str, budget: int) -> None:
    import perfjax

    perfjax.tune(space(), objective, strategy="random", budget=budget, study=path, seed=1,
                 callback=lambda p: print(p.evaluation, flush=True))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
