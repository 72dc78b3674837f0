"""``AnahAnnotatorDouble``: a test double of the :class:`maskdpo.annotate.base.Annotator` protocol.

It stands in for the ANAH-v2 judge (a 7B model that cannot run here). It
honours the protocol: one :class:`~maskdpo.records.Annotation` per sample, in
order, sentences split with the project's splitter so spans are exact. Labels
come from a fixed rule on the sentence text (its length modulo 4 picks ok,
nofact, contradictory or unverifiable); every fifth sentence is flagged as an
unparseable judge answer the way annotators mark one (``raw.unparseable``).

``fail_after`` makes it raise after that many samples in total, to simulate a
run killed mid-way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from maskdpo.records import Annotation, Question, Sample, Sentence
from maskdpo.sentences import split_sentences

RULE = ("ok", "nofact", "contradictory", "unverifiable")


class SimulatedKill(RuntimeError):
    pass


@dataclass
class AnahAnnotatorDouble:
    name: str = "anah-annotator-double"
    fail_after: int | None = None
    annotated: list[tuple[str, int]] = field(default_factory=list)

    def annotate(self, samples: Sequence[Sample], questions: dict[str, Question]) -> list[Annotation]:
        out = []
        for sample in samples:
            if self.fail_after is not None and len(self.annotated) >= self.fail_after:
                raise SimulatedKill(f"killed after {self.fail_after} samples")
            language = questions[sample.question_id].language
            sentences = []
            for i, (a, b) in enumerate(split_sentences(sample.response, language)):
                text = sample.response[a:b]
                raw = {"unparseable": True, "answer": "?"} if i % 5 == 4 else {"answer": RULE[len(text) % 4]}
                sentences.append(Sentence(text=text, start=a, end=b, label=RULE[len(text) % 4], raw=raw))
            self.annotated.append(sample.key)
            out.append(Annotation.from_sample(sample, sentences, self.name))
        return out
