"""The ANAH-v2 sentence annotator: a three-turn judge conversation per sentence.

The judge (``opencompass/anah-v2``, an InternLM2-7B fine-tuned on one fixed
prompt protocol, run greedily on any backend) is asked, in one growing
conversation per sentence: does it state facts? → which points of the
reference document bear on it? → is it hallucinated? Two protocols:

``official`` (default: ``prompts="official"`` or an official-shaped ``FILE.py``)
    ANAH-v2's own evaluation protocol (``eval/anah_v2/eval.py`` of
    open-compass/ANAH), exactly: the turn texts are what the official prompt
    functions return for (question, sentence) — read with ``ast`` from the
    pinned file in the protocol cache (:mod:`maskdpo.protocol`) — the turn-2
    answer is the ``reference`` of turn 3, and the answers are read as the
    official script reads them:

    1. exactly ``<No Facts>`` or ``<无事实>`` → ``nofact``; anything else goes on;
    2. the answer stripped, without spaces, lower-cased, contains
       ``noreferenceinformation`` or ``无参考信息`` → ``unverifiable``;
    3. the same normalisation; the first found of ``nohallucination``/``无幻觉``
       → ``ok``, ``contradictory``/``矛盾`` → ``contradictory``,
       ``unverifiable``/``无法验证`` → ``unverifiable``. None of them: the
       official script gives no label and its score counts the sentence as not
       hallucinated, so ``unparseable`` defaults to ``ok`` here.

    Every conversation starts with InternLM's default meta instruction as an
    explicit system message: LMDeploy 0.5.2's ``internlm2`` template, which
    the official evaluation ran, inserted it itself; sent explicitly, any
    standard InternLM2 chat template renders the same string on any backend.
    Decoding is greedy, at most 512 new tokens, stopping at ``<|im_end|>``.

``maskdpo`` (``prompts="maskdpo"`` or a JSON prompt file)
    Our own templates and answer tags (``anah_v2_prompts.json``, versioned,
    English and Chinese), for general-purpose judges. Parsing is strict: an
    answer must contain exactly one (distinct) tag of its turn; one that does
    not is unparseable, labelled ``unverifiable`` by default (never counted as
    correct, so it is masked out of a chosen response).

Either way an unparseable answer is counted in :attr:`AnahV2Annotator.stats`
and marked in the sentence's ``raw["unparseable"]`` (the turn's name);
``unparseable="error"`` stops instead. Every judge answer is kept in
``Sentence.raw = {"answers": [...]}``.

Each turn runs as ONE backend call over every sentence still pending in the
batch (all sentences of all samples), instead of the official script's
sentence-by-sentence order; ``turn_batching=False`` restores that order (the
labels are the same under greedy decoding, only slower).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from ..backends.base import ChatBackend, Decoding, GenerationRequest, finish_reason_of, load_backend
from ..jsonl import read_json_file
from ..labels import ANAH_LABELS
from ..records import Annotation, Question, Sample, Sentence

PROMPTS_PATH = Path(__file__).with_name("anah_v2_prompts.json")
OFFICIAL, MASKDPO = "official", "maskdpo"
PROTOCOLS = (OFFICIAL, MASKDPO)
NEXT = "next"
PLACEHOLDERS = ("question", "document", "response", "sentence", "topic")
UNPARSEABLE_RULES = ANAH_LABELS + ("error",)
TURN_NAMES = ("facts", "reference", "type")
# LMDeploy 0.5.2's internlm2 template stops on both: the end of a turn and the end of a tool call.
JUDGE_STOP = ("<|im_end|>", "<|action_end|>")
# The official answer matching (eval.py::process_question).
OFFICIAL_NO_FACTS = ("<No Facts>", "<无事实>")
OFFICIAL_NO_REFERENCE = ("noreferenceinformation", "无参考信息")
OFFICIAL_TYPES = ((("nohallucination", "无幻觉"), "ok"), (("contradictory", "矛盾"), "contradictory"),
                  (("unverifiable", "无法验证"), "unverifiable"))


def official_sentence_text(sentence: str, language: str, rules: Any) -> str:
    """The text ANAH-v2's official splitter gives the judge for one of its sentences.

    ``sentence`` is the untouched text of a span from
    ``split_sentences(..., rules="anah-v2")``; ``rules`` the official rewrite
    rules (:func:`maskdpo.protocol.load_rewrite_rules`, read from the pinned
    file). The official function rewrites the whole response, splits it,
    strips each sentence and rewrites it back; every rewrite matches within
    one official sentence (a match across a boundary removes the whitespace
    the split needs, so the two are one sentence), which is why applying them
    to the span alone gives the same text. Both languages also close up the
    whitespace after a colon (Chinese: none is left; English: one space).
    """
    if language == "zh":
        return re.sub(r"([:：])(\s+)", r"\1", sentence).strip()
    text = sentence
    for pattern, replacement in rules.before:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"([:：])(\s+)", r"\1 ", text).strip()
    for pattern, replacement in rules.after:
        text = re.sub(pattern, replacement, text)
    return text


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
        data = read_json_file(path, "prompt file")
    except (OSError, ValueError) as exc:
        raise PromptFileError(str(exc)) from None
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

def normalise_official(answer: str) -> str:
    """The official script's normalisation at turns 2 and 3: stripped, spaces removed, lower-cased."""
    return answer.strip().replace(" ", "").lower()


