import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskdpo.cli import main
from maskdpo.pairs import PairSettings, PairsRunSettings, build_pairs, run_pairs
from maskdpo.records import Annotation, Pair, Sentence

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def annotation(qid, index, labels, prompt="Q?"):
    texts = [f"Sentence {i} of sample {index}." for i in range(len(labels))]
    response = " ".join(texts)
    sentences, pos = [], 0
    for text, label in zip(texts, labels):
        sentences.append(Sentence(text, pos, pos + len(text), label))
        pos += len(text) + 1
    return Annotation(question_id=qid, sample_index=index, messages=[{"role": "user", "content": prompt}],
                      response=response, model="m", backend="b", generation={}, sentences=sentences)


def test_best_and_worst_with_scores_items_and_provenance():
    anns = [annotation("q1", 0, ["ok", "contradictory"]), annotation("q1", 1, ["ok", "ok", "nofact"]),
            annotation("q1", 2, ["unverifiable", "contradictory", "ok"])]
    pairs, stats = build_pairs(anns, PairSettings())
    assert stats.kept == 1 and stats.questions == 1 and stats.samples == 3
    (p,) = pairs
    assert (p.chosen_sample_index, p.rejected_sample_index) == (1, 2)
    assert p.id == "q1:1-2" and p.question_id == "q1"
    assert p.chosen_score == 1.0 and p.rejected_score == pytest.approx(1 / 3)
    assert p.chosen == anns[1].response and p.rejected == anns[2].response and p.prompt == anns[1].messages
    assert p.chosen_item.type == ["no_hallucination"] * 3
    assert p.rejected_item.type == ["hallucination", "hallucination", "no_hallucination"]
    assert p.rejected_item.labels == ["unverifiable", "contradictory", "ok"]
    assert [p.rejected[a:b] for a, b in p.rejected_item.spans] == p.rejected_item.sents
    # our output reads back as the same pair
    assert Pair.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_nofact_policy_switch():
    anns = [annotation("q1", 0, ["nofact", "ok"]), annotation("q1", 1, ["ok", "contradictory", "ok", "ok"])]
    (p,), _ = build_pairs(anns, PairSettings())
    assert p.chosen_sample_index == 0  # 2/2 against 3/4
    (p,), _ = build_pairs(anns, PairSettings(nofact_correct=False))
    assert p.chosen_sample_index == 1  # 1/2 against 3/4
    assert p.rejected_item.type == ["hallucination", "no_hallucination"]


def test_tie_breaking_is_deterministic_and_order_free():
    anns = [annotation("q1", i, labels) for i, labels in
            enumerate([["ok", "contradictory"], ["ok"], ["contradictory"], ["ok"], ["contradictory"]])]
    (p,), _ = build_pairs(anns, PairSettings())
    assert (p.chosen_sample_index, p.rejected_sample_index) == (1, 4)
    (q,), _ = build_pairs(list(reversed(anns)), PairSettings())
    assert q == p


def test_drops_are_counted_by_reason():
    anns = [
        annotation("single", 0, ["ok", "contradictory"]),
        annotation("tie", 0, ["ok", "contradictory"]), annotation("tie", 1, ["contradictory", "ok"]),
        annotation("small", 0, ["ok", "ok", "ok", "ok"]), annotation("small", 1, ["ok", "ok", "ok", "contradictory"]),
        annotation("allbad", 0, ["contradictory"]), annotation("allbad", 1, ["unverifiable"]),
        annotation("allgood", 0, ["ok"]), annotation("allgood", 1, ["ok", "nofact"]),
        annotation("empty", 0, []), annotation("empty", 1, ["ok", "contradictory"]),
        annotation("good", 0, ["ok"]), annotation("good", 1, ["contradictory"]),
    ]
    pairs, stats = build_pairs(anns, PairSettings())
    assert [p.question_id for p in pairs] == ["small", "good"]
    assert stats.dropped == {"fewer_than_two_samples": 2, "gap_below_min": 3}
    assert stats.unscored_samples == 1
    pairs, stats = build_pairs(anns, PairSettings(min_gap=0.5))
    assert [p.question_id for p in pairs] == ["good"] and stats.dropped["gap_below_min"] == 4
    # min_gap 0 lets ties through; then the per-side checks decide
    pairs, stats = build_pairs(anns, PairSettings(min_gap=0.0))
    assert [p.question_id for p in pairs] == ["tie", "small", "good"]
    assert stats.dropped["chosen_has_no_correct_sentence"] == 1
    assert stats.dropped["rejected_has_no_hallucinated_sentence"] == 1
    assert "pairs kept: 3" in stats.summary() and "chosen has no correct sentence: 1" in stats.summary()


