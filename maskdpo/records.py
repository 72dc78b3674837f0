"""The JSONL records that pass between stages, and their validation.

One record type per stage boundary (documented, with examples, in
``data/README.md``):

    question ──sample──▶ Sample ──annotate──▶ Annotation ──pairs──▶ Pair

Each type has ``from_dict`` (validates, raising :class:`FieldError` naming the
field; the JSONL reader adds file and line) and ``to_dict``. Every record
carries ``format: "maskdpo/<kind>@1"``; a record without it is accepted (older
or hand-written files) but a different kind or version is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .jsonl import FieldError
from .labels import BINARY_LABELS, KNOWN_LABELS, LabelPolicy

FORMAT_VERSION = 1
ROLES = ("system", "user", "assistant")
LANGUAGES = ("en", "zh")


def format_tag(kind: str) -> str:
    return f"maskdpo/{kind}@{FORMAT_VERSION}"


# ---------------------------------------------------------------- field helpers

_MISSING = object()


def _get(d: dict, name: str, types: type | tuple[type, ...], default: Any = _MISSING, prefix: str = "") -> Any:
    """``d[name]``, checked against ``types``; missing is an error unless a default is given."""
    if name not in d or d[name] is None:
        if default is _MISSING:
            raise FieldError(prefix + name, "missing")
        return default
    value = d[name]
    # bool is an int in Python; a flag is never a count.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise FieldError(prefix + name, f"expected {_type_names(types)}, got a boolean")
    if not isinstance(value, types):
        raise FieldError(prefix + name, f"expected {_type_names(types)}, got {type(value).__name__}: {_short(value)}")
    return value


def with_optional(d: dict, **optional: Any) -> dict:
    """``d`` with the ``optional`` fields that are set (a record leaves out what it does not have)."""
    d.update({name: value for name, value in optional.items() if value is not None})
    return d


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object", bool: "a boolean"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(value: float | None, name: str) -> float | None:
    """A number that is not NaN or infinite (JSON files cannot hold those; Python dicts can)."""
    if value is not None and not math.isfinite(value):
        raise FieldError(name, f"expected a finite number, got {value!r}")
    return value


def _check_format(d: dict, kind: str) -> None:
    tag = d.get("format")
    if tag is not None and tag != format_tag(kind):
        raise FieldError("format", f"expected {format_tag(kind)!r}, got {_short(tag)}")


def parse_messages(value: Any, name: str) -> list[dict]:
    """A chat as ``[{role, content}, ...]``; extra keys are dropped."""
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"expected a non-empty list of chat messages, got {_short(value)}")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise FieldError(f"{name}[{i}]", f"expected an object with role and content, got {_short(m)}")
        role = _get(m, "role", str, prefix=f"{name}[{i}].")
        if role not in ROLES:
            raise FieldError(f"{name}[{i}].role", f"expected one of {', '.join(ROLES)}, got {role!r}")
        messages.append({"role": role, "content": _get(m, "content", str, prefix=f"{name}[{i}].")})
    return messages


# ---------------------------------------------------------------- records


@dataclass
class Question:
    id: str
    question: str
    topic: str = ""
    language: str = "en"
    document: str | None = None  # the reference text the ANAH-v2 judge checks against
    split: str | None = None

    KIND = "question"

    @classmethod
    def from_dict(cls, d: dict) -> "Question":
        _check_format(d, cls.KIND)
        q = cls(
            id=str(_get(d, "id", (str, int))),
            question=_get(d, "question", str),
            topic=_get(d, "topic", str, ""),
            language=_get(d, "language", str, "en"),
            document=_get(d, "document", str, None),
            split=_get(d, "split", str, None),
        )
        if q.language not in LANGUAGES:
            raise FieldError("language", f"expected one of {', '.join(LANGUAGES)}, got {q.language!r}")
        if not q.question.strip():
            raise FieldError("question", "empty")
        return q

    def to_dict(self) -> dict:
        return with_optional({"format": format_tag(self.KIND), "id": self.id, "question": self.question,
                              "topic": self.topic, "language": self.language},
                             document=self.document, split=self.split)


@dataclass
class Sample:
    question_id: str
    sample_index: int
    messages: list[dict]  # the prompt as chat messages
    response: str
    model: str
    backend: str
    generation: dict  # top_k, top_p, temperature, max_new_tokens, seed, ...
    meta: dict = field(default_factory=dict)  # topic, language, chat template, ...
    # Why generation ended, as the backend reported it: "stop", or "length" for a response cut off
    # by max_new_tokens or the context (truncated); None when the backend cannot tell.
    finish_reason: str | None = None

    KIND = "sample"

    @property
    def key(self) -> tuple[str, int]:
        return (self.question_id, self.sample_index)

    @classmethod
    def _fields_from_dict(cls, d: dict) -> dict:
        index = _get(d, "sample_index", int)
        if index < 0:
            raise FieldError("sample_index", f"must be >= 0, got {index}")
        return dict(
            question_id=str(_get(d, "question_id", (str, int))),
            sample_index=index,
            messages=parse_messages(d.get("messages"), "messages"),
            response=_get(d, "response", str),
            model=_get(d, "model", str, ""),
            backend=_get(d, "backend", str, ""),
            generation=_get(d, "generation", dict, {}),
            meta=_get(d, "meta", dict, {}),
            finish_reason=_get(d, "finish_reason", str, None),
        )

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        _check_format(d, cls.KIND)
        return cls(**cls._fields_from_dict(d))

    def to_dict(self) -> dict:
        return {"format": format_tag(self.KIND), "question_id": self.question_id, "sample_index": self.sample_index,
                "messages": self.messages, "response": self.response, "model": self.model, "backend": self.backend,
                "generation": self.generation, "meta": self.meta,
                **({"finish_reason": self.finish_reason} if self.finish_reason is not None else {})}


@dataclass
class Sentence:
    text: str
    start: int  # character offsets into the response: response[start:end] == text
    end: int
    label: str
    raw: str | None = None  # the judge's own output, kept for audit

    @classmethod
    def from_dict(cls, d: Any, prefix: str) -> "Sentence":
        if not isinstance(d, dict):
            raise FieldError(prefix.rstrip("."), f"expected an object, got {_short(d)}")
        s = cls(text=_get(d, "text", str, prefix=prefix), start=_get(d, "start", int, prefix=prefix),
                end=_get(d, "end", int, prefix=prefix), label=_get(d, "label", str, prefix=prefix),
                raw=_get(d, "raw", (str, dict, list), None, prefix=prefix))
        if s.label not in KNOWN_LABELS:
            raise FieldError(prefix + "label", f"unknown label {s.label!r}; expected one of {', '.join(KNOWN_LABELS)}")
        if not s.text.strip():
            raise FieldError(prefix + "text", "a sentence of only whitespace states nothing and cannot be labelled")
        return s

    def to_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end, "label": self.label, "raw": self.raw}


def check_spans(response: str, spans: list[tuple[int, int]], texts: list[str] | None, name: str) -> None:
    """Spans must be in range, ordered, disjoint, non-empty and (with texts) match the response."""
    previous_end = 0
    for i, (start, end) in enumerate(spans):
        where = f"{name}[{i}]"
        if not (0 <= start < end <= len(response)):
            raise FieldError(where, f"span ({start}, {end}) is out of range for a response of {len(response)} characters")
        if start < previous_end:
            raise FieldError(where, f"span ({start}, {end}) overlaps or precedes the previous sentence (ends at {previous_end})")
        if texts is not None and response[start:end] != texts[i]:
            raise FieldError(where, f"text {_short(texts[i])} does not match the response at ({start}, {end}): "
                                    f"{_short(response[start:end])}")
        previous_end = end


@dataclass
class Annotation(Sample):
    sentences: list[Sentence] = field(default_factory=list)
    annotator: str = ""

    KIND = "annotation"

    @classmethod
    def from_dict(cls, d: dict) -> "Annotation":
        _check_format(d, cls.KIND)
        fields = cls._fields_from_dict(d)
        raw_sentences = _get(d, "sentences", list)
        sentences = [Sentence.from_dict(s, f"sentences[{i}].") for i, s in enumerate(raw_sentences)]
        check_spans(fields["response"], [(s.start, s.end) for s in sentences], [s.text for s in sentences], "sentences")
        if not sentences and fields["response"].strip():
            # Every non-blank response has at least one sentence; none means the annotation was lost.
            raise FieldError("sentences", "empty for a non-empty response (every sentence needs a label)")
        return cls(**fields, sentences=sentences, annotator=_get(d, "annotator", str, ""))

    @classmethod
    def from_sample(cls, sample: Sample, sentences: list[Sentence], annotator: str) -> "Annotation":
        return cls(question_id=sample.question_id, sample_index=sample.sample_index, messages=sample.messages,
                   response=sample.response, model=sample.model, backend=sample.backend,
                   generation=sample.generation, meta=sample.meta, finish_reason=sample.finish_reason,
                   sentences=sentences, annotator=annotator)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["format"] = format_tag(self.KIND)
        d["sentences"] = [s.to_dict() for s in self.sentences]
        d["annotator"] = self.annotator
        return d


@dataclass
class PairItem:
    """One side of a pair in the authors' format, extended with exact spans.

    ``type[i]`` is ``hallucination`` or ``no_hallucination`` for sentence
    ``sents[i]``; ``spans[i]`` its ``(start, end)`` in the response content, or
    None for the whole item when read from the authors' format (located later,
    see ``maskdpo.sentences.locate_sentences``). ``labels`` keeps the judge's
    fine-grained labels when known.
    """

    sents: list[str]
    type: list[str]
    spans: list[tuple[int, int]] | None = None
    labels: list[str] | None = None

    @classmethod
    def from_dict(cls, d: Any, name: str) -> "PairItem":
        if not isinstance(d, dict):
            raise FieldError(name, f"expected an object with sents and type, got {_short(d)}")
        sents = _get(d, "sents", list, prefix=name + ".")
        types = _get(d, "type", (list, str), prefix=name + ".")
        if isinstance(types, str):  # one type for every sentence
            types = [types] * len(sents)
        if len(types) != len(sents):
            raise FieldError(name + ".type", f"{len(types)} types for {len(sents)} sentences")
        for i, s in enumerate(sents):
            if not isinstance(s, str):
                raise FieldError(f"{name}.sents[{i}]", f"expected a string, got {_short(s)}")
            if not s.strip():
                raise FieldError(f"{name}.sents[{i}]", "a sentence of only whitespace states nothing and cannot be labelled")
        for i, t in enumerate(types):
            if t not in BINARY_LABELS:
                raise FieldError(f"{name}.type[{i}]", f"expected one of {', '.join(BINARY_LABELS)}, got {_short(t)}")
        spans = None
        raw_spans = _get(d, "spans", list, None, prefix=name + ".")
        if raw_spans is not None:
            if len(raw_spans) != len(sents):
                raise FieldError(name + ".spans", f"{len(raw_spans)} spans for {len(sents)} sentences")
            spans = []
            for i, sp in enumerate(raw_spans):
                if (not isinstance(sp, list) or len(sp) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in sp)):
                    raise FieldError(f"{name}.spans[{i}]", f"expected [start, end] integers, got {_short(sp)}")
                spans.append((sp[0], sp[1]))
        labels = _get(d, "labels", list, None, prefix=name + ".")
        if labels is not None:
            if len(labels) != len(sents):
                raise FieldError(name + ".labels", f"{len(labels)} labels for {len(sents)} sentences")
            for i, label in enumerate(labels):
                if label not in KNOWN_LABELS:
                    raise FieldError(f"{name}.labels[{i}]", f"unknown label {_short(label)}")
                if types[i] not in binary_types_of(label):
                    raise FieldError(f"{name}.labels[{i}]", f"label {label!r} disagrees with type {types[i]!r} "
                                                            f"of the same sentence")
        return cls(sents=list(sents), type=list(types), spans=spans, labels=labels)

    def to_dict(self) -> dict:
        spans = [list(sp) for sp in self.spans] if self.spans is not None else None
        return with_optional({"sents": self.sents, "type": self.type}, spans=spans, labels=self.labels)


@dataclass
class Pair:
    id: str
    prompt: list[dict]
    chosen: str  # the chosen assistant response (content)
    rejected: str
    chosen_item: PairItem
    rejected_item: PairItem
    question_id: str | None = None
    chosen_score: float | None = None  # fraction of correct sentences
    rejected_score: float | None = None
    chosen_sample_index: int | None = None
    rejected_sample_index: int | None = None

    KIND = "pair"

    @classmethod
    def from_dict(cls, d: dict, default_id: str | None = None) -> "Pair":
        """Read our format or the authors' (``chosen``/``rejected`` as assistant message lists, no spans)."""
        _check_format(d, cls.KIND)
        pid = d.get("id", default_id)
        if pid is None:
            raise FieldError("id", "missing")
        pair = cls(
            id=str(pid),
            prompt=parse_messages(d.get("prompt"), "prompt"),
            chosen=_response_text(d, "chosen"),
            rejected=_response_text(d, "rejected"),
            chosen_item=PairItem.from_dict(d.get("chosen_item"), "chosen_item"),
            rejected_item=PairItem.from_dict(d.get("rejected_item"), "rejected_item"),
            question_id=None if d.get("question_id") is None else str(d["question_id"]),
            chosen_score=_finite(_get(d, "chosen_score", (int, float), None), "chosen_score"),
            rejected_score=_finite(_get(d, "rejected_score", (int, float), None), "rejected_score"),
            chosen_sample_index=_get(d, "chosen_sample_index", int, None),
            rejected_sample_index=_get(d, "rejected_sample_index", int, None),
        )
        for side in ("chosen", "rejected"):
            item: PairItem = getattr(pair, f"{side}_item")
            if item.spans is not None:
                check_spans(getattr(pair, side), item.spans, item.sents, f"{side}_item.spans")
        if pair.chosen_score is not None and pair.rejected_score is not None and pair.chosen_score < pair.rejected_score:
            raise FieldError("chosen_score", f"{pair.chosen_score} is below rejected_score {pair.rejected_score}: "
                                             "the chosen response must score at least as high")
        return pair

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "format": format_tag(self.KIND), "id": self.id, "question_id": self.question_id, "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
            "chosen_item": self.chosen_item.to_dict(), "rejected_item": self.rejected_item.to_dict(),
        }
        for name in ("chosen_score", "rejected_score", "chosen_sample_index", "rejected_sample_index"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    def to_authors_dict(self) -> dict:
        """The authors' released format exactly: no spans, no provenance."""
        return {"prompt": self.prompt,
                "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}],
                "chosen_item": {"sents": self.chosen_item.sents, "type": self.chosen_item.type},
                "rejected_item": {"sents": self.rejected_item.sents, "type": self.rejected_item.type}}


def binary_types_of(label: str) -> tuple[str, ...]:
    """The pair ``type`` values a fine-grained label may have: ``nofact`` is either (the
    ``--nofact-correct`` policy decides), every other label exactly one."""
    return tuple({LabelPolicy(nofact_correct=True).to_binary(label), LabelPolicy(nofact_correct=False).to_binary(label)})


def _response_text(d: dict, name: str) -> str:
    """A response given as a string or as ``[{role: assistant, content}]``."""
    value = d.get(name)
    if isinstance(value, str):
        return value
    messages = parse_messages(value, name)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise FieldError(name, "expected exactly one assistant message")
    return messages[0]["content"]


def content_id(obj: dict) -> str:
    """A stable id for a record without one (the authors' format): a hash of its content.

    Stable across files, line orders and runs, so a reference cache keyed by
    pair id stays valid when a file is reordered or concatenated.
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def parse_pair(obj: dict) -> Pair:
    """Our pair format, or the authors' (no ``id``: the id is :func:`content_id`)."""
    return Pair.from_dict(obj, default_id=content_id(obj) if "id" not in obj else None)
