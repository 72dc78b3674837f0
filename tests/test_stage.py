"""maskdpo/stage.py: what every stage shares, checked once here."""

import dataclasses
import json

import pytest

from maskdpo.annotate.run import AnnotateSettings
from maskdpo.sample import SampleSettings
from maskdpo.settings import click_options, option_fields, settings_dict
from maskdpo.stage import BackendSettings, ServerKnobs, check_resumable, select_items, settings_path


def test_one_settings_file_rule_for_every_file_output(tmp_path):
    assert settings_path(tmp_path / "samples.jsonl").name == "samples.jsonl.settings.json"
    assert settings_path(tmp_path / "pairs.jsonl").name == "pairs.jsonl.settings.json"
    assert settings_path("cache").name == "cache.settings.json"


def test_select_items_takes_the_limit_then_the_shard():
    items = list(range(10))
    assert select_items(items, 7, "0/2") == [0, 1, 2]
    assert select_items(items, 7, "1/2") == [3, 4, 5, 6]
    assert select_items(items, None, "2/3") == [6, 7, 8, 9]
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            select_items(items, None, bad)
    with pytest.raises(ValueError, match="--limit"):
        select_items(items, -1, "0/1")


def test_resume_refuses_other_settings_a_corrupt_or_a_missing_settings_file(tmp_path):
    out = tmp_path / "s.jsonl"
    check_resumable(out, {"n": 8}, ("n",))  # nothing there yet: fine
    out.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="settings file .* is missing"):
        check_resumable(out, {"n": 8}, ("n",))
    settings_path(out).write_text(json.dumps({"n": 4}))
    with pytest.raises(ValueError, match=r"n: 4 → 8"):
        check_resumable(out, {"n": 8}, ("n",))
    check_resumable(out, {"n": 4}, ("n",))
    settings_path(out).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt") as err:
        check_resumable(out, {"n": 4}, ("n",))
    assert str(settings_path(out)) in str(err.value)


def test_every_backend_knob_is_declared_once_and_inherited_by_the_stages():
    knobs = {f.name for f in dataclasses.fields(BackendSettings)}
    assert {f.name for f in dataclasses.fields(ServerKnobs)} < knobs
    for stage in (SampleSettings, AnnotateSettings):
        assert issubclass(stage, BackendSettings)
        redeclared = knobs & set(stage.__dict__.get("__annotations__", {}))
        # The judge's only own knob among them: its trust_remote_code default (InternLM2 ships its code).
        assert redeclared == ({"trust_remote_code"} if stage is AnnotateSettings else set())


@pytest.mark.parametrize("backend,expected", [
    ("hf", {"device", "trust_remote_code", "batch_size"}),
    ("lmdeploy", {"tp", "engine", "trust_remote_code"}),
    ("openai", {"base_url", "api_key", "concurrency", "server_profile", "server_n", "tokenizer", "max_retries",
                "timeout", "allow_model_mismatch"}),
])
def test_backend_options_are_mapped_once_for_every_stage(backend, expected):
    sample = SampleSettings(backend=backend, tp=2, engine="pytorch", timeout=9.0)
    judge = AnnotateSettings(backend=backend, tp=2, engine="pytorch", timeout=9.0)
    assert set(sample.backend_options(batch_size=4)) == expected
    shared = expected - {"trust_remote_code", "batch_size", "server_n"}
    assert {k: sample.backend_options(4)[k] for k in shared} == {k: judge.backend_options(4)[k] for k in shared}


def test_a_stage_leads_its_help_with_its_own_options_and_words_shared_knobs_its_way():
    names = [f.name for f in option_fields(AnnotateSettings)]
    assert names[0] == "samples" and names.index("out") < names.index("backend")
    assert "judge" in AnnotateSettings.option_help["tokenizer"]

    @click_options(AnnotateSettings)
    def command(**options):
        pass

    params = {p.name: p for p in command.__click_params__}
    assert "server_n" not in params  # not offered to the judge ...
    assert "server_n" not in settings_dict(AnnotateSettings())  # ... nor recorded as its setting
    assert params["tokenizer"].help == AnnotateSettings.option_help["tokenizer"]
    assert params["trust_remote_code"].default is True
