"""Choosing a chosen and a rejected response per question from annotated samples.

Per question (the paper's rule, §3.1):

    score(sample) = #correct sentences / #sentences        (correct: LabelPolicy)
    chosen   = the sample with the highest score
    rejected = the sample with the lowest score

Ties are broken by ``sample_index``: the chosen is the lowest-indexed of the
best samples, the rejected the highest-indexed of the worst (so with equal
scores the two are still different samples), and the same annotations always
give the same pairs whatever their order in the file. A question is dropped, with the reason counted, when it has
fewer than two scored samples, when the gap ``score(chosen) - score(rejected)``
is not positive or is below ``min_gap``, when the chosen response has no
correct sentence, or when the rejected one has no hallucinated sentence (with
the default positive-gap rule the last two cannot happen; with ``min_gap=0``
ties pass and they can), or when the chosen and rejected texts are identical
(two samples with the same response judged differently: no preference to
learn). Samples with an empty response have no sentences; they cannot be
scored and are counted, not used.

The output is the authors' pair format (``prompt``, ``chosen``, ``rejected``,
``chosen_item``/``rejected_item`` = ``{sents, type}``) extended with exact
spans, the judge's fine-grained labels, the scores and the sample indices.

The stage (:func:`run_pairs`) reads annotations, builds the pairs and writes
them with their effective settings and counts next to them
(:func:`maskdpo.stage.settings_path`: ``pairs.jsonl`` → ``pairs.jsonl.settings.json``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from .labels import LabelPolicy
from .records import Annotation, Pair, PairItem
from .settings import knob

if TYPE_CHECKING:
    from .jsonl import ReadStats

DROP_REASONS = ("fewer_than_two_samples", "gap_below_min", "chosen_has_no_correct_sentence",
                "rejected_has_no_hallucinated_sentence", "identical_responses")


@dataclass
class PairSettings:
    min_gap: Optional[float] = knob(None, "Keep a question only when score(chosen) - score(rejected) is at least this "
                                          "(scores are fractions of correct sentences, 0..1). Default: any positive gap; "
                                          "0 also keeps ties.")
    nofact_correct: bool = knob(True, "Count ANAH-v2 'nofact' sentences (no factual claim) as correct, as the ANAH "
                                      "score does; --no-nofact-correct counts them as hallucinated.")

    def __post_init__(self) -> None:
        if self.min_gap is not None and not 0.0 <= self.min_gap <= 1.0:
            raise ValueError(f"min_gap must be between 0 and 1, got {self.min_gap}")


@dataclass
class PairStats:
    questions: int = 0
    samples: int = 0
    kept: int = 0
    unscored_samples: int = 0  # samples with an empty response (no sentences)
    dropped: Counter = field(default_factory=Counter)  # reason -> questions

    def summary(self) -> str:
        lines = [f"questions: {self.questions}  samples: {self.samples}  pairs kept: {self.kept}"]
        if self.unscored_samples:
            lines.append(f"samples with an empty response (not scored): {self.unscored_samples}")
        for reason in DROP_REASONS:
            lines.append(f"dropped, {reason.replace('_', ' ')}: {self.dropped.get(reason, 0)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"questions": self.questions, "samples": self.samples, "kept": self.kept,
                "unscored_samples": self.unscored_samples,
                "dropped": {reason: self.dropped.get(reason, 0) for reason in DROP_REASONS}}


def score(annotation: Annotation, policy: LabelPolicy) -> float:
    """Fraction of the sample's sentences that are correct under ``policy``."""
    return sum(policy.is_correct(s.label) for s in annotation.sentences) / len(annotation.sentences)


def pair_item(annotation: Annotation, policy: LabelPolicy) -> PairItem:
    return PairItem(sents=[s.text for s in annotation.sentences],
                    type=[policy.to_binary(s.label) for s in annotation.sentences],
                    spans=[(s.start, s.end) for s in annotation.sentences],
                    labels=[s.label for s in annotation.sentences])


def pair_id(question_id: str, chosen_index: int, rejected_index: int) -> str:
    return f"{question_id}:{chosen_index}-{rejected_index}"


def choose(scored: list[tuple[float, Annotation]]) -> tuple[tuple[float, Annotation], tuple[float, Annotation]]:
    """Best and worst sample: ties go to the lowest sample_index for the best, the highest for the worst."""
    best = min(scored, key=lambda x: (-x[0], x[1].sample_index))
    worst = min(scored, key=lambda x: (x[0], -x[1].sample_index))
    return best, worst