def parse_official(turn_index: int, answer: str) -> str | None:
    """The outcome of a judge answer under the official protocol (``eval.py::process_question``).

    Turn 0: ``nofact`` for an answer that is exactly ``<No Facts>``/``<无事实>``,
    else ``next``. Turn 1: ``unverifiable`` when the normalised answer contains
    ``noreferenceinformation``/``无参考信息``, else ``next``. Turn 2: the label of
    the first key found, in the official order, or None (no label).
    """
    if turn_index == 0:
        return "nofact" if answer in OFFICIAL_NO_FACTS else NEXT
    norm = normalise_official(answer)
    if turn_index == 1:
        return "unverifiable" if any(key in norm for key in OFFICIAL_NO_REFERENCE) else NEXT
    for keys, label in OFFICIAL_TYPES:
        if any(key in norm for key in keys):
            return label
    return None


class JudgeProtocol(Protocol):
    """How one sentence's judge conversation is written and read."""

    name: str  # official or maskdpo
    default_unparseable: str
    stop: tuple[str, ...]
    languages: tuple[str, ...]

    def provenance(self) -> str: ...

    def opening(self, values: dict[str, str], language: str) -> list[dict]: ...

    def followup(self, turn_index: int, values: dict[str, str], language: str, answers: list[str]) -> dict: ...

    def parse(self, turn_index: int, answer: str, language: str) -> str | None: ...

    def expected(self, turn_index: int, language: str) -> str: ...


