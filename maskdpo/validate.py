"""Checks that span records or files, shared by every stage that reads them.

:mod:`maskdpo.records` checks one record at a time (fields, spans, labels);
this module checks what one record cannot see:

- a key that repeats (a question id, a sample's ``(question_id,
  sample_index)``, a pair id) is an error naming both lines — a repeated
  annotation must never be counted twice;
- an empty input is an error unless the caller allows it (``--allow-empty``);
- all samples of one question must share one prompt, and every sample's
  question must be in the questions file;
- a pair must carry signal on both sides: at least one sentence the loss keeps
  (:func:`validate_pair`, before tokenization) and at least one kept response
  token besides the end-of-turn token (:func:`token_signal_problem`, after);
- an output location must be writable before any model loads
  (:func:`check_output_file`, :func:`check_output_dir`).

With ``skip_invalid`` a line that fails a check is skipped and counted in the
same :class:`~maskdpo.jsonl.ReadStats` as a malformed line, so every command
reports the same count for the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Hashable, Iterable, TypeVar

from .jsonl import ReadStats, RecordError, iter_jsonl

T = TypeVar("T")


class EmptyInput(ValueError):
    """An input file holds no usable record."""


class OutputError(ValueError):
    """An output location cannot be written (checked before any work starts)."""


# ---------------------------------------------------------------- reading


def read_records(
    path: str | os.PathLike,
    parse: Callable[[dict], T],
    *,
    key: Callable[[T], Hashable] | None = None,
    key_field: str | None = None,
    what: str = "record",
    skip_invalid: bool = False,
    allow_empty: bool = False,
    stats: ReadStats | None = None,
) -> list[tuple[int, T]]:
    """``(line, record)`` for every record of ``path``, with duplicates and emptiness checked.

    ``key(record)`` identifies a record; a key seen on an earlier line is a
    :class:`RecordError` naming this line, ``key_field`` and the earlier line
    (with ``skip_invalid``: the later line is skipped and counted). A file
    with no usable record raises :class:`EmptyInput` unless ``allow_empty``.
    """
    stats = stats if stats is not None else ReadStats()
    out: list[tuple[int, T]] = []
    first_line: dict[Hashable, int] = {}
    for lineno, record in iter_jsonl(path, parse, skip_invalid=skip_invalid, stats=stats, with_lines=True):
        if key is not None:
            k = key(record)
            if k in first_line:
                error = RecordError(path, lineno, key_field, f"{what} {_show_key(k)} repeats line {first_line[k]}")
                skip_line(error, skip_invalid, stats)
                continue
            first_line[k] = lineno
        out.append((lineno, record))
    if not out:
        check_not_empty(path, stats, allow_empty, what)
    return out


def check_not_empty(path: str | os.PathLike, stats: ReadStats, allow_empty: bool, what: str = "record") -> None:
    """A file that gave no usable record is an error unless ``allow_empty``."""
    if allow_empty:
        return
    skipped = f" ({len(stats.skipped)} invalid lines skipped, first: {stats.skipped[0]})" if stats.skipped else ""
    raise EmptyInput(f"{path}: no {what} to read{skipped}; pass --allow-empty to accept an empty input")


def skip_line(error: RecordError, skip_invalid: bool, stats: ReadStats) -> None:
    """Raise ``error``, or (``skip_invalid``) count the line as skipped instead of read."""
    if not skip_invalid:
        raise error
    stats.read -= 1
    stats.skipped.append(error)


def _show_key(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) == 2:
        return f"({key[0]!r}, {key[1]!r})"
    return repr(key)


def sample_key(record) -> tuple[str, int]:
    return record.key


def read_questions(path, *, skip_invalid=False, allow_empty=False, stats=None):
    """Question records with lines; a repeated id is an error naming both lines."""
    from .records import Question

    return read_records(path, Question.from_dict, key=lambda q: q.id, key_field="id", what="question id",
                        skip_invalid=skip_invalid, allow_empty=allow_empty, stats=stats)


def read_samples(path, parse=None, *, skip_invalid=False, allow_empty=False, stats=None):
    """Sample (or, with ``parse=Annotation.from_dict``, annotation) records with lines; a repeated
    ``(question_id, sample_index)`` is an error naming both lines."""
    from .records import Sample

    return read_records(path, parse or Sample.from_dict, key=sample_key, key_field="sample_index",
                        what="sample (question_id, sample_index)", skip_invalid=skip_invalid,
                        allow_empty=allow_empty, stats=stats)


def read_annotations(path, *, skip_invalid=False, allow_empty=False, stats=None):
    from .records import Annotation

    return read_samples(path, Annotation.from_dict, skip_invalid=skip_invalid, allow_empty=allow_empty,
                        stats=stats)


def read_pair_records(path, *, skip_invalid=False, allow_empty=False, stats=None):
    """Pair records (ours or the authors') with lines; a repeated pair id is an error naming both lines."""
    from .records import parse_pair

    return read_records(path, parse_pair, key=lambda p: p.id, key_field="id", what="pair id",
                        skip_invalid=skip_invalid, allow_empty=allow_empty, stats=stats)


# ---------------------------------------------------------------- checks across records


def check_same_prompt(path: str | os.PathLike, located: list[tuple[int, T]], *, skip_invalid: bool = False,
                      stats: ReadStats | None = None) -> list[tuple[int, T]]:
    """All samples of one question carry the same prompt (``messages``): a pair needs one prompt.

    A sample whose prompt differs from the first one of its question is an
    error naming both lines (with ``skip_invalid``: skipped and counted).
    """
    stats = stats if stats is not None else ReadStats()
    first: dict[str, tuple[int, list]] = {}
    out = []
    for lineno, record in located:
        seen = first.setdefault(record.question_id, (lineno, record.messages))
        if seen[1] != record.messages:
            skip_line(RecordError(path, lineno, "messages", f"question {record.question_id!r} has another prompt on "
                                                            f"line {seen[0]}; all its samples need one prompt"),
                      skip_invalid, stats)
            continue
        out.append((lineno, record))
    return out


def check_known_questions(path: str | os.PathLike, located: Iterable[tuple[int, T]], questions: dict,
                          questions_path: str | os.PathLike) -> None:
    """Every sample's ``question_id`` is in the questions file; the first one that is not is an error."""
    for lineno, record in located:
        if record.question_id not in questions:
            raise RecordError(path, lineno, "question_id",
                              f"question {record.question_id!r} is not in {questions_path}")


# ---------------------------------------------------------------- pairs


def _correct_fraction(item) -> float | None:
    from .labels import CORRECT

    return sum(t == CORRECT for t in item.type) / len(item.type) if item.type else None


def validate_pair(pair, mask: str = "both") -> str | None:
    """What makes ``pair`` useless for training under ``mask``, or None when it is usable.

    Decided on sentences, before tokenization:

    - chosen and rejected are the same text;
    - a side keeps no non-blank sentence under ``mask`` (the chosen side
      keeps its ``no_hallucination`` sentences, the rejected side its
      ``hallucination`` ones; a side the mode does not mask keeps all): the
      end-of-turn token alone would carry the loss;
    - the pair is inverted: the chosen response has a smaller fraction of
      correct sentences than the rejected one.

    :func:`token_signal_problem` makes the same check on the tokenized pair.
    """
    from .masking import check_mask_mode, keep_flags

    check_mask_mode(mask)
    if pair.chosen == pair.rejected:
        return "chosen and rejected are the same response"
    for side in ("chosen", "rejected"):
        item = getattr(pair, f"{side}_item")
        text = getattr(pair, side)
        if mask == "none" or (mask != "both" and mask != side):
            if not text.strip():
                return f"the {side} response is empty"
            continue
        keep = keep_flags(item, side, mask)
        if not any(k and s.strip() for k, s in zip(keep, item.sents)):
            wanted = "no_hallucination" if side == "chosen" else "hallucination"
            return (f"no {side} sentence is kept by the loss (mask={mask} keeps the {side} side's {wanted} "
                    f"sentences; it has none): the pair carries no signal on that side")
    chosen, rejected = _correct_fraction(pair.chosen_item), _correct_fraction(pair.rejected_item)
    if chosen is not None and rejected is not None and chosen < rejected:
        return (f"inverted pair: the chosen response has fewer correct sentences ({chosen:.2f}) than the "
                f"rejected one ({rejected:.2f})")
    return None


def token_signal_problem(masked_pair) -> str | None:
    """After tokenization: a side with no kept response token besides what the template adds after
    the content (the end-of-turn token) carries no signal; returns why, or None."""
    for side in ("chosen", "rejected"):
        seq = getattr(masked_pair, side)
        if seq.kept_content == 0:
            cut = f" (truncated to {len(seq.input_ids)} tokens)" if seq.truncated else ""
            return (f"no {side} response token is kept by the loss besides the end-of-turn token{cut}: "
                    "the pair carries no signal on that side")
    return None


# ---------------------------------------------------------------- outputs


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path) -> str | None:
    """Why nothing can be created in ``folder`` (tried for real: permissions, read-only mounts), or None."""
    try:
        fd, name = tempfile.mkstemp(prefix=".maskdpo-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def check_output_file(path: str | os.PathLike, option: str = "--out") -> None:
    """``path`` can be written (created, or appended to), checked before any work or model load."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory; give a file path")
    if path.exists():
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            raise OutputError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
        return
    _check_creatable(path, option)


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """``path`` is, or can be created as, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file; give a folder")
    if path.is_dir():
        why = _probe_writable(path)
        if why:
            raise OutputError(f"{option} {path}: cannot write in it ({why})")
        return
    _check_creatable(path, option)


def _check_creatable(path: Path, option: str) -> None:
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: cannot create it: {ancestor} is a file, not a folder")
    why = _probe_writable(ancestor)
    if why:
        raise OutputError(f"{option} {path}: cannot create it in {ancestor} ({why})")
