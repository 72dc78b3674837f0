"""Opening a dataset that others publish: a Hub name, a local dataset folder or a data file.

Used where the project reads a dataset that others publish (prompt sets,
preference datasets). Local JSON — a ``.json`` / ``.jsonl`` file, or a
dataset folder whose data files are all JSON — is read with the project's
own line reader, so a bad record is named ``file:line`` (line numbers as an
editor shows them, blank lines skipped). Everything else (a Hub name,
parquet / csv / text files, a folder with other files or a README that
chooses its files) goes through ``datasets.load_dataset``; its rows are named
``source[split] row N`` (N from 0), and a source that ``datasets`` cannot
read is one :class:`SourceError` naming it. Offline
(``HF_DATASETS_OFFLINE=1``) only what is local or already in the
``datasets`` cache opens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from .jsonl import ReadStats, RecordError, iter_jsonl, parse_line

DATA_FILE_KINDS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
JSON_SUFFIXES = (".json", ".jsonl")


class SourceError(ValueError):
    """``datasets`` could not open or read a source (the message names the source and the cause)."""


def _root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost exception behind ``exc`` (``datasets`` wraps the real one)."""
    seen = exc
    while seen.__cause__ is not None or (seen.__context__ is not None and not seen.__suppress_context__):
        seen = seen.__cause__ or seen.__context__
    text = str(seen).strip() or "no message"
    return text if seen is exc else f"{str(exc).strip()} ({type(seen).__name__}: {text})"


def load_hf_dataset(source: str, split: str | None = None, config: str | None = None):
    """``(dataset, split)`` from ``datasets.load_dataset``: a Hub name, a local dataset folder or a local
    data file (by extension). Without ``split``, a source with one split gives that one; several are an
    error naming them. Whatever ``datasets`` raises becomes one error naming ``source``."""
    from datasets import load_dataset

    path = Path(source)
    try:
        if path.is_file():
            kind = DATA_FILE_KINDS.get(path.suffix)
            if kind is None:
                raise ValueError(f"{source}: cannot tell the file type from its extension "
                                 f"({', '.join(DATA_FILE_KINDS)})")
            return _checked(load_dataset, kind, data_files=str(path), split="train", source=source), "train"
        loaded = _checked(load_dataset, source, config, split=split, source=source, asked=split)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{source}: no such file, folder or Hub dataset ({exc})") from None
    if split is not None:
        return loaded, split
    if len(loaded) != 1:
        raise ValueError(f"{source} has splits {', '.join(loaded)}: choose one")
    (split, dataset), = loaded.items()
    return dataset, split


def _checked(load, *args, source: str, asked: str | None = None, **kwargs):
    """``load(*args, **kwargs)`` with the errors of ``datasets`` as one :class:`SourceError` naming ``source``
    (a split ``asked`` for that the source lacks: an error saying so). ``datasets`` also logs such failures
    at error level before raising; the one error raised here says it, so those log lines are held back."""
    import logging

    library_logger = logging.getLogger("datasets")
    level = library_logger.level
    library_logger.setLevel(logging.ERROR + 1)  # warnings still show
    try:
        return load(*args, **kwargs)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if asked is not None and "split" in str(exc).lower():
            raise ValueError(f"{source}: no split {asked!r} ({exc})") from None
        raise SourceError(f"{source}: datasets cannot read it: {_root_cause(exc)}") from None
    except Exception as exc:  # noqa: BLE001 — DatasetGenerationError, ArrowInvalid, ...: all name the source
        raise SourceError(f"{source}: datasets cannot read it: {_root_cause(exc)}") from None
    finally:
        library_logger.setLevel(level)


# ---------------------------------------------------------------- local JSON, read by the project's reader


