"""JSONL reading with ``file:line`` errors, and append-only resumable writing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, TypeVar

T = TypeVar("T")


class FieldError(ValueError):
    """A record field is missing or wrong. Raised by parsers; the reader adds file and line."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field = field
        self.message = message


class RecordError(ValueError):
    """A bad line in a JSONL file, naming the file, the line and the field at fault."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, message: str):
        where = f"{path}:{line}"
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message


@dataclass
class ReadStats:
    """What a read saw: records returned and lines skipped (with ``skip_invalid``)."""

    read: int = 0
    skipped: list[RecordError] = field(default_factory=list)

    def summary(self, path: str | os.PathLike) -> str:
        text = f"{path}: {self.read} records"
        if self.skipped:
            text += f", {len(self.skipped)} invalid lines skipped (first: {self.skipped[0]})"
        return text


def iter_jsonl(
    path: str | os.PathLike,
    parse: Callable[[dict], T] | None = None,
    *,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    with_lines: bool = False,
) -> Iterator[T]:
    """Yield ``parse(obj)`` for each non-blank line of ``path`` (``(line, parse(obj))`` with ``with_lines``).

    A malformed line raises :class:`RecordError` naming file, line and field;
    with ``skip_invalid`` it is counted in ``stats.skipped`` instead.
    """
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(path, lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise RecordError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
                try:
                    record = parse(obj) if parse else obj
                except FieldError as exc:
                    raise RecordError(path, lineno, exc.field, exc.message) from None
            except RecordError as exc:
                if not skip_invalid:
                    raise
                stats.skipped.append(exc)
                continue
            stats.read += 1
            yield (lineno, record) if with_lines else record


def load_jsonl(
    path: str | os.PathLike,
    parse: Callable[[dict], T] | None = None,
    *,
    skip_invalid: bool = False,
) -> tuple[list[T], ReadStats]:
    """Read a whole JSONL file; see :func:`iter_jsonl`."""
    stats = ReadStats()
    records = list(iter_jsonl(path, parse, skip_invalid=skip_invalid, stats=stats))
    return records, stats


def dump_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: str | os.PathLike, objects: list[dict]) -> None:
    """Write a whole file at once, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for obj in objects:
            handle.write(dump_line(obj))
    os.replace(tmp, path)


class JsonlAppender:
    """Append-only JSONL writer that resumes by key.

    On open it reads the records already in the file and remembers their keys
    (``key(obj)``); a torn last line left by a kill mid-write is cut off, so a
    restart neither loses nor duplicates a record. Each record is flushed as it
    is written.
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[dict], Hashable]):
        self.path = Path(path)
        self.key = key
        self.done: set[Hashable] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        if self.path.exists():
            for n, obj in enumerate(iter_jsonl(self.path), start=1):
                k = key(obj)
                if k in self.done:
                    raise RecordError(self.path, n, None, f"record {n} repeats key {k!r} of an earlier record")
                self.done.add(k)
        self._handle = self.path.open("a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
            data = handle.seek(0) or handle.read()
            cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
            handle.truncate(cut)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.done

    def write(self, obj: dict) -> None:
        k = self.key(obj)
        if k in self.done:
            raise ValueError(f"{self.path}: record {k!r} is already written")
        self._handle.write(dump_line(obj))
        self._handle.flush()
        self.done.add(k)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
