"""``maskdpo demo --study topics``: the subset selection (pure) and the report, on synthetic results.

The study itself trains three models; it is run by hand and recorded in docs/bench/toyworld.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskdpo.records import Annotation, Sentence
from maskdpo.toyworld.demo import DemoSettings
from maskdpo.toyworld.report import FORMAT, GROUPS, summarize_study, write_study_reports
from maskdpo.toyworld.study import select_topic_subsets, split_by_topics, topic_counts


def _questions(per_topic: dict[str, int]) -> dict[str, str]:
    return {f"q-{t}-{i}": t for t, n in per_topic.items() for i in range(n)}


def test_topic_counts_are_the_shares_of_the_topics():
    assert topic_counts(12) == [4, 8, 12]
    assert topic_counts(3) == [1, 2, 3]
    assert topic_counts(10, (0.5, 1.0)) == [5, 10]
    with pytest.raises(ValueError, match="strictly growing"):
        topic_counts(2)  # 1/3 and 2/3 of 2 topics both round to 1
    with pytest.raises(ValueError):
        topic_counts(12, (0.5, 1.5))


def test_subsets_have_equal_size_and_cover_the_designed_topic_counts():
    qt = _questions({f"f{i:02d}": 8 for i in range(12)})
    subsets = select_topic_subsets(qt, seed=3)
    assert [len(s.topics) for s in subsets] == [4, 8, 12]
    assert [len(s.question_ids) for s in subsets] == [32, 32, 32]  # all the pairs of the smallest topic set
    for s in subsets:
        assert len(set(s.question_ids)) == len(s.question_ids)  # no question twice
        assert {qt[q] for q in s.question_ids} == set(s.topics)  # every topic covered, none outside
        counts = s.per_topic(qt)
        assert max(counts.values()) - min(counts.values()) <= 1  # questions spread evenly over the topics
    assert subsets[0].per_topic(qt) == {t: 8 for t in subsets[0].topics}
    assert set(subsets[0].topics) < set(subsets[1].topics) < set(subsets[2].topics)  # nested


def test_selection_is_deterministic_and_depends_on_the_seed():
    qt = _questions({f"f{i:02d}": 6 for i in range(9)})
    again = dict(reversed(list(qt.items())))  # input order does not matter
    assert select_topic_subsets(qt, seed=1) == select_topic_subsets(again, seed=1)
    assert select_topic_subsets(qt, seed=1) != select_topic_subsets(qt, seed=2)


def test_uneven_topics_still_give_equal_sizes_when_a_topic_runs_out():
    # Some families kept fewer pairs (questions without a useful pair are dropped).
    qt = _questions({"a": 8, "b": 1, "c": 7, "d": 2, "e": 8, "f": 3})
    subsets = select_topic_subsets(qt, fractions=(1 / 3, 2 / 3, 1.0), seed=0)
    sizes = {len(s.question_ids) for s in subsets}
    assert len(sizes) == 1
    for s in subsets:
        counts = s.per_topic(qt)
        assert all(c >= 1 for c in counts.values())
        for t, c in counts.items():  # a topic short of its even share gave all it had
            assert c <= sum(1 for q in qt if qt[q] == t)


def test_explicit_size_and_its_errors():
    qt = _questions({f"f{i}": 4 for i in range(6)})
    assert [len(s.question_ids) for s in select_topic_subsets(qt, seed=0, pairs=6)] == [6, 6, 6]
    with pytest.raises(ValueError, match="cannot cover 6 topics"):
        select_topic_subsets(qt, seed=0, pairs=5)
    with pytest.raises(ValueError, match="only 8 pairs"):
        select_topic_subsets(qt, seed=0, pairs=9)


def _annotation(qid: str) -> Annotation:
    return Annotation(question_id=qid, sample_index=0, messages=[], response="They lived in Jorvik.", model="m",
                      backend="hf", generation={},
                      sentences=[Sentence(text="They lived in Jorvik.", start=0, end=21, label="ok")])


def test_split_by_topics():
    qt = {"q1": "a", "q2": "b", "q3": "a"}
    seen, unseen = split_by_topics([_annotation(q) for q in ("q1", "q2", "q3")], qt, ("a",))
    assert [a.question_id for a in seen] == ["q1", "q3"] and [a.question_id for a in unseen] == ["q2"]


def _group(anah: float) -> dict:
    return {"anah": anah, "fact_precision": anah - 10, "facts_per_response": 3.0}


def _seed_result(seed: int, anahs: list[float]) -> dict:
    settings = []
    for k, anah in zip((4, 8, 12), anahs):
        groups = {"train": _group(anah), "test": _group(anah - 5), "test_seen": _group(anah - 4),
                  "test_unseen": _group(anah - 6) if k < 12 else None}
        settings.append({"topics": k, "pairs": 32, "families": [], "pairs_per_family": {}, "groups": groups})
    return {"seed": seed, "pairs_available": 96, "families": 12,
            "base": {"train": _group(60.0), "test": _group(58.0)}, "settings": settings}


def test_report_on_synthetic_results(tmp_path):
    per_seed = [_seed_result(0, [70.0, 72.0, 75.0]), _seed_result(1, [72.0, 74.0, 79.0])]
    summary = summarize_study(per_seed)
    last = summary["settings"][2]["groups"]
    assert last["train"]["anah"]["mean"] == pytest.approx(77.0)
    assert last["test_unseen"] is None  # every family trained on: no unseen family
    assert summary["settings"][0]["groups"]["test_unseen"]["anah"]["per_seed"] == [64.0, 66.0]
    paths = write_study_reports(DemoSettings(out=tmp_path, quick=True, seeds=2), per_seed)
    md = paths["markdown"].read_text()
    assert "| Mask-DPO, 12 families | 12 | 32 | 2.7 | 77.00 ± 2.83 |" in md
    assert "| Mask-DPO, 4 families | 4 | 32 | 8.0 | 71.00 ± 1.41 | 66.00 ± 1.41 | 67.00 ± 1.41 | 65.00 ± 1.41 |" in md
    assert "| base policy (no preference training) | – | – | – | 60.00 ± 0.00 |" in md
    assert "| 12 − 4 families | 6.00 ± 1.41 (2/2) | 6.00 ± 1.41 (2/2) |" in md  # within-seed: +5 and +7
    assert summary["settings"][1]["minus_fewest_topics"]["train"]["per_seed"] == [2.0, 2.0]
    report = json.loads(paths["json"].read_text())
    assert report["format"] == FORMAT and report["per_seed"] == per_seed
    assert set(report["summary"]["settings"][0]["groups"]) == set(GROUPS)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_with_different_numbers_of_settings_are_an_error():
    short = _seed_result(1, [70.0, 72.0, 75.0])
    short["settings"] = short["settings"][:2]
    with pytest.raises(ValueError, match="number of study settings"):
        summarize_study([_seed_result(0, [70.0, 72.0, 75.0]), short])


def test_cli_help_mentions_the_study():
    proc = subprocess.run([sys.executable, "-m", "maskdpo.cli", "demo", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "--study [topics|mask]" in proc.stdout and "study-topics" in proc.stdout and "study-mask" in proc.stdout


def test_cli_rejects_an_unknown_study(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "maskdpo.cli", "demo", "--study", "people", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "people" in proc.stderr
    assert not list(Path(tmp_path).iterdir())  # nothing started
