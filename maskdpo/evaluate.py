"""The evaluation stage: response/annotation files → ANAH score, FactScore, Table-1 reports.

Two entry points, both thin under ``maskdpo eval``:

- :func:`score_files` scores existing files: annotation files for the ANAH
  score (one file = one run), response (sample) files for FactScore;
- :func:`run_end_to_end` starts from model paths and prompt sets: sample
  (greedy by default), annotate, score, report — each step resumable.

``--metric`` is decided once, by :func:`metrics_of`: a list of metric objects
(:class:`AnahMetric`, :class:`FactScoreMetric`), each knowing its inputs, how
they are checked and read, and how it scores them; the rest of the module
iterates over that list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from .backends.base import ChatBackend, Decoding
from .jsonl import ReadStats, RecordError, iter_jsonl, load_jsonl, write_jsonl
from .labels import LabelPolicy
from .metrics.anah import anah_runs
from .metrics.factscore import factscore, items_from_samples
from .metrics.judge import CachedJudge
from .metrics.retrieval import WikiDB, load_retriever
from .prompt_sets import load_anah_questions, load_biography_prompts
from .records import Annotation, Question, Sample
from .report import ModelResult, write_report
from .settings import knob, settings_dict, write_settings
from .stage import BackendSettings, SamplingKnobs, ServerKnobs, check_model_path
from .validate import check_output_dir, read_annotations, read_samples

MetricName = Literal["anah", "factscore", "both"]


@dataclass
class ScoreSettings(ServerKnobs):
    """``eval score``'s knobs. The server knobs (device, server_profile, max_retries, timeout) are inherited
    from :class:`maskdpo.stage.ServerKnobs`; ``option_help`` words them for eval, where one value reaches
    every backend of the run (judges and, with ``eval run``, the evaluated models)."""

    option_help: ClassVar[dict[str, str]] = {
        "device": "hf backend (judge, and with `eval run` the evaluated models): auto, cpu or cuda.",
        "server_profile": "Every openai backend here: which sampling fields the server is sent "
                          "(see `maskdpo sample --help`).",
        "max_retries": "Every openai backend here: retries of a failed call (HTTP 500 at most twice).",
        "timeout": "Every openai backend here: seconds per call.",
    }
    # The order of --help and of the settings file: the stage's story, shared knobs where they belong in it.
    option_order: ClassVar[tuple[str, ...]] = ("out", "metric", "nofact_correct", "wiki_db", "judge_backend",
        "judge_model", "judge_base_url", "judge_batch_size", "judge_max_new_tokens", "judge_cache", "gamma",
        "passages", "retriever", "embedding_model", "device", "server_profile", "max_retries", "timeout")

    out: Path = knob(None, "Folder for report.md, report.json, report.png, per-response FactScore details "
                           "and the judge cache.")
    metric: MetricName = knob("both", "Which metric(s) to compute.")
    nofact_correct: bool = knob(True, "ANAH: count fact-free sentences (nofact) as correct, as the official score.")
    wiki_db: Optional[Path] = knob(None, "FactScore: FActScore-format Wikipedia sqlite DB (enwiki-20230401.db).")
    judge_backend: str = knob("openai", "FactScore judge backend: openai (any OpenAI-compatible server), "
                                        "lmdeploy, hf.")
    judge_model: Optional[str] = knob(None, "FactScore judge: model path or served model name.")
    judge_base_url: Optional[str] = knob(None, "openai judge: server URL (default: $OPENAI_BASE_URL).")
    judge_batch_size: int = knob(16, "FactScore judge prompts per backend call (1 = one at a time).")
    judge_max_new_tokens: int = knob(256, "FactScore judge: maximum new tokens per answer (greedy decoding).")
    judge_cache: Optional[Path] = knob(None, "Judge-call cache JSONL (default: OUT/judge-cache.jsonl); "
                                             "a rerun or resumed run pays no call twice.")
    gamma: float = knob(10.0, "FactScore length penalty γ: exp(1 − γ/|facts|) below γ facts; 0 disables.")
    passages: int = knob(5, "FactScore: passages retrieved per fact.")
    retriever: Literal["bm25", "embedding", "bm25+embedding"] = knob("bm25", "FactScore passage retriever.")
    embedding_model: Optional[str] = knob(None, "Encoder model path for the embedding retriever.")


def parse_spec(spec: str) -> tuple[str, list[Path]]:
    """``NAME=FILE[,FILE...]`` → (name, files); each file is one run of that model."""
    name, sep, files = spec.partition("=")
    if not sep or not name.strip() or not files.strip():
        raise ValueError(f"expected NAME=FILE[,FILE...], got {spec!r}")
    return name.strip(), [Path(f.strip()) for f in files.split(",") if f.strip()]


def load_topic_questions(paths: list[Path]) -> dict[str, Question]:
    """Questions for topics: ``.txt`` = FActScore entity list, anything else = ANAH-style / question records."""
    questions: dict[str, Question] = {}
    for path in paths:
        loaded = load_biography_prompts(path) if Path(path).suffix == ".txt" else load_anah_questions(path)
        questions.update({q.id: q for q in loaded})
    return questions


def load_annotations(path: Path, *, skip_invalid: bool = False, allow_empty: bool = False,
                     stats: ReadStats | None = None) -> list[Annotation]:
    """Annotation records; a repeated sample is an error naming both lines (never counted twice), an
    empty file an error unless ``allow_empty``; a file of unannotated samples gets a hint."""
    try:
        return [a for _, a in read_annotations(path, skip_invalid=skip_invalid, allow_empty=allow_empty,
                                               stats=stats)]
    except RecordError as exc:
        if exc.field in ("format", "sentences") and _first_format(path) in ("maskdpo/sample@1", None):
            raise ValueError(f"{exc}; {path} holds samples, not annotations: label them first with "
                             f"`maskdpo annotate` (ANAH-v2 judge), or use `maskdpo eval run`") from None
        raise


def _first_format(path: Path) -> str | None:
    for obj in iter_jsonl(path, skip_invalid=True):
        return obj.get("format")
    return None


# ---------------------------------------------------------------- backends


def backend_knobs(settings: ServerKnobs, backend: str, base_url: str | None) -> dict[str, Any]:
    """One backend of an eval run (evaluated models, ANAH judge, FactScore judge): its name and server URL,
    and the server knobs all of them share; every other knob keeps its stage's default."""
    shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(ServerKnobs)}
    return {"backend": backend, "base_url": base_url, **shared}


