"""The demo's pure parts: thread choice, expected time, the reports on synthetic results, the test-only mask flip."""

import json

import pytest

from maskdpo.masking import FLIP_MASK_FOR_TESTS, keep_flags
from maskdpo.records import PairItem
from maskdpo.toyworld import report
from maskdpo.toyworld.demo import DemoSettings, default_threads, expected_minutes, make_plan, resolve_threads
from maskdpo.toyworld.report import (MASK_DIFFERENCES, MASK_MODELS, cell, mask_study_markdown, report_markdown,
                                     split_pair_key, splits_of, summarize, write_mask_study_reports)
from maskdpo.toyworld.rich import RichSettings
from maskdpo.toyworld.world import WorldSettings


def test_default_threads_follow_the_free_cores():
    assert default_threads(2, 0.1) == 1  # 1.9 free cores: one whole core
    assert default_threads(2, 1.7) == 1  # busy: still at least one
    assert default_threads(2, 6.0) == 1
    assert default_threads(4, 0.5) == 3
    assert default_threads(64, 1.0) == 4  # more threads do not help a tiny model
    assert default_threads(None, 0.0) == 1 and default_threads(8, None) == 1  # unknown: one


def test_resolve_threads_keeps_an_explicit_choice_and_fills_a_missing_one():
    assert resolve_threads(DemoSettings(out="x", threads=3)).threads == 3
    chosen = resolve_threads(DemoSettings(out="x")).threads
    assert isinstance(chosen, int) and 1 <= chosen <= 4


def test_expected_minutes_scale_with_seeds_and_size():
    quick = expected_minutes(DemoSettings(out="x", quick=True))
    assert expected_minutes(DemoSettings(out="x", quick=True, seeds=3)) == pytest.approx(3 * quick)
    assert expected_minutes(DemoSettings(out="x")) > quick


def test_plans_per_world():
    rich, simple = make_plan(DemoSettings(out="x"), 3), make_plan(DemoSettings(out="x", world="simple"), 3)
    assert isinstance(rich.world, RichSettings) and isinstance(simple.world, WorldSettings)
    assert simple.world == WorldSettings(seed=3, families=20, people_per_family=7, test_per_family=2,
                                         questions_per_person=2)  # the simple world's sizes are unchanged
    assert simple.max_new_tokens == 96 and simple.dpo_lr == 2e-4 and rich.dpo_lr == 2e-4
    q = make_plan(DemoSettings(out="x", quick=True), 0).world
    training_families = q.regions * (q.families_per_region - q.heldout_families_per_region)
    assert training_families * (q.people_per_family - q.test_per_family) * q.questions_per_person == 96


def _metrics(anah: float) -> dict:
    return {"anah": anah, "fact_precision": anah - 20, "facts_per_response": 4.0, "annotations": "unused"}


def _seed(seed: int, offsets: dict[str, float], splits=("train", "test", "test_family")) -> dict:
    return {"seed": seed, "pairs": {"kept": 90},
            "models": {name: {s: _metrics(60 + off + i) for i, s in enumerate(splits)} for name, off in offsets.items()}}


def test_demo_report_has_a_column_group_per_split_and_within_seed_wins(tmp_path):
    per_seed = [_seed(0, {"base": 0, "dpo": 5, "maskdpo": 8}), _seed(1, {"base": 0, "dpo": 6, "maskdpo": 5})]
    summary = summarize(per_seed)
    assert summary["splits"] == ["train", "test", "test_family"]
    d = summary["differences"]["maskdpo-dpo"]["test_family"]
    assert d["per_seed"] == [3.0, -1.0] and d["wins"] == 1 and d["mean"] == pytest.approx(1.0)
    md = report_markdown(summary, DemoSettings(out=tmp_path, seeds=2))
    assert "held-out families: ANAH % | held-out families: fact precision % | held-out families: facts/answer" in md
    assert "| Mask-DPO − DPO (mask none) | 1.00 ± 2.83 (1/2) | 1.00 ± 2.83 (1/2) | 1.00 ± 2.83 (1/2) |" in md
    assert "rich world, 2 seeds" in md
    simple = [_seed(0, {"base": 0, "dpo": 5, "maskdpo": 8}, splits=("train", "test"))]
    assert splits_of(simple) == ("train", "test")
    assert "held-out families" not in report_markdown(summarize(simple), DemoSettings(out=tmp_path, world="simple"))


