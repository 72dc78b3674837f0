"""The XTuner configs: they load, carry the paper's settings, and the small ones differ only in PART 1."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "xtuner_configs"
PAPER, PAPER_DPO = CONFIGS / "maskdpo_llama31.py", CONFIGS / "dpo_llama31.py"
CPU, CPU_DPO = CONFIGS / "maskdpo_tiny_cpu.py", CONFIGS / "dpo_tiny_cpu.py"
PART1 = "#                          PART 1  Settings"
PART2 = "#                      PART 2  Model & Tokenizer"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _named_configs() -> set[Path]:
    """Every config in xtuner_configs/ and every one the README or the docs name."""
    named = set(CONFIGS.glob("*.py"))
    for doc in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        if doc.exists():
            named |= {ROOT / m for m in re.findall(r"xtuner_configs/[\w.-]+\.py", doc.read_text(encoding="utf-8"))}
    return named


@pytest.mark.parametrize("path", sorted(_named_configs()), ids=lambda p: p.name)
def test_every_named_config_exists_and_loads(path):
    assert path.exists(), f"{path} is named in the docs but does not exist"
    cfg = _load(path)
    assert cfg.model.type.__name__ == "MaskDPO"
    assert cfg.train_dataloader.dataset.type.__name__ == "build_maskdpo_dataset"
    assert cfg.train_dataloader.collate_fn.type.__name__ == "maskdpo_collate_fn"
    assert "environ" not in cfg  # the process environment stays out of dumped configs


def _parts(path):
    """(imports, PART 1, PARTS 2-5) of a config's text; the header comment is free."""
    text = path.read_text(encoding="utf-8")
    imports = text[text.index("from mmengine"):text.index(PART1)]
    part1 = text[text.index(PART1):text.index(PART2)]
    return imports, part1, text[text.index(PART2):]


@pytest.mark.parametrize("small,paper", [(CPU, PAPER), (CPU_DPO, PAPER_DPO)], ids=["maskdpo", "dpo"])
def test_cpu_config_differs_from_the_paper_config_only_in_part_1(small, paper):
    small_imports, small_part1, small_rest = _parts(small)
    paper_imports, paper_part1, paper_rest = _parts(paper)
    assert small_imports == paper_imports
    assert small_rest == paper_rest
    assert small_part1 != paper_part1


@pytest.mark.parametrize("dpo,maskdpo", [(PAPER_DPO, PAPER), (CPU_DPO, CPU)], ids=["paper", "cpu"])
def test_dpo_configs_differ_from_maskdpo_only_in_the_mask(dpo, maskdpo):
    dpo_part1, mask_part1 = _parts(dpo)[1].splitlines(), _parts(maskdpo)[1].splitlines()
    changed = [(a, b) for a, b in zip(dpo_part1, mask_part1) if a != b]
    assert len(dpo_part1) == len(mask_part1) and len(changed) == 1
    assert changed[0][0].startswith('mask = "none"') and changed[0][1].startswith('mask = "both"')
    assert _parts(dpo)[2] == _parts(maskdpo)[2]
    assert _load(dpo).train_dataloader.dataset.mask == "none"


def test_paper_config_has_the_paper_settings(monkeypatch):
    for key in ("MASKDPO_MODEL", "MASKDPO_PAIRS", "MASKDPO_REF_CACHE"):
        monkeypatch.delenv(key, raising=False)
    cfg = _load(PAPER)
    model = cfg.model
    assert model.beta == 0.1 and model.loss_type == "sigmoid" and model.label_smoothing == 0.0
    assert model.llm.pretrained_model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert model.ref_llm.pretrained_model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"  # ZeRO-3: no deepcopy
    assert model.ref_cache is None
    data = cfg.train_dataloader.dataset
    assert data.mask == "both" and data.max_length == 1024 and data.use_varlen_attn is False
    gpus = 8
    assert gpus * cfg.train_dataloader.batch_size * cfg.optim_wrapper.accumulative_counts == 64
    optim = cfg.optim_wrapper
    assert optim.type.__name__ == "AmpOptimWrapper" and optim.dtype == "bfloat16"
    assert optim.optimizer.type.__name__ == "AdamW" and optim.optimizer.lr == 5e-6
    assert cfg.train_cfg.max_epochs == 3
    warmup, cosine = cfg.param_scheduler
    assert warmup.type.__name__ == "LinearLR" and warmup.end == pytest.approx(0.03 * 3)
    assert cosine.type.__name__ == "CosineAnnealingLR" and cosine.eta_min == 0.0 and cosine.end == 3


def test_cpu_config_takes_paths_and_sizes_from_the_environment(monkeypatch, tmp_path):
    env = {"MASKDPO_MODEL": "/models/tiny", "MASKDPO_PAIRS": str(tmp_path / "p.jsonl"),
           "MASKDPO_REF_CACHE": str(tmp_path / "ref.jsonl"), "MASKDPO_EPOCHS": "2", "MASKDPO_LR": "0.01",
           "MASKDPO_BATCH_SIZE": "4", "MASKDPO_SAVE_STEPS": "7"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = _load(CPU)
    assert cfg.model.llm.pretrained_model_name_or_path == "/models/tiny"
    assert cfg.model.ref_llm.pretrained_model_name_or_path == "/models/tiny"
    assert cfg.tokenizer.pretrained_model_name_or_path == "/models/tiny"
    assert cfg.train_dataloader.dataset.data_files == env["MASKDPO_PAIRS"]
    assert cfg.model.ref_cache == env["MASKDPO_REF_CACHE"]
    assert cfg.train_cfg.max_epochs == 2 and cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.train_dataloader.batch_size == 4 and cfg.default_hooks.checkpoint.interval == 7
    assert cfg.optim_wrapper.type.__name__ == "OptimWrapper"  # fp32 on CPU
    assert [s.type.__name__ for s in cfg.param_scheduler] == ["CosineAnnealingLR"]  # no zero-length warmup


def test_configs_train_from_pair_files_or_a_tokenized_folder(monkeypatch, tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer
    from xtuner.registry import BUILDER

    from maskdpo.xtuner.dataset import prepare_tokenized
    from tests.test_xtuner_data import write_pairs

    pairs = write_pairs(tmp_path / "p.jsonl")
    monkeypatch.setenv("MASKDPO_MODEL", str(tiny_llama_dir))
    monkeypatch.setenv("MASKDPO_TOKENIZED_CACHE", str(tmp_path / "tokenized"))
    monkeypatch.setenv("MASKDPO_NUM_PROC", "2")
    paper = _load(PAPER).train_dataloader.dataset
    assert paper.cache_dir == str(tmp_path / "tokenized") and paper.num_proc == 2
    monkeypatch.delenv("MASKDPO_NUM_PROC")
    assert _load(PAPER).train_dataloader.dataset.num_proc == 8 and _load(CPU).train_dataloader.dataset.num_proc == 1
    store = prepare_tokenized(str(pairs), AutoTokenizer.from_pretrained(tiny_llama_dir), 512, "both")
    for data_files in (pairs, store.folder):  # pair files, or what `maskdpo tokenize` made
        monkeypatch.setenv("MASKDPO_PAIRS", str(data_files))
        dataset = BUILDER.build(_load(CPU).train_dataloader.dataset)
        assert len(dataset) == 4 and dataset.store.folder == store.folder