def test_bad_inputs_to_build_pairs():
    with pytest.raises(ValueError, match="annotated twice"):
        build_pairs([annotation("q", 0, ["ok"]), annotation("q", 0, ["ok"])], PairSettings())
    with pytest.raises(ValueError, match="different prompts"):
        build_pairs([annotation("q", 0, ["ok"]), annotation("q", 1, ["contradictory"], prompt="Other?")],
                    PairSettings())
    with pytest.raises(ValueError, match="min_gap"):
        PairSettings(min_gap=1.5)


def test_pairs_command_reproduces_the_example_pairs(tmp_path):
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(main, ["pairs", "--annotations", str(DATA / "annotations.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pairs kept: 5" in result.output and "gap below min: 1" in result.output
    assert out.read_text(encoding="utf-8") == (DATA / "pairs.jsonl").read_text(encoding="utf-8")
    settings = json.loads((tmp_path / "pairs.jsonl.settings.json").read_text())
    assert not (tmp_path / "pairs.settings.json").exists()  # one naming rule: OUT + .settings.json
    assert settings["nofact_correct"] is True and settings["stats"]["kept"] == 5
    out = tmp_path / "authors.jsonl"
    result = runner.invoke(main, ["pairs", "--annotations", str(DATA / "annotations.jsonl"), "--out", str(out),
                                  "--authors-format"])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == (DATA / "authors_pairs.jsonl").read_text(encoding="utf-8")
    assert set(json.loads(out.read_text().splitlines()[0])) == {"prompt", "chosen", "rejected", "chosen_item",
                                                                 "rejected_item"}


def test_run_pairs_writes_the_pairs_and_their_settings_file_without_click(tmp_path):
    out = tmp_path / "runs" / "pairs.jsonl"
    summary = run_pairs(PairsRunSettings(annotations=DATA / "annotations.jsonl", out=out))
    assert out.read_text(encoding="utf-8") == (DATA / "pairs.jsonl").read_text(encoding="utf-8")
    recorded = json.loads((tmp_path / "runs" / "pairs.jsonl.settings.json").read_text())
    assert recorded == {"min_gap": None, "nofact_correct": True, "annotations": str(DATA / "annotations.jsonl"),
                        "authors_format": False, "invalid_lines_skipped": 0,
                        "stats": {"questions": 6, "samples": 13, "kept": 5, "unscored_samples": 0,
                                  "dropped": {"fewer_than_two_samples": 0, "gap_below_min": 1,
                                              "chosen_has_no_correct_sentence": 0,
                                              "rejected_has_no_hallucinated_sentence": 0,
                                              "identical_responses": 0}}}
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl", "pairs.jsonl.settings.json"]
    assert summary.written == 5 and summary.stats.kept == 5 and summary.out == out
    assert summary.lines()[0] == f"{DATA / 'annotations.jsonl'}: 13 records"
    assert summary.lines()[1].startswith("questions: 6  samples: 13  pairs kept: 5")
    assert summary.lines()[-1] == f"wrote 5 pairs to {out}"


def test_run_pairs_refuses_an_unwritable_out_before_reading(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    missing = tmp_path / "no-such-annotations.jsonl"  # never opened: the output is checked first
    with pytest.raises(ValueError, match="a-file") as refused:
        run_pairs(PairsRunSettings(annotations=missing, out=blocker / "pairs.jsonl"))
    assert "no-such-annotations" not in str(refused.value)
    settings_blocked = tmp_path / "p.jsonl.settings.json"
    settings_blocked.mkdir()  # the settings file's place is a folder
    with pytest.raises(ValueError, match="settings file"):
        run_pairs(PairsRunSettings(annotations=missing, out=tmp_path / "p.jsonl"))
    assert not (tmp_path / "p.jsonl").exists()
    with pytest.raises(TypeError, match="annotations"):  # what to read is required
        PairsRunSettings(out=tmp_path / "p.jsonl")
    with pytest.raises(ValueError, match="min_gap"):
        PairsRunSettings(annotations=missing, out=tmp_path / "p.jsonl", min_gap=2.0)


def test_pairs_command_bad_input(tmp_path):
    lines = (DATA / "annotations.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[2])
    bad["sentences"][1]["label"] = "maybe"
    path = tmp_path / "ann.jsonl"
    path.write_text("\n".join([lines[0], lines[1], json.dumps(bad), "{not json", *lines[3:]]) + "\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["pairs", "--annotations", str(path), "--out", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2
    assert f"{path}:3: field 'sentences[1].label': unknown label 'maybe'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["pairs", "--annotations", str(path), "--out", str(tmp_path / "p.jsonl"),
                                  "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "2 invalid lines skipped" in result.output and "pairs kept: 5" in result.output


def test_masks_command_on_the_example_files(smollm2_tokenizer_dir):
    runner = CliRunner()
    ours = runner.invoke(main, ["masks", "--pairs", str(DATA / "pairs.jsonl"), "--tokenizer",
                                str(smollm2_tokenizer_dir), "--json"])
    assert ours.exit_code == 0, ours.output
    rows = [json.loads(line) for line in ours.stdout.splitlines()]
    pairs = [Pair.from_dict(json.loads(line)) for line in (DATA / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p.id for p in pairs]
    for row, pair in zip(rows, pairs):
        for side, kept_type in (("chosen", "no_hallucination"), ("rejected", "hallucination")):
            item = getattr(pair, f"{side}_item")
            for sent, typ in zip(item.sents, item.type):
                assert sent in (row[side]["kept_text"] if typ == kept_type else row[side]["masked_text"])
                assert sent not in (row[side]["masked_text"] if typ == kept_type else row[side]["kept_text"])
            assert row[side]["kept_text"].endswith("<|im_end|>\n")  # the end-of-turn is kept
    theirs = runner.invoke(main, ["masks", "--pairs", str(DATA / "authors_pairs.jsonl"), "--tokenizer",
                                  str(smollm2_tokenizer_dir), "--json"])
    assert theirs.exit_code == 0, theirs.output
    strip_id = lambda rows: [{k: v for k, v in r.items() if k != "id"} for r in rows]  # noqa: E731
    assert strip_id([json.loads(line) for line in theirs.stdout.splitlines()]) == strip_id(rows)
    view = runner.invoke(main, ["masks", "--pairs", str(DATA / "pairs.jsonl"), "--tokenizer",
                                str(smollm2_tokenizer_dir), "--limit", "1"])
    assert view.exit_code == 0 and "== pair anah-en-0001:0-1" in view.stdout and "[- Her notes" in view.stdout
    assert "== pair anah-en-0002" not in view.stdout


def test_masks_command_names_a_sentence_not_in_the_response(tmp_path, smollm2_tokenizer_dir):
    d = json.loads((DATA / "authors_pairs.jsonl").read_text().splitlines()[0])
    d["rejected_item"]["sents"][1] = "A sentence the response does not contain."
    path = tmp_path / "authors.jsonl"
    path.write_text(json.dumps(d) + "\n")
    result = CliRunner().invoke(main, ["masks", "--pairs", str(path), "--tokenizer", str(smollm2_tokenizer_dir)])
    assert result.exit_code == 2
    assert f"{path}:1: pair 'sha1:" in result.output and "': rejected_item.sents[1]" in result.output and "does not contain" in result.output


def test_build_pairs_tool_runs_as_a_script(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "build_pairs.py"), "--annotations",
                          str(DATA / "annotations.jsonl"), "--out", str(tmp_path / "p.jsonl")],
                         capture_output=True, text=True, check=True)
    assert "pairs kept: 5" in out.stdout
    assert (tmp_path / "p.jsonl").read_text() == (DATA / "pairs.jsonl").read_text()
    help_text = subprocess.run([sys.executable, str(ROOT / "tools" / "build_pairs.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--min-gap" in help_text and "--nofact-correct" in help_text
