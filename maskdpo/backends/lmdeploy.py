"""The ``lmdeploy`` backend: LMDeploy's in-process ``pipeline`` (TurboMind or PyTorch engine).

LMDeploy needs its own environment (``pip install -e ".[lmdeploy]"``, DESIGN
§5) and a CUDA GPU for its engines (``import lmdeploy`` works without one); it
is imported only when this backend is chosen.

What LMDeploy 0.18 does by default, and what this backend does about it:

- ``GenerationConfig`` defaults to ``do_sample=False`` (greedy), and the
  pipeline does not honour ``n > 1``. So every request is replicated ``n``
  times, each replica with its own ``GenerationConfig(do_sample=True, top_k,
  top_p=1.0, temperature, max_new_tokens, random_seed=derive_seed(seed, j))``,
  and prefix caching is on so the copies share the prompt's KV cache.
- ``TurbomindEngineConfig`` is a pydantic dataclass: ``max_batch_size=None``
  is a validation error. Unset options are left out of the engine configs.
- An engine failure (context overflow, out of memory, ...) is not an
  exception: it comes back as ``Response(text='', finish_reason='error',
  error_message=...)``. Failed prompts are retried once; a second failure
  raises :class:`~maskdpo.backends.base.GenerationError` naming the request,
  so no empty sample or judge label is ever written from an error.
- When TurboMind cannot load a model, the pipeline silently switches to the
  PyTorch engine; here that is an error (choose ``engine="pytorch"``).
- The pipeline takes ``trust_remote_code`` separately from the tokenizer; the
  same value is passed to both, so the BOS decision is made with the tokenizer
  LMDeploy encodes with.

The prompt is rendered here with the model's own tokenizer template (the
training rendering) and passed with ``do_preprocess=False``; LMDeploy's ``hf``
chat template (the tokenizer's own) supplies the default stop words (the
tokenizer's end-of-sequence / end-of-turn tokens), and ``Decoding.stop`` is
sent as ``stop_words`` (the ANAH-v2 judge needs ``<|im_end|>``). A leading BOS
is dropped when LMDeploy's encoder adds one itself. Each text comes back as a
:class:`~maskdpo.backends.base.Completion` with LMDeploy's finish reason
(``"stop"`` or ``"length"``).
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Completion, Decoding, GenerationError, GenerationRequest
from .prompting import adds_bos, render_prompt, replica_seeds, template_meta

ENGINES = ("turbomind", "pytorch")
FINISH_REASONS = ("stop", "length")  # what a successful LMDeploy Response may say
FAILED_REASONS = ("error", "abort")


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


def engine_config(lmdeploy: Any, engine: str, **options: Any) -> Any:
    """The engine config for ``engine``, with only the options that are set.

    LMDeploy's configs validate their fields (``TurbomindEngineConfig`` is a
    pydantic dataclass): an option left as ``None`` means "LMDeploy's
    default" and is therefore not passed at all.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown LMDeploy engine {engine!r}; choose one of {', '.join(ENGINES)}")
    given = {key: value for key, value in options.items() if value is not None}
    cls = lmdeploy.TurbomindEngineConfig if engine == "turbomind" else lmdeploy.PytorchEngineConfig
    return cls(**given)


def engine_of(lmdeploy: Any, config: Any) -> str:
    """Which engine an engine config selects."""
    if isinstance(config, lmdeploy.PytorchEngineConfig):
        return "pytorch"
    if isinstance(config, lmdeploy.TurbomindEngineConfig):
        return "turbomind"
    raise TypeError(f"not an LMDeploy engine config: {type(config).__name__}")


def generation_configs(lmdeploy: Any, decoding: Decoding, seeds: list[int | None]) -> list[Any]:
    """One LMDeploy GenerationConfig per replica, every sampling field explicit.

    ``decoding.stop`` becomes ``stop_words`` (LMDeploy then stops on those
    instead of its chat template's stop words, and still on the tokenizer's
    and ``generation_config.json``'s end-of-sequence ids).
    """
    extra: dict[str, Any] = {"stop_words": list(decoding.stop)} if decoding.stop else {}
    extra["repetition_penalty"] = decoding.repetition_penalty  # applies to greedy decoding too
    if not decoding.do_sample:
        return [lmdeploy.GenerationConfig(n=1, do_sample=False, top_k=1, top_p=1.0, temperature=1.0, min_p=0.0,
                                          max_new_tokens=decoding.max_new_tokens, **extra) for _ in seeds]
    configs = []
    for seed in seeds:
        seeded = {"random_seed": seed} if seed is not None else {}
        configs.append(lmdeploy.GenerationConfig(n=1, do_sample=True, top_k=decoding.top_k, top_p=decoding.top_p,
                                                 temperature=decoding.temperature, min_p=decoding.min_p,
                                                 max_new_tokens=decoding.max_new_tokens, **seeded, **extra))
    return configs


def failure_of(response: Any) -> str | None:
    """Why an LMDeploy ``Response`` is a failure, or None when it carries a usable text.

    ``finish_reason`` "error"/"abort" is a failure; so is an empty text with
    "length" and no generated token (LMDeploy's sign that the prompt alone
    fills the session).
    """
    reason = getattr(response, "finish_reason", None)
    if reason in FAILED_REASONS:
        code = getattr(response, "error_code", None)
        message = getattr(response, "error_message", None) or "no message"
        return f"finish_reason={reason!r}" + (f", error {code}" if code is not None else "") + f": {message}"
    if reason == "length" and not response.text and not getattr(response, "generate_token_len", 0):
        return ("finish_reason='length' with nothing generated: the prompt fills the session "
                f"({getattr(response, 'input_token_len', '?')} prompt tokens; raise session_len)")
    if reason not in FINISH_REASONS + (None,):
        return f"unknown finish_reason {reason!r}"
    return None


