"""``ScriptedJudgeDouble``: a test double of :class:`maskdpo.backends.base.ChatBackend` for judge LLMs.

It stands in for the judges that cannot run here (a 7B ANAH-v2 model, a
FactScore judge served over HTTP). It honours the documented backend contract
(``generate(requests, decoding) -> list[list[str]]``, ``request.n`` answers
per request, order kept) and answers the project's FactScore prompts by rule:

- fact splitting: each sentence is one fact (``- <sentence>``), unless the
  sentence is listed in ``fact_overrides`` (its answer is used verbatim, e.g.
  a malformed one);
- support: ``True`` when the fact's words appear in order in the retrieved
  passages shown in the prompt, else ``False``, unless the fact is listed in
  ``support_overrides``.

Every prompt it receives is recorded, so tests can count judge calls.
``fail_after`` makes it raise once it has answered that many prompts, to
simulate an evaluation killed mid-way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from maskdpo.backends.base import Decoding, GenerationRequest


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass
class ScriptedJudgeDouble:
    name: str = "scripted-judge-double"
    model: str = "scripted-judge-double"
    fact_overrides: dict[str, str] = field(default_factory=dict)
    support_overrides: dict[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    fail_after: int | None = None

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        if self.fail_after is not None and len(self.prompts) + len(requests) > self.fail_after:
            raise RuntimeError(f"judge killed after {len(self.prompts)} prompts")
        self.batches.append(len(requests))
        out = []
        for request in requests:
            prompt = request.messages[-1]["content"]
            self.prompts.append(prompt)
            out.append([self.answer(prompt)] * request.n)
        return out

    def answer(self, prompt: str) -> str:
        if prompt.rstrip().endswith("Answer:"):  # support prompt
            fact = prompt.rsplit("Statement:", 1)[1].rsplit("Answer:", 1)[0].strip()
            if fact in self.support_overrides:
                return self.support_overrides[fact]
            passages = prompt.split("Using only the passages above", 1)[0]
            return "True" if _norm(fact.rstrip(".")) in _norm(passages) else "False"
        sentence = prompt.rsplit("Sentence:", 1)[1].strip()
        if sentence in self.fact_overrides:
            return self.fact_overrides[sentence]
        return f"- {sentence}"


@dataclass
class ConstantAnswerJudgeDouble:
    """A judge double that gives every prompt the same answer (default: one no judge protocol can parse)."""

    model: str = "constant-answer-judge-double"
    answer: str = "I am not sure."
    name: str = "constant-answer-judge-double"
    prompts: list[str] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        self.prompts.extend(r.messages[-1]["content"] for r in requests)
        return [[self.answer] * r.n for r in requests]
