"""``LMDeployDouble``: a test double of the part of LMDeploy 0.18's Python API that maskdpo uses.

LMDeploy's engines cannot run here (no CUDA). This double mirrors the real
classes (``lmdeploy/messages.py``, ``lmdeploy/model.py``, ``lmdeploy/api.py``
and ``lmdeploy/archs.py`` of 0.18.0): the same field names, defaults and
checks, including what they refuse (a field whose default is ``None`` is
annotated ``Optional[...]`` here where LMDeploy writes ``int = None``; the
dataclasses check no annotation) —

- ``GenerationConfig`` and ``PytorchEngineConfig`` are plain dataclasses with
  assertions (``AssertionError``; an unknown keyword is a ``TypeError``);
- ``TurbomindEngineConfig`` is a *pydantic* dataclass: every field is
  type-checked, so ``None`` is refused where the field is not optional
  (``max_batch_size=None``!), a failed check is a ``ValueError``
  (pydantic's ``ValidationError`` is one), and unknown keywords are ignored;
- ``pipeline(model_path, backend_config=..., chat_template_config=...,
  trust_remote_code=...)`` switches a TurboMind config to a PyTorch one when
  TurboMind is unavailable (``module.turbomind_available = False``), as
  ``autoget_backend_config`` does, silently;
- ``pipe(prompts, gen_config=..., do_preprocess=...)`` takes one config or one
  per prompt and returns ``Response`` objects; an engine failure is a
  ``Response(text='', finish_reason='error', error_message=...)``
  (``pipe.fail(times, prompt_contains=...)`` makes the next responses fail), and a text longer than
  ``max_new_tokens`` words is cut with ``finish_reason='length'``.

``tests/test_lmdeploy_contract.py`` checks the double against the real
classes where the real package is installed (the inference environment).

Sampling is simulated: with ``do_sample=True`` the text is a function of the
prompt and ``random_seed`` (equal seeds give equal text, as in LMDeploy);
greedy text ignores the seed. Everything it is given is recorded. Install it
with :func:`install` (a pytest ``monkeypatch``); it also reports CUDA as
available to the backend, which checks for it.
"""

from __future__ import annotations

import dataclasses
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
    random_seed: Optional[int] = None
    stop_words: Optional[List[str]] = None
    bad_words: Optional[List[str]] = None
    stop_token_ids: Optional[List[int]] = None
    bad_token_ids: Optional[List[int]] = None
    min_new_tokens: Optional[int] = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logprobs: Optional[int] = None
    logprob_start_len: int = -1
    response_format: Optional[Dict] = None
    logits_processors: Optional[List[Any]] = None
    output_logits: Optional[Literal["all", "generation"]] = None
    output_last_hidden_state: Optional[Literal["all", "generation"]] = None
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        assert type(self.n) is int and self.n > 0, "n is not a positive integer"
        assert self.top_p >= 0 and self.top_p <= 1
        assert self.top_k >= 0, "top_k can not be a negative integer"
        assert self.temperature >= 0 and self.temperature <= 2
        assert 0 <= self.min_p <= 1, f"min_p should be in range [0, 1], but found {self.min_p}"
        if self.logprob_start_len < -1:
            raise ValueError("logprob_start_len must be greater than or equal to -1")


class ValidationError(ValueError):
    """Stands for pydantic's ``ValidationError`` (a ``ValueError``)."""


def _accepts(kind: Any, value: Any) -> bool:
    """pydantic's lax validation for the field types used here: int, float, str, bool, list, Optional[...]."""
    optional = isinstance(kind, tuple)
    base = kind[0] if optional else kind
    if value is None:
        return optional
    if base is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if base is float:
        return isinstance(value, (int, float))
    if base is bool:
        return isinstance(value, bool) or value in (0, 1)
    if base is str:
        return isinstance(value, str)
    if base is list:
        return isinstance(value, (list, tuple))
    return True


