import math

import pytest

from maskdpo.labels import LabelPolicy
from maskdpo.metrics.anah import AnahRuns, anah_runs, anah_score, format_count, truncate2
from maskdpo.records import Annotation, Sentence


def annotation(labels, qid="q", index=0, raws=None):
    """An annotation whose response is one sentence per label ("S0. S1. ...")."""
    texts = [f"S{i}." for i in range(len(labels))]
    response = " ".join(texts)
    sentences, pos = [], 0
    for i, (text, label) in enumerate(zip(texts, labels)):
        start = response.index(text, pos)
        raw = raws[i] if raws else None
        sentences.append(Sentence(text=text, start=start, end=start + len(text), label=label, raw=raw))
        pos = start + len(text)
    return Annotation(question_id=qid, sample_index=index, messages=[{"role": "user", "content": "?"}],
                      response=response, model="m", backend="b", generation={}, sentences=sentences)


def test_pooled_over_sentences_not_mean_of_responses():
    score = anah_score([annotation(["ok"]), annotation(["ok"] + ["contradictory"] * 3, index=1)])
    assert (score.correct, score.incorrect, score.sentences) == (2, 3, 5)
    assert score.score == 40.0
    per_response_mean = (100.0 + 25.0) / 2
    assert per_response_mean == 62.5 and score.score != per_response_mean


def test_paper_value_461_476_truncates_to_4919():
    assert truncate2(461, 461 + 476) == 49.19
    assert round(100 * 461 / 937, 2) == 49.2  # what rounding would print instead
    ann = annotation(["ok"] * 461 + ["unverifiable"] * 200 + ["contradictory"] * 276)
    score = anah_score([ann])
    assert (score.correct, score.incorrect, score.score) == (461, 476, 49.19)
    assert math.isclose(score.exact_score, 100 * 461 / 937)


@pytest.mark.parametrize("num, den, expected", [(1, 3, 33.33), (2, 3, 66.66), (1, 1, 100.0), (0, 7, 0.0), (7753, 10000, 77.53)])
def test_truncation_is_exact(num, den, expected):
    assert truncate2(num, den) == expected


def test_nofact_counts_correct_by_default_and_policy_can_flip_it():
    anns = [annotation(["nofact", "ok", "unverifiable", "contradictory"])]
    assert anah_score(anns).score == 50.0
    assert anah_score(anns).label_counts == {"ok": 1, "nofact": 1, "contradictory": 1, "unverifiable": 1}
    assert anah_score(anns, LabelPolicy(nofact_correct=False)).score == 25.0


def test_unparseable_answers_are_counted_and_keep_their_label():
    # the ANAH-v2 annotator names the turn whose answer failed: raw = {"answers": [...], "unparseable": "type"}
    raws = [{"answers": ["<Facts>", "x", "???"], "unparseable": "type"}, "<No Hallucination>", {"unparseable": True}]
    score = anah_score([annotation(["unverifiable", "ok", "ok"], raws=raws)])
    assert score.unparseable == 2
    assert score.sentences == 3 and score.incorrect == 1


def test_empty_responses_counted_and_no_sentences_is_an_error():
    score = anah_score([annotation([]), annotation(["ok"], index=1)])
    assert score.empty_responses == 1 and score.responses == 2 and score.score == 100.0
    with pytest.raises(ValueError, match="no sentences"):
        anah_score([annotation([])])


def test_several_runs_mean_and_spread():
    run1 = [annotation(["ok", "ok", "ok", "contradictory"])]  # 75.0
    run2 = [annotation(["ok", "contradictory"])]  # 50.0
    run3 = [annotation(["ok"] * 5)]  # 100.0
    runs = anah_runs([run1, run2, run3])
    assert isinstance(runs, AnahRuns)
    assert runs.mean_score == 75.0
    assert runs.std_score == 25.0  # sample std of 75, 50, 100
    assert runs.mean_correct == pytest.approx((3 + 1 + 5) / 3)
    assert runs.mean_incorrect == pytest.approx(2 / 3)
    d = runs.to_dict()
    assert (d["runs"], d["score_min"], d["score_max"]) == (3, 50.0, 100.0)
    assert anah_runs([run1]).std_score == 0.0


def test_format_count():
    assert format_count(461.0) == "461" and format_count(3.3333) == "3.3"