def build_pairs(annotations: Iterable[Annotation], settings: PairSettings) -> tuple[list[Pair], PairStats]:
    """One pair per question where a useful pair exists; questions in order of first appearance."""
    policy = LabelPolicy(nofact_correct=settings.nofact_correct)
    stats = PairStats()
    by_question: dict[str, list[Annotation]] = {}
    seen: set[tuple[str, int]] = set()
    for a in annotations:
        if a.key in seen:
            raise ValueError(f"question {a.question_id!r} sample {a.sample_index} is annotated twice")
        seen.add(a.key)
        by_question.setdefault(a.question_id, []).append(a)
        stats.samples += 1
    pairs = []
    for qid, samples in by_question.items():
        stats.questions += 1
        scored = []
        for a in samples:
            if a.sentences:
                scored.append((score(a, policy), a))
            else:
                stats.unscored_samples += 1
        reason = None
        if len(scored) < 2:
            reason = "fewer_than_two_samples"
        else:
            (best_score, best), (worst_score, worst) = choose(scored)
            gap = best_score - worst_score
            if (settings.min_gap is None and gap <= 0) or (settings.min_gap is not None and gap < settings.min_gap) \
                    or best is worst:
                reason = "gap_below_min"
            elif not any(policy.is_correct(s.label) for s in best.sentences):
                reason = "chosen_has_no_correct_sentence"
            elif all(policy.is_correct(s.label) for s in worst.sentences):
                reason = "rejected_has_no_hallucinated_sentence"
            elif best.response == worst.response:
                reason = "identical_responses"
        if reason:
            stats.dropped[reason] += 1
            continue
        if best.messages != worst.messages:
            raise ValueError(f"question {qid!r}: samples {best.sample_index} and {worst.sample_index} have different "
                             f"prompts (messages); a pair needs one prompt")
        pairs.append(Pair(id=pair_id(qid, best.sample_index, worst.sample_index), prompt=best.messages,
                          chosen=best.response, rejected=worst.response, chosen_item=pair_item(best, policy),
                          rejected_item=pair_item(worst, policy), question_id=qid, chosen_score=best_score,
                          rejected_score=worst_score, chosen_sample_index=best.sample_index,
                          rejected_sample_index=worst.sample_index))
        stats.kept += 1
    return pairs, stats


# ---------------------------------------------------------------- the stage


@dataclass(kw_only=True)
class PairsRunSettings(PairSettings):
    """A pairs run: the pair rule (:class:`PairSettings`) plus what to read and how to write.

    The command declares these five as its own options (an existing ``--annotations`` file, flags);
    their help lives there, once."""

    annotations: Path
    out: Path
    authors_format: bool = False
    skip_invalid: bool = False
    allow_empty: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.annotations, self.out = Path(self.annotations), Path(self.out)

    def pair_settings(self) -> PairSettings:
        """Only the pair rule (what decides the pairs)."""
        return PairSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PairSettings)})


@dataclass
class PairsSummary:
    """What a pairs run read, kept and wrote."""

    annotations: Path
    out: Path
    read_line: str  # the annotations file: records read, invalid lines skipped
    stats: PairStats
    written: int  # pairs written to ``out``

    def line(self) -> str:
        """The counts by reason and where the pairs went (after :attr:`read_line`)."""
        return f"{self.stats.summary()}\nwrote {self.written} pairs to {self.out}"

    def lines(self) -> list[str]:
        """The whole report, one line per item."""
        return [self.read_line, *self.line().splitlines()]


def run_pairs(settings: PairsRunSettings, read_stats: "ReadStats | None" = None) -> PairsSummary:
    """Read ``settings.annotations``, build the pairs, write them and the effective settings (atomically).

    The output location is checked before anything is read; the annotations
    are checked across records (a repeated sample, two prompts for one
    question) with file and line. ``read_stats`` receives what the read saw
    (records, skipped lines).
    """
    from .jsonl import ReadStats, write_jsonl
    from .settings import write_settings
    from .stage import check_outputs, settings_path
    from .validate import check_same_prompt, read_annotations

    annotations, out = settings.annotations, settings.out
    check_outputs(out)
    read = read_stats if read_stats is not None else ReadStats()
    located = read_annotations(annotations, skip_invalid=settings.skip_invalid, allow_empty=settings.allow_empty,
                               stats=read)
    located = check_same_prompt(annotations, located, skip_invalid=settings.skip_invalid, stats=read)
    rule = settings.pair_settings()
    pairs, stats = build_pairs([a for _, a in located], rule)
    write_jsonl(out, [p.to_authors_dict() if settings.authors_format else p.to_dict() for p in pairs])
    # The pair rule and the input; how the run read (skip/allow-empty) shows in the counts instead.
    write_settings(settings_path(out), rule, annotations=str(annotations), authors_format=settings.authors_format,
                   invalid_lines_skipped=len(read.skipped), stats=stats.to_dict())
    return PairsSummary(annotations=annotations, out=out, read_line=read.summary(annotations), stats=stats,
                        written=len(pairs))
