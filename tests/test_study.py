"""Tests of perfjax.study: the append-only, crash-safe JSON-lines results log."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfjax.errors import StudyError, StudyWarning
from perfjax.study import Record, Study, load

REPO_ROOT = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).resolve().with_name("study_writer_kill.py")
NAN = "<nan>"  # stands for a NaN in expectations, since nan != nan


def nan_safe(values: dict[str, float]) -> dict[str, Any]:
    return {k: NAN if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def open_without_warnings(path: Path, **kwargs: Any) -> Study:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Study(path, **kwargs)


def strict_json_lines(path: Path) -> list[Any]:
    """Parse every line as standard JSON (no NaN/Infinity literals); the file must end in \\n."""
    data = path.read_text(encoding="utf-8")
    assert data.endswith("\n")

    def reject(literal: str) -> None:
        raise AssertionError(f"non-standard JSON literal {literal}")

    return [json.loads(line, parse_constant=reject) for line in data.splitlines()]


def write_records(path: Path, n: int) -> None:
    with Study(path) as study:
        for i in range(n):
            study.append({"i": i}, float(i))


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_numpy_nonfinite_permutations_and_id_continuation(tmp_path: Path) -> None:
    path = tmp_path / "study.jsonl"
    space = {"parameters": {"tile": {"values": [8, 16, 32]}}, "name": "demo"}
    t0 = time.time()
    with Study(path, space=space, metadata={"owner": "tests"}) as study:
        written = [
            study.append(
                {
                    "tile": np.int64(32),
                    "alpha": np.float32(0.5),
                    "flag": np.bool_(True),
                    "order": np.array([2, 0, 1]),
                    "perm": (1, 0),
                    "name": "x",
                },
                1.25,
            ),
            study.append(
                {"tile": 16},
                {"time": math.nan, "up": math.inf, "down": -math.inf, "n": np.float32(0.25)},
                valid=False,
                error="boom",
                wall_time=2.5,
                metadata={"host": "a", "attempt": np.int32(3)},
            ),
            study.append({"tile": 8}, {"value": 3}),
        ]
    t1 = time.time()
    expected = [
        (
            0,
            {"tile": 32, "alpha": 0.5, "flag": True, "order": [2, 0, 1], "perm": [1, 0]}
            | {"name": "x"},
            {"value": 1.25},
            True,
            None,
            0.0,
            {},
        ),
        (
            1,
            {"tile": 16},
            {"time": NAN, "up": math.inf, "down": -math.inf, "n": 0.25},
            False,
            "boom",
            2.5,
            {"host": "a", "attempt": 3},
        ),
        (2, {"tile": 8}, {"value": 3.0}, True, None, 0.0, {}),
    ]

    reopened = open_without_warnings(path)
    for records in (written, reopened.records):
        got = [
            (r.id, r.config, nan_safe(r.values), r.valid, r.error, r.wall_time, r.metadata)
            for r in records
        ]
        assert got == expected
        first = records[0].config
        assert [type(first[k]) for k in ("tile", "alpha", "flag")] == [int, float, bool]
        assert all(type(x) is int for x in first["order"])
        assert all(t0 <= r.timestamp <= t1 for r in records)
    assert [r.timestamp for r in reopened.records] == [r.timestamp for r in written]
    assert reopened.space == space
    assert reopened.header["metadata"] == {"owner": "tests"}
    assert reopened.header["perfjax_study"] == 1

    with reopened:
        assert reopened.append({"tile": 4}, 0.0).id == 3
    assert [r.id for r in load(path)] == [0, 1, 2, 3]

    lines = strict_json_lines(path)
    assert len(lines) == 5
    assert lines[2]["values"] == {"time": "nan", "up": "inf", "down": "-inf", "n": 0.25}


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.floats(allow_nan=True, allow_infinity=True),
        max_size=4,
    )
)
def test_objective_values_round_trip_exactly(values: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        with Study(path) as study:
            study.append({"k": "v"}, values)
        (record,) = load(path).records
        assert nan_safe(record.values) == nan_safe(values)
        # -0.0 == 0.0, so check the sign separately (a NaN's sign bit is not kept: it is "nan")
        signs = {k: math.copysign(1, v) for k, v in values.items() if not math.isnan(v)}
        assert {k: math.copysign(1, record.values[k]) for k in signs} == signs


def test_best_ignores_invalid_and_nonfinite(tmp_path: Path) -> None:
    with Study(tmp_path / "s.jsonl") as study:
        assert study.best() is None
        study.append({"c": 0}, 5.0)
        study.append({"c": 1}, 1.0, valid=False, error="crashed")
        study.append({"c": 2}, math.nan)
        study.append({"c": 3}, 2.0)
        study.append({"c": 4}, math.inf)
        study.append({"c": 5}, 2.0)
        study.append({"c": 6}, {"other": -1.0})
        assert study.best().id == 3  # lowest finite valid value; first of the tie with id 5
        assert study.best(minimize=False).id == 0
        assert study.best("other").id == 6
        assert study.best("missing") is None
        assert len(study) == 7
        assert [r.config["c"] for r in study] == list(range(7))


def test_concurrent_appends_from_threads(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    n_threads, per_thread = 8, 40
    with Study(path) as study:

        def work(t: int) -> None:
            for j in range(per_thread):
                study.append({"thread": t, "j": j}, float(t * 1000 + j))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    records = open_without_warnings(path).records
    assert [r.id for r in records] == list(range(n_threads * per_thread))
    assert sorted((r.config["thread"], r.config["j"]) for r in records) == [
        (t, j) for t in range(n_threads) for j in range(per_thread)
    ]
    assert all(r.values == {"value": r.config["thread"] * 1000.0 + r.config["j"]} for r in records)


# -- damaged files ---------------------------------------------------------------------------

COMPLETE_RECORD_WITHOUT_NEWLINE = json.dumps(
    {
        "id": 2,
        "config": {"i": 99},
        "values": {"value": 99.0},
        "valid": True,
        "error": None,
        "wall_time": 0.0,
        "metadata": {},
        "timestamp": 0.0,
    }
).encode()


@pytest.mark.parametrize(
    "tail",
    [b'{"id": 2, "config": {"i": 2', b"\x00\x00\x00\xff"],
    ids=["partial-json", "garbage-bytes"],
)
def test_half_written_last_line_is_skipped_and_truncated(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "s.jsonl"
    write_records(path, 2)
    with path.open("ab") as f:
        f.write(tail)
    damaged = path.read_bytes()
    message = rf"{re.escape(str(path))}: line 4: incomplete last line"

    with pytest.warns(StudyWarning, match=message):
        reader = load(path)
    assert [(r.id, r.config) for r in reader] == [(0, {"i": 0}), (1, {"i": 1})]
    assert path.read_bytes() == damaged  # a reader changes nothing

    with pytest.warns(StudyWarning, match=message):
        study = Study(path)
    with study:
        record = study.append({"i": 2}, 2.0)
    assert record.id == 2

    assert [line.get("id") for line in strict_json_lines(path)] == [None, 0, 1, 2]
    again = open_without_warnings(path)
    assert [(r.id, r.config, r.values) for r in again] == [
        (0, {"i": 0}, {"value": 0.0}),
        (1, {"i": 1}, {"value": 1.0}),
        (2, {"i": 2}, {"value": 2.0}),
    ]


def test_complete_last_record_without_newline_is_kept(tmp_path: Path) -> None:
    """A last line that is a whole record (an editor stripped the final newline) is data: kept,
    and a writer adds the newline before appending."""
    path = tmp_path / "s.jsonl"
    write_records(path, 2)
    with path.open("ab") as f:
        f.write(COMPLETE_RECORD_WITHOUT_NEWLINE)
    damaged = path.read_bytes()
    reader = open_without_warnings(path, read_only=True)
    assert [(r.id, r.config) for r in reader] == [(0, {"i": 0}), (1, {"i": 1}), (2, {"i": 99})]
    assert path.read_bytes() == damaged  # a reader changes nothing
    with open_without_warnings(path) as study:
        assert study.append({"i": 3}, 3.0).id == 3
    assert [line.get("id") for line in strict_json_lines(path)] == [None, 0, 1, 2, 3]


def test_corrupt_middle_lines_are_skipped_with_warnings(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_records(path, 5)
    lines = path.read_bytes().split(b"\n")  # header, records 0..4, ""
    lines[2] = b"this is not json"  # record 1
    lines[4] = b'{"id": 3, "config": {}}'  # record 3: JSON, but not a record
    lines.insert(6, lines[3])  # a second copy of record 2 after record 4: id goes backwards
    path.write_bytes(b"\n".join(lines))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = Study(path)
    messages = [str(w.message) for w in caught]
    assert all(w.category is StudyWarning for w in caught)
    assert len(messages) == 3
    for lineno, message in zip((3, 5, 7), messages, strict=True):
        assert message.startswith(f"{path}: line {lineno}: not a valid record")
    assert "does not follow" in messages[2]

    with study:
        assert [(r.id, r.config) for r in study] == [(0, {"i": 0}), (2, {"i": 2}), (4, {"i": 4})]
        assert study.append({"i": 5}, 5.0).id == 5
    with pytest.warns(StudyWarning):
        assert [r.id for r in load(path)] == [0, 2, 4, 5]


@pytest.mark.parametrize(
    "content",
    [
        b"hello world\nthis is a text file\n",
        b"tile,order,time\n32,0 1 2,1.5\n",
        b'{"foo": 1}\n',
        b"[1, 2, 3]\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"no newline at all",
        b'{"perfjax_study": 2, "created": 0, "space": null, "metadata": {}}\n',
        b'{"perfjax_study": 1}\n',
    ],
    ids=["text", "csv", "other-json", "json-list", "binary", "one-line", "version-2", "bad-header"],
)
def test_non_study_file_is_rejected_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-a-study.jsonl"
    path.write_bytes(content)
    for opener in (Study, load):
        with pytest.raises(StudyError, match=re.escape(str(path))):
            opener(path)
    assert path.read_bytes() == content


def test_missing_empty_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=re.escape(str(tmp_path / "missing.jsonl"))):
        load(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(StudyError, match="is empty"):
        load(tmp_path / "empty.jsonl")
    with pytest.raises(StudyError, match=re.escape(str(tmp_path))):
        Study(tmp_path)

    # An empty file (e.g. touched by a script) becomes a new study; missing directories are made.
    for path in (tmp_path / "empty.jsonl", tmp_path / "new" / "deeper" / "s.jsonl"):
        with Study(path, metadata={"m": 1}) as study:
            study.append({"a": 1}, 1.0)
        assert [(r.id, r.config) for r in open_without_warnings(path)] == [(0, {"a": 1})]
        assert strict_json_lines(path)[0]["metadata"] == {"m": 1}


def test_space_must_match_when_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    space = {"tile": [16, 32], "order": (0, 1, 2)}
    Study(path, space=space).close()
    assert load(path).space == {"tile": [16, 32], "order": [0, 1, 2]}
    Study(path, space={"tile": [16, 32], "order": [0, 1, 2]}).close()
    Study(path).close()
    with pytest.raises(StudyError, match="space differs"):
        Study(path, space={"tile": [16, 64]})
    assert Study(tmp_path / "no-space.jsonl").space is None


# -- locking ---------------------------------------------------------------------------------

SECOND_WRITER = """
import sys
from perfjax.errors import StudyError
from perfjax.study import Study
try:
    Study(sys.argv[1]).close()
