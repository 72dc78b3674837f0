import json
import sqlite3

import pytest
from click.testing import CliRunner

from maskdpo.backends import base as backends
from maskdpo.cli import main
from maskdpo.jsonl import write_jsonl
from maskdpo.records import Sample
from tests.test_metrics_anah import annotation

DOUBLE = "scripted-judge-double"


@pytest.fixture(autouse=True)
def register_judge_double(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, DOUBLE, "tests.doubles.judge_scripted:ScriptedJudgeDouble")


def sample(qid, index, topic, response):
    return Sample(question_id=qid, sample_index=index, messages=[{"role": "user", "content": f"Tell me a bio of {topic}."}],
                  response=response, model="m", backend="hf", generation={}, meta={"topic": topic}).to_dict()


@pytest.fixture
def files(tmp_path):
    write_jsonl(tmp_path / "base.anah.jsonl", [annotation(["ok"] * 461 + ["contradictory"] * 476).to_dict()])
    write_jsonl(tmp_path / "dpo.run0.jsonl", [annotation(["ok", "ok", "ok", "unverifiable"]).to_dict()])
    write_jsonl(tmp_path / "dpo.run1.jsonl", [annotation(["ok", "contradictory"]).to_dict()])
    write_jsonl(tmp_path / "base.bio.jsonl", [
        sample("b1", 0, "Ada Lovelace", "Ada Lovelace was born in London. Ada Lovelace was born in Paris."),
        sample("b2", 0, "Ada Lovelace", "I'm sorry, I could not find information about this person."),
    ])
    write_jsonl(tmp_path / "dpo.bio.jsonl", [
        sample("b1", 0, "Ada Lovelace", "Ada Lovelace was born in London."),
        sample("b2", 0, "Ada Lovelace", "Ada Lovelace was an English mathematician."),
    ])
    db = tmp_path / "wiki.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE documents (title, text)")
    conn.execute("INSERT INTO documents VALUES (?, ?)",
                 ("Ada Lovelace", "Ada Lovelace was an English mathematician. Ada Lovelace was born in London."))
    conn.commit()
    conn.close()
    return tmp_path


def invoke(args):
    return CliRunner().invoke(main, ["eval", "score", *args], catch_exceptions=False)


def test_score_both_metrics_writes_reports(files):
    out = files / "report"
    args = ["--anah", f"base={files / 'base.anah.jsonl'}", "--anah", f"dpo={files / 'dpo.run0.jsonl'},{files / 'dpo.run1.jsonl'}",
            "--factscore", f"base={files / 'base.bio.jsonl'}", "--factscore", f"dpo={files / 'dpo.bio.jsonl'}",
            "--wiki-db", str(files / "wiki.db"), "--judge-backend", DOUBLE, "--judge-model", "j", "--gamma", "0",
            "--out", str(out)]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    base, dpo = report["models"]
    assert base["anah"]["score"] == 49.19 and dpo["anah"]["runs"] == 2 and dpo["anah"]["score"] == 62.5
    assert base["factscore"]["score"] == 50.0 and base["factscore"]["respond_ratio"] == 0.5
    assert dpo["factscore"]["score"] == 100.0 and dpo["factscore"]["correct"] == 1.0
    md = (out / "report.md").read_text()
    assert "| base | 461 | 476 | 49.19 | 1.00 | 1.00 | 50.00 |" in md
    assert (out / "report.png").stat().st_size > 2000
    assert (out / "judge-cache.jsonl").exists() and (out / "eval-settings.json").exists()
    details = [json.loads(line) for line in (out / "factscore-base-run0.jsonl").read_text().splitlines()]
    assert [d["status"] for d in details] == ["scored", "abstained"]

    # rerun: every judge answer comes from the cache
    again = invoke(args)
    assert again.exit_code == 0
    assert json.loads((out / "report.json").read_text())["models"][0]["factscore"]["per_run"][0]["judge"]["calls"] == 0


def test_missing_inputs_are_clear_errors(files):
    result = CliRunner().invoke(main, ["eval", "score", "--metric", "factscore", "--out", str(files / "o"),
                                       "--factscore", f"m={files / 'base.bio.jsonl'}"])
    assert result.exit_code != 0 and "--wiki-db" in result.output
    result = CliRunner().invoke(main, ["eval", "score", "--metric", "anah", "--out", str(files / "o")])
    assert result.exit_code != 0 and "--anah" in result.output
    result = CliRunner().invoke(main, ["eval", "score", "--metric", "anah", "--out", str(files / "o"),
                                       "--anah", "no-equals-sign"])
    assert result.exit_code != 0 and "NAME=FILE" in result.output