@dataclass(frozen=True)
class OfficialJudgeProtocol:
    """ANAH-v2's evaluation protocol with its own prompt functions and system message."""

    prompts: Any  # maskdpo.protocol.PromptFunctions
    meta_instruction: str
    prompt_source: str  # "official" (the cache) or the local file given
    template_sha256: str
    rewrite_rules: Any  # maskdpo.protocol.RewriteRules: the sentence text the official splitter gives the judge
    name: str = OFFICIAL
    default_unparseable: str = "ok"  # the official score counts an unlabelled sentence as not hallucinated
    stop: tuple[str, ...] = JUDGE_STOP
    # The official script compares (`== "<No Facts>"`) and feeds back the answer as the engine gave it.
    unstripped_answers: bool = True
    languages: tuple[str, ...] = ("en", "zh")

    def provenance(self) -> str:
        return (f"protocol=official prompts={self.prompt_source} prompts_sha256={self.prompts.sha256} "
                f"system=lmdeploy-0.5.2:InternLMChat7B.meta_instruction system_sha256={self.template_sha256} "
                f"sentence_rewrites_sha256={self.rewrite_rules.sha256}")

    def opening(self, values: dict[str, str], language: str) -> list[dict]:
        return [{"role": "system", "content": self.meta_instruction},
                {"role": "user", "content": self.prompts.render("facts", language, question=values["question"],
                                                                annotation=values["sentence"])}]

    def followup(self, turn_index: int, values: dict[str, str], language: str, answers: list[str]) -> dict:
        # Turn 2 shows the reference document; turn 3 shows the judge's own turn-2 answer as the reference.
        reference = values["document"] if turn_index == 1 else answers[1]
        text = self.prompts.render(TURN_NAMES[turn_index], language, question=values["question"],
                                   reference=reference, annotation=values["sentence"])
        return {"role": "user", "content": text}

    def parse(self, turn_index: int, answer: str, language: str) -> str | None:
        return parse_official(turn_index, answer)

    def expected(self, turn_index: int, language: str) -> str:
        return "one of " + ", ".join(k for keys, _ in OFFICIAL_TYPES for k in keys)


@dataclass(frozen=True)
class MaskdpoJudgeProtocol:
    """Our own templates and strict tag parsing (a JSON prompt file)."""

    prompt_set: PromptSet
    prompt_source: str  # "maskdpo" (packaged) or the file given
    sha256: str
    name: str = MASKDPO
    default_unparseable: str = "unverifiable"  # conservative: never counted as correct
    stop: tuple[str, ...] = ()

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.prompt_set.languages)

    def provenance(self) -> str:
        return (f"protocol=maskdpo prompts={self.prompt_source} prompts_version={self.prompt_set.version} "
                f"prompts_sha256={self.sha256}")

    def opening(self, values: dict[str, str], language: str) -> list[dict]:
        spec = self.prompt_set.languages[language]
        system = [{"role": "system", "content": spec.system}] if spec.system else []
        return system + [{"role": "user", "content": fill(spec.turns[0].template, values)}]

    def followup(self, turn_index: int, values: dict[str, str], language: str, answers: list[str]) -> dict:
        return {"role": "user", "content": fill(self.prompt_set.languages[language].turns[turn_index].template, values)}

    def parse(self, turn_index: int, answer: str, language: str) -> str | None:
        return parse_answer(answer, self.prompt_set.languages[language].turns[turn_index])

    def expected(self, turn_index: int, language: str) -> str:
        turn = self.prompt_set.languages[language].turns[turn_index]
        return f"exactly one of {[t for t, _ in turn.answers]}"


def load_protocol(prompts: str | Path | None = OFFICIAL, *, allow_unpinned: bool = False) -> JudgeProtocol:
    """The judge protocol a ``--prompts`` value names.

    ``official`` (default): the official prompt functions and system message
    from the protocol cache (downloaded on first use). ``FILE.py``: an
    official-shaped prompt file, sha256-checked against the pin unless
    ``allow_unpinned``. ``maskdpo``: the packaged JSON templates.
    ``FILE.json``: JSON templates of ours.
    """
    from .. import protocol as assets

    value = OFFICIAL if prompts in (None, "") else str(prompts)
    path = Path(value)
    if value == MASKDPO:
        return _maskdpo_protocol(PROMPTS_PATH, MASKDPO)
    if path.suffix == ".json":
        return _maskdpo_protocol(path, str(path))
    if value == OFFICIAL or path.suffix == ".py":
        functions = assets.load_prompt_functions(None if value == OFFICIAL else path, allow_unpinned=allow_unpinned)
        meta, pin = assets.load_meta_instruction()
        return OfficialJudgeProtocol(prompts=functions, meta_instruction=meta, prompt_source=value,
                                     template_sha256=pin.sha256, rewrite_rules=assets.load_rewrite_rules())
    raise PromptFileError(f"--prompts {value!r}: expected official, maskdpo, an official-shaped prompt file "
                          "(FILE.py) or a JSON prompt file (FILE.json)")


