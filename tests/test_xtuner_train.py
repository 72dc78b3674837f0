"""Real XTuner runs of the CPU config: train, convert to HF, resume, and train with the reference cache.

``python -m xtuner.tools.train`` (not ``xtuner train``, which exits 0 when training crashed), with the
environment's ``bin`` first on PATH so XTuner's own subprocesses find the same Python.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_xtuner_data import write_pairs

CONFIG = "xtuner_configs/maskdpo_tiny_cpu.py"
ROOT = Path(__file__).resolve().parents[1]
ITERS = 8  # 4 pairs, batch 2, 4 epochs


def _env(tiny_llama_dir, pairs, **extra):
    env = dict(os.environ)
    env.update({
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "MASKDPO_MODEL": str(tiny_llama_dir), "MASKDPO_PAIRS": str(pairs), "MASKDPO_EPOCHS": "4",
        "MASKDPO_LR": "1e-3", "MASKDPO_SAVE_STEPS": "4", "MASKDPO_BATCH_SIZE": "2",
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        # XTuner 0.2.0 and mmengine call torch.load without weights_only; torch >= 2.6 then refuses
        # their checkpoints (message hub, optimizer state) on --resume.
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
    })
    env.update(extra)
    return env


def _run(args, env, log):
    proc = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    log.write_text(proc.stdout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed; last output:\n{proc.stdout[-3000:]}"
    return proc.stdout


def _train(work_dir, env, *extra):
    return _run([sys.executable, "-m", "xtuner.tools.train", CONFIG, "--work-dir", str(work_dir), *extra], env,
                work_dir.parent / f"{work_dir.name}.log")


def _losses(work_dir) -> dict[int, float]:
    """Iteration → loss, from every run logged under ``work_dir``."""
    out = {}
    for scalars in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            rec = json.loads(line)
            if "loss" in rec:
                out[rec["iter"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("train")
    pairs = write_pairs(folder / "pairs.jsonl")
    env = _env(tiny_llama_dir, pairs)
    _train(folder / "live", env)
    return folder, pairs, env


def test_training_lowers_the_loss_and_writes_checkpoints_without_the_reference(first_run):
    folder, _, _ = first_run
    losses = _losses(folder / "live")
    assert sorted(losses) == list(range(1, ITERS + 1))
    assert losses[1] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert losses[ITERS] < losses[1] - 0.03
    for it in (4, ITERS):
        state = torch.load(folder / "live" / f"iter_{it}.pth", map_location="cpu", weights_only=False)["state_dict"]
        assert any(k.startswith("llm.") for k in state)
        assert not any(k.startswith("ref_llm.") for k in state)


def test_convert_to_hf_gives_a_model_transformers_loads(first_run, monkeypatch):
    from transformers import AutoModelForCausalLM
    from xtuner.tools.model_converters import pth_to_hf

    folder, _, env = first_run
    out = folder / "hf"
    checkpoint = folder / "live" / f"iter_{ITERS}.pth"
    # `xtuner convert pth_to_hf CONFIG PTH OUT` is this main(); run in-process to spare a start-up.
    for key in ("MASKDPO_MODEL", "MASKDPO_PAIRS"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(sys, "argv", ["pth_to_hf", CONFIG, str(checkpoint), str(out), "--fp32"])
    monkeypatch.chdir(ROOT)
    pth_to_hf.main()
    model = AutoModelForCausalLM.from_pretrained(out)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, state["llm." + name])
    assert (out / "tokenizer_config.json").exists()


def test_resume_continues_from_the_checkpoint(first_run, tmp_path):
    folder, _, env = first_run
    work = tmp_path / "resumed"
    work.mkdir()
    checkpoint = work / "iter_4.pth"
    checkpoint.write_bytes((folder / "live" / "iter_4.pth").read_bytes())
    output = _train(work, env, "--resume", str(checkpoint))
    assert "resumed epoch" in output
    resumed, uninterrupted = _losses(work), _losses(folder / "live")
    assert sorted(resumed) == list(range(5, ITERS + 1))  # it continued, not restarted
    for it in resumed:
        assert resumed[it] == pytest.approx(uninterrupted[it], abs=1e-5)
    assert (work / f"iter_{ITERS}.pth").exists()


def test_training_with_the_reference_cache_matches_the_live_reference(first_run, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from maskdpo.cli import main

    folder, _, env = first_run
    cache = tmp_path / "ref.jsonl"
    for key in ("MASKDPO_MODEL", "MASKDPO_PAIRS"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["ref-cache", "--config", CONFIG, "--out", str(cache), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "reference sums for 4 pairs" in result.output

    output = _train(tmp_path / "cached", {**env, "MASKDPO_REF_CACHE": str(cache)})
    assert f"Reference: 4 precomputed pair sums from {cache}; no reference model loaded" in output
    live, cached = _losses(folder / "live"), _losses(tmp_path / "cached")
    assert sorted(cached) == sorted(live)
    for it in live:
        assert cached[it] == pytest.approx(live[it], abs=1e-5)
