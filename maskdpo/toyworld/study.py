"""``maskdpo demo --study topics``: more training topics vs more questions per topic, same number of pairs.

The paper (Table 4) trains Mask-DPO on pairs from 894, 1,788 and 2,682 ANAH
topics and finds the ANAH score rising with the number of topics (65.04 /
71.56 / 77.53): breadth of topics helps more than depth. Here a **topic is a
family**: the family is the unit of shared structure (typical city, trade,
instrument, era) through which anything learned can reach an unseen person,
as a topic's related entities do in the paper's "knowledge topology" reading.
A person would be a poor topic: with two phrasings per person, "more
questions per person" would only repeat the same facts.

Per seed, after the demo's shared steps (world, base policy, samples, labels,
the full pair set; reused when ``OUT/seed-S/`` already has them)::

    study-topics/t{K}/pairs.jsonl    the equal-size subset covering K families
    study-topics/t{K}/train/maskdpo/ Mask-DPO from the same base policy (XTuner), converted
    study-topics/t{K}/eval/          fresh samples on both splits, oracle-labelled
    study-topics/scores.json
    eval/base-*                      the base policy's evaluation (shared with the demo)

Then ``OUT/study-topics.{md,json,png}`` (:mod:`maskdpo.toyworld.report`).
The held-out people belong to every family, so besides the whole held-out
split the report scores those whose family was in the subset ("seen families") and those whose family was not. In
the rich world (:mod:`maskdpo.toyworld.rich`) the subsets are drawn from the
training families, and the held-out families (no member in preference
training) are a third evaluation split.

``--study mask`` (:func:`run_mask_study`): the same pairs and base policy,
trained with the mask on both sides (Mask-DPO), on the chosen side only, on
the rejected side only, and on neither (DPO); the four models and the base
policy are scored on every split. The runs share ``OUT/seed-S/train/`` and
``eval/`` with the demo, so a study after a demo only trains the two one-sided
masks. Writes ``OUT/seed-S/study-mask/scores.json`` and
``OUT/study-mask.{md,json,png}``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..settings import write_settings
from .demo import DemoSettings, announce, evaluate_model, prepare_seed, resolve_threads, say, step_train, validate
from .report import FRACTIONS, MASK_MODELS, MASK_STUDY, STUDY, write_mask_study_reports, write_study_reports


@dataclass(frozen=True)
class TopicSubset:
    """Pairs (one per question) drawn from ``topics`` only."""

    topics: tuple[str, ...]  # in draw order
    question_ids: tuple[str, ...]

    def per_topic(self, question_topic: dict[str, str]) -> dict[str, int]:
        counts = {t: 0 for t in self.topics}
        for q in self.question_ids:
            counts[question_topic[q]] += 1
        return counts


def topic_counts(n_topics: int, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """``max(1, round(f * n_topics))`` per fraction; they must rise strictly and the last be <= n_topics."""
    counts = [max(1, round(f * n_topics)) for f in fractions]
    if any(not 0 < f <= 1 for f in fractions) or any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"{n_topics} topics cannot be split into strictly growing shares {fractions} "
                         f"(topic counts {counts}); the world needs more families")
    return counts


def select_topic_subsets(question_topic: dict[str, str], fractions: tuple[float, ...] = FRACTIONS, seed: int = 0,
                         pairs: int | None = None) -> list[TopicSubset]:
    """Equal-size pair subsets covering more and more topics (one pair per question id).

    ``question_topic``: question id -> topic, for every question that has a pair.
    Topics are shuffled once with ``Random(f"study-topics-{seed}")``; subset i
    covers the first ``k_i = topic_counts(...)[i]`` of them (the sets are
    nested). Each topic's questions are shuffled with
    ``Random(f"study-topics-{seed}-{topic}")``. Every subset has ``n`` pairs,
    ``n = pairs`` or, by default, all the pairs of the smallest topic set;
    subset i takes them round-robin over its topics (every topic's r-th
    question before any topic's (r+1)-th), so each of its topics gets
    ``n // k_i`` or ``n // k_i + 1`` pairs while it has that many.

    Raises ValueError when ``n < k_max`` (a topic would get no pair) or the
    smallest topic set has fewer than ``n`` pairs.
    """
    by_topic: dict[str, list[str]] = {}
    for q, t in sorted(question_topic.items()):
        by_topic.setdefault(t, []).append(q)
    topics = sorted(by_topic)
    random.Random(f"study-topics-{seed}").shuffle(topics)
    for t in topics:
        random.Random(f"study-topics-{seed}-{t}").shuffle(by_topic[t])
    counts = topic_counts(len(topics), fractions)
    smallest = sum(len(by_topic[t]) for t in topics[:counts[0]])
    n = smallest if pairs is None else pairs
    if n < counts[-1]:
        raise ValueError(f"{n} pairs cannot cover {counts[-1]} topics (at least one pair per topic)")
    if n > smallest:
        raise ValueError(f"the {counts[0]} topics of the smallest subset have only {smallest} pairs, fewer than {n}")
    subsets = []
    for k in counts:
        chosen: list[str] = []
        rank = 0
        while len(chosen) < n:
            for t in topics[:k]:
                if rank < len(by_topic[t]) and len(chosen) < n:
                    chosen.append(by_topic[t][rank])
            rank += 1
        subsets.append(TopicSubset(tuple(topics[:k]), tuple(chosen)))
    return subsets


def split_by_topics(annotations: list, question_topic: dict[str, str], topics: tuple[str, ...]) -> tuple[list, list]:
    """(annotations whose question's topic is in ``topics``, the others)."""
    inside = set(topics)
    seen = [a for a in annotations if question_topic[a.question_id] in inside]
    unseen = [a for a in annotations if question_topic[a.question_id] not in inside]
    return seen, unseen


# ---------------------------------------------------------------- running


def _group_metrics(metrics: dict, prep_world: Path, topics: tuple[str, ...] | None) -> dict:
    """The demo's per-split metrics plus held-out metrics split by whether the family was trained on."""
    from ..jsonl import load_jsonl
    from ..records import Annotation
    from .demo import response_metrics
    from .world import load_world

    groups = {split: metrics[split] for split in ("train", "test", "test_family") if split in metrics}
    if topics is None:  # the base policy: no subset
        return groups
    world = load_world(prep_world)
    question_topic = {q.id: q.topic for q in world.questions}
    records, _ = load_jsonl(metrics["test"]["annotations"], Annotation.from_dict)
    seen, unseen = split_by_topics(records, question_topic, topics)
    groups["test_seen"] = response_metrics(seen) if seen else None
    groups["test_unseen"] = response_metrics(unseen) if unseen else None
    return groups


def run_study_seed(settings: DemoSettings, seed: int) -> dict:
    """One seed: the shared steps, the subsets, Mask-DPO on each, evaluation; writes study-topics/scores.json."""
    from ..jsonl import load_jsonl, write_jsonl
    from ..records import Pair
    from .world import load_world

    prep = prepare_seed(settings, seed)
    study = prep.folder / STUDY
    study.mkdir(exist_ok=True)
    pairs = load_jsonl(prep.pairs, Pair.from_dict)[0]
    world = load_world(prep.world)
    question_topic = {p.question_id: world.person_for_question(p.question_id).family for p in pairs}
    subsets = select_topic_subsets(question_topic, FRACTIONS, seed)
    by_question = {p.question_id: p for p in pairs}
    result: dict = {"seed": seed, "pairs_available": len(pairs), "families": len(world.families), "settings": []}
    base_metrics = evaluate_model(prep, "base", prep.base, seed, prep.folder / "eval")
    result["base"] = _group_metrics(base_metrics, prep.world, None)
    for subset in subsets:
        folder = study / f"t{len(subset.topics)}"
        folder.mkdir(exist_ok=True)
        pairs_path = folder / "pairs.jsonl"
        if not pairs_path.exists():  # deterministic: a rerun would write the same file
            write_jsonl(pairs_path, [by_question[q].to_dict() for q in subset.question_ids])
        counts = subset.per_topic(question_topic)
        say(f"topics {len(subset.topics)}: {len(subset.question_ids)} pairs "
            f"({min(counts.values())}-{max(counts.values())} per family)")
        model = step_train(prep.plan, folder, "maskdpo", prep.base, pairs_path, seed, settings)
        metrics = evaluate_model(prep, "maskdpo", model, seed, folder / "eval")
        result["settings"].append({"topics": len(subset.topics), "pairs": len(subset.question_ids),
                                   "families": list(subset.topics), "pairs_per_family": counts,
                                   "groups": _group_metrics(metrics, prep.world, subset.topics)})
    (study / "scores.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_topic_study(settings: DemoSettings) -> dict[str, Path]:
    """Every seed (each resumable), then ``OUT/study-topics.{md,json,png}``; returns their paths."""
    validate(settings)
    settings = resolve_threads(settings)
    announce(settings, runs_per_seed=1.3)  # three Mask-DPO runs instead of two trainings
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out / f"{STUDY}-settings.json", settings, fractions=list(FRACTIONS))
    per_seed = [run_study_seed(settings, seed)
                for seed in range(settings.first_seed, settings.first_seed + settings.seeds)]
    return write_study_reports(settings, per_seed)


# ---------------------------------------------------------------- the mask ablation


def run_mask_study_seed(settings: DemoSettings, seed: int) -> dict:
    """One seed: the shared steps, the four masks from the same pairs and base policy, evaluation of each.

    Returns the demo's per-seed shape (``{"seed", "pairs", "models": {name: {split: metrics}}}``) and writes
    it to ``OUT/seed-S/study-mask/scores.json``.
    """
    prep = prepare_seed(settings, seed)
    scores: dict = {"seed": seed, "pairs": prep.pair_stats, "models": {}}
    for name in MASK_MODELS:
        model = prep.base if name == "base" else step_train(prep.plan, prep.folder, name, prep.base, prep.pairs,
                                                             seed, settings)
        scores["models"][name] = evaluate_model(prep, name, model, seed, prep.folder / "eval")
    folder = prep.folder / MASK_STUDY
    folder.mkdir(exist_ok=True)
    (folder / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    return scores


def run_mask_study(settings: DemoSettings) -> dict[str, Path]:
    """Every seed (each resumable), then ``OUT/study-mask.{md,json,png}``; returns their paths."""
    validate(settings)
    settings = resolve_threads(settings)
    announce(settings, runs_per_seed=1.6)  # four trainings instead of two
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out / f"{MASK_STUDY}-settings.json", settings)
    per_seed = [run_mask_study_seed(settings, seed)
                for seed in range(settings.first_seed, settings.first_seed + settings.seeds)]
    return write_mask_study_reports(settings, per_seed)
