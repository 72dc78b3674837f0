"""The paper command's DeepSpeed part, on the CPU: `xtuner train xtuner_configs/maskdpo_llama31.py --deepspeed deepspeed_zero3`.

XTuner's own ``xtuner.tools.train.main`` runs with those arguments up to the
point where it builds the runner (which needs GPUs and the 8B weights): DeepSpeed
must import (the ``train`` extra installs it), ``deepspeed_zero3`` must resolve
to XTuner's bundled config, and the resulting DeepSpeed strategy must carry
ZeRO-3 with the paper config's batch, accumulation and clipping. The strategy
object is then built from that config, as the runner would. (The device XTuner
asks for bf16 support is a stand-in for a bf16 GPU.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "xtuner_configs" / "maskdpo_llama31.py"


class RunnerReached(Exception):
    """Raised in place of building the runner: everything before it ran."""


def test_deepspeed_imports_with_the_training_stack():
    import deepspeed
    from mmengine.utils import digit_version

    assert digit_version(deepspeed.__version__) >= digit_version("0.12.3")  # what xtuner's train.py demands


def test_paper_command_resolves_deepspeed_zero3(monkeypatch, tmp_path):
    import xtuner.tools.train as train
    from mmengine.config import Config
    from xtuner.configs import cfgs_name_path

    built = {}

    class CapturingRunnersDouble:
        @staticmethod
        def build(cfg):
            built["cfg"] = cfg
            raise RunnerReached

    monkeypatch.setattr(train, "RUNNERS", CapturingRunnersDouble)
    # XTuner settles DeepSpeed's "auto" dtypes by asking the device; this CPU stands in for a bf16 GPU
    # (torch.cpu has no is_bf16_supported, so XTuner's code path cannot run on the CPU as it is).
    import xtuner.tools.utils as tool_utils

    bf16_gpu = SimpleNamespace(is_available=lambda: True, is_bf16_supported=lambda: True)
    monkeypatch.setattr(tool_utils, "get_torch_device", lambda: bf16_gpu)
    monkeypatch.setattr(sys, "argv", ["xtuner train", str(PAPER), "--deepspeed", "deepspeed_zero3",
                                      "--work-dir", str(tmp_path)])
    with pytest.raises(RunnerReached):
        train.main()
    cfg = built["cfg"]
    paper = Config.fromfile(str(PAPER))

    zero3 = json.loads(Path(cfgs_name_path["deepspeed_zero3"]).read_text())
    assert zero3["zero_optimization"]["stage"] == 3
    assert cfg.runner_type == "FlexibleRunner"
    assert cfg.optim_wrapper.type == "DeepSpeedOptimWrapper"
    assert cfg.optim_wrapper.optimizer == paper.optim_wrapper.optimizer  # the paper's AdamW, lr 5e-6
    strategy = cfg.strategy
    assert strategy.config["zero_optimization"] == zero3["zero_optimization"]
    assert strategy.train_micro_batch_size_per_gpu == paper.train_dataloader.batch_size == 1
    assert strategy.gradient_accumulation_steps == paper.optim_wrapper.accumulative_counts == 8
    assert strategy.gradient_clipping == paper.optim_wrapper.clip_grad.max_norm
    assert strategy.config["bf16"]["enabled"] is True and strategy.config["fp16"]["enabled"] is False  # paper: bf16

    from xtuner.engine import DeepSpeedStrategy

    options = {k: v for k, v in strategy.items() if k != "type"}
    assert isinstance(DeepSpeedStrategy(**options), DeepSpeedStrategy)
