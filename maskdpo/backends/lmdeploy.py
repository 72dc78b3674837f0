"""The ``lmdeploy`` backend: LMDeploy's in-process ``pipeline`` (TurboMind or PyTorch engine).

LMDeploy needs CUDA and its own environment (``pip install -e ".[lmdeploy]"``,
DESIGN §5); it is imported only when this backend is chosen.

Two LMDeploy defaults would silently change the sampling (DESIGN §7):
``GenerationConfig`` defaults to ``do_sample=False`` (greedy), and the
pipeline does not honour ``n > 1``. So every request is replicated ``n``
times, each replica with its own ``GenerationConfig(do_sample=True, top_k,
top_p=1.0, temperature, max_new_tokens, random_seed=derive_seed(seed, j))``,
and prefix caching is on so the copies share the prompt's KV cache.

The prompt is rendered here with the model's own tokenizer template (the
training rendering) and passed with ``do_preprocess=False``, so LMDeploy's
built-in template table is never consulted; a leading BOS is dropped when
LMDeploy's encoder adds one itself.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Decoding, GenerationRequest
from .prompting import adds_bos, render_prompt, replica_seeds, template_meta

ENGINES = ("turbomind", "pytorch")


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (library or accelerator missing)."""


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def import_lmdeploy() -> Any:
    try:
        import lmdeploy
    except ImportError as exc:
        raise BackendUnavailable(
            f"the lmdeploy backend needs LMDeploy ({exc}). Install it in its own GPU environment: "
            "pip install -e '.[lmdeploy]' (it cannot share an environment with xtuner 0.2.0). "
            "Without a GPU use --backend hf, or --backend openai against a running server.") from None
    return lmdeploy


def generation_configs(lmdeploy: Any, decoding: Decoding, seeds: list[int | None]) -> list[Any]:
    """One LMDeploy GenerationConfig per replica, every sampling field explicit."""
    if not decoding.do_sample:
        return [lmdeploy.GenerationConfig(do_sample=False, top_k=1, top_p=1.0, temperature=1.0,
                                          max_new_tokens=decoding.max_new_tokens) for _ in seeds]
    return [lmdeploy.GenerationConfig(n=1, do_sample=True, top_k=decoding.top_k, top_p=decoding.top_p,
                                      temperature=decoding.temperature, max_new_tokens=decoding.max_new_tokens,
                                      random_seed=seed) for seed in seeds]


class LMDeployBackend:
    """LMDeploy ``pipeline`` in this process.

    Options: ``engine`` (turbomind | pytorch), ``tp`` (GPUs for tensor
    parallelism), ``session_len``, ``cache_max_entry_count`` (share of free GPU
    memory for the KV cache), ``max_batch_size``, ``dtype`` (auto | float16 |
    bfloat16).
    """

    name = "lmdeploy"

    def __init__(self, model: str, *, engine: str = "turbomind", tp: int = 1, session_len: int | None = None,
                 cache_max_entry_count: float = 0.8, max_batch_size: int | None = None, dtype: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"unknown LMDeploy engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        lmdeploy = import_lmdeploy()
        if not cuda_available():
            raise BackendUnavailable("the lmdeploy backend needs a CUDA GPU (LMDeploy has no CPU support). "
                                     "On a CPU machine use --backend hf, or --backend openai against a GPU server.")
        from transformers import AutoTokenizer

        self.lmdeploy = lmdeploy
        self.model = str(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=True)
        self.drop_bos = adds_bos(self.tokenizer)  # LMDeploy encodes with add_bos=True
        self.chat_template_meta = template_meta(self.tokenizer, "tokenizer.chat_template (do_preprocess=False)")
        common = dict(tp=tp, session_len=session_len, cache_max_entry_count=cache_max_entry_count,
                      max_batch_size=max_batch_size, enable_prefix_caching=True, dtype=dtype)
        if engine == "turbomind":
            self.backend_config = lmdeploy.TurbomindEngineConfig(**common)
        else:
            self.backend_config = lmdeploy.PytorchEngineConfig(**common)
        self.pipe = lmdeploy.pipeline(self.model, backend_config=self.backend_config)

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        prompts: list[str] = []
        seeds: list[int | None] = []
        for r in requests:
            if decoding.do_sample and r.seed is None:
                raise ValueError("the lmdeploy backend needs a seed for every sampled request (reproducibility)")
            text = render_prompt(self.tokenizer, r.messages, drop_bos=self.drop_bos)
            # n replicas, distinct seeds: equal seeds would give n identical samples.
            for seed in replica_seeds(r.seed, r.n):
                prompts.append(text)
                seeds.append(seed)
        outputs = self.pipe(prompts, gen_config=generation_configs(self.lmdeploy, decoding, seeds),
                            do_preprocess=False)
        texts = [o.text.strip() for o in outputs]
        results, k = [], 0
        for r in requests:
            results.append(texts[k:k + r.n])
            k += r.n
        return results

    def close(self) -> None:
        close = getattr(self.pipe, "close", None)
        if close is not None:
            close()