# The FactScore judge has no --trust-remote-code: it keeps what each backend does when not told, as it always
# has (the lmdeploy backend's own default is True, the hf backend's False).
JUDGE_TRUST_REMOTE_CODE = {"lmdeploy": True, "hf": False}


def judge_backend_settings(settings: ScoreSettings) -> BackendSettings:
    """The FactScore judge's backend knobs."""
    return BackendSettings(**backend_knobs(settings, settings.judge_backend, settings.judge_base_url),
                           trust_remote_code=JUDGE_TRUST_REMOTE_CODE.get(settings.judge_backend, False))


def make_judge(settings: ScoreSettings, backend: ChatBackend | None = None) -> CachedJudge:
    if backend is None:
        if not settings.judge_model:
            raise ValueError("--judge-model is required for FactScore")
        backend = judge_backend_settings(settings).load(settings.judge_model, batch_size=settings.judge_batch_size)
    cache = settings.judge_cache or Path(settings.out) / "judge-cache.jsonl"
    return CachedJudge(backend, Decoding.greedy(settings.judge_max_new_tokens), settings.judge_batch_size, cache)


# ---------------------------------------------------------------- the metrics


@dataclass
class MetricInputs:
    """What one metric scores: each model's runs (ANAH: annotation lists; FactScore: ``(label, samples)``),
    and the questions the responses answer, by id (FactScore takes each response's topic from them)."""

    metric: Metric
    runs: dict[str, list]
    questions: dict[str, Question] = field(default_factory=dict)


