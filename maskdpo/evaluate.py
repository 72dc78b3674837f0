"""The evaluation stage: response/annotation files → ANAH score, FactScore, Table-1 reports.

Two entry points, both thin under ``maskdpo eval``:

- :func:`score_files` scores existing files: annotation files for the ANAH
  score (one file = one run), response (sample) files for FactScore;
- :func:`run_end_to_end` starts from model paths and prompt sets: sample
  (greedy by default), annotate, score, report — each step resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from .backends.base import ChatBackend, Decoding, load_backend
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
from .validate import check_output_dir, read_annotations, read_samples

Metric = Literal["anah", "factscore", "both"]


@dataclass
class ScoreSettings:
    out: Path = knob(None, "Folder for report.md, report.json, report.png, per-response FactScore details "
                           "and the judge cache.")
    metric: Metric = knob("both", "Which metric(s) to compute.")
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
    device: str = knob("auto", "hf backend (judge, and with `eval run` the evaluated models): auto, cpu or cuda.")
    server_profile: Literal["auto", "extended", "openai"] = knob(
        "auto", "Every openai backend here: which sampling fields the server is sent (see `maskdpo sample --help`).")
    max_retries: int = knob(5, "Every openai backend here: retries of a failed call (HTTP 500 at most twice).")
    timeout: float = knob(600.0, "Every openai backend here: seconds per call.")


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


def _openai_options(settings: ScoreSettings) -> dict:
    return {"server_profile": settings.server_profile, "max_retries": settings.max_retries,
            "timeout": settings.timeout}


def make_judge(settings: ScoreSettings, backend: ChatBackend | None = None) -> CachedJudge:
    if backend is None:
        if not settings.judge_model:
            raise ValueError("--judge-model is required for FactScore")
        options: dict[str, Any] = {}
        if settings.judge_backend == "openai":
            options = {"base_url": settings.judge_base_url, **_openai_options(settings)}
        elif settings.judge_backend == "hf":
            options = {"device": settings.device, "batch_size": settings.judge_batch_size}
        backend = load_backend(settings.judge_backend, settings.judge_model, **options)
    cache = settings.judge_cache or Path(settings.out) / "judge-cache.jsonl"
    return CachedJudge(backend, Decoding.greedy(settings.judge_max_new_tokens), settings.judge_batch_size, cache)


def validate(settings: ScoreSettings, anah: list[str], facts: list[str]) -> None:
    if settings.out in (None, ""):
        raise ValueError("--out is required")
    check_output_dir(settings.out)
    if settings.metric in ("anah", "both") and not anah:
        raise ValueError(f"--metric {settings.metric} needs at least one --anah NAME=ANNOTATIONS.jsonl")
    if settings.metric in ("factscore", "both"):
        if not facts:
            raise ValueError(f"--metric {settings.metric} needs at least one --factscore NAME=RESPONSES.jsonl")
        if settings.wiki_db is None:
            raise ValueError("FactScore needs --wiki-db (FActScore's enwiki-20230401.db or a DB in its format)")
    if settings.judge_batch_size < 1 or settings.passages < 1 or settings.gamma < 0:
        raise ValueError("--judge-batch-size and --passages must be >= 1, --gamma >= 0")


def score_files(settings: ScoreSettings, anah: list[str], facts: list[str], questions: list[Path] = (),
                judge_backend: ChatBackend | None = None, progress: bool = True, *, skip_invalid: bool = False,
                allow_empty: bool = False, read_stats: ReadStats | None = None) -> dict[str, Path]:
    """Score ``NAME=FILE,...`` specs (one file per run) and write the reports; returns the report paths.

    ``judge_backend`` replaces the one the settings name (tests pass a double).
    Every input is read and checked (repeated records, empty files) before
    anything is scored or written; ``read_stats`` receives what the reads saw.
    """
    anah = anah if settings.metric != "factscore" else []
    facts = facts if settings.metric != "anah" else []
    validate(settings, anah, facts)
    read = dict(skip_invalid=skip_invalid, allow_empty=allow_empty, stats=read_stats)
    anah_inputs = {}
    for spec in anah:
        name, files = parse_spec(spec)
        anah_inputs[name] = [load_annotations(f, **read) for f in files]
    fact_inputs = {}
    for spec in facts:
        name, files = parse_spec(spec)
        fact_inputs[name] = [(str(f), [s for _, s in read_samples(f, **read)]) for f in files]
    topics = load_topic_questions(list(questions)) if fact_inputs else {}
    extra = {"anah": list(anah), "factscore": list(facts), "questions": [str(q) for q in questions]}
    return score_models(settings, anah_inputs, fact_inputs, topics, judge_backend, progress, extra)


def score_models(settings: ScoreSettings, anah: dict[str, list[list[Annotation]]],
                 facts: dict[str, list[tuple[str, list[Sample]]]], topics: dict[str, Question],
                 judge_backend: ChatBackend | None = None, progress: bool = True,
                 extra: dict | None = None) -> dict[str, Path]:
    """Score in-memory runs per model (ANAH: annotation runs; FactScore: (label, samples) runs); write reports."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, ModelResult] = {}
    policy = LabelPolicy(nofact_correct=settings.nofact_correct)
    for name, runs in anah.items():
        results.setdefault(name, ModelResult(name)).anah = anah_runs(runs, policy)
    if facts:
        judge = make_judge(settings, judge_backend)
        db = WikiDB(settings.wiki_db)
        retriever = load_retriever(settings.retriever, settings.embedding_model)
        try:
            for name, runs in facts.items():
                for i, (label, samples) in enumerate(runs):
                    result = factscore(items_from_samples(samples, topics), judge, db, retriever,
                                       gamma=settings.gamma, k=settings.passages, progress=progress)
                    write_jsonl(out / f"factscore-{_slug(name)}-run{i}.jsonl", [r.to_dict() for r in result.responses])
                    results.setdefault(name, ModelResult(name)).factscore.append({**result.summary(), "run": label})
        finally:
            judge.close()
            db.close()
    extra = extra or {}
    write_settings(out / "eval-settings.json", settings, **extra)
    return write_report(out, list(results.values()), settings={**settings_dict(settings), **extra})