def describe_request(index: int, request: GenerationRequest, replica: int, seed: int | None) -> str:
    """A short name for one replica of a request, for error messages."""
    last = request.messages[-1].get("content", "") if request.messages else ""
    excerpt = " ".join(str(last).split())
    excerpt = excerpt if len(excerpt) <= 80 else excerpt[:77] + "..."
    return f"request {index} (replica {replica}, seed {seed}, last message {excerpt!r})"


class LMDeployBackend:
    """LMDeploy ``pipeline`` in this process.

    Options: ``engine`` (turbomind | pytorch), ``tp`` (GPUs for tensor
    parallelism), ``session_len``, ``cache_max_entry_count`` (share of free GPU
    memory for the KV cache), ``max_batch_size``, ``dtype`` (auto | float16 |
    bfloat16), ``trust_remote_code`` (for the tokenizer and the pipeline
    alike; default True, as InternLM2 models such as the ANAH-v2 judge need it),
    ``retries`` (re-runs of a failed prompt before :class:`GenerationError`).
    """

    name = "lmdeploy"

    def __init__(self, model: str, *, engine: str = "turbomind", tp: int = 1, session_len: int | None = None,
                 cache_max_entry_count: float = 0.8, max_batch_size: int | None = None, dtype: str = "auto",
                 trust_remote_code: bool = True, retries: int = 1):
        if engine not in ENGINES:
            raise ValueError(f"unknown LMDeploy engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        lmdeploy = import_lmdeploy()
        if not cuda_available():
            raise BackendUnavailable("the lmdeploy backend needs a CUDA GPU (LMDeploy's engines do not run on the "
                                     "CPU). On a CPU machine use --backend hf, or --backend openai against a GPU "
                                     "server.")
        from transformers import AutoTokenizer

        self.lmdeploy = lmdeploy
        self.model = str(model)
        self.engine = engine
        self.retries = retries
        self.trust_remote_code = bool(trust_remote_code)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
        self.drop_bos = adds_bos(self.tokenizer)  # LMDeploy encodes with add_bos=True
        self.chat_template_meta = template_meta(self.tokenizer, "tokenizer.chat_template (do_preprocess=False)")
        self.backend_config = engine_config(lmdeploy, engine, tp=tp, session_len=session_len,
                                            cache_max_entry_count=cache_max_entry_count,
                                            max_batch_size=max_batch_size, enable_prefix_caching=True, dtype=dtype)
        # `hf`: the tokenizer's own template, so the default stop words are its end tokens
        # (LMDeploy >= 0.12 has no `internlm2` template; a name it does not know falls back silently).
        self.chat_template_config = lmdeploy.ChatTemplateConfig(model_name="hf", model_path=self.model)
        self.pipe = lmdeploy.pipeline(self.model, backend_config=self.backend_config,
                                      chat_template_config=self.chat_template_config,
                                      trust_remote_code=self.trust_remote_code)
        used = engine_of(lmdeploy, getattr(self.pipe, "backend_config", self.backend_config))
        if used != engine:
            self.close()
            raise BackendUnavailable(
                f"LMDeploy switched from the {engine} engine to the {used} engine for {self.model} (its log says "
                f"why: TurboMind not built for this machine, or the model not supported by it). Choose "
                f"--engine {used} explicitly if that is intended.")

    def _run(self, prompts: list[str], configs: list[Any]) -> list[Any]:
        outputs = self.pipe(prompts, gen_config=configs, do_preprocess=False)
        if not isinstance(outputs, list) or len(outputs) != len(prompts):
            raise GenerationError(f"LMDeploy returned {type(outputs).__name__} for {len(prompts)} prompts")
        return outputs

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        prompts: list[str] = []
        seeds: list[int | None] = []
        names: list[tuple[int, int]] = []  # (request index, replica) of each prompt
        for i, r in enumerate(requests):
            if decoding.do_sample and r.seed is None:
                raise ValueError("the lmdeploy backend needs a seed for every sampled request (reproducibility)")
            text = render_prompt(self.tokenizer, r.messages, drop_bos=self.drop_bos)
            # n replicas, distinct seeds: equal seeds would give n identical samples.
            for j, seed in enumerate(replica_seeds(r.seed, r.n)):
                prompts.append(text)
                seeds.append(seed)
                names.append((i, j))
        configs = generation_configs(self.lmdeploy, decoding, seeds)
        outputs = self._run(prompts, configs) if prompts else []
        failed = [k for k, o in enumerate(outputs) if failure_of(o)]
        for _ in range(self.retries):
            if not failed:
                break
            again = self._run([prompts[k] for k in failed], [configs[k] for k in failed])
            for k, o in zip(failed, again):
                outputs[k] = o
            failed = [k for k in failed if failure_of(outputs[k])]
        if failed:
            k = failed[0]
            i, j = names[k]
            raise GenerationError(
                f"LMDeploy failed on {describe_request(i, requests[i], j, seeds[k])} after "
                f"{self.retries + 1} attempt(s): {failure_of(outputs[k])}"
                + (f" ({len(failed) - 1} more prompt(s) of this batch failed too)" if len(failed) > 1 else ""))
        texts = [Completion(o.text.strip(), o.finish_reason, raw=o.text) for o in outputs]
        results, k = [], 0
        for r in requests:
            results.append(texts[k:k + r.n])
            k += r.n
        return results

    def close(self) -> None:
        close = getattr(self.pipe, "close", None)
        if close is not None:
            close()