@dataclass(frozen=True)
class AnahMetric:
    """The ANAH score of annotation runs: ``eval score --anah``; ``eval run`` samples answers to
    ``--anah-questions`` and annotates them with the ANAH-v2 judge."""

    name: ClassVar[str] = "anah"
    prompt_set: ClassVar[str] = "anah"  # eval run's files: anah-questions.jsonl, <model>/anah-samples.jsonl

    def check_files(self, settings: ScoreSettings, specs: list[str]) -> None:
        if not specs:
            raise ValueError(f"--metric {settings.metric} needs at least one --anah NAME=ANNOTATIONS.jsonl")

    def read_files(self, specs: list[str], questions: list[Path], **read: Any) -> MetricInputs:
        runs = {}
        for spec in specs:
            name, files = parse_spec(spec)
            runs[name] = [load_annotations(f, **read) for f in files]
        return MetricInputs(self, runs)

    def check_prompt_set(self, settings: EndToEndSettings) -> None:
        if settings.anah_questions is None:
            raise ValueError(f"--metric {settings.metric} needs --anah-questions")

    def load_prompt_set(self, settings: EndToEndSettings) -> list[Question]:
        return load_anah_questions(settings.anah_questions, settings.limit)

    def model_runs(self, settings: EndToEndSettings, folder: Path, samples: Path, questions: Path,
                   wanted: set[str], annotator: Any) -> list[list[Annotation]]:
        """Annotate one model's samples (resumable), then its runs of the ``wanted`` questions."""
        from .annotate.run import run_annotation

        annotations_path = folder / "anah-annotations.jsonl"
        run_annotation(annotate_settings(settings, samples, questions, annotations_path), annotator=annotator)
        annotations = [a for a in load_jsonl(annotations_path, Annotation.from_dict)[0] if a.question_id in wanted]
        return _runs_by_index(annotations, settings.runs)

    def score(self, settings: ScoreSettings, inputs: MetricInputs, results: dict[str, ModelResult],
              judge_backend: ChatBackend | None, progress: bool) -> None:
        policy = LabelPolicy(nofact_correct=settings.nofact_correct)
        for name, runs in inputs.runs.items():
            results.setdefault(name, ModelResult(name)).anah = anah_runs(runs, policy)


@dataclass(frozen=True)
class FactScoreMetric:
    """FactScore of response runs: ``eval score --factscore``; ``eval run`` samples biographies of
    ``--bio-entities``. Facts are checked against ``--wiki-db`` by the judge."""

    name: ClassVar[str] = "factscore"
    prompt_set: ClassVar[str] = "bio"  # eval run's files: bio-questions.jsonl, <model>/bio-samples.jsonl

    def check_files(self, settings: ScoreSettings, specs: list[str]) -> None:
        if not specs:
            raise ValueError(f"--metric {settings.metric} needs at least one --factscore NAME=RESPONSES.jsonl")
        if settings.wiki_db is None:
            raise ValueError("FactScore needs --wiki-db (FActScore's enwiki-20230401.db or a DB in its format)")

    def read_files(self, specs: list[str], questions: list[Path], **read: Any) -> MetricInputs:
        runs = {}
        for spec in specs:
            name, files = parse_spec(spec)
            runs[name] = [(str(f), [s for _, s in read_samples(f, **read)]) for f in files]
        return MetricInputs(self, runs, load_topic_questions(list(questions)))

    def check_prompt_set(self, settings: EndToEndSettings) -> None:
        if settings.bio_entities is None:
            raise ValueError(f"--metric {settings.metric} needs --bio-entities")
        if settings.wiki_db is None:
            raise ValueError("FactScore needs --wiki-db")

    def load_prompt_set(self, settings: EndToEndSettings) -> list[Question]:
        return load_biography_prompts(settings.bio_entities, settings.limit)

    def model_runs(self, settings: EndToEndSettings, folder: Path, samples: Path, questions: Path,
                   wanted: set[str], annotator: Any) -> list[tuple[str, list[Sample]]]:
        """One model's runs of the ``wanted`` questions, each labelled with where it comes from."""
        records = [s for s in load_jsonl(samples, Sample.from_dict)[0] if s.question_id in wanted]
        return [(f"{samples}#sample_index={j}", run) for j, run in enumerate(_runs_by_index(records, settings.runs))]

    def score(self, settings: ScoreSettings, inputs: MetricInputs, results: dict[str, ModelResult],
              judge_backend: ChatBackend | None, progress: bool) -> None:
        if not inputs.runs:
            return  # no model: no judge to load
        out = Path(settings.out)
        judge = make_judge(settings, judge_backend)
        db = WikiDB(settings.wiki_db)
        retriever = load_retriever(settings.retriever, settings.embedding_model)
        try:
            for name, runs in inputs.runs.items():
                for i, (label, samples) in enumerate(runs):
                    result = factscore(items_from_samples(samples, inputs.questions), judge, db, retriever,
                                       gamma=settings.gamma, k=settings.passages, progress=progress)
                    write_jsonl(out / f"factscore-{_slug(name)}-run{i}.jsonl", [r.to_dict() for r in result.responses])
                    results.setdefault(name, ModelResult(name)).factscore.append({**result.summary(), "run": label})
        finally:
            judge.close()
            db.close()