# ---------------------------------------------------------------- end to end


@dataclass
class EndToEndSettings(ScoreSettings):
    anah_questions: Optional[Path] = knob(None, "ANAH test questions with reference documents (ANAH-v2's "
                                                "question_document.jsonl, opencompass/anah records or question JSONL).")
    bio_entities: Optional[Path] = knob(None, "Biography prompts: FActScore's entity list, one entity per line.")
    limit: Optional[int] = knob(None, "Use only the first LIMIT questions of each prompt set (for trials).")
    backend: str = knob("hf", "Backend that generates the evaluated models' responses: lmdeploy, openai, hf.")
    greedy: bool = knob(True, "Greedy decoding (the paper's Table 1); --no-greedy samples with top-k/temperature.")
    runs: int = knob(1, "Responses per question, scored as separate runs (needs --no-greedy when > 1).")
    top_k: int = knob(40, "Sampling top-k (with --no-greedy).")
    temperature: float = knob(0.8, "Sampling temperature (with --no-greedy).")
    max_new_tokens: int = knob(512, "Maximum new tokens per evaluated response.")
    seed: int = knob(0, "Base seed for sampled evaluation.")
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


def _annotate_settings(settings: EndToEndSettings, samples: Path, questions: Path, out: Path):
    from .annotate.run import AnnotateSettings

    return AnnotateSettings(samples=samples, questions=questions, out=out, annotator=settings.annotator,
                            backend=settings.annotator_backend, model=settings.annotator_model,
                            batch_size=settings.batch_size, device=settings.device,
                            base_url=settings.annotator_base_url, prompts=settings.annotator_prompts,
                            splitter=settings.annotator_splitter, unparseable=settings.annotator_unparseable,
                            **_openai_options(settings))


def _sample_settings(settings: EndToEndSettings, questions: Path, out: Path, model: str):
    from .sample import SampleSettings

    return SampleSettings(questions=questions, out=out, model=model, backend=settings.backend, n=settings.runs,
                          top_k=settings.top_k, temperature=settings.temperature,
                          max_new_tokens=settings.max_new_tokens, greedy=settings.greedy, seed=settings.seed,
                          batch_size=settings.batch_size, device=settings.device, base_url=settings.base_url,
                          **_openai_options(settings))


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
        from .sample import check_model_path

        for _, path in pairs:
            check_model_path(settings.backend, path)
    if settings.metric in ("anah", "both") and settings.anah_questions is None:
        raise ValueError(f"--metric {settings.metric} needs --anah-questions")
    if settings.metric in ("factscore", "both"):
        if settings.bio_entities is None:
            raise ValueError(f"--metric {settings.metric} needs --bio-entities")
        if settings.wiki_db is None:
            raise ValueError("FactScore needs --wiki-db")
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
    from .annotate.run import run_annotation
    from .sample import run_sampling

    pairs = validate_end_to_end(settings, models, sampler)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    do_anah = settings.metric in ("anah", "both")
    do_facts = settings.metric in ("factscore", "both")
    anah_qs = load_anah_questions(settings.anah_questions, settings.limit) if do_anah else []
    bio_qs = load_biography_prompts(settings.bio_entities, settings.limit) if do_facts else []
    write_jsonl(out / "anah-questions.jsonl", [q.to_dict() for q in anah_qs]) if do_anah else None
    write_jsonl(out / "bio-questions.jsonl", [q.to_dict() for q in bio_qs]) if do_facts else None
    anah_inputs: dict[str, list[list[Annotation]]] = {}
    fact_inputs: dict[str, list[tuple[str, list[Sample]]]] = {}
    for name, path in pairs:
        folder = out / _slug(name)
        for kind, questions_file in (("anah", out / "anah-questions.jsonl"), ("bio", out / "bio-questions.jsonl")):
            if (kind == "anah" and not do_anah) or (kind == "bio" and not do_facts):
                continue
            samples_path = folder / f"{kind}-samples.jsonl"
            run_sampling(_sample_settings(settings, questions_file, samples_path, path), backend=sampler)
            # A folder reused with another --limit may hold more records: score this prompt set only.
            wanted = {q.id for q in (anah_qs if kind == "anah" else bio_qs)}
            if kind == "anah":
                annotations_path = folder / "anah-annotations.jsonl"
                run_annotation(_annotate_settings(settings, samples_path, questions_file, annotations_path),
                               annotator=annotator)
                annotations = [a for a in load_jsonl(annotations_path, Annotation.from_dict)[0]
                               if a.question_id in wanted]
                anah_inputs[name] = _runs_by_index(annotations, settings.runs)
            else:
                samples = [s for s in load_jsonl(samples_path, Sample.from_dict)[0] if s.question_id in wanted]
                fact_inputs[name] = [(f"{samples_path}#sample_index={j}", run)
                                     for j, run in enumerate(_runs_by_index(samples, settings.runs))]
    extra = {"models": [f"{n}={p}" for n, p in pairs]}
    return score_models(settings, anah_inputs, fact_inputs, {q.id: q for q in bio_qs}, judge_backend, progress, extra)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
