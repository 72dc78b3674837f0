"""Judge calls for metrics: any :class:`~maskdpo.backends.base.ChatBackend`, batched and cached on disk.

Every call is keyed by ``sha256(judge model, decoding, messages)``. Answers are
appended to a JSONL cache as each batch returns (:class:`~maskdpo.jsonl.JsonlAppender`),
so an interrupted evaluation resumes without paying for a call twice, and a
second run over the same inputs makes no call at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..backends.base import ChatBackend, Decoding, GenerationRequest
from ..jsonl import JsonlAppender, iter_jsonl


def call_key(model: str, decoding: Decoding, messages: list[dict]) -> str:
    payload = json.dumps({"model": model, "decoding": decoding.to_dict(), "messages": messages},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class JudgeStats:
    calls: int = 0  # prompts sent to the backend
    batches: int = 0  # backend.generate invocations
    cache_hits: int = 0

    def to_dict(self) -> dict:
        return {"calls": self.calls, "batches": self.batches, "cache_hits": self.cache_hits}


@dataclass
class CachedJudge:
    """Ask a backend many single-turn or multi-turn prompts; one answer each, greedy by default.

    ``batch_size`` prompts go to ``backend.generate`` at once (1 = one call at a
    time). ``cache_path`` None disables the disk cache (answers are still
    de-duplicated within a run).
    """

    backend: ChatBackend
    decoding: Decoding = field(default_factory=lambda: Decoding.greedy(max_new_tokens=256))
    batch_size: int = 16
    cache_path: str | Path | None = None
    stats: JudgeStats = field(default_factory=JudgeStats)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"judge batch size must be >= 1, got {self.batch_size}")
        self._answers: dict[str, str] = {}
        self._appender: JsonlAppender | None = None
        if self.cache_path is not None:
            self._appender = JsonlAppender(self.cache_path, key=lambda obj: obj["key"])
            if self._appender.path.exists():  # created at the first answer written
                for obj in iter_jsonl(self.cache_path):
                    self._answers[obj["key"]] = obj["answer"]

    @property
    def model(self) -> str:
        return getattr(self.backend, "model", type(self.backend).__name__)

    def ask(self, prompts: Sequence[list[dict]], progress: str | None = None) -> list[str]:
        """One answer per prompt (chat messages), in order."""
        keys = [call_key(self.model, self.decoding, p) for p in prompts]
        pending: dict[str, list[dict]] = {}
        for key, prompt in zip(keys, prompts):
            if key in self._answers:
                self.stats.cache_hits += 1
            elif key not in pending:
                pending[key] = prompt
        # Similar lengths share a batch: less padding for backends that pad (hf), same answers.
        todo = sorted(pending.items(), key=lambda kv: sum(len(m["content"]) for m in kv[1]))
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=progress, unit="call")
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            outputs = self.backend.generate([GenerationRequest(messages=p, n=1) for _, p in chunk], self.decoding)
            if len(outputs) != len(chunk) or any(len(o) != 1 for o in outputs):
                raise RuntimeError(f"judge backend {self.model!r} returned {len(outputs)} answers for {len(chunk)} prompts")
            self.stats.batches += 1
            self.stats.calls += len(chunk)
            for (key, _), (answer,) in zip(chunk, outputs):
                self._answers[key] = answer
                if self._appender is not None:
                    self._appender.write({"key": key, "model": self.model, "answer": answer})
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return [self._answers[k] for k in keys]

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