Metric = Union[AnahMetric, FactScoreMetric]
ALL_METRICS: tuple[Metric, ...] = (AnahMetric(), FactScoreMetric())  # report order: ANAH first
METRICS_OF: dict[str, tuple[Metric, ...]] = {"anah": ALL_METRICS[:1], "factscore": ALL_METRICS[1:],
                                             "both": ALL_METRICS}


def metrics_of(settings: ScoreSettings) -> list[Metric]:
    """The metrics ``--metric`` asks for, in report order."""
    if settings.metric not in METRICS_OF:
        raise ValueError(f"--metric must be one of {', '.join(METRICS_OF)}, got {settings.metric!r}")
    return list(METRICS_OF[settings.metric])


# ---------------------------------------------------------------- scoring files


def validate(settings: ScoreSettings, specs: dict[Metric, list[str]]) -> None:
    """``specs``: each metric of the run with its ``NAME=FILE[,FILE...]`` inputs."""
    if settings.out in (None, ""):
        raise ValueError("--out is required")
    check_output_dir(settings.out)
    for metric, metric_specs in specs.items():
        metric.check_files(settings, metric_specs)
    if settings.judge_batch_size < 1 or settings.passages < 1 or settings.gamma < 0:
        raise ValueError("--judge-batch-size and --passages must be >= 1, --gamma >= 0")


def score_files(settings: ScoreSettings, anah: list[str], facts: list[str], questions: list[Path] = (),
                judge_backend: ChatBackend | None = None, progress: bool = True, *, skip_invalid: bool = False,
                allow_empty: bool = False, read_stats: ReadStats | None = None) -> dict[str, Path]:
    """Score ``NAME=FILE,...`` specs (one file per run) and write the reports; returns the report paths.

    ``judge_backend`` replaces the one the settings name (tests pass a double).
    Every input is read and checked (repeated records, empty files) before
    anything is scored or written; ``read_stats`` receives what the reads saw.
    Specs of a metric ``--metric`` leaves out are ignored.
    """
    given = {AnahMetric.name: list(anah), FactScoreMetric.name: list(facts)}
    specs = {metric: given[metric.name] for metric in metrics_of(settings)}
    validate(settings, specs)
    read = dict(skip_invalid=skip_invalid, allow_empty=allow_empty, stats=read_stats)
    inputs = [metric.read_files(metric_specs, list(questions), **read) for metric, metric_specs in specs.items()]
    extra = {**{metric.name: specs.get(metric, []) for metric in ALL_METRICS}, "questions": [str(q) for q in questions]}
    return score_models(settings, inputs, judge_backend, progress, extra)