def test_mask_study_report_on_synthetic_results(tmp_path):
    offsets = {"base": 0, "dpo": 4, "mask-chosen": 5, "mask-rejected": 6, "maskdpo": 9}
    per_seed = [_seed(0, offsets), _seed(1, {**offsets, "maskdpo": 3})]
    paths = write_mask_study_reports(DemoSettings(out=tmp_path, quick=True, seeds=2, study="mask"), per_seed)
    md = paths["markdown"].read_text()
    for title in ("base policy", "DPO (mask none)", "mask chosen only", "mask rejected only", "Mask-DPO"):
        assert f"| {title} |" in md
    assert "| mask rejected only − DPO (mask none) | 2.00 ± 0.00 (2/2) |" in md
    assert "| Mask-DPO − mask chosen only | 1.00 ± 4.24 (1/2) |" in md
    report = json.loads(paths["json"].read_text())
    assert report["format"] == "maskdpo/toyworld-study-mask@1"
    assert list(report["summary"]["models"]) == list(MASK_MODELS)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_difference_keys_split_on_model_names():
    assert split_pair_key("mask-chosen-dpo") == ("mask-chosen", "dpo")
    assert split_pair_key("maskdpo-mask-rejected") == ("maskdpo", "mask-rejected")
    with pytest.raises(KeyError):
        split_pair_key("maskdpo-nothing")


def test_the_demo_and_the_mask_study_format_cells_through_one_function(tmp_path, monkeypatch):
    offsets = {"base": 0, "dpo": 4, "mask-chosen": 5, "mask-rejected": 6, "maskdpo": 9}
    per_seed = [_seed(0, offsets), _seed(1, {**offsets, "maskdpo": 3})]
    settings = DemoSettings(out=tmp_path, seeds=2)
    demo = report_markdown(summarize(per_seed), settings)
    mask = mask_study_markdown(summarize(per_seed, MASK_MODELS, MASK_DIFFERENCES), settings)
    # Mask-DPO's training split: ANAH 69 and 63, fact precision 49 and 43, 4 facts per answer in both seeds.
    row = f"| Mask-DPO | {cell([69.0, 63.0])} | {cell([49.0, 43.0])} | {cell([4.0, 4.0])} |"
    assert row == "| Mask-DPO | 66.00 ± 4.24 | 46.00 ± 4.24 | 4.00 ± 0.00 |"
    assert row in demo and row in mask
    shared = [line for line in demo.splitlines()
              if line.startswith(("| base policy |", "| DPO (mask none) |", "| Mask-DPO |"))]
    assert len(shared) == 3 and all(line in mask.splitlines() for line in shared)  # same model, same row
    # Every number of both reports comes from the one cell function: swap it and both tables change.
    monkeypatch.setattr(report, "cell", lambda values, digits=2: f"<{len(values)} values>")
    for md in (report_markdown(summarize(per_seed), settings),
               mask_study_markdown(summarize(per_seed, MASK_MODELS, MASK_DIFFERENCES), settings)):
        assert "| Mask-DPO | <2 values> | <2 values> |" in md
        assert "| Mask-DPO − DPO (mask none) | <2 values> (1/2) |" in md
        assert " ± " not in md.split("\n\n", 2)[2]  # no number left formatted another way


def _item(types: list[str]) -> PairItem:
    return PairItem(sents=[f"S{i}." for i in range(len(types))], type=types)


def test_the_test_only_switch_reverses_the_mask_in_keep_flags(monkeypatch):
    item = _item(["no_hallucination", "hallucination", "no_hallucination"])
    monkeypatch.delenv(FLIP_MASK_FOR_TESTS, raising=False)
    assert keep_flags(item, "chosen", "both") == [True, False, True]
    assert keep_flags(item, "rejected", "both") == [False, True, False]
    monkeypatch.setenv(FLIP_MASK_FOR_TESTS, "1")
    assert keep_flags(item, "chosen", "both") == [False, True, False]
    assert keep_flags(item, "rejected", "both") == [True, False, True]
    assert keep_flags(item, "rejected", "chosen") == [True, True, True]  # an unmasked side stays unmasked
    assert keep_flags(item, "chosen", "none") == [True, True, True]
    assert FLIP_MASK_FOR_TESTS == "MASKDPO_TEST_ONLY_FLIP_MASK"


def test_a_folder_of_one_world_refuses_the_other(tmp_path):
    from maskdpo.toyworld.demo import step_world
    from maskdpo.toyworld.world import load_world

    rich = make_plan(DemoSettings(out=tmp_path, quick=True), 0)
    path = step_world(rich, tmp_path)
    assert load_world(path).kind == "rich"
    assert sorted(p.name for p in tmp_path.glob("questions-*.jsonl")) == [
        "questions-test.jsonl", "questions-test_family.jsonl", "questions-train.jsonl"]
    with pytest.raises(ValueError, match="a rich world, but this run asks for --world simple; use another --out"):
        step_world(make_plan(DemoSettings(out=tmp_path, quick=True, world="simple"), 0), tmp_path)
