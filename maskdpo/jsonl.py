"""JSONL reading with ``file:line`` errors, and append-only resumable writing."""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, TextIO, TypeVar

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


def _open_for_reading(path: Path):
    """``path`` opened in binary mode; a missing file, a folder or an unreadable file is an error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a JSONL file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise OSError(f"{path}: cannot read ({exc.strerror or exc})") from None


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, "str | RecordError"]]:
    """``(line number, text)`` for every line of ``path``, blank ones included.

    Lines end at ``\n`` only and are counted from the file (line 1 is the
    first), so a reported line is the line an editor shows. A line that is not
    UTF-8 comes as a :class:`RecordError` naming it, in place of its text (the
    caller raises or skips it); a byte-order mark on line 1 is dropped. Read
    errors name the file and the line being read.
    """
    path = Path(path)
    with _open_for_reading(path) as handle:
        lineno = 0
        while True:
            try:
                raw = handle.readline()
            except OSError as exc:
                raise OSError(f"{path}:{lineno + 1}: read error ({exc.strerror or exc})") from None
            if not raw:
                return
            lineno += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, RecordError(path, lineno, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                                                             f"at byte {exc.start + 1} of the line)")
                continue
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield lineno, text


class _NonFinite:
    """Stands for a NaN / Infinity (or out-of-range) number while a line is parsed, to find its field."""

    def __init__(self, text: str):
        self.text = text


def _nonfinite_path(obj: Any, prefix: str = "") -> tuple[str, str] | None:
    """``(field, number text)`` of the first :class:`_NonFinite` in ``obj``."""
    if isinstance(obj, _NonFinite):
        return prefix, obj.text
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _nonfinite_path(v, f"{prefix}[{k}]" if isinstance(k, int) else f"{prefix}.{k}" if prefix else k)
        if found:
            return found
    return None


def parse_line(path: str | os.PathLike, lineno: int, line: str) -> dict:
    """One JSON object from one line; anything else is a :class:`RecordError` naming file and line.

    ``NaN``, ``Infinity`` and numbers out of a double's range are refused,
    naming their field: they are not JSON, and a score or setting that is not
    a number would pass every later check.
    """
    nonfinite: list[_NonFinite] = []

    def constant(text: str) -> _NonFinite:
        nonfinite.append(_NonFinite(text))
        return nonfinite[-1]

    def number(text: str) -> Any:
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    try:
        obj = json.loads(line, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise RecordError(path, lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise RecordError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
    if nonfinite:
        where, text = _nonfinite_path(obj) or (None, nonfinite[0].text)
        raise RecordError(path, lineno, where or None, f"{text} is not a finite number (JSON has no NaN or Infinity)")
    return obj


def iter_jsonl(
    path: str | os.PathLike,
    parse: Callable[[dict], T] | None = None,
    *,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    with_lines: bool = False,
) -> Iterator[T]:
    """Yield ``parse(obj)`` for each non-blank line of ``path`` (``(line, parse(obj))`` with ``with_lines``).

    A malformed line (not UTF-8, not a JSON object, a bad field) raises
    :class:`RecordError` naming file, line and field; with ``skip_invalid`` it
    is counted in ``stats.skipped`` instead. Line numbers count every line of
    the file, blank ones included.
    """
    stats = stats if stats is not None else ReadStats()
    for lineno, line in iter_lines(path):
        if isinstance(line, str) and not line.strip():
            continue
        try:
            if isinstance(line, RecordError):
                raise line
            obj = parse_line(path, lineno, line)
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


def read_json_file(path: str | os.PathLike, what: str, missing_hint: str = "") -> Any:
    """The JSON value of a whole file (a world file, a prompt file): a missing file is a
    ``FileNotFoundError``, invalid JSON a ``ValueError``, each naming the file and what it should be."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}{missing_hint}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a {what}: invalid JSON at line {exc.lineno} ({exc.msg})") from None


def dump_line(obj: Any) -> str:
    """One JSONL line; NaN and Infinity raise ``ValueError`` (they are not JSON)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text handle whose contents replace ``path`` only when the block ends without an error: written to
    a temporary name, then renamed, so a kill or a failure leaves the old file or none, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | os.PathLike, objects: list[dict]) -> None:
    """Write a whole file at once, atomically (:func:`atomic_file`)."""
    with atomic_file(path) as handle:
        for obj in objects:
            handle.write(dump_line(obj))


class JsonlAppender:
    """Append-only JSONL writer that resumes by key.

    On open it reads the records already in the file and remembers their keys
    (``key(obj)``; a record the key cannot be read from, or a repeated key, is
    an error naming file and line); a torn last line left by a kill mid-write
    is cut off, so a restart neither loses nor duplicates a record. The file
    (and its folder) is created at the first write, so a run that stops before
    writing leaves nothing behind. Each record is flushed as it is written.
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[dict], Hashable]):
        self.path = Path(path)
        self.key = key
        self.done: set[Hashable] = set()
        self._handle = None
        self._repair_torn_tail()
        if self.path.exists():
            lines: dict[Hashable, int] = {}
            for lineno, obj in iter_jsonl(self.path, with_lines=True):
                k = self._key_at(obj, lineno)
                if k in lines:
                    raise RecordError(self.path, lineno, None, f"record key {k!r} repeats line {lines[k]}")
                lines[k] = lineno
            self.done = set(lines)

    def _key_at(self, obj: dict, lineno: int) -> Hashable:
        try:
            return self.key(obj)
        except KeyError as exc:
            raise RecordError(self.path, lineno, str(exc.args[0]), "missing (cannot resume this output)") from None
        except (TypeError, ValueError) as exc:
            raise RecordError(self.path, lineno, None, f"cannot read the record's key to resume: {exc}") from None

    def _repair_torn_tail(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
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
        line = dump_line(obj)  # before opening: a record that cannot be written leaves no empty file
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(line)
        self._handle.flush()
        self.done.add(k)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
