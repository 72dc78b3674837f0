"""Importing an existing preference dataset as ``maskdpo`` questions and samples.

A preference row holds a prompt and two responses, one preferred. Read as
two samples of one question, it can go through ``maskdpo annotate`` (a label
per sentence) and ``maskdpo pairs`` like any sampled data, and so be trained
with Mask-DPO. Accepted row layouts (per row, so a file may mix them):

- TRL's explicit prompt, standard: ``{"prompt": str, "chosen": str, "rejected": str}``;
- TRL's explicit prompt, conversational, which is also XTuner's DPO JSONL:
  ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``;
- TRL's implicit prompt, conversational: ``{"chosen": [messages], "rejected": [messages]}``
  — two whole chats that share every message but the last (the assistant's answer).

Per row this writes one question (the last user message; ``id`` from the
row's content, so re-imports and reorderings give the same ids) and two
samples of it: ``sample_index`` 0 is the dataset's chosen response, 1 its
rejected one (``meta.preference`` says which, ``meta.source`` and
``meta.row`` where it came from). ``maskdpo pairs`` then orders them by
their annotated scores, which may disagree with the dataset's preference.

Sources: local JSON — a ``.jsonl`` or ``.json`` file, or a dataset folder of
them — is read with the project's reader (errors name ``file:line: field``);
anything else — a Hub dataset name, ``.parquet``/``.csv`` files, a folder of
them — goes through ``datasets.load_dataset`` (errors name ``source[split]
row N: field``, and a source it cannot read is one error naming it). See
:mod:`maskdpo.hfdata`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .hfdata import iter_hf_rows
from .jsonl import FieldError, ReadStats, RecordError, dump_line
from .records import LANGUAGES, Question, Sample, parse_messages
from .validate import EmptyInput, check_output_dir

BACKEND = "imported"


@dataclass
class Preference:
    """One preference row: the prompt as chat messages and the two responses' texts."""

    prompt: list[dict]
    chosen: str
    rejected: str

    @property
    def id(self) -> str:
        payload = json.dumps([self.prompt, self.chosen, self.rejected], ensure_ascii=False, sort_keys=True)
        return "pref-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]

    @property
    def question(self) -> str:
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")


def _response(value: Any, name: str, with_prompt: bool) -> tuple[list[dict], str]:
    """``(prompt messages before the answer, answer text)`` of a chosen/rejected field."""
    if isinstance(value, str):
        if not with_prompt:
            raise FieldError(name, "a string response needs a 'prompt' field (an implicit prompt is read only "
                                   "from message lists)")
        if not value.strip():
            raise FieldError(name, "empty response")
        return [], value
    messages = parse_messages(value, name)
    last = messages[-1]
    if last["role"] != "assistant":
        raise FieldError(f"{name}[{len(messages) - 1}].role", f"the last message must be the assistant's answer, "
                                                             f"got {last['role']!r}")
    if with_prompt and len(messages) > 1:
        raise FieldError(name, f"with a 'prompt' field, expected one assistant message, got {len(messages)} messages")
    if not last["content"].strip():
        raise FieldError(f"{name}[{len(messages) - 1}].content", "empty response")
    return messages[:-1], last["content"]


def parse_preference(row: dict) -> Preference:
    """A :class:`Preference` from a TRL or XTuner row (see the module docstring); :class:`FieldError` otherwise."""
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise FieldError(name, "missing")
    prompt_value = row.get("prompt")
    with_prompt = prompt_value is not None
    chosen_context, chosen = _response(row["chosen"], "chosen", with_prompt)
    rejected_context, rejected = _response(row["rejected"], "rejected", with_prompt)
    if with_prompt:
        if isinstance(prompt_value, str):
            if not prompt_value.strip():
                raise FieldError("prompt", "empty prompt")
            prompt = [{"role": "user", "content": prompt_value}]
        else:
            prompt = parse_messages(prompt_value, "prompt")
    else:
        if chosen_context != rejected_context:
            raise FieldError("rejected", "without a 'prompt' field, chosen and rejected must share every message "
                                         "but the last (the implicit prompt)")
        prompt = chosen_context
    if not any(m["role"] == "user" for m in prompt):
        raise FieldError("prompt" if with_prompt else "chosen", "the prompt has no user message")
    if chosen == rejected:
        raise FieldError("rejected", "the same text as chosen: the row carries no preference")
    return Preference(prompt, chosen, rejected)


@dataclass
class ImportStats:
    rows: int = 0
    imported: int = 0
    repeated: int = 0  # rows identical to an earlier row (same prompt and responses): written once
    first_repeat: str = ""
    skipped: list = field(default_factory=list)  # messages of invalid rows (with skip_invalid)

    def summary(self) -> str:
        text = f"{self.rows} rows: {self.imported} imported ({2 * self.imported} samples)"
        if self.repeated:
            text += f", {self.repeated} repeated an earlier row and were written once (first: {self.first_repeat})"
        if self.skipped:
            text += f", {len(self.skipped)} invalid rows skipped (first: {self.skipped[0]})"
        return text


