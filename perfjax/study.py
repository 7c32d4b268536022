"""The results store every optimizer writes to: an append-only JSON-lines study log.

A tuning run can take hours and can be killed at any moment (OOM killer, preempted node, Ctrl-C).
So each evaluation is written as one self-contained line and fsync'ed before `Study.append`
returns: every result an optimizer was told about survives a crash, and rerunning with the same
file resumes the study instead of repeating finished evaluations.

File format, version 1 (one JSON object per line)::

    {"perfjax_study": 1, "created": 1700000000.0, "space": {...} | null, "metadata": {...}}
    {"id": 0, "config": {"tile": 64, "order": [2, 0, 1]}, "values": {"value": 0.0012},
     "valid": true, "error": null, "wall_time": 1.3, "metadata": {}, "timestamp": 1700000001.2}

Objective values that are not finite are stored as the strings "nan", "inf" and "-inf", because
standard JSON has no literal for them (Python's `NaN`/`Infinity` extension is rejected by most
other JSON readers). A line that is not a complete, valid record -- typically the last line,
half-written when the writer was killed -- is skipped with a `StudyWarning` and never taken as
data; a writer truncates such a last line so its own records start on a fresh line. A last line
that is a complete, valid record but lacks its newline (stripped by an editor) is kept, and a
writer adds the newline.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perfjax.errors import StudyError, StudyWarning

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
"""Version of the file format this module reads and writes (the header's `perfjax_study`)."""

_HEADER_KEY = "perfjax_study"
_RECORD_FIELDS = frozenset(
    {"id", "config", "values", "valid", "error", "wall_time", "metadata", "timestamp"}
)
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_FIXED_COLUMNS = ("valid", "error", "wall_time", "timestamp")


@dataclass(frozen=True)
class Record:
    """One evaluation of one configuration, exactly as stored in the log.

    `values` maps objective name to float (nan/inf allowed: a failed or diverging measurement is
    still a result). `valid` is False when the evaluation failed; `error` then says why.
    """

    id: int
    config: dict[str, Any]
    values: dict[str, float]
    valid: bool
    error: str | None
    wall_time: float
    metadata: dict[str, Any]
    timestamp: float


class Study:
    """An open study log: the records already in the file plus, unless read-only, appends.

    A writer holds an exclusive `flock` on the file until `close()`, so two writers (threads of
    different Study objects, or processes) cannot interleave lines; readers (`read_only=True`)
    take no lock and may watch a running study, possibly seeing its in-progress last line as
    incomplete. `space` is stored in the header of a new file; when reopening, a given `space`
    must equal the stored one, so results of different search spaces are never mixed. `metadata`
    is stored in the header of a new file only.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        space: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        read_only: bool = False,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise StudyError(f"study path must be a str or path, not {type(path).__name__}")
        self._path = Path(path)
        self._read_only = read_only
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._records: list[Record] = []
        self._next_id = 0
        space_json = None if space is None else _json_dict(space, "space")
        metadata_json = {} if metadata is None else _json_dict(metadata, "metadata")
        if read_only:
            try:
                data = self._path.read_bytes()
            except OSError as exc:
                raise StudyError(f"{self._path}: cannot read study: {exc.strerror or exc}") from exc
            if not data:
                raise StudyError(f"{self._path}: file is empty, not a perfjax study")
            self._header = self._load(data, fd=None)
            self._check_space(space_json)
            return
        fd = _open_locked(self._path)
        try:
            data = _read_all(fd)
            if data:
                self._header = self._load(data, fd=fd)
                self._check_space(space_json)
            else:
                self._header = {
                    _HEADER_KEY: FORMAT_VERSION,
                    "created": time.time(),
                    "space": space_json,
                    "metadata": metadata_json,
                }
                _write_line(fd, self._header)
                _fsync_dir(self._path.parent)
        except BaseException:
            os.close(fd)  # also releases the lock
            raise
        self._fd = fd

    # -- reading -----------------------------------------------------------------------------

    def _load(self, data: bytes, fd: int | None) -> dict[str, Any]:
        """Parse the file's bytes into `self._records`; return the header.

        With `fd` (a writer), an incomplete last line is truncated away (or, if it is a complete
        record missing only its newline, the newline is added) so the next append starts on a
        fresh line; a reader leaves the file untouched.
        """
        *lines, tail = data.split(b"\n")
        complete_tail = False
        if not lines and tail:  # a header whose newline was stripped (by an editor, say)
            lines, tail, complete_tail = [tail], b"", True
        if not lines:
            raise StudyError(f"{self._path}: not a perfjax study (no complete header line)")
        header = self._decode_header(lines[0])
        for lineno, raw in enumerate(lines[1:], start=2):
            try:
                self._add_record(raw)
            except (ValueError, RecursionError) as exc:
                self._warn(lineno, f"not a valid record ({exc}); skipped")
        if tail:
            try:  # a complete record whose newline was stripped is data, not a half-written line
                self._add_record(tail)
                complete_tail = True
            except (ValueError, RecursionError):
                pass
        if complete_tail:
            if fd is not None:
                try:
                    _mend_last_line(fd, len(data), tail, complete=True)
                except OSError as exc:
                    raise StudyError(
                        f"{self._path}: cannot add the missing final newline: {exc.strerror}"
                    ) from exc
        elif tail:
            what = "incomplete last line (no newline; probably half-written by a crash)"
            if fd is None:
                self._warn(len(lines) + 1, f"{what}; skipped")
            else:
                try:
                    _mend_last_line(fd, len(data), tail, complete=False)
                except OSError as exc:
                    raise StudyError(
                        f"{self._path}: cannot truncate incomplete last line: {exc.strerror}"
                    ) from exc
                self._warn(len(lines) + 1, f"{what}; skipped and truncated")
        return header

    def _add_record(self, raw: bytes) -> None:
        """Append the record stored on line `raw`; ValueError if it is not a valid next record."""
        record = _decode_record(json.loads(raw))
        if record.id < self._next_id:
            raise ValueError(f"id {record.id} does not follow id {self._next_id - 1}")
        self._records.append(record)
        self._next_id = record.id + 1

    def _decode_header(self, raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict) or _HEADER_KEY not in header:
            raise StudyError(f"{self._path}: not a perfjax study (line 1 is not a study header)")
        if header[_HEADER_KEY] != FORMAT_VERSION:
            raise StudyError(
                f"{self._path}: unsupported study format version {header[_HEADER_KEY]!r} "
                f"(this perfjax reads version {FORMAT_VERSION})"
            )
        if (
            not _is_number(header.get("created"))
            or not isinstance(header.get("space", None), dict | None)
            or not isinstance(header.get("metadata"), dict)
        ):
            raise StudyError(
                f"{self._path}: corrupt study header (needs a numeric 'created', "
                "a dict or null 'space' and a dict 'metadata')"
            )
        return header

    def check_space(self, space: Mapping[str, Any]) -> None:
        """StudyError unless `space` equals the space stored in the study (a study stored
        without a space passes): the check the constructor makes for its `space` argument."""
        if self._header.get("space") is not None:
            self._check_space(_json_dict(space, "space"))

    def _check_space(self, space: dict[str, Any] | None) -> None:
        if space is not None and space != self._header.get("space"):
            raise StudyError(
                f"{self._path}: the given space differs from the space stored in the study; "
                "use a new study file for a different search space"
            )

    def _warn(self, lineno: int, message: str) -> None:
        # stacklevel 4 points at the code that opened the study (Study() -> _load -> _warn).
        warnings.warn(f"{self._path}: line {lineno}: {message}", StudyWarning, stacklevel=4)

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        config: Mapping[str, Any],
        values: float | Mapping[str, float],
        *,
        valid: bool = True,
        error: str | None = None,
        wall_time: float = 0.0,
        metadata: Mapping[str, Any] | None = None,
    ) -> Record:
        """Store one evaluation durably and return it as a `Record` with the next id.

        `values` is one float (stored as objective "value") or a dict of objective name to float.
        When this returns, the record is on disk (written and fsync'ed); safe to call from
        several threads.
        """
        config_json = _json_dict(config, "config")
        values_json = _objective_values(values)
        if not isinstance(valid, bool | np.bool_):
            raise StudyError(f"valid must be a bool, not {type(valid).__name__}")
        if error is not None and not isinstance(error, str):
            raise StudyError(f"error must be a str or None, not {type(error).__name__}")
        wall = _to_float(wall_time, "wall_time")
        if not (math.isfinite(wall) and wall >= 0):
            raise StudyError(f"wall_time must be a finite number of seconds >= 0, not {wall!r}")
        metadata_json = {} if metadata is None else _json_dict(metadata, "metadata")
        with self._lock:
            if self._fd is None:
                state = "opened read-only" if self._read_only else "closed"
                raise StudyError(f"{self._path}: cannot append, the study is {state}")
            record = Record(
                id=self._next_id,
                config=config_json,
                values=values_json,
                valid=bool(valid),
                error=error,
                wall_time=wall,
                metadata=metadata_json,
                timestamp=time.time(),
            )
            size = os.fstat(self._fd).st_size
            try:
                _write_line(self._fd, _encode_record(record))
            except OSError as exc:
                # Drop whatever part of the line reached the file: it was never confirmed.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, size)
                raise StudyError(
                    f"{self._path}: cannot append record {record.id}: {exc.strerror or exc}"
                ) from exc
            self._records.append(record)
            self._next_id += 1
        return record

    def close(self) -> None:
        """Release the write lock and the file; records stay readable. Closing twice is fine."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        # A forgotten Study must not keep its lock (and fd) until the process exits.
        if getattr(self, "_fd", None) is not None:
            self.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- access ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def header(self) -> dict[str, Any]:
        """A copy of the header record (format version, creation time, space, metadata)."""
        return copy.deepcopy(self._header)

    @property
    def space(self) -> dict[str, Any] | None:
        """A copy of the search space stored when the study was created, or None."""
        return copy.deepcopy(self._header.get("space"))

    @property
    def records(self) -> list[Record]:
        """A snapshot of the records, in id order (appends by other threads do not change it)."""
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "closed" if self._fd is None else "writable"
        return f"Study({str(self._path)!r}, {len(self)} records, {mode})"

    def best(self, objective: str = "value", minimize: bool = True) -> Record | None:
        """The valid record with the lowest (or highest) finite `objective`; the first on ties.

        None when no valid record has a finite value for `objective`.
        """
        candidates = [
            r for r in self.records if r.valid and math.isfinite(r.values.get(objective, math.nan))
        ]
        if not candidates:
            return None
        choose = min if minimize else max
        return choose(candidates, key=lambda r: r.values[objective])

    def to_pandas(self) -> pd.DataFrame:
        """One row per record: id, each parameter, each objective, valid, error, wall_time,
        timestamp and each metadata key as `meta.<key>`.

        Permutations (lists) become tuples so the columns can be grouped and compared. Raises
        StudyError if two columns would get the same name (e.g. a parameter called "valid").
        """
        import pandas as pd  # here, not at the top: processes that only write results skip it

        records = self.records
        config_keys = _ordered_keys(r.config for r in records)
        objectives = _ordered_keys(r.values for r in records)
        meta_keys = _ordered_keys(r.metadata for r in records)
        columns = [
            "id",
            *config_keys,
            *objectives,
            *_FIXED_COLUMNS,
            *(f"meta.{k}" for k in meta_keys),
        ]
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise StudyError(
                    f"{self._path}: column {column!r} would appear twice in the table "
                    "(a parameter, objective or fixed column share that name)"
                )
            seen.add(column)
        rows = [
            {
                "id": r.id,
                **{k: _tuples(v) for k, v in r.config.items()},
                **r.values,
                "valid": r.valid,
                "error": r.error,
                "wall_time": r.wall_time,
                "timestamp": r.timestamp,
                **{f"meta.{k}": v for k, v in r.metadata.items()},
            }
            for r in records
        ]
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write `to_pandas()` as CSV (no index column), creating missing directories."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_pandas().to_csv(path, index=False)


def load(path: str | os.PathLike[str]) -> Study:
    """Open an existing study read-only (for analysis; it takes no lock and changes nothing)."""
    return Study(path, read_only=True)


# -- file helpers ----------------------------------------------------------------------------


def _open_locked(path: Path) -> int:
    """Open (creating if needed) `path` for appending and take the exclusive writer lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise StudyError(f"{path}: cannot open study for writing: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StudyError(
                f"{path}: study is already open for writing (by another Study in this or "
                "another process)"
            ) from None
        raise StudyError(f"{path}: cannot lock study: {exc.strerror or exc}") from exc
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _mend_last_line(fd: int, size: int, tail: bytes, complete: bool) -> None:
    """Make a JSON-lines file of ``size`` bytes, whose last line ``tail`` has no newline, ready
    for appends: a ``complete`` record gets its newline, a torn one is cut off; then fsync."""
    if complete:
        os.write(fd, b"\n")
    else:
        os.ftruncate(fd, size - len(tail))
    os.fsync(fd)


def _write_line(fd: int, obj: dict[str, Any]) -> None:
    """Write `obj` as one JSON line and fsync, so it is on disk when this returns."""
    text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    try:
        line = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\udcff", from bytes decoded with surrogateescape) has no UTF-8
        # form: escape it (and all non-ASCII) as \uXXXX, still valid JSON read back unchanged.
        text = json.dumps(obj, allow_nan=False, ensure_ascii=True, separators=(",", ":"))
        line = (text + "\n").encode("utf-8")
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too (best effort: not every fs allows it)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- conversion and validation ---------------------------------------------------------------


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _to_json(value: Any, where: str) -> Any:
    """`value` as plain JSON types; numpy/array-like values are converted, the rest rejected.

    Raises StudyError naming `where` (e.g. "config['tile']") for anything that cannot be stored.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic) or (
        hasattr(value, "__array__") and not isinstance(value, list | tuple | Mapping)
    ):
        # np.int64 -> int, np.bool_ -> bool, arrays (numpy, JAX, ...) -> nested lists
        return _to_json(np.asarray(value).tolist(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StudyError(
                f"{where}: non-finite float {value!r} cannot be stored (JSON has no literal for it)"
            )
        return float(value)
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return _json_dict(value, where)
    raise StudyError(f"{where}: value of type {type(value).__name__} is not JSON-serializable")


def _json_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise StudyError(f"{where} must be a dict, not {type(value).__name__}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise StudyError(f"{where}: key {key!r} is not a string")
        out[key] = _to_json(item, f"{where}[{key!r}]")
    return out


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool | np.bool_ | str | bytes):
        raise StudyError(f"{where} must be a number, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError as exc:
        raise StudyError(f"{where} is too large for a float: {_short(value)}") from exc
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{where} must be a number, not {type(value).__name__}") from exc


def _short(value: Any) -> str:
    """`value` for an error message: huge integers by their digit count, not 400 digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _objective_values(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {"value": _to_float(values, "values")}
    out = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise StudyError(f"values: objective name {name!r} is not a string")
        out[name] = _to_float(value, f"values[{name!r}]")
    return out


def _encode_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else "inf" if x > 0 else "-inf"


def _encode_record(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "config": record.config,
        "values": {k: _encode_float(v) for k, v in record.values.items()},
        "valid": record.valid,
        "error": record.error,
        "wall_time": record.wall_time,
        "metadata": record.metadata,
        "timestamp": record.timestamp,
    }


def _decode_record(obj: Any) -> Record:
    """The Record stored as `obj`; ValueError saying what is wrong if it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if set(obj) != _RECORD_FIELDS:
        missing = sorted(_RECORD_FIELDS - set(obj))
        extra = sorted(set(obj) - _RECORD_FIELDS)
        raise ValueError(f"missing fields {missing}, unknown fields {extra}")
    if not (isinstance(obj["id"], int) and not isinstance(obj["id"], bool) and obj["id"] >= 0):
        raise ValueError("'id' is not a non-negative integer")
    for field, kind in (("config", dict), ("values", dict), ("metadata", dict), ("valid", bool)):
        if not isinstance(obj[field], kind):
            raise ValueError(f"{field!r} is not a {kind.__name__}")
    if not isinstance(obj["error"], str | None):
        raise ValueError("'error' is not a string or null")
    for field in ("wall_time", "timestamp"):
        if not _is_number(obj[field]):
            raise ValueError(f"{field!r} is not a number")
    values = {}
    for name, value in obj["values"].items():
        if isinstance(value, str) and value in _NONFINITE:
            values[name] = _NONFINITE[value]
        elif _is_number(value):
            values[name] = float(value)
        else:
            raise ValueError(f"value of objective {name!r} is not a number")
    return Record(
        id=obj["id"],
        config=obj["config"],
        values=values,
        valid=obj["valid"],
        error=obj["error"],
        wall_time=float(obj["wall_time"]),
        metadata=obj["metadata"],
        timestamp=float(obj["timestamp"]),
    )


def _ordered_keys(mappings: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys of all `mappings`, each once, in first-seen order (the table's column order)."""
    return list(dict.fromkeys(k for m in mappings for k in m))


def _tuples(value: Any) -> Any:
    """Lists (permutations) as tuples, recursively, so table cells are hashable."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
