import json

import pytest

from maskdpo.metrics.anah import anah_runs
from maskdpo.report import ModelResult, build_report, table1_markdown, write_report
from tests.test_metrics_anah import annotation


def fs_summary(score, correct, incorrect, respond=1.0):
    return {"score": score, "score_no_penalty": score + 1, "correct": correct, "incorrect": incorrect,
            "respond_ratio": respond, "facts_per_response": correct + incorrect}


def models():
    base = ModelResult("Llama-3.1-8B", anah=anah_runs([[annotation(["ok"] * 461 + ["contradictory"] * 476)]]),
                       factscore=[fs_summary(30.29, 13.0, 20.5)])
    masked = ModelResult("Mask-DPO", anah=anah_runs([[annotation(["ok"] * 3 + ["unverifiable"])],
                                                      [annotation(["ok", "contradictory"])]]),
                         factscore=[fs_summary(39.0, 14.0, 10.0), fs_summary(40.0, 16.0, 12.0, respond=0.5)])
    anah_only = ModelResult("ANAH only", anah=anah_runs([[annotation(["ok"])]]))
    return [base, masked, anah_only]


def test_table1_markdown_rows():
    md = table1_markdown(build_report(models()))
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Model | ANAH #Cor | ANAH #Inc | ANAH %Score | FactScore #Cor")
    assert rows[1] == "| Llama-3.1-8B | 461 | 476 | 49.19 | 13.00 | 20.50 | 30.29 |"
    # two runs: mean ± sample std of per-run scores (75.0 and 50.0), mean counts
    assert rows[2] == "| Mask-DPO | 2 | 1 | 62.50 ± 17.68 | 15.00 | 11.00 | 39.50 ± 0.71 |"
    assert rows[3] == "| ANAH only | 1 | 0 | 100.00 | – | – | – |"
    assert "respond ratio 0.75" in md


def test_write_report_files(tmp_path):
    paths = write_report(tmp_path / "out", models(), settings={"metric": "both"})
    report = json.loads(paths["json"].read_text())
    assert report["format"] == "maskdpo/eval-report@1" and report["settings"] == {"metric": "both"}
    assert report["models"][0]["anah"]["score"] == 49.19
    assert report["models"][1]["anah"]["per_run"][1]["score"] == 50.0
    assert paths["markdown"].read_text().startswith("| Model |")
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_duplicate_model_names_rejected():
    m = models()[0]
    with pytest.raises(ValueError, match="unique"):
        build_report([m, m])


def test_model_without_any_scored_factscore_response(tmp_path):
    empty = {"score": None, "score_no_penalty": None, "correct": None, "incorrect": None, "respond_ratio": 0.0,
             "facts_per_response": None}
    paths = write_report(tmp_path, [ModelResult("silent", factscore=[empty])])
    md = paths["markdown"].read_text()
    assert "| silent | – | – | – | – | – | – |" in md and "no FactScore" in md
    assert json.loads(paths["json"].read_text())["models"][0]["factscore"]["scored_runs"] == 0
