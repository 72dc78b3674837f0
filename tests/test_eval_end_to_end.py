"""The end-to-end evaluation on a tiny local model: real sampling (hf backend), doubles for the judges."""

import json
import sqlite3

import pytest

from maskdpo.evaluate import EndToEndSettings, run_end_to_end
from tests.doubles.judge_anah import AnahAnnotatorDouble, SimulatedKill
from tests.doubles.judge_scripted import ScriptedJudgeDouble


@pytest.fixture
def prompt_sets(tmp_path):
    anah = tmp_path / "question_document.jsonl"
    anah.write_text("".join(json.dumps(d) + "\n" for d in [
        {"question": "Who was Ada Lovelace?", "document": "Ada Lovelace was a mathematician.", "language": "en"},
        {"question": "Where is the Eiffel Tower?", "document": "The Eiffel Tower is in Paris.", "language": "en"},
        {"question": "Who was Marie Curie?", "document": "Marie Curie was a physicist.", "language": "en"},
    ]))
    entities = tmp_path / "prompt_entities.txt"
    entities.write_text("Ada Lovelace\nMarie Curie\nAlan Turing\n")
    db = tmp_path / "wiki.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE documents (title, text)")
    conn.executemany("INSERT INTO documents VALUES (?, ?)", [
        ("Ada Lovelace", "Ada Lovelace was born in London in 1815."),
        ("Marie Curie", "Marie Curie was born in Warsaw in 1867."),
    ])
    conn.commit()
    conn.close()
    return anah, entities, db