class TurbomindEngineConfig:
    """A pydantic dataclass in LMDeploy: fields are type-checked, unknown keywords ignored."""

    # name: (type, default); (type,) = Optional[type]
    FIELDS: Dict[str, tuple] = {
        "dtype": (str, "auto"),
        "model_format": ((str,), None),
        "tp": (int, 1),
        "dp": (int, 1),
        "ep": (int, 1),
        "session_len": ((int,), None),
        "max_batch_size": (int, None),  # default None, yet None is refused when given
        "cache_max_entry_count": (float, 0.8),
        "cache_chunk_size": (int, -1),
        "cache_block_seq_len": (int, 64),
        "enable_prefix_caching": (bool, False),
        "quant_policy": (int, 0),
        "rope_scaling_factor": (float, 0.0),
        "use_logn_attn": (bool, False),
        "download_dir": ((str,), None),
        "revision": ((str,), None),
        "max_prefill_token_num": (int, 8192),
        "num_tokens_per_iter": (int, 0),
        "max_prefill_iters": (int, 1),
        "communicator": (str, "nccl"),
    }

    def __init__(self, **kwargs: Any):
        for name, (kind, default) in self.FIELDS.items():
            if name in kwargs:
                value = kwargs[name]
                if not _accepts(kind, value):
                    raise ValidationError(f"1 validation error for TurbomindEngineConfig\n{name}: invalid {value!r}")
                setattr(self, name, value)
            else:
                setattr(self, name, default)
        checks = [(self.dtype in ["auto", "float16", "bfloat16"], "dtype"),
                  (self.tp >= 1, "tp must be a positive integer"),
                  (self.ep >= 1, "ep must be a positive integer"),
                  (self.cache_max_entry_count > 0, "invalid cache_max_entry_count"),
                  (self.quant_policy in (0, 4, 8), f"invalid quant_policy: {self.quant_policy}"),
                  (self.rope_scaling_factor >= 0, "invalid rope_scaling_factor"),
                  (self.max_prefill_token_num >= 0, "invalid max_prefill_token_num"),
                  (self.num_tokens_per_iter >= 0, "invalid num_tokens_per_iter")]
        for ok, message in checks:
            if not ok:
                raise ValidationError(f"1 validation error for TurbomindEngineConfig\nAssertion failed, {message}")

    def __repr__(self) -> str:
        return "TurbomindEngineConfig(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS) + ")"


@dataclass
class PytorchEngineConfig:
    dtype: str = "auto"
    tp: int = 1
    dp: int = 1
    ep: int = 1
    session_len: Optional[int] = None
    max_batch_size: Optional[int] = None
    cache_max_entry_count: float = 0.8
    prefill_interval: int = 16
    block_size: int = 64
    num_cpu_blocks: int = 0
    num_gpu_blocks: int = 0
    adapters: Optional[Dict[str, str]] = None
    max_prefill_token_num: int = 8192
    thread_safe: bool = False
    enable_prefix_caching: bool = False
    device_type: str = "cuda"
    eager_mode: bool = False
    custom_module_map: Optional[Dict[str, str]] = None
    download_dir: Optional[str] = None
    revision: Optional[str] = None
    quant_policy: int = 0
    distributed_executor_backend: Optional[str] = None

    def __post_init__(self):
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert self.tp >= 1, "invalid tp"
        assert self.dp >= 1, "invalid dp"
        assert self.ep >= 1, "invalid ep"
        assert 0 < self.cache_max_entry_count < 1, "invalid cache_max_entry_count"
        assert self.num_cpu_blocks >= 0, "invalid num_cpu_blocks"
        assert self.max_prefill_token_num >= 0, "invalid max_prefill_token_num"
        assert self.num_gpu_blocks >= 0, "invalid num_gpu_blocks"
        if self.quant_policy not in (0, 4, 8, 16, 17):
            raise ValueError(f"invalid quant_policy: {self.quant_policy}")
        assert self.device_type in ["cuda", "ascend", "maca", "camb"], f"invalid device_type: {self.device_type}"


@dataclass
class ChatTemplateConfig:
    model_name: str
    model_path: Optional[str] = None
    system: Optional[str] = None
    meta_instruction: Optional[str] = None
    eosys: Optional[str] = None
    user: Optional[str] = None
    eoh: Optional[str] = None
    assistant: Optional[str] = None
    eoa: Optional[str] = None
    tool: Optional[str] = None
    eotool: Optional[str] = None
    separator: Optional[str] = None
    capability: Optional[Literal["completion", "infilling", "chat", "python"]] = None
    stop_words: Optional[List[str]] = None


@dataclass
class Response:
    text: str
    generate_token_len: int
    input_token_len: int
    finish_reason: Optional[Literal["stop", "length", "error", "abort"]] = None
    token_ids: List[int] = field(default_factory=list)
    logprobs: Optional[List[Dict[int, float]]] = None
    index: int = 0
    error_code: Optional[str] = None
    error_message: Optional[str] = None


@dataclass
class PipelineCall:
    prompts: list
    gen_configs: list
    do_preprocess: bool


