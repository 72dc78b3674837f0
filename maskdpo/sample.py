"""The sampling stage: questions JSONL → samples JSONL, ``n`` responses per question.

Seeds: question ``q`` gets ``derive_seed(seed, q.id)``; its response ``j``
is sampled with ``derive_seed(question_seed, j)`` (recorded as
``generation.seed``). Seeds therefore do not depend on file order, batching,
sharding or resumption, and a resumed or sharded run reproduces the same
samples.

Output is written as it goes, keyed by ``(question_id, sample_index)``: a
killed run restarted with the same settings continues where it stopped,
neither losing nor repeating a sample (a question cut off mid-way is
re-generated whole and only its missing samples are written). ``--shard K/N``
gives process K (0-based) the K-th contiguous block of the questions, so the
N outputs concatenated in order equal the unsharded output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator, Optional

from .backends.base import ChatBackend, Decoding, GenerationRequest, finish_reason_of
from .backends.prompting import derive_seed
from .jsonl import JsonlAppender, ReadStats
from .prompt_sets import load_questions
from .records import Question, Sample
from .settings import knob, settings_dict, write_settings
from .stage import (BackendSettings, SamplingKnobs, check_model_path, check_outputs, check_resumable, parse_shard,
                    select_items, settings_path)

# Settings that change what a sample is; resuming into a file made with others is an error.
IDENTITY_FIELDS = ("questions", "model", "backend", "n", "top_k", "top_p", "temperature", "max_new_tokens", "seed",
                   "system_prompt", "greedy", "server_profile", "server_n")


@dataclass
class SampleSettings(SamplingKnobs, BackendSettings):
    """The sampling stage's knobs; the decoding ones (``--top-k``, ``--temperature`` ...) and the backend's
    (``--backend``, ``--device``, ``--base-url`` ...) are inherited from :mod:`maskdpo.stage`."""

    # The order of --help and of the settings file: the stage's story, shared knobs where they belong in it.
    option_order: ClassVar[tuple[str, ...]] = ("questions", "out", "model", "backend", "n", "top_k", "top_p",
        "temperature", "max_new_tokens", "greedy", "seed", "system_prompt", "limit", "shard", "batch_size",
        "device", "trust_remote_code", "tp", "engine", "base_url", "api_key", "concurrency", "server_profile",
        "server_n", "tokenizer", "max_retries", "timeout", "allow_model_mismatch", "skip_invalid",
        "allow_empty")

    questions: Path = knob(None, "Questions: a JSONL file of question records (id, question, topic, language, "
                                 "document), or ANAH's layouts (question_document.jsonl, opencompass/anah) as a "
                                 "file, a dataset folder or a Hub name; ids as `eval run` gives them.")
    out: Path = knob(None, "Samples JSONL to write (appended to and resumed if it exists).")
    model: str = knob(None, "Model path or served model name (the policy being aligned: sample on-policy).")
    n: int = knob(8, "Responses per question.")
    top_p: float = knob(1.0, "Top-p; keep 1.0 (paper). Always sent explicitly so model defaults cannot leak in.")
    greedy: bool = knob(False, "Greedy decoding instead of sampling (evaluation-style; n must be 1).")
    system_prompt: Optional[str] = knob(None, "Optional system message put before each question.")
    limit: Optional[int] = knob(None, "Use only the first LIMIT questions (for trials).")
    shard: str = knob("0/1", "K/N: take the K-th (0-based) of N contiguous blocks of the questions.")
    batch_size: int = knob(16, "hf, lmdeploy: questions per backend call (and per write). The openai backend "
                               "streams: each question is written as soon as it is complete.")
    skip_invalid: bool = knob(False, "Skip and count malformed question lines instead of stopping.")
    allow_empty: bool = knob(False, "Accept a questions file with no question (otherwise an error).")


def validate(settings: SampleSettings) -> None:
    for name in ("questions", "out", "model"):
        if getattr(settings, name) in (None, ""):
            raise ValueError(f"--{name.replace('_', '-')} is required")
    if settings.n < 1:
        raise ValueError(f"--n must be >= 1, got {settings.n}")
    if settings.greedy and settings.n != 1:
        raise ValueError(f"--greedy gives identical responses: use --n 1 (got --n {settings.n})")
    if not settings.greedy:
        if settings.temperature <= 0:
            raise ValueError(f"--temperature must be > 0 when sampling, got {settings.temperature}")
        if not 0 < settings.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {settings.top_p}")
        if settings.top_k < 0:
            raise ValueError(f"--top-k must be >= 0 (0 = off), got {settings.top_k}")
    if settings.max_new_tokens < 1 or settings.batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be >= 1")
    parse_shard(settings.shard)


def decoding_of(settings: SampleSettings) -> Decoding:
    if settings.greedy:
        return Decoding.greedy(settings.max_new_tokens)
    return Decoding(do_sample=True, top_k=settings.top_k, top_p=settings.top_p, temperature=settings.temperature,
                    max_new_tokens=settings.max_new_tokens)


def prompt_messages(question: Question, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question.question}]


def question_seed(base_seed: int, question_id: str) -> int:
    return derive_seed(base_seed, question_id)


@dataclass
class SampleSummary:
    out: str
    questions: int  # questions in this shard
    written: int  # samples written by this run
    already_done: int  # samples found in the output and skipped
    seconds: float
    truncated: int = 0  # samples written with finish_reason "length"
    notes: list[str] = field(default_factory=list)  # what the backend reports (openai: profile, retries...)

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.out}: {self.written} samples written ({rate:.2f} samples/s), "
                f"{self.already_done} already there, {self.questions} questions in this shard")
        if self.truncated:
            text += (f"; {self.truncated} TRUNCATED (finish_reason \"length\": max-new-tokens or the server's "
                     "context ran out)")
        return "\n".join([text] + [f"  {note}" for note in self.notes])


def responses_in_order(backend: ChatBackend, requests: list[GenerationRequest], decoding: Decoding,
                       batch_size: int) -> Iterator[tuple[int, list[str]]]:
    """``(request index, its responses)`` in order, each as soon as the backend has it: per request
    from a backend that streams (``generate_stream``: openai), else per ``generate`` call of
    ``batch_size`` requests."""
    stream = getattr(backend, "generate_stream", None)
    chunks = [requests] if stream is not None else \
        [requests[b:b + batch_size] for b in range(0, len(requests), batch_size)]
    offset = 0
    for chunk in chunks:
        results = stream(chunk, decoding) if stream is not None else enumerate(backend.generate(chunk, decoding))
        count = 0
        for i, texts in results:
            if i != count or i >= len(chunk) or len(texts) != chunk[i].n:
                raise RuntimeError(f"backend {backend.name} returned {len(texts)} responses as request {offset + i}; "
                                   f"expected request {offset + count} with n={settings_n(chunk, count)}")
            yield offset + i, texts
            count += 1
        if count != len(chunk):
            raise RuntimeError(f"backend {backend.name} answered {count} of {len(chunk)} requests")
        offset += len(chunk)


def settings_n(requests: list[GenerationRequest], index: int) -> int | None:
    return requests[index].n if index < len(requests) else None


def run_sampling(settings: SampleSettings, backend: ChatBackend | None = None,
                 read_stats: ReadStats | None = None) -> SampleSummary:
    """Sample ``settings.n`` responses for each selected question, appending to ``settings.out``.

    Inputs, the output location and the resume guard are checked before a
    model loads; ``read_stats`` receives what the questions read saw.
    """
    from tqdm import tqdm

    validate(settings)
    out = Path(settings.out)
    check_outputs(out)
    if backend is None:
        check_model_path(settings.backend, settings.model)
    questions = select_items(load_questions(Path(settings.questions), skip_invalid=settings.skip_invalid,
                                            allow_empty=settings.allow_empty, stats=read_stats),
                             settings.limit, settings.shard)
    recorded = settings.for_the_record()
    check_resumable(out, settings_dict(recorded), IDENTITY_FIELDS)
    decoding = decoding_of(settings)

    with JsonlAppender(out, key=lambda d: (str(d["question_id"]), int(d["sample_index"]))) as writer:
        pending = [q for q in questions if any((q.id, j) not in writer for j in range(settings.n))]
        already = len(writer.done)
        todo = sum(1 for q in pending for j in range(settings.n) if (q.id, j) not in writer)
        if not pending:
            return SampleSummary(str(out), len(questions), 0, already, 0.0)
        if backend is None:
            backend = settings.load(settings.model, batch_size=settings.batch_size)
        write_settings(settings_path(out), recorded, backend_name=backend.name, decoding=decoding.to_dict(),
                       chat_template=getattr(backend, "chat_template_meta", None))
        start = time.perf_counter()  # after loading: the rate is the generation rate
        written = truncated = 0
        requests = [GenerationRequest(prompt_messages(q, settings.system_prompt), n=settings.n,
                                      seed=question_seed(settings.seed, q.id)) for q in pending]
        # One seed per response, except where the server draws all n from the question's seed.
        per_response_seeds = not settings.greedy and not getattr(backend, "server_n", False)
        with tqdm(total=todo, unit="sample", desc="sampling", dynamic_ncols=True) as bar:
            # Each question's samples are written as soon as it (and every question before it) is complete.
            for i, texts in responses_in_order(backend, requests, decoding, settings.batch_size):
                q, req = pending[i], requests[i]
                for j, text in enumerate(texts):
                    if (q.id, j) in writer:
                        continue  # written before an interruption
                    generation = {**decoding.to_dict(), "seed": derive_seed(req.seed, j) if per_response_seeds else None,
                                  "question_seed": req.seed, "base_seed": settings.seed}
                    server = getattr(text, "server", None)  # openai: profile, fields sent and not sent, served model
                    if server is not None:
                        generation["server"] = server
                    sample = Sample(question_id=q.id, sample_index=j, messages=req.messages, response=str(text),
                                    model=backend.model, backend=backend.name, generation=generation,
                                    meta={"topic": q.topic, "language": q.language,
                                          "chat_template": getattr(backend, "chat_template_meta", None)},
                                    finish_reason=finish_reason_of(text))
                    writer.write(sample.to_dict())
                    written += 1
                    truncated += sample.finish_reason == "length"
                    bar.update(1)
    notes = backend.notes() if hasattr(backend, "notes") else []
    return SampleSummary(str(out), len(questions), written, already, time.perf_counter() - start, truncated, notes)