def default_unparseable(prompts: str | Path | None) -> str:
    """The ``unparseable`` default of the protocol ``prompts`` names (without reading any file)."""
    value = OFFICIAL if prompts in (None, "") else str(prompts)
    official = value == OFFICIAL or (value != MASKDPO and Path(value).suffix == ".py")
    return OfficialJudgeProtocol.default_unparseable if official else MaskdpoJudgeProtocol.default_unparseable


def _maskdpo_protocol(path: Path, source: str) -> MaskdpoJudgeProtocol:
    prompt_set = load_prompts(path)
    return MaskdpoJudgeProtocol(prompt_set=prompt_set, prompt_source=source,
                                sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@dataclass
class _Conversation:
    """One sentence's growing judge conversation."""

    sample: int  # index into the batch
    start: int
    end: int
    language: str
    values: dict[str, str]
    messages: list[dict] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    label: str | None = None
    unparseable_turn: str | None = None


class AnahV2Annotator:
    """Sentence labels from the ANAH-v2 judge.

    ``backend``: a :class:`ChatBackend`, or a backend name (``hf``, ``openai``,
    ``lmdeploy``) loaded with ``model`` and ``backend_options``. ``prompts``:
    ``official`` (default), ``maskdpo``, ``FILE.py`` or ``FILE.json`` (see
    :func:`load_protocol`). ``unparseable``: the label for an unparseable
    answer (default: ``ok`` under the official protocol, ``unverifiable``
    under ours), another ANAH label, or ``error``. ``splitter``: the sentence
    rules (:data:`maskdpo.sentences.SPLITTER_RULES`). ``max_new_tokens``: the
    judge's answer length per turn.
    """

    name = "anah-v2"
    requires_document = True

    def __init__(self, backend: ChatBackend | str = "hf", model: str = "opencompass/anah-v2",
                 prompts: str | Path | None = OFFICIAL, *, unparseable: str | None = None, max_new_tokens: int = 512,
                 turn_batching: bool = True, splitter: str = "anah-v2", allow_unpinned_prompts: bool = False,
                 **backend_options: Any):
        from ..sentences import check_splitter_rules

        if unparseable is not None and unparseable not in UNPARSEABLE_RULES:
            raise ValueError(f"unparseable must be one of {', '.join(UNPARSEABLE_RULES)}, got {unparseable!r}")
        self.splitter = check_splitter_rules(splitter)
        # Prompts and the system message are read (and fetched) before any model loads.
        self.protocol: JudgeProtocol = load_protocol(prompts, allow_unpinned=allow_unpinned_prompts)
        self.backend: ChatBackend = load_backend(backend, model, **backend_options) if isinstance(backend, str) else backend
        self.unparseable = unparseable if unparseable is not None else self.protocol.default_unparseable
        self.decoding = Decoding.greedy(max_new_tokens, stop=self.protocol.stop)
        self.turn_batching = turn_batching
        self.stats: Counter = Counter()  # sentences, unparseable, judge_calls, judge_prompts, label:<x>

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> "AnahV2Annotator":
        """Build from the annotation stage's settings (:class:`maskdpo.annotate.run.AnnotateSettings`)."""
        return cls(backend=settings.backend, model=settings.model, prompts=settings.prompts,
                   unparseable=settings.unparseable, max_new_tokens=settings.max_new_tokens,
                   splitter=settings.splitter, allow_unpinned_prompts=settings.allow_unpinned_prompts,
                   **settings.backend_options(batch_size=settings.batch_size), **options)

    @property
    def annotator_id(self) -> str:
        """Recorded in every annotation: protocol, prompt source and sha256, splitter rules, judge model."""
        return (f"anah-v2 {self.protocol.provenance()} splitter={self.splitter} unparseable={self.unparseable} "
                f"max_new_tokens={self.decoding.max_new_tokens} judge={self.backend.model}")

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
            if q.language not in self.protocol.languages:
                raise ValueError(f"question {q.id!r} is in {q.language!r} but the prompts "
                                 f"({self.protocol.provenance()}) cover {', '.join(self.protocol.languages)} only")

    # ------------------------------------------------------------------ the protocol

    def judged_text(self, sentence: str, language: str) -> str:
        """The sentence as the judge sees it: under the official protocol with the official splitter, the
        official splitter's text (:func:`official_sentence_text`); otherwise the span's own text."""
        if self.protocol.name == OFFICIAL and self.splitter == "anah-v2":
            return official_sentence_text(sentence, language, self.protocol.rewrite_rules)
        return sentence

    def _turn(self, turn_index: int, convs: list[_Conversation], where: list[tuple[str, int, int]]) -> None:
        """One judge call for every conversation still pending at ``turn_index``."""
        pending = [c for c in convs if c.label is None and len(c.answers) == turn_index]
        if not pending:
            return
        answers = self.backend.generate([GenerationRequest(list(c.messages), n=1) for c in pending], self.decoding)
        self.stats["judge_calls"] += 1
        self.stats["judge_prompts"] += len(pending)
        keep_raw = getattr(self.protocol, "unstripped_answers", False)
        for c, texts in zip(pending, answers):
            if finish_reason_of(texts[0]) == "length":
                self.stats["judge_truncated"] += 1  # cut at max_new_tokens: parsed as it is, but reported
            answer = str(getattr(texts[0], "raw", texts[0]) if keep_raw else texts[0])
            c.answers.append(answer)
            c.messages.append({"role": "assistant", "content": answer})
            outcome = self.protocol.parse(turn_index, answer, c.language)
            if outcome is None:
                qid, idx, _ = where[c.sample]
                if self.unparseable == "error":
                    raise UnparseableAnswer(f"sample ({qid!r}, {idx}), sentence at {c.start}:{c.end}, turn "
                                            f"{TURN_NAMES[turn_index]!r}: expected "
                                            f"{self.protocol.expected(turn_index, c.language)}, got {answer[:200]!r}")
                c.label, c.unparseable_turn = self.unparseable, TURN_NAMES[turn_index]
                self.stats["unparseable"] += 1
            elif outcome == NEXT:
                c.messages.append(self.protocol.followup(turn_index + 1, c.values, c.language, c.answers))
            else:
                c.label = outcome

    def _run(self, convs: list[_Conversation], where: list[tuple[str, int, int]]) -> None:
        for c in convs:
            c.messages.extend(self.protocol.opening(c.values, c.language))
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
            for start, end in split_sentences(s.response, q.language, rules=self.splitter):
                values = {"question": q.question, "document": q.document or "", "response": s.response,
                          "sentence": self.judged_text(s.response[start:end], q.language), "topic": q.topic}
                convs.append(_Conversation(sample=i, start=start, end=end, language=q.language, values=values))
        self._run(convs, where)
        by_sample: list[list[Sentence]] = [[] for _ in samples]
        for c in convs:
            raw: dict[str, Any] = {"answers": c.answers}
            if c.values["sentence"] != samples[c.sample].response[c.start:c.end]:
                raw["judged_text"] = c.values["sentence"]
            if c.unparseable_turn is not None:
                raw["unparseable"] = c.unparseable_turn
            by_sample[c.sample].append(Sentence(text=samples[c.sample].response[c.start:c.end], start=c.start,
                                                end=c.end, label=c.label or "", raw=raw))
            self.stats["sentences"] += 1
            self.stats["label:" + (c.label or "")] += 1
        return [Annotation.from_sample(s, sents, self.annotator_id) for s, sents in zip(samples, by_sample)]
