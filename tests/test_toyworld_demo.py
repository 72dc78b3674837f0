"""`maskdpo demo --quick` end to end: the README's main command at CI size (a few minutes on 2 cores).

One run serves every assertion (it is the slowest test of the suite): report
files exist and parse, the table is printed, the reliable directions of the
effect hold at the fixed seed, and a rerun resumes without redoing anything.
"""

import json
import subprocess
import sys
import time

import pytest

from maskdpo.toyworld.demo import MODELS, SPLITS


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "maskdpo.cli", "demo", "--out", str(out), "--quick", "--threads", "1"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout, time.perf_counter() - start, cmd


def test_quick_demo_writes_and_prints_the_report(quick_demo):
    out, stdout, _, _ = quick_demo
    for name in ("report.md", "report.json", "report.png", "table1-train.md", "table1-test.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "maskdpo/toyworld-demo@1"
    table = (out / "report.md").read_text()
    assert table.strip() in stdout  # printed at the end
    assert str(out / "report.md") in stdout  # says where the outputs went
    for name in MODELS:
        for split in SPLITS:
            entry = report["per_seed"][0]["models"][name][split]
            assert 0 < entry["anah"] <= 100 and entry["responses"] > 0
            assert entry["facts_per_response"] > 0
    table1 = json.loads((out / "table1-train.json").read_text())
    assert [m["name"] for m in table1["models"]] == ["base policy", "DPO (mask none)", "Mask-DPO"]
    assert report["per_seed"][0]["pairs"]["kept"] > 0
    for kind in ("dpo", "maskdpo"):
        hf = out / "seed-0" / "train" / kind / "hf"
        assert (hf / "config.json").exists() and (hf / "xtuner_config.py").exists()  # converted by pth_to_hf


def test_quick_demo_shows_the_reliable_directions_of_the_effect(quick_demo):
    out, _, _, _ = quick_demo
    m = json.loads((out / "report.json").read_text())["per_seed"][0]["models"]
    # Sampled ANAH score (8 answers per question, top-k 40, T 0.8).
    assert m["maskdpo"]["train"]["anah"] > m["base"]["train"]["anah"]
    assert m["maskdpo"]["test"]["anah"] > m["base"]["test"]["anah"]  # unseen people
    for split in ("train", "test"):  # not by saying less: fact precision rises too
        assert m["maskdpo"][split]["fact_precision"] > m["base"][split]["fact_precision"]


def test_quick_demo_mask_dpo_beats_dpo_on_training_questions(quick_demo):
    out, _, _, _ = quick_demo
    m = json.loads((out / "report.json").read_text())["per_seed"][0]["models"]
    # Seed 0 is reproducible run to run (76.98 vs 71.97 when measured); over seeds the lead is
    # about its own spread (docs/bench/toyworld.md), so this is the least robust assertion here.
    assert m["maskdpo"]["train"]["anah"] > m["dpo"]["train"]["anah"]


def test_rerun_resumes_without_redoing_any_step(quick_demo):
    out, _, first_seconds, cmd = quick_demo
    before = json.loads((out / "report.json").read_text())["per_seed"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training the base policy" not in proc.stdout
    assert json.loads((out / "report.json").read_text())["per_seed"] == before
    assert time.perf_counter() - start < first_seconds / 2
