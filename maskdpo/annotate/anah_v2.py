"""The ANAH-v2 sentence annotator: a three-turn judge conversation per sentence.

The judge (``opencompass/anah-v2``, an InternLM2-7B, run greedily on any
backend) is asked, in one growing conversation per sentence (DESIGN §8):

1. ``facts``: does the sentence state facts? ``<No Facts>`` → ``nofact``;
2. ``reference``: the supporting points of the question's reference document;
   ``<No Reference Information>`` → ``unverifiable``;
3. ``type``: ``<No Hallucination>`` → ``ok``, ``<Contradictory>``,
   ``<Unverifiable>``.

The templates and their answer tags live in ``anah_v2_prompts.json``
(versioned, English and Chinese); ``prompts=FILE`` replaces them, e.g. with
the templates distributed with the judge.

Each turn runs as ONE backend call over every sentence still pending in the
batch (all sentences of all samples), instead of the official script's
sentence-by-sentence order; ``turn_batching=False`` restores that order (the
labels are the same under greedy decoding, only slower).

Parsing is strict: an answer must contain exactly one (distinct) tag of its
turn. An answer that does not is *unparseable*; by default its sentence is
labelled ``unverifiable`` (conservative: it is never counted as correct, so it
is masked out of a chosen response), counted in :attr:`AnahV2Annotator.stats`,
and marked in the sentence's ``raw``. ``unparseable="error"`` stops instead.
Every judge answer is kept in ``Sentence.raw = {"answers": [...]}``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..backends.base import ChatBackend, Decoding, GenerationRequest, load_backend
from ..labels import ANAH_LABELS
from ..records import Annotation, Question, Sample, Sentence

PROMPTS_PATH = Path(__file__).with_name("anah_v2_prompts.json")
NEXT = "next"
PLACEHOLDERS = ("question", "document", "response", "sentence", "topic")
UNPARSEABLE_RULES = ANAH_LABELS + ("error",)
TURN_NAMES = ("facts", "reference", "type")


class PromptFileError(ValueError):
    """A prompt file is malformed; the message names the file and the key."""


class MissingDocument(ValueError):
    """A question has no reference document, which the judge needs."""


class UnparseableAnswer(ValueError):
    """A judge answer has no single tag of its turn (raised with ``unparseable="error"``)."""


@dataclass(frozen=True)
class Turn:
    name: str
    template: str
    answers: tuple[tuple[str, str], ...]  # (tag, outcome), longest tag first


@dataclass(frozen=True)
class LanguagePrompts:
    system: str | None
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class PromptSet:
    version: str
    source: str
    languages: dict[str, LanguagePrompts]


def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Read and check a prompt file (default: the packaged ``anah_v2_prompts.json``)."""
    path = Path(path) if path is not None else PROMPTS_PATH

    def fail(key: str, message: str) -> PromptFileError:
        return PromptFileError(f"{path}: {key}: {message}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptFileError(f"{path}: no such prompt file") from None
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise fail("(top level)", "expected an object")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise fail("version", "missing; version your templates (e.g. \"my-prompts@1\") so records say which were used")
    languages = data.get("languages")
    if not isinstance(languages, dict) or not languages:
        raise fail("languages", "expected an object mapping a language (en, zh) to its prompts")
    parsed: dict[str, LanguagePrompts] = {}
    for lang, spec in languages.items():
        key = f"languages.{lang}"
        if not isinstance(spec, dict):
            raise fail(key, "expected an object with system and turns")
        system = spec.get("system")
        if system is not None and not isinstance(system, str):
            raise fail(key + ".system", "expected a string")
        turns_spec = spec.get("turns")
        if not isinstance(turns_spec, list) or len(turns_spec) != len(TURN_NAMES):
            raise fail(key + ".turns", f"expected a list of {len(TURN_NAMES)} turns ({', '.join(TURN_NAMES)})")
        turns = []
        for i, t in enumerate(turns_spec):
            tkey = f"{key}.turns[{i}]"
            if not isinstance(t, dict):
                raise fail(tkey, "expected an object with name, template and answers")
            template, answers = t.get("template"), t.get("answers")
            if not isinstance(template, str) or not template.strip():
                raise fail(tkey + ".template", "missing or empty")
            unknown = set(re.findall(r"\{(\w+)\}", template)) - set(PLACEHOLDERS)
            if unknown:
                raise fail(tkey + ".template", f"unknown placeholder(s) {sorted(unknown)}; allowed: {list(PLACEHOLDERS)}")
            if not isinstance(answers, dict) or not answers:
                raise fail(tkey + ".answers", "expected an object mapping answer tags to outcomes")
            last = i == len(turns_spec) - 1
            for tag, outcome in answers.items():
                allowed = ANAH_LABELS if last else ANAH_LABELS + (NEXT,)
                if outcome not in allowed:
                    raise fail(f"{tkey}.answers[{tag!r}]", f"outcome {outcome!r} not in {list(allowed)}")
                if not tag.strip():
                    raise fail(f"{tkey}.answers", "empty tag")
            if not last and NEXT not in answers.values():
                raise fail(tkey + ".answers", f"no tag leads to the next turn ('{NEXT}')")
            ordered = tuple(sorted(answers.items(), key=lambda kv: -len(kv[0])))
            turns.append(Turn(name=str(t.get("name", TURN_NAMES[i])), template=template, answers=ordered))
        parsed[lang] = LanguagePrompts(system=system or None, turns=tuple(turns))
    return PromptSet(version=version, source=str(path), languages=parsed)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` placeholders only (other braces in a template are left alone)."""
    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], template)


def parse_answer(answer: str, turn: Turn) -> str | None:
    """The outcome of ``answer`` for ``turn``, or None when it holds no tag or several different ones.

    Tags are matched longest first and cut out, so a tag inside a longer one
    (``<Facts>`` in ``<No Facts>`` would be, if written so) is not counted twice.
    """
    found = set()
    rest = answer
    for tag, outcome in turn.answers:
        if tag in rest:
            found.add(outcome if outcome != NEXT else NEXT + tag)
            rest = rest.replace(tag, "\0")
    if len(found) != 1:
        return None
    outcome = found.pop()
    return NEXT if outcome.startswith(NEXT) else outcome


@dataclass
class _Conversation:
    """One sentence's growing judge conversation."""

    sample: int  # index into the batch
    start: int
    end: int
    values: dict[str, str]
    prompts: LanguagePrompts
    messages: list[dict] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    label: str | None = None
    unparseable_turn: str | None = None


class AnahV2Annotator:
    """Sentence labels from the ANAH-v2 judge.

    ``backend``: a :class:`ChatBackend`, or a backend name (``hf``, ``openai``,
    ``lmdeploy``) loaded with ``model`` and ``backend_options``. ``prompts``:
    a prompt file (default: the packaged one). ``unparseable``: the label for
    an unparseable answer (``unverifiable`` default, or another ANAH label), or
    ``error``. ``max_new_tokens``: the judge's answer length per turn.
    """

    name = "anah-v2"
    requires_document = True

    def __init__(self, backend: ChatBackend | str = "hf", model: str = "opencompass/anah-v2",
                 prompts: str | Path | None = None, *, unparseable: str = "unverifiable", max_new_tokens: int = 512,
                 turn_batching: bool = True, **backend_options: Any):
        if unparseable not in UNPARSEABLE_RULES:
            raise ValueError(f"unparseable must be one of {', '.join(UNPARSEABLE_RULES)}, got {unparseable!r}")
        self.prompts = load_prompts(prompts)  # checked before any model loads
        self.backend: ChatBackend = load_backend(backend, model, **backend_options) if isinstance(backend, str) else backend
        self.unparseable = unparseable
        self.decoding = Decoding.greedy(max_new_tokens)
        self.turn_batching = turn_batching
        self.stats: Counter = Counter()  # sentences, unparseable, judge_calls, judge_prompts, label:<x>

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> "AnahV2Annotator":
        """Build from the annotation stage's settings (:class:`maskdpo.annotate.run.AnnotateSettings`)."""
        from ..sample import backend_options

        return cls(backend=settings.backend, model=settings.model, prompts=settings.prompts,
                   unparseable=settings.unparseable, max_new_tokens=settings.max_new_tokens,
                   **backend_options(settings.backend, settings), **options)

    @property
    def annotator_id(self) -> str:
        """Recorded in every annotation: protocol, prompt version and judge model."""
        return f"anah-v2 prompts={self.prompts.version} judge={self.backend.model}"

    # ------------------------------------------------------------------ checks

    @staticmethod
    def precheck(samples: Sequence[Sample], questions: dict[str, Question]) -> None:
        """Every sample's question exists and has a reference document (run before the judge loads)."""
        for s in samples:
            q = questions.get(s.question_id)
            if q is None:
                raise ValueError(f"sample ({s.question_id!r}, {s.sample_index}): question {s.question_id!r} "
                                 "is not in the questions file")
            if not q.document or not q.document.strip():
                raise MissingDocument(f"question {q.id!r} has no reference document ('document' field): "
                                      "the ANAH-v2 judge checks every sentence against it")

    def check_questions(self, samples: Sequence[Sample], questions: dict[str, Question]) -> None:
        """:meth:`precheck`, and every question's language has prompts."""
        self.precheck(samples, questions)
        for s in samples:
            q = questions[s.question_id]
            if q.language not in self.prompts.languages:
                raise ValueError(f"question {q.id!r} is in {q.language!r} but {self.prompts.source} has prompts for "
                                 f"{', '.join(self.prompts.languages)} only")

    # ------------------------------------------------------------------ the protocol

    def _start(self, conv: _Conversation) -> None:
        if conv.prompts.system:
            conv.messages.append({"role": "system", "content": conv.prompts.system})
        conv.messages.append({"role": "user", "content": fill(conv.prompts.turns[0].template, conv.values)})

    def _turn(self, turn_index: int, convs: list[_Conversation], where: list[tuple[str, int, int]]) -> None:
        """One judge call for every conversation still pending at ``turn_index``."""
        pending = [c for c in convs if c.label is None and len(c.answers) == turn_index]
        if not pending:
            return
        answers = self.backend.generate([GenerationRequest(list(c.messages), n=1) for c in pending], self.decoding)
        self.stats["judge_calls"] += 1
        self.stats["judge_prompts"] += len(pending)
        for c, texts in zip(pending, answers):
            answer = texts[0]
            turn = c.prompts.turns[turn_index]
            c.answers.append(answer)
            c.messages.append({"role": "assistant", "content": answer})
            outcome = parse_answer(answer, turn)
            if outcome is None:
                qid, idx, _ = where[c.sample]
                if self.unparseable == "error":
                    raise UnparseableAnswer(f"sample ({qid!r}, {idx}), sentence at {c.start}:{c.end}, turn "
                                            f"{turn.name!r}: expected exactly one of {[t for t, _ in turn.answers]}, "
                                            f"got {answer[:200]!r}")
                c.label, c.unparseable_turn = self.unparseable, turn.name
                self.stats["unparseable"] += 1
            elif outcome == NEXT:
                nxt = c.prompts.turns[turn_index + 1]
                c.messages.append({"role": "user", "content": fill(nxt.template, c.values)})
            else:
                c.label = outcome

    def _run(self, convs: list[_Conversation], where: list[tuple[str, int, int]]) -> None:
        for c in convs:
            self._start(c)
        if self.turn_batching:
            for t in range(len(TURN_NAMES)):
                self._turn(t, convs, where)
        else:  # the official order: one sentence through all its turns, then the next
            for c in convs:
                for t in range(len(TURN_NAMES)):
                    self._turn(t, [c], where)

    def annotate(self, samples: Sequence[Sample], questions: dict[str, Question]) -> list[Annotation]:
        from ..sentences import split_sentences

        self.check_questions(samples, questions)
        convs: list[_Conversation] = []
        where = []
        for i, s in enumerate(samples):
            q = questions[s.question_id]
            where.append((s.question_id, s.sample_index, i))
            for start, end in split_sentences(s.response, q.language):
                values = {"question": q.question, "document": q.document or "", "response": s.response,
                          "sentence": s.response[start:end], "topic": q.topic}
                convs.append(_Conversation(sample=i, start=start, end=end, values=values,
                                           prompts=self.prompts.languages[q.language]))
        self._run(convs, where)
        by_sample: list[list[Sentence]] = [[] for _ in samples]
        for c in convs:
            raw: dict[str, Any] = {"answers": c.answers}
            if c.unparseable_turn is not None:
                raw["unparseable"] = c.unparseable_turn
            by_sample[c.sample].append(Sentence(text=samples[c.sample].response[c.start:c.end], start=c.start,
                                                end=c.end, label=c.label or "", raw=raw))
            self.stats["sentences"] += 1
            self.stats["label:" + (c.label or "")] += 1
        return [Annotation.from_sample(s, sents, self.annotator_id) for s, sents in zip(samples, by_sample)]