def test_bad_annotation_line_names_file_and_line(files):
    path = files / "broken.jsonl"
    path.write_text((files / "dpo.run0.jsonl").read_text() + '{"question_id": "x", "sample_index": 0}\n')
    result = CliRunner().invoke(main, ["eval", "score", "--metric", "anah", "--out", str(files / "o"),
                                       "--anah", f"m={path}"])
    assert result.exit_code != 0 and "broken.jsonl:2: field" in result.output


def test_samples_given_as_annotations_get_a_hint(files):
    result = CliRunner().invoke(main, ["eval", "score", "--metric", "anah", "--out", str(files / "o"),
                                       "--anah", f"m={files / 'base.bio.jsonl'}"])
    assert result.exit_code != 0
    assert "base.bio.jsonl:1: field 'format'" in result.output and "maskdpo annotate" in result.output


# ---------------------------------------------------------------- the metric objects, the judge's backend


@pytest.mark.parametrize("metric_name, check, settings, error", [
    ("anah", "check_files", dict(metric="anah"), "--metric anah needs at least one --anah NAME=ANNOTATIONS.jsonl"),
    ("factscore", "check_files", dict(metric="both"),
     "--metric both needs at least one --factscore NAME=RESPONSES.jsonl"),
    ("factscore", "check_files+spec", dict(metric="factscore"),
     "FactScore needs --wiki-db (FActScore's enwiki-20230401.db or a DB in its format)"),
    ("anah", "check_prompt_set", dict(metric="both"), "--metric both needs --anah-questions"),
    ("factscore", "check_prompt_set", dict(metric="factscore"), "--metric factscore needs --bio-entities"),
    ("factscore", "check_prompt_set", dict(metric="factscore", bio_entities="e.txt"), "FactScore needs --wiki-db"),
])
def test_each_metric_names_its_missing_input(tmp_path, metric_name, check, settings, error):
    import re

    from maskdpo.evaluate import EndToEndSettings, metrics_of

    settings = EndToEndSettings(out=tmp_path, **settings)
    [metric] = [m for m in metrics_of(settings) if m.name == metric_name]
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        if check == "check_prompt_set":
            metric.check_prompt_set(settings)
        else:
            metric.check_files(settings, ["m=f.jsonl"] if check.endswith("+spec") else [])
    assert [m.name for m in metrics_of(EndToEndSettings(metric="both"))] == ["anah", "factscore"]
    with pytest.raises(ValueError, match="--metric must be one of anah, factscore, both"):
        metrics_of(EndToEndSettings(metric="fact"))


# What the judge's backend was built with before ScoreSettings inherited the shared backend knobs.
JUDGE_OPTIONS_BEFORE = {
    "lmdeploy": {},
    "hf": {"device": "cpu", "batch_size": 3},
    "openai": {"base_url": "http://127.0.0.1:9/v1", "server_profile": "openai", "max_retries": 1, "timeout": 7.0},
}


@pytest.mark.parametrize("backend", sorted(JUDGE_OPTIONS_BEFORE))
def test_factscore_judge_backend_gets_the_options_it_got_before(tmp_path, monkeypatch, backend):
    """Options differ in what is spelled out; the constructor's arguments, defaults filled in, do not."""
    import importlib
    import inspect

    from maskdpo.evaluate import ScoreSettings, make_judge

    loaded = []
    monkeypatch.setattr(backends, "load_backend", lambda name, model, **options: loaded.append((name, model, options))
                        or object())
    settings = ScoreSettings(out=tmp_path, judge_backend=backend, judge_model="judge", judge_batch_size=3,
                             judge_base_url="http://127.0.0.1:9/v1", device="cpu", server_profile="openai",
                             max_retries=1, timeout=7.0)
    make_judge(settings)
    [(name, model, options)] = loaded
    assert (name, model) == (backend, "judge")

    module, cls = backends.BACKENDS[backend].split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), cls).__init__)

    def effective(opts):
        bound = signature.bind(None, model="judge", **opts)
        bound.apply_defaults()
        return dict(bound.arguments)

    assert effective(options) == effective(JUDGE_OPTIONS_BEFORE[backend])
    if backend == "lmdeploy":  # LMDeploy's own default: the judge runs its repository's code, one GPU, TurboMind
        assert options == {"tp": 1, "engine": "turbomind", "trust_remote_code": True}