def score_models(settings: ScoreSettings, inputs: list[MetricInputs], judge_backend: ChatBackend | None = None,
                 progress: bool = True, extra: dict | None = None) -> dict[str, Path]:
    """Score in-memory runs, metric by metric, and write the reports (and the settings) under ``settings.out``."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, ModelResult] = {}
    for metric_inputs in inputs:
        metric_inputs.metric.score(settings, metric_inputs, results, judge_backend, progress)
    extra = extra or {}
    write_settings(out / "eval-settings.json", settings, **extra)
    return write_report(out, list(results.values()), settings={**settings_dict(settings), **extra})


# ---------------------------------------------------------------- end to end


@dataclass
class EndToEndSettings(ScoreSettings, SamplingKnobs):
    """``eval run``'s knobs: ``eval score``'s, the prompt sets, and how the evaluated models' responses are
    generated (decoding knobs inherited from :class:`maskdpo.stage.SamplingKnobs`, worded for eval)."""

    option_help: ClassVar[dict[str, str]] = {
        **ScoreSettings.option_help,
        "top_k": "Sampling top-k (with --no-greedy).",
        "temperature": "Sampling temperature (with --no-greedy).",
        "max_new_tokens": "Maximum new tokens per evaluated response.",
        "seed": "Base seed for sampled evaluation.",
    }
    # The order of --help and of the settings file: the stage's story, shared knobs where they belong in it.
    option_order: ClassVar[tuple[str, ...]] = ("out", "metric", "nofact_correct", "wiki_db", "judge_backend",
        "judge_model", "judge_base_url", "judge_batch_size", "judge_max_new_tokens", "judge_cache", "gamma",
        "passages", "retriever", "embedding_model", "device", "server_profile", "max_retries", "timeout",
        "anah_questions", "bio_entities", "limit", "backend", "greedy", "runs", "top_k", "temperature",
        "max_new_tokens", "seed", "batch_size", "base_url", "annotator", "annotator_model",
        "annotator_backend", "annotator_base_url", "annotator_prompts", "annotator_splitter",
        "annotator_unparseable")

    anah_questions: Optional[Path] = knob(None, "ANAH test questions with reference documents (ANAH-v2's "
                                                "question_document.jsonl, opencompass/anah records or question JSONL).")
    bio_entities: Optional[Path] = knob(None, "Biography prompts: FActScore's entity list, one entity per line.")
    limit: Optional[int] = knob(None, "Use only the first LIMIT questions of each prompt set (for trials).")
    backend: str = knob("hf", "Backend that generates the evaluated models' responses: lmdeploy, openai, hf.")
    greedy: bool = knob(True, "Greedy decoding (the paper's Table 1); --no-greedy samples with top-k/temperature.")
    runs: int = knob(1, "Responses per question, scored as separate runs (needs --no-greedy when > 1).")
    batch_size: int = knob(16, "Questions per generation call.")
    base_url: Optional[str] = knob(None, "openai backend for the evaluated models: server URL.")
    annotator: str = knob("anah-v2", "Sentence annotator for the ANAH score (anah-v2 = the official judge).")
    annotator_model: str = knob("opencompass/anah-v2", "ANAH-v2 judge model path or served name.")
    annotator_backend: str = knob("lmdeploy", "Backend that runs the ANAH-v2 judge: lmdeploy, openai, hf.")
    annotator_base_url: Optional[str] = knob(None, "openai backend for the ANAH-v2 judge: server URL.")
    annotator_prompts: str = knob("official", "ANAH-v2 judge prompts: official (the official protocol, from the "
                                              "protocol cache), FILE.py, maskdpo (ours) or FILE.json; see `maskdpo annotate`.")
    annotator_splitter: Literal["anah-v2", "maskdpo"] = knob(
        "anah-v2", "Sentence rules for the ANAH score: anah-v2 (the official splitter's boundaries) or maskdpo (ours).")
    annotator_unparseable: Optional[Literal["ok", "nofact", "contradictory", "unverifiable", "error"]] = knob(
        None, "Label for a judge answer the protocol cannot read (default: ok under the official protocol, "
              "unverifiable under ours) or error.")


def annotate_settings(settings: EndToEndSettings, samples: Path, questions: Path, out: Path):
    """The annotation stage's settings for the ANAH-v2 judge of ``eval run``."""
    from .annotate.run import AnnotateSettings

    return AnnotateSettings(samples=samples, questions=questions, out=out, annotator=settings.annotator,
                            model=settings.annotator_model, batch_size=settings.batch_size,
                            prompts=settings.annotator_prompts, splitter=settings.annotator_splitter,
                            unparseable=settings.annotator_unparseable,
                            **backend_knobs(settings, settings.annotator_backend, settings.annotator_base_url))


