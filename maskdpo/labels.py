"""The label vocabulary and the policy that turns judge labels into correct / hallucinated.

The ANAH-v2 judge types each sentence as ``ok`` (no hallucination), ``nofact``
(states no fact), ``contradictory`` or ``unverifiable``. The authors' released
pair format knows only ``no_hallucination`` / ``hallucination``. One policy maps
all six; an unknown label is an error, never a guess.

Default: ``nofact`` counts as correct, consistent with the ANAH score
(``100 × (N − #contradictory − #unverifiable) / N``). With
``nofact_correct=False`` fact-free sentences are treated as hallucinated
(masked out of the chosen response, kept in the rejected one).
"""

from __future__ import annotations

from dataclasses import dataclass

ANAH_LABELS = ("ok", "nofact", "contradictory", "unverifiable")
BINARY_LABELS = ("no_hallucination", "hallucination")
KNOWN_LABELS = ANAH_LABELS + BINARY_LABELS

CORRECT = "no_hallucination"
HALLUCINATED = "hallucination"


class UnknownLabel(ValueError):
    pass


@dataclass(frozen=True)
class LabelPolicy:
    nofact_correct: bool = True

    def is_correct(self, label: str) -> bool:
        """True when a sentence with this label should count as correct."""
        if label in ("ok", CORRECT):
            return True
        if label in ("contradictory", "unverifiable", HALLUCINATED):
            return False
        if label == "nofact":
            return self.nofact_correct
        raise UnknownLabel(f"unknown label {label!r}; expected one of {', '.join(KNOWN_LABELS)}")

    def to_binary(self, label: str) -> str:
        """The authors' binary string for a label."""
        return CORRECT if self.is_correct(label) else HALLUCINATED

    def describe(self) -> str:
        return f"nofact counts as {'correct' if self.nofact_correct else 'hallucinated'}"
