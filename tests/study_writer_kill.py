"""Writer process for the kill test in test_study.py: appends records until it is killed.

Usage: python study_writer_kill.py STUDY_PATH

Each record's config and values are derived from its id alone (`config_for`, `values_for`), so the
test can check every confirmed record without talking to this process. The id is printed only
after `Study.append` has returned, i.e. after the record is on disk: a printed id is a promise the
test holds the study to.
"""

from __future__ import annotations

import math
import sys

MAX_RECORDS = 100_000  # a bound in case the parent test dies without killing us


def config_for(i: int) -> dict[str, object]:
    order = list(range(5))
    order[i % 5], order[0] = order[0], order[i % 5]
    return {"tile": 16 * (i % 7 + 1), "order": order, "name": f"cfg-{i}", "scale": i / 3}


def values_for(i: int) -> dict[str, float]:
    return {"time": 0.5 + i * 1e-3, "error": math.nan if i % 5 == 0 else math.sqrt(i)}


def main(path: str) -> None:
    from perfjax.study import Study

    with Study(path, metadata={"writer": "kill-test"}) as study:
        for _ in range(MAX_RECORDS):
            i = len(study)
            record = study.append(config_for(i), values_for(i), wall_time=1e-3 * i)
            assert record.id == i, (record.id, i)
            print(record.id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
