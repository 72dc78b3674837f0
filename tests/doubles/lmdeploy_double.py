"""``LMDeployDouble``: a test double of the part of LMDeploy's Python API that maskdpo uses.

LMDeploy cannot run here (it asserts CUDA when a pipeline is created). This
double mirrors its documented surface (``lmdeploy/messages.py``,
``lmdeploy/api.py``): ``GenerationConfig`` with the same fields, defaults
(``do_sample=False``!) and validation; ``TurbomindEngineConfig`` /
``PytorchEngineConfig`` with the same fields and checks; ``pipeline(model_path,
backend_config=...)`` whose call ``pipe(prompts, gen_config=..., do_preprocess=...)``
takes one config or a list of one per prompt and returns ``Response`` objects
with ``.text``. Sampling is simulated: with ``do_sample=True`` the text is a
function of the prompt and ``random_seed`` (equal seeds give equal text, as
in LMDeploy); greedy text ignores the seed. Everything it is given is recorded.

Install it with :func:`install` (a pytest ``monkeypatch``); it also reports
CUDA as available to the backend, which checks for it.
"""

from __future__ import annotations

import hashlib
import random
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional


@dataclass
class GenerationConfig:
    n: int = 1
    max_new_tokens: int = 512
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 50
    min_p: float = 0.0
    temperature: float = 0.8
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    random_seed: int = None
    stop_words: List[str] = None
    bad_words: List[str] = None
    stop_token_ids: List[int] = None
    bad_token_ids: List[int] = None
    min_new_tokens: int = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logprobs: int = None
    response_format: Optional[Dict] = None
    logits_processors: Optional[List[Any]] = None
    output_logits: Literal["all", "generation"] = None
    output_last_hidden_state: Literal["all", "generation"] = None

    def __post_init__(self):
        assert type(self.n) == int and self.n > 0, "n is not a positive integer"
        assert self.top_p >= 0 and self.top_p <= 1
        assert self.top_k >= 0, "top_k can not be a negative integer"
        assert self.temperature >= 0 and self.temperature <= 2
        assert 0 <= self.min_p <= 1


@dataclass
class TurbomindEngineConfig:
    dtype: str = "auto"
    model_format: Optional[str] = None
    tp: int = 1
    session_len: Optional[int] = None
    max_batch_size: int = None
    cache_max_entry_count: float = 0.8
    cache_chunk_size: int = -1
    cache_block_seq_len: int = 64
    enable_prefix_caching: bool = False
    quant_policy: int = 0
    rope_scaling_factor: float = 0.0
    use_logn_attn: bool = False
    download_dir: Optional[str] = None
    revision: Optional[str] = None
    max_prefill_token_num: int = 8192
    num_tokens_per_iter: int = 0
    max_prefill_iters: int = 1
    communicator: str = "nccl"

    def __post_init__(self):
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert self.tp >= 1, "tp must be a positive integer"
        assert 0 < self.cache_max_entry_count < 1, "invalid cache_max_entry_count"
        assert self.quant_policy in (0, 4, 8), "invalid quant_policy"


@dataclass
class PytorchEngineConfig:
    dtype: str = "auto"
    tp: int = 1
    dp: int = 1
    ep: int = 1
    dp_rank: int = 0
    session_len: int = None
    max_batch_size: int = None
    cache_max_entry_count: float = 0.8
    prefill_interval: int = 16
    block_size: int = 64
    num_cpu_blocks: int = 0
    num_gpu_blocks: int = 0
    adapters: Dict[str, str] = None
    max_prefill_token_num: int = 4096
    thread_safe: bool = False
    enable_prefix_caching: bool = False
    device_type: str = "cuda"
    eager_mode: bool = False
    custom_module_map: Dict[str, str] = None
    download_dir: str = None
    revision: str = None
    quant_policy: Literal[0, 4, 8] = 0
    distributed_executor_backend: str = None

    def __post_init__(self):
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert self.tp >= 1, "invalid tp"
        assert 0 < self.cache_max_entry_count < 1, "invalid cache_max_entry_count"


@dataclass
class Response:
    text: str
    generate_token_len: int
    input_token_len: int
    finish_reason: Optional[Literal["stop", "length"]] = None
    token_ids: List[int] = field(default_factory=list)
    index: int = 0


@dataclass
class PipelineCall:
    prompts: list
    gen_configs: list
    do_preprocess: bool


class PipelineDouble:
    def __init__(self, model_path: str, backend_config: Any = None, chat_template_config: Any = None,
                 log_level: str = "WARNING", **kwargs: Any):
        self.model_path = model_path
        self.backend_config = backend_config
        self.chat_template_config = chat_template_config
        self.calls: list[PipelineCall] = []
        self.closed = False

    def __call__(self, prompts, gen_config=None, do_preprocess: bool = True, adapter_name=None, use_tqdm=False,
                 **kwargs):
        single = isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict))
        prompts = [prompts] if single else list(prompts)
        if gen_config is None:
            gen_config = GenerationConfig()
        configs = gen_config if isinstance(gen_config, list) else [gen_config] * len(prompts)
        assert len(configs) == len(prompts), "input gen_confg length differs from the length of prompts"
        self.calls.append(PipelineCall(prompts, configs, do_preprocess))
        outputs = [Response(text=self._text(p, c), generate_token_len=4, input_token_len=len(str(p)),
                            finish_reason="stop", index=i) for i, (p, c) in enumerate(zip(prompts, configs))]
        return outputs[0] if single else outputs

    @staticmethod
    def _text(prompt: Any, config: GenerationConfig) -> str:
        key = hashlib.sha256(str(prompt).encode()).hexdigest()[:8]
        if not config.do_sample:
            return f" greedy answer {key} "
        seed = config.random_seed if config.random_seed is not None else random.getrandbits(31)
        return f" sampled answer {key} seed {seed} "

    def close(self) -> None:
        self.closed = True


def build_module() -> types.ModuleType:
    module = types.ModuleType("lmdeploy")
    module.__doc__ = "LMDeployDouble: a test double of lmdeploy's Python API (tests/doubles/lmdeploy_double.py)"
    module.GenerationConfig = GenerationConfig
    module.TurbomindEngineConfig = TurbomindEngineConfig
    module.PytorchEngineConfig = PytorchEngineConfig
    module.Response = Response
    module.pipelines = []

    def pipeline(model_path: str, backend_config: Any = None, chat_template_config: Any = None,
                 log_level: str = "WARNING", **kwargs: Any) -> PipelineDouble:
        pipe = PipelineDouble(model_path, backend_config, chat_template_config, log_level, **kwargs)
        module.pipelines.append(pipe)
        return pipe

    module.pipeline = pipeline
    return module


def install(monkeypatch: Any, cuda: bool = True) -> types.ModuleType:
    """Put the double in ``sys.modules["lmdeploy"]`` and make CUDA look present (or not)."""
    import maskdpo.backends.lmdeploy as backend_module

    module = build_module()
    monkeypatch.setitem(sys.modules, "lmdeploy", module)
    monkeypatch.setattr(backend_module, "cuda_available", lambda: cuda)
    return module
