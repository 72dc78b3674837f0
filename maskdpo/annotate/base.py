"""The annotator interface: samples in, sentence-labelled annotations out.

Annotators are pluggable (``--annotator NAME``): the ANAH-v2 judge, the toy
world's exact knowledge-base oracle, or a user's own judge registered in
:data:`ANNOTATORS`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, Sequence

from ..records import Annotation, Question, Sample


class Annotator(Protocol):
    name: str  # recorded in every annotation

    def annotate(self, samples: Sequence[Sample], questions: dict[str, Question]) -> list[Annotation]:
        """One annotation per sample, in order; ``questions`` maps question id to question."""
        ...


ANNOTATORS: dict[str, str] = {
    "anah-v2": "maskdpo.annotate.anah_v2:AnahV2Annotator",
    "toyworld-oracle": "maskdpo.toyworld.oracle:OracleAnnotator",
}


def annotator_class(name: str) -> type:
    """The class registered as ``name`` in :data:`ANNOTATORS` (imported only now)."""
    if name not in ANNOTATORS:
        raise ValueError(f"unknown annotator {name!r}; choose one of {', '.join(sorted(ANNOTATORS))}")
    module, cls = ANNOTATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_annotator(name: str, **options: Any) -> Annotator:
    return annotator_class(name)(**options)