def test_end_to_end_reports_and_resumes_after_kills(tmp_path, prompt_sets, tiny_llama_dir):
    import torch

    torch.set_num_threads(1)
    anah, entities, db = prompt_sets
    out = tmp_path / "eval"
    settings = EndToEndSettings(out=out, anah_questions=anah, bio_entities=entities, wiki_db=db, limit=3,
                                max_new_tokens=24, batch_size=2, judge_batch_size=2, device="cpu",
                                judge_model="judge", greedy=False, runs=2, temperature=1.0)
    models = [f"tiny={tiny_llama_dir}"]

    # 1st run: killed while annotating (after one batch of two samples was written)
    with pytest.raises(SimulatedKill):
        run_end_to_end(settings, models, annotator=AnahAnnotatorDouble(fail_after=3),
                       judge_backend=ScriptedJudgeDouble(), progress=False)
    samples = (out / "tiny" / "anah-samples.jsonl").read_text().splitlines()
    assert len(samples) == 6  # 3 questions × 2 runs
    assert len((out / "tiny" / "anah-annotations.jsonl").read_text().splitlines()) == 2

    # 2nd run: annotation resumes with the missing sample only; then the judge is killed mid-way
    annotator = AnahAnnotatorDouble()
    with pytest.raises(RuntimeError, match="judge killed"):
        run_end_to_end(settings, models, annotator=annotator, judge_backend=ScriptedJudgeDouble(fail_after=2),
                       progress=False)
    assert len(annotator.annotated) == 4
    assert (out / "tiny" / "anah-samples.jsonl").read_text().splitlines() == samples  # sampling not repeated
    cached = len((out / "judge-cache.jsonl").read_text().splitlines())
    assert cached == 2

    # 3rd run: completes, paying only for the judge calls not cached yet
    annotator, judge = AnahAnnotatorDouble(), ScriptedJudgeDouble()
    paths = run_end_to_end(settings, models, annotator=annotator, judge_backend=judge, progress=False)
    assert annotator.annotated == []
    total = len((out / "judge-cache.jsonl").read_text().splitlines())
    assert len(judge.prompts) == total - cached and len(set(judge.prompts)) == len(judge.prompts)

    annotations = [json.loads(line) for line in (out / "tiny" / "anah-annotations.jsonl").read_text().splitlines()]
    assert sorted((a["question_id"], a["sample_index"]) for a in annotations) == \
        sorted((json.loads(s)["question_id"], json.loads(s)["sample_index"]) for s in samples)  # no gap, no duplicate
    report = json.loads(paths["json"].read_text())
    model = report["models"][0]
    n_sentences = sum(len(a["sentences"]) for a in annotations)
    n_incorrect = sum(s["label"] in ("contradictory", "unverifiable") for a in annotations for s in a["sentences"])
    # counts are means over the two runs
    assert 2 * (model["anah"]["correct"] + model["anah"]["incorrect"]) == n_sentences
    assert 2 * model["anah"]["incorrect"] == n_incorrect
    fs = model["factscore"]
    assert model["anah"]["runs"] == 2 and fs["runs"] == 2
    assert [r["responses"] for r in fs["per_run"]] == [3, 3]
    assert paths["markdown"].read_text().startswith("| Model |") and "| tiny |" in paths["markdown"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    bio = [json.loads(line) for line in (out / "tiny" / "bio-samples.jsonl").read_text().splitlines()]
    assert len(bio) == 6 and all(b["meta"]["topic"] for b in bio)

    # 4th run: nothing left to do, no judge call, same report
    judge = ScriptedJudgeDouble()
    again = run_end_to_end(settings, models, annotator=AnahAnnotatorDouble(), judge_backend=judge, progress=False)
    assert judge.prompts == []
    assert _without_judge_stats(json.loads(again["json"].read_text())) == _without_judge_stats(report)


def test_greedy_by_default_and_runs_need_sampling(tmp_path):
    from maskdpo.evaluate import sample_settings, validate_end_to_end

    settings = EndToEndSettings(out=tmp_path, metric="anah", anah_questions=tmp_path / "q.jsonl")
    assert settings.greedy is True
    assert sample_settings(settings, tmp_path / "q.jsonl", tmp_path / "s.jsonl", "m").greedy is True
    with pytest.raises(ValueError, match="greedy"):
        validate_end_to_end(EndToEndSettings(out=tmp_path, metric="anah", anah_questions=tmp_path, runs=3), ["m=p"])
    with pytest.raises(ValueError, match="--bio-entities"):
        validate_end_to_end(EndToEndSettings(out=tmp_path, metric="factscore"), ["m=p"])
    with pytest.raises(ValueError, match="NAME=PATH"):
        validate_end_to_end(settings, ["just-a-path"])


def _without_judge_stats(report):
    for m in report["models"]:
        if m["factscore"]:
            for run in m["factscore"]["per_run"]:
                run.pop("judge", None)
    return report["models"]


def test_eval_run_command(tmp_path, prompt_sets, tiny_llama_dir, monkeypatch):
    """`maskdpo eval run` end to end through the CLI, judges registered as doubles."""
    import torch
    from click.testing import CliRunner

    from maskdpo.annotate import base as annotators
    from maskdpo.backends import base as backends
    from maskdpo.cli import main

    torch.set_num_threads(1)
    monkeypatch.setitem(annotators.ANNOTATORS, "anah-annotator-double", "tests.doubles.judge_anah:AnahAnnotatorDouble")
    monkeypatch.setitem(backends.BACKENDS, "scripted-judge-double", "tests.doubles.judge_scripted:ScriptedJudgeDouble")
    anah, entities, db = prompt_sets
    out = tmp_path / "cli"
    args = ["eval", "run", "--model", f"tiny={tiny_llama_dir}", "--anah-questions", str(anah),
            "--bio-entities", str(entities), "--wiki-db", str(db), "--limit", "2", "--no-greedy",
            "--temperature", "1.0", "--max-new-tokens", "16", "--device", "cpu",
            "--annotator", "anah-annotator-double", "--judge-backend", "scripted-judge-double", "--judge-model", "j",
            "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| tiny |" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["models"] == [f"tiny={tiny_llama_dir}"]
    assert report["models"][0]["factscore"]["per_run"][0]["responses"] == 2
    assert (out / "report.png").exists() and (out / "eval-settings.json").exists()


def test_unparseable_answers_of_the_real_anah_v2_annotator_are_counted(tmp_path, prompt_sets, tiny_llama_dir,
                                                                        monkeypatch):
    """The ANAH-v2 annotator (real protocol code) on a judge whose every answer is unparseable."""
    import torch

    from maskdpo.backends import base as backends

    torch.set_num_threads(1)
    monkeypatch.setitem(backends.BACKENDS, "constant-judge-double",
                        "tests.doubles.judge_scripted:ConstantAnswerJudgeDouble")
    anah, _, _ = prompt_sets
    settings = EndToEndSettings(out=tmp_path / "o", metric="anah", anah_questions=anah, limit=2, greedy=False,
                                temperature=1.0, max_new_tokens=16, device="cpu", annotator="anah-v2",
                                annotator_backend="constant-judge-double", annotator_model="judge",
                                annotator_prompts="maskdpo")  # our protocol: strict tags, unverifiable
    paths = run_end_to_end(settings, [f"tiny={tiny_llama_dir}"], progress=False)
    anah_result = json.loads(paths["json"].read_text())["models"][0]["anah"]
    run = anah_result["per_run"][0]
    assert run["sentences"] > 0
    assert run["unparseable"] == run["sentences"]  # every sentence flagged by the annotator, and counted
    assert run["label_counts"]["unverifiable"] == run["sentences"] and anah_result["score"] == 0.0
    assert "ANAH judge answers were unparseable" in paths["markdown"].read_text()
