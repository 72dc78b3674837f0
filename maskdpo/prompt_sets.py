"""Evaluation prompt sets as :class:`~maskdpo.records.Question` records.

- **Biography** (FactScore): FActScore's entity list files, one entity per
  line (``prompt_entities.txt``, ``unlabeled/prompt_entities.txt``); each
  becomes "Tell me a bio of <entity>." with the entity as topic (the key of its
  Wikipedia article).
- **ANAH** question/document files, one JSON object per line (``.jsonl``) or
  one JSON list (``.json``), in any of three layouts, told apart per record:

  * ``question`` records of this project (``id``, ``question``, ...);
  * ANAH-v2's evaluation file (``eval/anah_v2/question_document.jsonl``):
    ``{question, document, language}`` — no id, so the id is derived from the
    question text (stable across ``--limit`` and re-orderings);
  * the ``opencompass/anah`` dataset's per-topic records: ``name`` (the
    topic), ``documents`` (reference text, a string or a list of strings,
    joined by blank lines), the topic's questions under ``selected_questions``
    (a string or a list; the card's spelling ``selected_quetsions`` is
    accepted too) and ``language`` — one question record per question.

A record that fits none of them is an error naming file, line and field.

The stages (``maskdpo sample`` and ``maskdpo annotate --questions``) read
their questions with :func:`read_question_source`: the same layouts and the
same ids as ``eval run``, but one layout per file, chosen by its first
record — a file that starts with a question record of this project (it has
``id`` or ``format``) is read as question records throughout, so a record
missing its ``id`` there is an error naming file and line, never a question
with a made-up id.

Both loaders also take what ``datasets.load_dataset`` opens — a Hub dataset
name (``opencompass/anah``), a local dataset folder, or a ``.parquet`` /
``.csv`` file — when the source is not a local file of the layouts above:
ANAH rows are read by the same record rules, biography rows by their entity
column (``entity``, ``topic``, ``name`` or ``title``, or ``entity_field``).
Errors then name ``source[split] row N``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .hfdata import iter_hf_rows, iter_json_records, row_error
from .jsonl import FieldError, ReadStats, RecordError, iter_jsonl
from .records import LANGUAGES, Question

BIO_TEMPLATE = "Tell me a bio of {entity}."
HF_QUESTION_KEYS = ("selected_questions", "selected_quetsions", "questions")
ENTITY_FIELDS = ("entity", "topic", "name", "title")
LOCAL_FORMATS = (".txt", ".jsonl", ".json")  # read by this module's own readers (file:line errors)


def load_biography_prompts(path: str | os.PathLike, limit: int | None = None, *, split: str | None = None,
                           entity_field: str | None = None) -> list[Question]:
    """One question per entity: a non-blank line of an entity list file, or a row of a ``datasets``
    source (Hub name, folder, parquet/csv; its ``split``, or its only one). A repeated entity is an error."""
    local = _read_locally(path)
    if local:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such entity list")
        located = ((lineno, line.strip())
                   for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
    else:
        located = ((where, _entity(row, where, entity_field)) for where, row in iter_hf_rows(str(path), split))
    questions: list[Question] = []
    seen: dict[str, int | str] = {}
    for where, entity in located:
        if not entity:
            continue
        if entity in seen:
            if local:
                raise RecordError(path, where, None, f"entity {entity!r} repeats line {seen[entity]}")
            raise ValueError(f"{where}: entity {entity!r} repeats {seen[entity]}")
        seen[entity] = where
        questions.append(Question(id=f"bio-{_digest(entity)}", question=BIO_TEMPLATE.format(entity=entity),
                                  topic=entity, language="en", split="test"))
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise ValueError(f"{path}: no entities")
    return questions


def _read_locally(path: str | os.PathLike) -> bool:
    """A ``.txt`` / ``.jsonl`` / ``.json`` path is read by this module (a missing one is an error naming
    it); a folder, another data file or a name that is no local path goes to ``datasets``."""
    return Path(path).suffix in LOCAL_FORMATS and not Path(path).is_dir()


def _entity(row: dict, where: str, entity_field: str | None) -> str:
    names = (entity_field,) if entity_field else ENTITY_FIELDS
    name = next((n for n in names if n in row), None)
    if name is None:
        raise row_error(where, FieldError(names[0], f"missing: expected an entity column ({', '.join(names)})"))
    value = row[name]
    if not isinstance(value, str):
        raise row_error(where, FieldError(name, f"expected a string, got {type(value).__name__}"))
    return value.strip()


def parse_anah_record(d: dict) -> list[Question]:
    """The question records in one ANAH-style object (see module docstring)."""
    if "name" in d and any(k in d for k in HF_QUESTION_KEYS):
        return _from_hf_topic(d)
    if "id" in d or "format" in d:
        return [Question.from_dict(d)]
    if "question" in d:
        language = _language(d)
        question = _text(d, "question")
        document = d.get("document")
        if document is not None and not isinstance(document, str):
            raise FieldError("document", f"expected a string, got {type(document).__name__}")
        topic = d.get("topic", d.get("name", ""))
        return [Question(id=f"anah-{_digest(question)}", question=question, topic=str(topic), language=language,
                         document=document, split=d.get("split"))]
    raise FieldError("question", "missing: expected a question record, ANAH-v2's {question, document, language}, "
                                 "or an opencompass/anah topic record {name, documents, selected_questions, language}")


def load_anah_questions(path: str | os.PathLike, limit: int | None = None, *,
                        split: str | None = None) -> list[Question]:
    """Questions from an ANAH-style ``.jsonl`` or ``.json`` file, or from a ``datasets`` source (Hub name
    such as ``opencompass/anah``, folder, parquet/csv; its ``split``, or its only one); repeated ids are an error."""
    questions: list[Question] = []
    where: dict[str, str] = {}
    records = _records(Path(path)) if _read_locally(path) else _hf_records(str(path), split)
    for loc, batch in records:
        for q in batch:
            if q.id in where:
                raise ValueError(f"{loc}: question id {q.id!r} repeats {where[q.id]}")
            where[q.id] = loc
            questions.append(q)
            if limit is not None and len(questions) >= limit:
                return questions
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def is_question_record(d: dict) -> bool:
    """A question record of this project (it names its ``id`` or its ``format``), not an ANAH layout."""
    return "id" in d or "format" in d


def read_question_source(source: str | os.PathLike, *, split: str | None = None, skip_invalid: bool = False,
                         allow_empty: bool = False, stats: ReadStats | None = None) -> list[tuple[str, Question]]:
    """``(where, question)`` of every question in ``source``, for the stages that take ``--questions``.

    ``source`` is a local ``.jsonl`` / ``.json`` file (``where`` = ``file:line``), or what
    :func:`maskdpo.hfdata.iter_hf_rows` opens: a dataset folder (its JSON files read line by line too),
    a parquet/csv file, or a Hub name such as ``opencompass/anah`` (``where`` = ``source[split] row N``).
    Records are this project's question records or ANAH's layouts (see the module docstring), one
    layout per source, chosen by its first record; ids of ANAH records are the ones ``eval run`` gives.
    A bad record or a repeated id is an error naming where it is (``skip_invalid``: counted in ``stats``
    instead); a source with no question is :class:`~maskdpo.validate.EmptyInput` unless ``allow_empty``.
    """
    from .validate import check_not_empty, skip_line

    stats = stats if stats is not None else ReadStats()
    text = str(source)
    local = Path(text).suffix in (".jsonl", ".json") and not Path(text).is_dir()
    if local:
        located = ((text, lineno, obj) for lineno, obj in iter_json_records(text, skip_invalid=skip_invalid,
                                                                             stats=stats))
    else:
        located = (_split_where(where) + (row,) for where, row in iter_hf_rows(text, split, skip_invalid=skip_invalid,
                                                                               stats=stats))
    out: list[tuple[str, Question]] = []
    first: dict[str, tuple[str, int | None]] = {}
    ours: bool | None = None
    for path, line, obj in located:
        if not local and line is None:
            stats.read += 1  # rows from datasets are counted here (the line reader counts its own)
        where = f"{path}:{line}" if line is not None else path
        try:
            if ours is None:
                ours = is_question_record(obj)
            questions = [Question.from_dict(obj)] if ours else parse_anah_record(obj)
        except FieldError as exc:
            skip_line(_located_error(path, line, exc.field, exc.message), skip_invalid, stats)
            continue
        ids = [q.id for q in questions]
        if len(set(ids)) < len(ids):  # a topic record listing one question twice
            twice = next(i for i in ids if ids.count(i) > 1)
            skip_line(_located_error(path, line, "id", f"question id {twice!r} comes twice in this record"),
                      skip_invalid, stats)
            continue
        repeated = next((q for q in questions if q.id in first), None)
        if repeated is not None:
            earlier_path, earlier_line = first[repeated.id]
            earlier = f"line {earlier_line}" if earlier_path == path and earlier_line is not None else \
                (f"{earlier_path}:{earlier_line}" if earlier_line is not None else earlier_path)
            skip_line(_located_error(path, line, "id", f"question id {repeated.id!r} repeats {earlier}"),
                      skip_invalid, stats)
            continue
        for q in questions:
            first[q.id] = (path, line)
            out.append((where, q))
    if not out:
        check_not_empty(text, stats, allow_empty, "question")
    return out


def load_questions(source: str | os.PathLike, *, skip_invalid: bool = False, allow_empty: bool = False,
                   stats: ReadStats | None = None) -> list[Question]:
    """The questions of a ``--questions`` source in source order (:func:`read_question_source`)."""
    return [q for _, q in read_question_source(source, skip_invalid=skip_invalid, allow_empty=allow_empty,
                                               stats=stats)]


def _split_where(where: str) -> tuple[str, int | None]:
    """``(file, line)`` of a ``file:line`` place, ``(place, None)`` of a ``source[split] row N`` one."""
    path, _, line = where.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else (where, None)


def _located_error(path: str, line: int | None, field: str | None, message: str) -> ValueError:
    if line is not None:
        return RecordError(path, line, field, message)
    return RowError(path, field, message)


class RowError(ValueError):
    """A bad row of a ``datasets`` source: ``source[split] row N: field 'F': message``."""

    def __init__(self, where: str, field: str | None, message: str):
        super().__init__(f"{where}: field '{field}': {message}" if field else f"{where}: {message}")
        self.path, self.line, self.field, self.message = where, None, field, message


def _hf_records(source: str, split: str | None):
    for where, row in iter_hf_rows(source, split):
        try:
            yield where, parse_anah_record(row)
        except FieldError as exc:
            raise row_error(where, exc) from None


def _records(path: Path):
    if path.suffix == ".json":
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RecordError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise RecordError(path, 1, None, "expected a JSON list of records")
        for i, d in enumerate(data):
            loc = f"{path}: item {i}"
            if not isinstance(d, dict):
                raise ValueError(f"{loc}: expected an object, got {type(d).__name__}")
            try:
                yield loc, parse_anah_record(d)
            except FieldError as exc:
                raise ValueError(f"{loc}: {exc}") from None
        return
    lineno = 0

    def parse(d: dict) -> tuple[str, list[Question]]:
        nonlocal lineno
        lineno += 1
        return f"{path}: record {lineno}", parse_anah_record(d)

    yield from iter_jsonl(path, parse)


def _from_hf_topic(d: dict) -> list[Question]:
    topic = _text(d, "name")
    language = _language(d)
    documents = d.get("documents", d.get("document"))
    if isinstance(documents, list):
        if not all(isinstance(x, str) for x in documents):
            raise FieldError("documents", "expected a list of strings")
        document = "\n\n".join(documents)
    elif isinstance(documents, str) or documents is None:
        document = documents
    else:
        raise FieldError("documents", f"expected a string or a list of strings, got {type(documents).__name__}")
    key = next(k for k in HF_QUESTION_KEYS if k in d)
    raw = d[key]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise FieldError(key, "expected a question string or a list of non-empty question strings")
    return [Question(id=f"anah-{_digest(q)}", question=q, topic=topic, language=language, document=document)
            for q in items]


def _text(d: dict, name: str) -> str:
    value = d.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(name, f"expected a non-empty string, got {value!r:.60}")
    return value


def _language(d: dict) -> str:
    language = d.get("language", "en")
    if language not in LANGUAGES:
        raise FieldError("language", f"expected one of {', '.join(LANGUAGES)}, got {language!r}")
    return language


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def question_map(questions: list[Question]) -> dict[str, Question]:
    return {q.id: q for q in questions}
