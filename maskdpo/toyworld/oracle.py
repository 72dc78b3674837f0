"""The exact annotator of the toy world: labels every sentence against the knowledge base.

It plays the ANAH-v2 judge's role and writes the same records (sentences and
spans from :func:`maskdpo.sentences.split_sentences`, by the ANAH-v2 judge's
rules unless ``splitter`` says otherwise, one label each), so every later stage
runs unchanged. Like the judge, it checks a sentence against the question's
reference, i.e. the person the question asks about:

- a fact-free sentence (an opener or a hedge from the world's list) → ``nofact``;
- a fact about the question's person that the KB has → ``ok`` when it matches,
  ``contradictory`` when it does not;
- a fact the reference does not cover (an attribute the person lacks, another
  person, a name not in the world) → ``unverifiable``;
- a sentence the oracle cannot parse (garbled model output) → ``unverifiable``
  with ``raw`` = ``"unparsed"``: counted as hallucinated, so a policy cannot
  gain by producing text nobody can check.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..records import Annotation, Question, Sample, Sentence
from .world import World, load_world


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{name}"), r"(?P<name>.+?)")
                      .replace(re.escape("{value}"), r"(?P<value>.+?)") + "$")


_PATTERNS: dict[str, list[tuple[str, re.Pattern]]] = {}  # world kind -> patterns


def world_patterns(world) -> list[tuple[str, re.Pattern]]:
    """Answer form ("They lived in X.") first, then reference form ("<name> lived in X."), per world kind."""
    if world.kind not in _PATTERNS:
        _PATTERNS[world.kind] = [(attr, _pattern(tpl)) for attr, tpl in world.answer_templates.items()] + \
                                [(attr, _pattern(tpl)) for attr, tpl in world.document_templates.items()]
    return _PATTERNS[world.kind]


def judge_sentence(world: World, person_id: str, sentence: str) -> tuple[str, str]:
    """``(label, raw)`` for one sentence of an answer about ``person_id`` (a simple or a rich world)."""
    text = sentence.strip()
    if text in world.nofact_sentences:
        return "nofact", "nofact"
    subject = world.person(person_id)
    for attr, pattern in world_patterns(world):
        m = pattern.match(text)
        if not m:
            continue
        name, value = m.groupdict().get("name", subject.name), m.group("value")
        if name != subject.name:
            return "unverifiable", f"{attr}: about {name!r}, not the question's person"
        right = subject.attributes.get(attr)
        if right is None:
            return "unverifiable", f"{attr}: not in the knowledge base"
        if value == right:
            return "ok", f"{attr}={value}"
        return "contradictory", f"{attr}={value}, knowledge base: {right}"
    return "unverifiable", "unparsed"


class OracleAnnotator:
    """``Annotator`` over a toy world: ``load_annotator("toyworld-oracle", world="world.json")``.

    ``splitter``: the sentence rules (:data:`maskdpo.sentences.SPLITTER_RULES`),
    the ANAH-v2 judge's by default, as the annotation stage's ``--splitter``;
    recorded in :attr:`annotator_id`.
    """

    name = "toyworld-oracle"

    def __init__(self, world: str | os.PathLike | World, splitter: str = "anah-v2"):
        from ..sentences import check_splitter_rules

        self.world = world if hasattr(world, "person_for_question") else load_world(Path(world))
        self.splitter = check_splitter_rules(splitter)

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> "OracleAnnotator":
        """Build from the annotation stage's settings: ``--splitter``, the world from ``--annotator-options``."""
        return cls(**{"splitter": settings.splitter, **options})

    @property
    def annotator_id(self) -> str:
        """Recorded in every annotation: the oracle and its sentence rules."""
        return f"{self.name} splitter={self.splitter}"

    def annotate(self, samples: Sequence[Sample], questions: dict[str, Question]) -> list[Annotation]:
        from ..sentences import split_sentences

        out = []
        for sample in samples:
            try:
                person = self.world.person_for_question(sample.question_id).id
            except KeyError:
                raise ValueError(f"sample {sample.key}: question {sample.question_id!r} is not in this toy world") from None
            sentences = []
            for start, end in split_sentences(sample.response, language="en", rules=self.splitter):
                text = sample.response[start:end]
                label, raw = judge_sentence(self.world, person, text)
                sentences.append(Sentence(text=text, start=start, end=end, label=label, raw=raw))
            out.append(Annotation.from_sample(sample, sentences, annotator=self.annotator_id))
        return out