class PipelineDouble:
    def __init__(self, model_path: str, backend_config: Any = None, chat_template_config: Any = None,
                 log_level: str = "WARNING", max_log_len: Optional[int] = None, trust_remote_code: bool = False,
                 turbomind_available: bool = True, **kwargs: Any):
        self.model_path = model_path
        self.requested_backend_config = backend_config
        self.backend_config = self._autoget_backend_config(backend_config, turbomind_available)
        self.chat_template_config = chat_template_config
        self.trust_remote_code = trust_remote_code
        self.calls: list[PipelineCall] = []
        self.failures: list[tuple[Optional[str], str, str]] = []  # (prompt substring, error_code, message)
        self.closed = False

    @staticmethod
    def _autoget_backend_config(config: Any, turbomind_available: bool) -> Any:
        """As ``lmdeploy.archs.autoget_backend_config``: a PyTorch config is kept; otherwise TurboMind when
        it can load, else the TurboMind config's set fields copied into a PyTorch config, silently."""
        if isinstance(config, PytorchEngineConfig):
            return config
        if turbomind_available:
            return config if config is not None else TurbomindEngineConfig()
        converted = PytorchEngineConfig()
        if config is not None:
            for name in config.FIELDS:
                value = getattr(config, name)
                if value and hasattr(converted, name):
                    setattr(converted, name, value)
        return converted

    def fail(self, times: int = 1, message: str = "out of memory", code: str = "OUT_OF_MEMORY",
             prompt_contains: Optional[str] = None) -> None:
        """Make the next ``times`` responses (to prompts containing ``prompt_contains``) engine failures."""
        self.failures.extend([(prompt_contains, code, message)] * times)

    def __call__(self, prompts, gen_config=None, **kwargs):
        return self.infer(prompts, gen_config=gen_config, **kwargs)

    def infer(self, prompts, gen_config=None, do_preprocess: bool = True, adapter_name=None, use_tqdm=False,
              **kwargs):
        single = isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict))
        prompts = [prompts] if single else list(prompts)
        if gen_config is None:
            configs = [GenerationConfig()] * len(prompts)
        elif isinstance(gen_config, list):
            configs = gen_config
        else:
            configs = [gen_config] * len(prompts)
        if len(configs) != len(prompts):
            raise ValueError("input gen_config length differs from the length of prompts. "
                             f"Got {len(prompts)} prompts and {len(configs)} gen_configs")
        self.calls.append(PipelineCall(prompts, configs, do_preprocess))
        outputs = [self._respond(i, p, c) for i, (p, c) in enumerate(zip(prompts, configs))]
        return outputs[0] if single else outputs

    def _respond(self, index: int, prompt: Any, config: GenerationConfig) -> Response:
        due = [k for k, (part, _, _) in enumerate(self.failures) if part is None or part in str(prompt)]
        if due:
            _, code, message = self.failures.pop(due[0])
            return Response(text="", generate_token_len=0, input_token_len=len(str(prompt)), finish_reason="error",
                            index=index, error_code=code, error_message=message)
        words = self._text(prompt, config).split()
        reason = "stop"
        if len(words) > config.max_new_tokens:
            words, reason = words[:config.max_new_tokens], "length"
        return Response(text=" " + " ".join(words) + " ", generate_token_len=len(words),
                        input_token_len=len(str(prompt)), finish_reason=reason, index=index)

    @staticmethod
    def _text(prompt: Any, config: GenerationConfig) -> str:
        key = hashlib.sha256(str(prompt).encode()).hexdigest()[:8]
        if not config.do_sample:
            return f"greedy answer {key}"
        seed = config.random_seed if config.random_seed is not None else random.getrandbits(31)
        return f"sampled answer {key} seed {seed}"

    def close(self) -> None:
        self.closed = True


def build_module(turbomind_available: bool = True) -> types.ModuleType:
    module = types.ModuleType("lmdeploy")
    module.__doc__ = "LMDeployDouble: a test double of lmdeploy's Python API (tests/doubles/lmdeploy_double.py)"
    module.GenerationConfig = GenerationConfig
    module.TurbomindEngineConfig = TurbomindEngineConfig
    module.PytorchEngineConfig = PytorchEngineConfig
    module.ChatTemplateConfig = ChatTemplateConfig
    module.Response = Response
    module.pipelines = []
    module.turbomind_available = turbomind_available

    def pipeline(model_path: str, backend_config: Any = None, chat_template_config: Any = None,
                 log_level: str = "WARNING", max_log_len: Optional[int] = None, trust_remote_code: bool = False,
                 speculative_config: Any = None, allowed_media_domains: Optional[List[str]] = None,
                 **kwargs: Any) -> PipelineDouble:
        pipe = PipelineDouble(model_path, backend_config, chat_template_config, log_level, max_log_len,
                              trust_remote_code, turbomind_available=module.turbomind_available, **kwargs)
        module.pipelines.append(pipe)
        return pipe

    module.pipeline = pipeline
    return module


def config_fields(cls: type) -> dict[str, Any]:
    """{field name: default} of one of the double's config classes."""
    if cls is TurbomindEngineConfig:
        return {name: default for name, (_, default) in cls.FIELDS.items()}
    return {f.name: (f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING)
            for f in dataclasses.fields(cls)}


def install(monkeypatch: Any, cuda: bool = True, turbomind_available: bool = True) -> types.ModuleType:
    """Put the double in ``sys.modules["lmdeploy"]`` and make CUDA look present (or not)."""
    import maskdpo.backends.lmdeploy as backend_module

    module = build_module(turbomind_available)
    monkeypatch.setitem(sys.modules, "lmdeploy", module)
    monkeypatch.setattr(backend_module, "cuda_available", lambda: cuda)
    return module
