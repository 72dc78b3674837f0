"""``ScriptedAnahJudgeDouble``: a test double of the ANAH-v2 judge behind the ChatBackend interface.

The real judge (an InternLM2-7B) cannot run here. The double honours the
backend contract (``generate(requests, decoding) -> list[list[str]]``, one
answer per request with ``n=1``, order kept) and answers the three-turn
protocol from a script: ``script[sentence]`` is the list of answers for turns
1, 2, 3 of that sentence's conversation. The turn is the number of assistant
messages already in the conversation; the sentence is read from the first
user message, where it comes last (``Sentence to check: ...`` / ``待检查的句子：...``). Every call
is recorded, so tests can count judge calls per turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from maskdpo.backends.base import Decoding, GenerationRequest

SENTENCE_MARKERS = (re.compile(r"Sentence to check: (.*)\Z", re.S), re.compile(r"待检查的句子：(.*)\Z", re.S))


def sentence_of(messages: list[dict]) -> str:
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    for marker in SENTENCE_MARKERS:
        found = marker.search(first_user)
        if found:
            return found.group(1)
    raise AssertionError(f"no sentence marker in the judge prompt: {first_user[:200]!r}")


@dataclass
class ScriptedAnahJudgeDouble:
    script: dict[str, list[str]]
    name: str = "scripted-anah-judge-double"
    model: str = "scripted-anah-judge-double"
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    decodings: list[Decoding] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        self.calls.append(list(requests))
        self.decodings.append(decoding)
        out = []
        for r in requests:
            assert r.n == 1, "the judge is asked for one answer per turn"
            assert r.messages[-1]["role"] == "user", "each turn ends with the judge's next question"
            turn = sum(1 for m in r.messages if m["role"] == "assistant")
            out.append([self.script[sentence_of(r.messages)][turn]])
        return out
