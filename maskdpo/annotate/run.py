"""The annotation stage: samples + questions → annotation records (sentence spans and labels).

Resumable and shardable like sampling: records are appended as each batch is
judged, keyed by ``(question_id, sample_index)``; a restart with the same
settings skips what is written; ``--shard K/N`` takes the K-th contiguous
block of the samples, so the N outputs concatenated equal the unsharded one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

from ..jsonl import JsonlAppender
from ..prompt_sets import load_questions
from ..records import Annotation
from ..sentences import check_splitter_rules
from ..settings import knob, settings_dict, write_settings
from ..stage import BackendSettings, check_outputs, check_resumable, parse_shard, select_items, settings_path
from ..validate import check_known_questions, read_samples
from .anah_v2 import UNPARSEABLE_RULES, default_unparseable
from .base import Annotator, annotator_class

IDENTITY_FIELDS = ("samples", "questions", "annotator", "backend", "model", "prompts", "unparseable", "splitter",
                   "allow_unpinned_prompts",
                   "max_new_tokens", "annotator_options", "server_profile")


@dataclass
class AnnotateSettings(BackendSettings):
    """The annotation stage's knobs; the judge's backend knobs are inherited from
    :class:`maskdpo.stage.BackendSettings` (``--server-n`` is not offered: the judge answers once per prompt)."""

    samples: Path = knob(None, "Samples JSONL (from `maskdpo sample`).")
    questions: Path = knob(None, "Questions the samples answer (the judge needs each question's document): our "
                                 "question records, or ANAH's layouts (question_document.jsonl, opencompass/anah) "
                                 "as a file, a dataset folder or a Hub name, as `maskdpo sample --questions`.")
    out: Path = knob(None, "Annotations JSONL to write (appended to and resumed if it exists).")
    annotator: str = knob("anah-v2", "Annotator: anah-v2 (the ANAH-v2 judge on a backend), toyworld-oracle, "
                                     "or another registered in maskdpo.annotate.base.ANNOTATORS.")
    model: str = knob("opencompass/anah-v2", "anah-v2: the judge model (path or served name).")
    prompts: str = knob("official", "anah-v2: the judge protocol's prompts. official = ANAH-v2's own prompt functions "
                                    "and system message (pinned, sha256-checked, from the protocol cache; fetched "
                                    "on first use, see `maskdpo protocol`); FILE.py = a local copy of the official "
                                    "prompt file; maskdpo = our packaged templates for general-purpose judges; "
                                    "FILE.json = templates of your own (format: docs/sampling.md).")
    allow_unpinned_prompts: bool = knob(False, "anah-v2: accept a --prompts FILE.py whose sha256 is not the pinned one.")
    unparseable: Optional[Literal["ok", "nofact", "contradictory", "unverifiable", "error"]] = knob(
        None, "anah-v2: label for a judge answer the protocol cannot read, or `error` to stop. Default: ok under "
              "the official protocol (the official score's effect), unverifiable under ours.")
    splitter: Literal["anah-v2", "maskdpo"] = knob("anah-v2", "Sentence rules: anah-v2 (the official ANAH-v2 "
                                                              "splitter's boundaries) or maskdpo (ours; see "
                                                              "docs/sampling.md).")
    max_new_tokens: int = knob(512, "anah-v2: maximum tokens of each judge answer.")
    annotator_options: Optional[str] = knob(None, "JSON object of extra options for the annotator's constructor.")
    batch_size: int = knob(64, "Samples per annotation batch (each judge turn is one backend call per batch).")
    limit: Optional[int] = knob(None, "Use only the first LIMIT samples (for trials).")
    shard: str = knob("0/1", "K/N: take the K-th (0-based) of N contiguous blocks of the samples.")
    # The judge's default differs from the policy's: opencompass/anah-v2 is InternLM2, whose code ships in the repo.
    trust_remote_code: bool = knob(True, "hf and lmdeploy backends: run the judge repository's own code "
                                         "(opencompass/anah-v2 is InternLM2, whose modeling code ships in the repo).")
    skip_invalid: bool = knob(False, "Skip and count malformed sample and question lines instead of stopping.")
    allow_empty: bool = knob(False, "Accept a samples or questions file with no record (otherwise an error).")

    option_help: ClassVar[dict[str, str]] = {
        "backend": "anah-v2: backend running the judge (lmdeploy, openai, hf).",
        "base_url": "openai backend: server URL (default: $OPENAI_BASE_URL).",
        "server_profile": "openai backend: which sampling fields the server is sent (see `maskdpo sample --help`); "
                          "the judge is greedy: temperature 0, and top-k 1, min-p 0, repetition penalty 1.0 where "
                          "the profile can send them.",
        "tokenizer": "openai backend: a local copy of the judge's tokenizer, to record the chat template the server "
                     "is expected to apply.",
    }
    cli_exclude: ClassVar[tuple[str, ...]] = ("server_n",)
    # The order of --help and of the settings file: the stage's story, shared knobs where they belong in it.
    option_order: ClassVar[tuple[str, ...]] = ("samples", "questions", "out", "annotator", "backend", "model",
        "prompts", "allow_unpinned_prompts", "unparseable", "splitter", "max_new_tokens", "annotator_options",
        "batch_size", "limit", "shard", "device", "trust_remote_code", "tp", "engine", "base_url", "api_key",
        "concurrency", "server_n", "server_profile", "tokenizer", "max_retries", "timeout",
        "allow_model_mismatch", "skip_invalid", "allow_empty")


@dataclass
class AnnotateSummary:
    out: str
    samples: int  # samples in this shard
    written: int
    already_done: int
    sentences: int
    labels: dict[str, int] = field(default_factory=dict)
    unparseable: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the judge's backend reports (openai: profile, retries...)
    truncated_answers: int = 0  # judge answers cut at max_new_tokens (finish_reason "length")

    def line(self) -> str:
        rate = self.sentences / self.seconds if self.seconds > 0 else 0.0
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none"
        text = (f"{self.out}: {self.written} samples annotated ({self.sentences} sentences, {rate:.2f} sentences/s), "
                f"{self.already_done} already there; labels: {labels}; unparseable judge answers: {self.unparseable}")
        if self.truncated_answers:
            text += f"; TRUNCATED judge answers (max_new_tokens reached): {self.truncated_answers}"
        return "\n".join([text] + [f"  {note}" for note in self.notes])


def build_annotator(settings: AnnotateSettings) -> Annotator:
    """``cls.from_settings(settings, **options)`` when the class has it, else ``cls(**options)``."""
    cls = annotator_class(settings.annotator)
    options = parse_options(settings.annotator_options)
    if hasattr(cls, "from_settings"):
        return cls.from_settings(settings, **options)
    return cls(**options)


def parse_options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--annotator-options is not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(options, dict):
        raise ValueError(f"--annotator-options must be a JSON object, got {text!r}")
    return options


def validate(settings: AnnotateSettings) -> None:
    for name in ("samples", "questions", "out"):
        if getattr(settings, name) in (None, ""):
            raise ValueError(f"--{name} is required")
    if settings.batch_size < 1 or settings.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    parse_shard(settings.shard)
    parse_options(settings.annotator_options)
    check_splitter_rules(settings.splitter)
    if settings.unparseable is not None and settings.unparseable not in UNPARSEABLE_RULES:
        raise ValueError(f"--unparseable must be one of {', '.join(UNPARSEABLE_RULES)}, got {settings.unparseable!r}")


def effective_unparseable(settings: AnnotateSettings) -> str | None:
    """``--unparseable`` as given, or the default of the anah-v2 protocol that ``--prompts`` names."""
    if settings.unparseable is not None or settings.annotator != "anah-v2":
        return settings.unparseable
    return default_unparseable(settings.prompts)


def run_annotation(settings: AnnotateSettings, annotator: Annotator | None = None,
                   read_stats=None) -> AnnotateSummary:
    """Annotate the selected samples, appending to ``settings.out``.

    Inputs (every sample's question known), the output location and the
    resume guard are checked before a judge loads; ``read_stats`` receives
    what the reads saw (questions and samples together).
    """
    from tqdm import tqdm

    validate(settings)
    out = Path(settings.out)
    check_outputs(out)
    read = dict(skip_invalid=settings.skip_invalid, allow_empty=settings.allow_empty, stats=read_stats)
    questions = {q.id: q for q in load_questions(Path(settings.questions), **read)}
    located = select_items(read_samples(Path(settings.samples), **read), settings.limit, settings.shard)
    check_known_questions(settings.samples, located, questions, settings.questions)
    samples = [s for _, s in located]
    recorded = settings.for_the_record(unparseable=effective_unparseable(settings))
    check_resumable(out, settings_dict(recorded), IDENTITY_FIELDS)

    with JsonlAppender(out, key=lambda d: (str(d["question_id"]), int(d["sample_index"]))) as writer:
        pending = [s for s in samples if s.key not in writer]
        already = len(writer.done)
        if not pending:
            return AnnotateSummary(str(out), len(samples), 0, already, 0)
        if annotator is None:
            # Cheap checks before a judge model loads: a missing question or document fails now.
            precheck = getattr(annotator_class(settings.annotator), "precheck", None)
            if precheck is not None:
                precheck(pending, questions)
            annotator = build_annotator(settings)
        write_settings(settings_path(out), recorded, annotator_name=annotator.name,
                       annotator_id=getattr(annotator, "annotator_id", annotator.name))
        start = time.perf_counter()
        labels: Counter = Counter()
        stats_before = Counter(getattr(annotator, "stats", {}))
        written = sentences = 0
        with tqdm(total=len(pending), unit="sample", desc="annotating", dynamic_ncols=True) as bar:
            for b in range(0, len(pending), settings.batch_size):
                batch = pending[b:b + settings.batch_size]
                annotations = annotator.annotate(batch, questions)
                if len(annotations) != len(batch):
                    raise RuntimeError(f"annotator {annotator.name} returned {len(annotations)} annotations "
                                       f"for {len(batch)} samples")
                for s, ann in zip(batch, annotations):
                    if ann.key != s.key:
                        raise RuntimeError(f"annotator {annotator.name} returned {ann.key} in place of {s.key}")
                    record = ann.to_dict()
                    Annotation.from_dict(record)  # spans and labels valid before they are written
                    writer.write(record)
                    written += 1
                    sentences += len(ann.sentences)
                    labels.update(x.label for x in ann.sentences)
                bar.update(len(batch))
                bar.set_postfix(sentences_per_s=f"{sentences / max(time.perf_counter() - start, 1e-9):.1f}")
        stats = Counter(getattr(annotator, "stats", {}))
        unparseable = stats["unparseable"] - stats_before["unparseable"]
        truncated = stats["judge_truncated"] - stats_before["judge_truncated"]
    judge = getattr(annotator, "backend", None)
    notes = judge.notes() if hasattr(judge, "notes") else []
    return AnnotateSummary(str(out), len(samples), written, already, sentences, dict(labels), unparseable,
                           time.perf_counter() - start, notes, truncated)