def local_json_files(source: str, split: str | None = None, config: str | None = None) -> tuple[list[str], str] | None:
    """``(files, split)`` when ``source`` is local JSON the project reads itself: a ``.json`` / ``.jsonl``
    file (split ``train``), or a dataset folder whose data files (found as ``datasets`` finds them, split
    by their names) are all JSON. ``None`` for anything that goes to ``datasets``."""
    path = Path(source)
    if path.is_file():
        return ([source], "train") if path.suffix in JSON_SUFFIXES else None
    if not path.is_dir() or config is not None or _readme_chooses_files(path):
        return None
    from datasets.data_files import DataFilesDict, get_data_patterns
    from datasets.exceptions import DatasetsError

    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except (DatasetsError, FileNotFoundError):
        raise ValueError(f"{source}: no data file in this folder") from None
    found = {str(name): files for name, files in found.items()}  # split names are NamedSplit objects
    if not found or any(Path(f).suffix not in JSON_SUFFIXES for files in found.values() for f in files):
        return None
    if split is None:
        if len(found) != 1:
            raise ValueError(f"{source} has splits {', '.join(found)}: choose one")
        split = next(iter(found))
    if split not in found:
        raise ValueError(f"{source}: no split {split!r} (it has {', '.join(found)})")
    base = path.resolve()
    return [str(path / Path(f).resolve().relative_to(base)) for f in found[split]], split


def _readme_chooses_files(folder: Path) -> bool:
    """A dataset card whose YAML header has ``configs:`` chooses the data files: ``datasets`` reads it."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    header = text[3:].split("\n---", 1)[0]
    return any(line.startswith("configs:") for line in header.splitlines())


def iter_json_records(path: str | os.PathLike, *, skip_invalid: bool = False,
                      stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """``(line, object)`` of every record of a local JSON file: JSON Lines (``.jsonl``, or a ``.json``
    that is not one list), or one JSON list of objects (line = where the object starts). A bad record is
    a :class:`RecordError` naming file and line (``skip_invalid``: counted in ``stats``; a syntax error
    inside a list ends the list's reading, since nothing after it can be located)."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file() and _starts_with_list(path):  # else the line reader names the problem
        yield from _iter_json_list(path, skip_invalid=skip_invalid, stats=stats)
        return
    yield from iter_jsonl(path, skip_invalid=skip_invalid, stats=stats, with_lines=True)


def _starts_with_list(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _iter_json_list(path: Path, *, skip_invalid: bool, stats: ReadStats | None) -> Iterator[tuple[int, dict]]:
    stats = stats if stats is not None else ReadStats()
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise RecordError(path, data[:exc.start].count(b"\n") + 1, None,
                          f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted = 1, 0

    def skip_space(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    pos = skip_space(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        pos = skip_space(pos)
        start_line = line_at(pos)
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise RecordError(path, exc.lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        try:
            obj = parse_line(path, start_line, text[pos:end])  # the same checks as a JSONL line
        except RecordError as exc:
            if not skip_invalid:
                raise
            stats.skipped.append(exc)
        else:
            stats.read += 1
            yield start_line, obj
        pos = skip_space(end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            if text[skip_space(pos + 1):].strip():
                raise RecordError(path, line_at(skip_space(pos + 1)), None, "invalid JSON (text after the list)")
            return
        raise RecordError(path, line_at(min(pos, len(text))), None, "invalid JSON (expected ',' or ']' in the list)")


def iter_hf_rows(source: str, split: str | None = None, config: str | None = None, *, skip_invalid: bool = False,
                 stats: ReadStats | None = None) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` of every row of ``source``.

    Local JSON (see :func:`local_json_files`) is read with the project's
    reader: ``where`` is ``file:line``, a malformed record an error naming it
    (with ``skip_invalid``, counted in ``stats``). Other sources go through
    ``datasets`` (``where`` = ``source[split] row N``); there, columns a row
    does not have (``None`` after Arrow's schema merge) are left out.
    """
    local = local_json_files(source, split, config)
    if local is not None:
        files, _ = local
        for path in files:
            for lineno, obj in iter_json_records(path, skip_invalid=skip_invalid, stats=stats):
                yield f"{path}:{lineno}", obj
        return
    dataset, split = load_hf_dataset(source, split=split, config=config)
    rows = iter(dataset)
    i = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 — a row that Arrow cannot decode names the source and the row
            raise SourceError(f"{source}[{split}] row {i}: datasets cannot read it: {_root_cause(exc)}") from None
        yield f"{source}[{split}] row {i}", {k: v for k, v in row.items() if v is not None}
        i += 1


def row_error(where: str, exc: Any) -> ValueError:
    """A row's field error as ``source[split] row N: field 'F': message``."""
    return ValueError(f"{where}: {exc}")
