"""The ANAH score: sentence-level hallucination rate pooled over a test set.

Definition (ANAH-v2's ``eval/anah_v2/eval.py``, and Mask-DPO Table 1)::

    N       = number of judged sentences, over all sentences of all responses
    #Inc    = #contradictory + #unverifiable
    #Cor    = N − #Inc                     (ok and nofact both count as correct)
    %Score  = 100 × #Cor / N

The score is pooled, not a mean of per-response scores: responses ``[ok]`` and
``[ok, contradictory, contradictory, contradictory]`` give 2/5 = 40.0, where a
per-response mean would give (100 + 25) / 2 = 62.5.

Rounding: the paper prints 49.19 for 461 correct and 476 incorrect sentences;
100 × 461 / 937 = 49.1995…, which rounds to 49.20. The printed value is the
score *truncated* to two decimals, so :func:`truncate2` truncates, in exact
integer arithmetic (no float error can move a boundary value).

Unparseable judge answers: an annotator marks a sentence whose judge answer it
could not parse by setting ``raw["unparseable"]`` (to the judge turn that failed, or true; the label is then
whatever its documented rule assigned). They are counted here, never dropped.

Several runs of one model (different seeds) are reported as the mean and
spread of the per-run scores, with mean counts.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from ..labels import ANAH_LABELS, BINARY_LABELS, LabelPolicy
from ..records import Annotation, Sentence

INCORRECT_LABELS = ("contradictory", "unverifiable")


def truncate2(numerator: int, denominator: int) -> float:
    """``100 × numerator / denominator`` truncated (toward zero) to two decimals.

    Exact: ``floor(10000 × numerator / denominator) / 100`` on integers.
    461 / 937 → 49.19 (rounding would give 49.20).
    """
    if denominator <= 0:
        raise ValueError(f"no sentences to score (denominator {denominator})")
    return (10000 * numerator // denominator) / 100


def is_unparseable(sentence: Sentence) -> bool:
    """True when the annotator flagged the judge's answer for this sentence as unparseable."""
    raw = sentence.raw
    return isinstance(raw, dict) and bool(raw.get("unparseable"))


@dataclass
class AnahScore:
    """One run's pooled ANAH score with its counts."""

    sentences: int  # N
    correct: int  # #Cor = N − #Inc
    incorrect: int  # #Inc = #contradictory + #unverifiable
    label_counts: dict[str, int]
    unparseable: int  # sentences whose judge answer the annotator could not parse
    responses: int
    empty_responses: int  # empty responses (no sentence; contribute nothing to N)
    # Annotator id (protocol, prompts and their sha256, splitter, judge) -> responses it labelled.
    annotators: dict[str, int] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """%Score, truncated to two decimals (see module docstring)."""
        return truncate2(self.correct, self.sentences)

    @property
    def exact_score(self) -> float:
        return 100.0 * self.correct / self.sentences

    def to_dict(self) -> dict:
        return {"score": self.score, "exact_score": self.exact_score, "correct": self.correct,
                "incorrect": self.incorrect, "sentences": self.sentences, "label_counts": dict(self.label_counts),
                "unparseable": self.unparseable, "responses": self.responses,
                "empty_responses": self.empty_responses, "annotators": dict(self.annotators)}


def anah_score(annotations: Iterable[Annotation], policy: LabelPolicy = LabelPolicy()) -> AnahScore:
    """Pool every sentence of every annotation into one ANAH score.

    ``policy`` decides ``nofact`` (correct by default, as the official score);
    binary labels (``no_hallucination`` / ``hallucination``) are accepted too.
    """
    labels: Counter[str] = Counter({label: 0 for label in ANAH_LABELS})
    correct = incorrect = unparseable = responses = empty = 0
    seen: set[tuple[str, int]] = set()
    annotators: Counter[str] = Counter()
    for annotation in annotations:
        # A repeated response would be counted twice; a non-empty one without sentences would vanish from N.
        if annotation.key in seen:
            raise ValueError(f"sample {annotation.key} is annotated twice in one run")
        seen.add(annotation.key)
        annotators[annotation.annotator] += 1
        responses += 1
        if not annotation.sentences:
            if annotation.response.strip():
                raise ValueError(f"sample {annotation.key}: a non-empty response with no sentences cannot be scored")
            empty += 1
        for sentence in annotation.sentences:
            labels[sentence.label] += 1
            unparseable += is_unparseable(sentence)
            if policy.is_correct(sentence.label):
                correct += 1
            else:
                incorrect += 1
    total = correct + incorrect
    if total == 0:
        raise ValueError(f"no sentences to score in {responses} responses")
    # Keep binary labels out of the table unless they occur.
    label_counts = {k: v for k, v in labels.items() if k in ANAH_LABELS or (k in BINARY_LABELS and v)}
    return AnahScore(sentences=total, correct=correct, incorrect=incorrect, label_counts=label_counts,
                     unparseable=unparseable, responses=responses, empty_responses=empty,
                     annotators=dict(annotators))


@dataclass
class AnahRuns:
    """Several runs (seeds) of one model: mean and spread of per-run scores, mean counts."""

    runs: list[AnahScore] = field(default_factory=list)

    @property
    def mean_score(self) -> float:
        return round(statistics.fmean(r.score for r in self.runs), 2)

    @property
    def std_score(self) -> float:
        """Sample standard deviation (n − 1) of the per-run scores; 0.0 for one run."""
        if len(self.runs) < 2:
            return 0.0
        return round(statistics.stdev(r.score for r in self.runs), 2)

    @property
    def mean_correct(self) -> float:
        return statistics.fmean(r.correct for r in self.runs)

    @property
    def mean_incorrect(self) -> float:
        return statistics.fmean(r.incorrect for r in self.runs)

    def to_dict(self) -> dict:
        scores = [r.score for r in self.runs]
        return {"runs": len(self.runs), "score": self.mean_score, "score_std": self.std_score,
                "score_min": min(scores), "score_max": max(scores),
                "correct": self.mean_correct, "incorrect": self.mean_incorrect,
                "unparseable": statistics.fmean(r.unparseable for r in self.runs),
                "annotators": sorted({a for r in self.runs for a in r.annotators}),
                "per_run": [r.to_dict() for r in self.runs]}


def anah_runs(runs: Iterable[Iterable[Annotation]], policy: LabelPolicy = LabelPolicy()) -> AnahRuns:
    """Score each run on its own, then summarise across runs."""
    scored = [anah_score(run, policy) for run in runs]
    if not scored:
        raise ValueError("no runs to score")
    return AnahRuns(scored)


def format_count(value: float) -> str:
    """Counts print as integers; a mean over runs keeps one decimal when it is not whole."""
    return str(int(value)) if math.isclose(value, round(value)) else f"{value:.1f}"