def iter_rows(source: str, split: str | None = None, config: str | None = None, *, skip_invalid: bool = False,
              stats: ReadStats | None = None) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for every row of ``source`` (:func:`maskdpo.hfdata.iter_hf_rows`): ``where`` is
    ``file:line`` for local JSON (a malformed line is an error, or counted in ``stats`` with
    ``skip_invalid``), ``source[split] row N`` for what ``datasets`` reads."""
    yield from iter_hf_rows(source, split, config, skip_invalid=skip_invalid, stats=stats)


def import_preferences(source: str, out_dir: str | os.PathLike, *, split: str | None = None, config: str | None = None,
                       limit: int | None = None, language: str = "en", topic_field: str | None = None,
                       document_field: str | None = None, skip_invalid: bool = False,
                       allow_empty: bool = False) -> ImportStats:
    """Write ``questions.jsonl`` and ``samples.jsonl`` in ``out_dir`` from a preference dataset.

    Both files are written under temporary names and renamed at the end, so
    a kill or an error leaves the previous outputs or none (a folder this call
    created is removed again). A bad row is an error naming it
    (``skip_invalid`` counts it instead); a row repeating an earlier one is
    written once and counted. No row imported is an error
    (:class:`~maskdpo.validate.EmptyInput`), checked before anything is
    published, unless ``allow_empty``.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    created = not out_dir.exists()
    targets = {name: out_dir / f"{name}.jsonl" for name in ("questions", "samples")}
    tmps = {name: path.with_name(path.name + ".tmp") for name, path in targets.items()}
    stats = ImportStats()
    read = ReadStats()
    seen: dict[str, str] = {}
    published = False
    try:
        rows = iter_rows(source, split, config, skip_invalid=skip_invalid, stats=read)
        first = next(rows, None)  # the source opens (or fails) before the output folder is made
        out_dir.mkdir(parents=True, exist_ok=True)
        with tmps["questions"].open("w", encoding="utf-8") as questions, \
                tmps["samples"].open("w", encoding="utf-8") as samples:
            for where, row in _chain_first(first, rows):
                if limit is not None and stats.rows >= limit:
                    break
                stats.rows += 1
                try:
                    pref, extra = _parse_row(row, where, topic_field, document_field)
                except ValueError as exc:
                    if not skip_invalid:
                        raise
                    stats.skipped.append(str(exc))
                    continue
                if pref.id in seen:
                    stats.repeated += 1
                    stats.first_repeat = stats.first_repeat or f"{where} repeats {seen[pref.id]}"
                    continue
                seen[pref.id] = where
                question = Question(id=pref.id, question=pref.question, topic=extra.get("topic", ""),
                                    language=language, document=extra.get("document"))
                questions.write(dump_line(question.to_dict()))
                for index, (kind, text) in enumerate((("chosen", pref.chosen), ("rejected", pref.rejected))):
                    sample = Sample(question_id=pref.id, sample_index=index, messages=pref.prompt, response=text,
                                    model="", backend=BACKEND, generation={},
                                    meta={"source": source, "row": where, "preference": kind})
                    samples.write(dump_line(sample.to_dict()))
                stats.imported += 1
        for error in read.skipped:  # malformed lines the reader skipped
            stats.rows += 1
            stats.skipped.append(str(error))
        if not stats.imported and not allow_empty:
            skipped = (f" ({len(stats.skipped)} invalid rows skipped, first: {stats.skipped[0]})"
                       if stats.skipped else "")
            raise EmptyInput(f"{source}: no preference row to read{skipped}; pass --allow-empty to accept an "
                             f"empty input")
        for name in targets:
            os.replace(tmps[name], targets[name])
        published = True
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        if created and not published and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
    return stats


def _chain_first(first, rest):
    """``first`` (unless ``None``), then the rest of the iterator it came from."""
    if first is not None:
        yield first
        yield from rest


def _parse_row(row: Any, where: str, topic_field: str | None, document_field: str | None) -> tuple[Preference, dict]:
    """The row's preference and the optional topic / document; a bad field is an error naming ``where``."""
    try:
        if not isinstance(row, dict):
            raise FieldError("row", f"expected an object, got {type(row).__name__}")
        pref = parse_preference(row)
        extra = {}
        for key, name in (("topic", topic_field), ("document", document_field)):
            if name:
                value = row.get(name)
                if not isinstance(value, str) or not value.strip():
                    raise FieldError(name, f"expected a non-empty string, got {value!r:.60}")
                extra[key] = value
        return pref, extra
    except FieldError as exc:
        path, _, line = where.rpartition(":")
        if line.isdigit():  # file:line from the JSONL reader
            raise RecordError(path, int(line), exc.field, exc.message) from None
        raise ValueError(f"{where}: {exc}") from None