except StudyError as exc:
    print(exc)
    sys.exit(3)
"""


def run_second_writer(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SECOND_WRITER, str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with Study(path) as study:
        study.append({"a": 1}, 1.0)
        with pytest.raises(StudyError, match=re.escape(str(path))):
            Study(path)
        other = run_second_writer(path)
        assert other.returncode == 3, other.stderr
        assert str(path) in other.stdout and "already open for writing" in other.stdout
        assert [r.id for r in load(path)] == [0]  # readers are not locked out
        study.append({"a": 2}, 2.0)
    # closing releases the lock, for this process and others
    other = run_second_writer(path)
    assert other.returncode == 0, other.stdout + other.stderr
    with Study(path) as study:
        assert study.append({"a": 3}, 3.0).id == 2


def test_forgotten_study_releases_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    Study(path).append({"a": 1}, 1.0)  # never closed; garbage as soon as the line ends
    with Study(path) as study:
        assert [r.config for r in study] == [{"a": 1}]


def test_append_validates_inputs_and_writes_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    bad_calls: list[tuple[dict[str, Any], str]] = [
        ({"config": [1, 2], "values": 1.0}, "config must be a dict"),
        ({"config": {1: 2}, "values": 1.0}, "config: key 1 is not a string"),
        ({"config": {"f": object()}, "values": 1.0}, "config['f']: value of type object"),
        ({"config": {"n": {"x": [1, {2}]}}, "values": 1.0}, "config['n']['x'][1]: value of type"),
        ({"config": {"x": math.nan}, "values": 1.0}, "config['x']: non-finite"),
        ({"config": {}, "values": "fast"}, "values must be a number"),
        ({"config": {}, "values": {"t": "1"}}, "values['t'] must be a number"),
        ({"config": {}, "values": {3: 1.0}}, "objective name 3"),
        ({"config": {}, "values": np.array([1.0, 2.0])}, "values must be a number"),
        ({"config": {}, "values": 1.0, "valid": "yes"}, "valid must be a bool"),
        ({"config": {}, "values": 1.0, "error": 3}, "error must be a str"),
        ({"config": {}, "values": 1.0, "wall_time": -1.0}, "wall_time"),
        ({"config": {}, "values": 1.0, "metadata": {"m": b"x"}}, "metadata['m']: value of type"),
    ]
    with Study(path) as study:
        for kwargs, message in bad_calls:
            with pytest.raises(StudyError, match=re.escape(message)):
                study.append(**kwargs)
        assert len(study) == 0
    assert len(strict_json_lines(path)) == 1  # only the header

    with pytest.raises(StudyError, match="closed"):
        study.append({}, 1.0)
    with pytest.raises(StudyError, match="read-only"):
        load(path).append({}, 1.0)


# -- the kill test ---------------------------------------------------------------------------


def load_writer_module() -> Any:
    spec = importlib.util.spec_from_file_location("study_writer_kill", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_during_appends_loses_no_confirmed_record(tmp_path: Path) -> None:
    writer = load_writer_module()
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    watchdog = threading.Timer(60, proc.kill)  # never hang the suite if the writer stalls
    watchdog.start()
    confirmed: list[int] = []
    try:
        while len(confirmed) < 200:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                pytest.fail(f"writer exited early ({proc.returncode}): {proc.stderr.read()!r}")
            confirmed.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        confirmed += [int(x) for x in proc.stdout.read().split()]  # printed before it died
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert confirmed == list(range(len(confirmed)))

    torn = not path.read_bytes().endswith(b"\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load(path)
    # A torn last line (killed mid-write) is reported, never raised; otherwise all is quiet.
    assert [w.category for w in caught] == ([StudyWarning] if torn else [])
    if torn:
        assert str(caught[0].message).startswith(f"{path}: line {len(study) + 2}")
        assert "incomplete last line" in str(caught[0].message)

    by_id = {r.id: r for r in study}
    for i in confirmed:
        assert by_id[i].config == writer.config_for(i)
        assert nan_safe(by_id[i].values) == nan_safe(writer.values_for(i))
        assert by_id[i].wall_time == 1e-3 * i
    # At most one record beyond the confirmed ones: appended, killed before its id was printed.
    assert sorted(set(by_id) - set(confirmed)) in ([], [len(confirmed)])
    assert study.header["metadata"] == {"writer": "kill-test"}

    # A new writer resumes after the last complete record, and its record is readable.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StudyWarning)
        resumed = Study(path)
    with resumed:
        record = resumed.append({"after": "kill"}, 1.0)
    assert record.id == max(by_id) + 1
    final = open_without_warnings(path).records
    assert [r.id for r in final] == [*sorted(by_id), record.id]
    assert final[-1].config == {"after": "kill"}


# -- tables ----------------------------------------------------------------------------------


def test_to_pandas_and_to_csv(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with Study(path) as study:
        a = study.append(
            {"tile": 32, "order": [2, 0, 1]},
            {"time": 1.5, "mem": 10.0},
            wall_time=0.25,
            metadata={"host": "a"},
        )
        b = study.append(
            {"tile": 64, "order": [0, 1, 2], "unroll": True},
            {"time": math.inf},
            valid=False,
            error="OOM",
            metadata={"host": "b", "retries": 2},
        )
    columns = [
        "id", "tile", "order", "unroll", "time", "mem",
        "valid", "error", "wall_time", "timestamp", "meta.host", "meta.retries",
    ]  # fmt: skip

    df = load(path).to_pandas()
    assert list(df.columns) == columns
    assert df["id"].tolist() == [0, 1]
    assert df["tile"].tolist() == [32, 64]
    assert df["order"].tolist() == [(2, 0, 1), (0, 1, 2)]
    assert df["unroll"].isna()[0] and df["unroll"][1] is True
    assert df["time"].tolist() == [1.5, math.inf]
    assert df["mem"][0] == 10.0 and math.isnan(df["mem"][1])
    assert df["valid"].tolist() == [True, False]
    assert df["error"].isna()[0] and df["error"][1] == "OOM"
    assert df["wall_time"].tolist() == [0.25, 0.0]
    assert df["timestamp"].tolist() == [a.timestamp, b.timestamp]
    assert df["meta.host"].tolist() == ["a", "b"]
    assert math.isnan(df["meta.retries"][0]) and df["meta.retries"][1] == 2

    out = tmp_path / "tables" / "s.csv"
    load(path).to_csv(out)
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == columns
    assert [row[columns.index("order")] for row in rows[1:]] == ["(2, 0, 1)", "(0, 1, 2)"]
    assert [row[columns.index("error")] for row in rows[1:]] == ["", "OOM"]
    back = pd.read_csv(out)
    assert back["id"].tolist() == [0, 1]
    assert back["tile"].tolist() == [32, 64]
    assert back["time"].tolist() == [1.5, math.inf]
    assert back["valid"].tolist() == [True, False]
    assert back["timestamp"].tolist() == [a.timestamp, b.timestamp]
    assert back["meta.host"].tolist() == ["a", "b"]

    empty = Study(tmp_path / "empty.jsonl").to_pandas()
    assert list(empty.columns) == ["id", "valid", "error", "wall_time", "timestamp"]
    assert len(empty) == 0


def test_to_pandas_refuses_clashing_column_names(tmp_path: Path) -> None:
    with Study(tmp_path / "s.jsonl") as study:
        study.append({"valid": 1}, 1.0)
        with pytest.raises(StudyError, match="'valid' would appear twice"):
            study.to_pandas()
    with Study(tmp_path / "t.jsonl") as study:
        study.append({"time": 1}, {"time": 2.0})
        with pytest.raises(StudyError, match="'time' would appear twice"):
            study.to_pandas()


def test_record_is_frozen(tmp_path: Path) -> None:
    with Study(tmp_path / "s.jsonl") as study:
        record = study.append({"a": 1}, 1.0)
    assert isinstance(record, Record)
    with pytest.raises(AttributeError):
        record.id = 5  # type: ignore[misc]