def sample_settings(settings: EndToEndSettings, questions: Path, out: Path, model: str):
    """The sampling stage's settings for one evaluated model of ``eval run``."""
    from .sample import SampleSettings

    return SampleSettings(questions=questions, out=out, model=model, n=settings.runs, top_k=settings.top_k,
                          temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                          greedy=settings.greedy, seed=settings.seed, batch_size=settings.batch_size,
                          **backend_knobs(settings, settings.backend, settings.base_url))


def _runs_by_index(records: list, runs: int) -> list[list]:
    """Split records by ``sample_index``: response j of every question is run j."""
    return [[r for r in records if r.sample_index == j] for j in range(runs)]


def validate_end_to_end(settings: EndToEndSettings, models: list[str], sampler: ChatBackend | None = None
                        ) -> list[tuple[str, str]]:
    if settings.out in (None, ""):
        raise ValueError("--out is required")
    check_output_dir(settings.out)
    pairs = []
    for spec in models:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--model expects NAME=PATH, got {spec!r}")
        pairs.append((name.strip(), path.strip()))
    if len({n for n, _ in pairs}) != len(pairs):
        raise ValueError(f"--model names must be unique, got {[n for n, _ in pairs]}")
    if sampler is None:
        for _, path in pairs:
            check_model_path(settings.backend, path)
    for metric in metrics_of(settings):
        metric.check_prompt_set(settings)
    if settings.runs < 1 or (settings.greedy and settings.runs != 1):
        raise ValueError(f"--runs {settings.runs}: greedy decoding gives one run; use --no-greedy for several")
    return pairs


def run_end_to_end(settings: EndToEndSettings, models: list[str], *, sampler: ChatBackend | None = None,
                   annotator: Any = None, judge_backend: ChatBackend | None = None,
                   progress: bool = True) -> dict[str, Path]:
    """Sample, annotate and score each ``NAME=PATH`` model; write the report under ``settings.out``.

    Everything is written as it goes under ``OUT/<name>/`` and resumed on rerun.
    Sampling and annotation are the pipeline's own stages
    (:func:`maskdpo.sample.run_sampling`, :func:`maskdpo.annotate.run.run_annotation`).
    ``sampler`` / ``annotator`` / ``judge_backend`` replace the ones the
    settings name (tests pass small models and doubles).
    """
    from .sample import run_sampling

    pairs = validate_end_to_end(settings, models, sampler)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    prompt_sets = [(metric, metric.load_prompt_set(settings)) for metric in metrics_of(settings)]
    for metric, questions in prompt_sets:
        write_jsonl(out / f"{metric.prompt_set}-questions.jsonl", [q.to_dict() for q in questions])
    runs: dict[Metric, dict[str, list]] = {metric: {} for metric, _ in prompt_sets}
    for name, path in pairs:
        folder = out / _slug(name)
        for metric, questions in prompt_sets:
            questions_file = out / f"{metric.prompt_set}-questions.jsonl"
            samples_path = folder / f"{metric.prompt_set}-samples.jsonl"
            run_sampling(sample_settings(settings, questions_file, samples_path, path), backend=sampler)
            # A folder reused with another --limit may hold more records: score this prompt set only.
            wanted = {q.id for q in questions}
            runs[metric][name] = metric.model_runs(settings, folder, samples_path, questions_file, wanted, annotator)
    inputs = [MetricInputs(metric, runs[metric], {q.id: q for q in questions}) for metric, questions in prompt_sets]
    extra = {"models": [f"{n}={p}" for n, p in pairs]}
    return score_models(settings, inputs, judge_backend, progress, extra)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
