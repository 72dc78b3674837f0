"""The reference cache file: computing, resuming after a kill, refusing other settings, reading errors."""

import json

import pytest

from maskdpo.jsonl import RecordError
from maskdpo.xtuner.ref_cache import FORMAT, RefCache, RefCacheMismatch, compute_ref_cache, reference_fingerprint
from tests.test_xtuner_data import write_pairs

CONFIG = "xtuner_configs/maskdpo_tiny_cpu.py"


@pytest.fixture()
def env(monkeypatch, tmp_path, tiny_llama_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    monkeypatch.setenv("MASKDPO_MODEL", str(tiny_llama_dir))
    monkeypatch.setenv("MASKDPO_PAIRS", str(pairs))
    monkeypatch.delenv("MASKDPO_REF_CACHE", raising=False)
    return tmp_path


def test_compute_resumes_after_a_kill_without_duplicates(env):
    import torch

    torch.set_num_threads(1)
    out = env / "ref.jsonl"
    full = compute_ref_cache(CONFIG, out, batch_size=4)
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["format"] == FORMAT and len(lines) == 5
    fp = full.fingerprint
    assert fp["mask"] == "both" and fp["max_length"] == 512 and fp["reference"]["digest"]
    # A kill after two pairs and in the middle of the third line.
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    resumed = compute_ref_cache(CONFIG, out, batch_size=1)
    again = out.read_text().splitlines()
    assert len(again) == 5 and again[:3] == lines[:3]  # kept lines untouched, the torn one redone
    assert sorted(resumed.entries) == sorted(full.entries)
    for pair_id, entry in full.entries.items():  # other batch shapes: fp32 rounding only
        redone = resumed.entries[pair_id]
        assert redone["digest"] == entry["digest"] and redone["chosen_tokens"] == entry["chosen_tokens"]
        assert redone["chosen"] == pytest.approx(entry["chosen"], abs=1e-4)
        assert redone["rejected"] == pytest.approx(entry["rejected"], abs=1e-4)


def test_existing_cache_for_other_settings_is_an_error(env):
    out = env / "ref.jsonl"
    compute_ref_cache(CONFIG, out, batch_size=4)
    with pytest.raises(RefCacheMismatch, match="holds a cache for other settings"):
        compute_ref_cache(CONFIG, out, cfg_options={"train_dataloader.dataset.mask": "none"})


def test_config_with_a_cache_set_is_refused(env):
    with pytest.raises(ValueError, match="model.ref_cache is set"):
        compute_ref_cache(CONFIG, env / "x.jsonl", cfg_options={"model.ref_cache": str(env / "old.jsonl")})


def test_reading_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"format": "maskdpo/pair@1"}) + "\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl:1: field 'format'"):
        RefCache.load(bad)
    bad.write_text(json.dumps({"format": FORMAT, "fingerprint": {}}) + "\n" + json.dumps({"pair_id": "a"}) + "\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'digest': missing"):
        RefCache.load(bad)
    with pytest.raises(FileNotFoundError, match="maskdpo ref-cache"):
        RefCache.load(tmp_path / "missing.jsonl")


def test_reference_identity_uses_the_folder_digest(tmp_path, tiny_llama_dir):
    here = reference_fingerprint({"pretrained_model_name_or_path": str(tiny_llama_dir)})
    assert here["digest"] is not None
    cache = RefCache("c.jsonl", {"reference": here}, {})
    cache.check_reference(dict(here))
    changed = tmp_path / "model"
    changed.mkdir()
    for f in tiny_llama_dir.iterdir():
        if f.is_file():
            (changed / f.name).write_bytes(f.read_bytes())
    config = json.loads((changed / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (changed / "config.json").write_text(json.dumps(config))
    with pytest.raises(RefCacheMismatch):
        cache.check_reference(reference_fingerprint({"pretrained_model_name_or_path": str(changed)}))


def test_ref_cache_opens_the_tokenized_cache_and_a_folder_fingerprints_like_its_pairs(env, monkeypatch, tiny_llama_dir):
    from transformers import AutoTokenizer

    from maskdpo.xtuner import dataset as ds_module
    from maskdpo.xtuner.dataset import prepare_tokenized

    monkeypatch.setenv("MASKDPO_TOKENIZED_CACHE", str(env / "tokenized"))
    # What a training run or `maskdpo tokenize` left behind.
    store = prepare_tokenized(str(env / "pairs.jsonl"), AutoTokenizer.from_pretrained(tiny_llama_dir), 512, "both")

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(ds_module, "tokenize_rows", no_tokenizing)
    from_pairs = compute_ref_cache(CONFIG, env / "a.jsonl", batch_size=4)
    monkeypatch.setenv("MASKDPO_PAIRS", str(store.folder))
    from_folder = compute_ref_cache(CONFIG, env / "b.jsonl", batch_size=4)
    assert from_folder.fingerprint == from_pairs.fingerprint  # one cache serves training from either
    assert {k: v["digest"] for k, v in from_folder.entries.items()} == \
        {k: v["digest"] for k, v in from_pairs.entries.items()}


def test_run_ref_cache_writes_the_cache_and_its_settings_file(env):
    from maskdpo.xtuner.ref_cache import RefCacheSettings, run_ref_cache

    out = env / "ref.jsonl"
    summary = run_ref_cache(RefCacheSettings(config=CONFIG, out=out, batch_size=4),
                            ["train_dataloader.dataset.mask=both"])
    assert summary.line() == f"{out}: reference sums for 4 pairs (mask=both, max_length=512)"
    recorded = json.loads((env / "ref.jsonl.settings.json").read_text())
    assert recorded == {"config": CONFIG, "out": str(out), "batch_size": 4, "device": None, "dtype": None,
                        "cfg_options": ["train_dataloader.dataset.mask=both"]}


def test_run_ref_cache_refuses_bad_settings_before_loading(tmp_path):
    from maskdpo.xtuner.ref_cache import RefCacheSettings, parse_cfg_options, run_ref_cache

    with pytest.raises(FileNotFoundError, match="--config .*missing.py: no such config file"):
        run_ref_cache(RefCacheSettings(config=tmp_path / "missing.py", out=tmp_path / "ref.jsonl"))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(ValueError, match="blocker"):
        run_ref_cache(RefCacheSettings(config=CONFIG, out=blocker / "ref.jsonl"))
    with pytest.raises(ValueError, match="--cfg-options: expected KEY=VALUE, got 'mask'"):
        parse_cfg_options(["mask"])
    assert parse_cfg_options(["a.b=1", "c=[1,2]"]) == {"a.b": 1, "c": [1, 2]}


def test_ref_cache_command_with_a_missing_config_is_one_error_line(tmp_path):
    from click.testing import CliRunner

    from maskdpo.cli import main

    missing = tmp_path / "missing.py"
    result = CliRunner().invoke(main, ["ref-cache", "--config", str(missing), "--out", str(tmp_path / "ref.jsonl")])
    assert result.exit_code == 2, result.output
    assert f"Error: --config {missing}: no such config file" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "ref.jsonl").exists()
    result = CliRunner().invoke(main, ["ref-cache", "--config", CONFIG, "--out", str(tmp_path / "ref.jsonl"),
                                       "--cfg-options", "no-equals-sign"])
    assert result.exit_code == 2 and "Error: --cfg-options: expected KEY=VALUE, got 'no-equals-sign'" in result.output
