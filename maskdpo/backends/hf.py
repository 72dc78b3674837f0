"""The ``hf`` backend: transformers ``generate`` on CPU or GPU.

Prompts are rendered with the model's own chat template (the training
rendering), left-padded and batched; each request's ``n`` responses come from
``num_return_sequences=n``.

Decoding is exactly the requested one. transformers fills every generation
setting it is not given from the model's ``generation_config.json`` (Llama-3.1:
T 0.6, top-p 0.9), so a complete :class:`~transformers.GenerationConfig` is
built from :class:`~maskdpo.backends.base.Decoding` (``top_p=1.0`` explicit),
model defaults are switched off where transformers allows it, and the
processors transformers builds are checked against the request before the
first token: an unexpected top-p, temperature or top-k is an error.

Seeds and batching: a batch shares one torch RNG stream, so seeding it would
make a response depend on which other prompts share its batch. Instead every
row samples from its own ``torch.Generator`` (seeded with
``derive_seed(request.seed, j)`` for replica ``j``) by the Gumbel-max trick,
appended after transformers' temperature/top-k/top-p warpers
(:class:`SeededRowSampler`). A response therefore depends only on its prompt,
its seed and the decoding settings — not on batch size, batch mates or
resumption — up to float rounding differences that padding can introduce.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .base import Decoding, GenerationRequest
from .prompting import render_prompt, replica_seeds, template_meta


class DecodingMismatch(RuntimeError):
    """transformers built processors that differ from the requested decoding."""


def _sampler_class():
    import torch
    from transformers import LogitsProcessor

    class SeededRowSampler(LogitsProcessor):
        """Draws each row's next token from its own generator: Gumbel-max on the warped scores.

        scores (B, V) are the logits after temperature, top-k and top-p;
        token_b = argmax_v(scores[b, v] + G[b, v]), G ~ Gumbel(0, 1) from row
        b's generator, is a draw from softmax(scores[b]). The returned scores
        are 0 at that token and -inf elsewhere, so transformers' own
        multinomial draw can only pick it.
        """

        def __init__(self, seeds: list[int]):
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):
            batch, vocab = scores.shape  # (B, V)
            if batch != len(self.generators):
                raise RuntimeError(f"{batch} rows but {len(self.generators)} seeds")
            uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])  # (B, V), on CPU
            gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
            choice = (scores.float().cpu() + gumbel).argmax(dim=-1).to(scores.device)  # (B,)
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(batch, device=scores.device), choice] = 0.0
            return out

    return SeededRowSampler


def describe_processors(processors: Sequence[Any]) -> list[tuple[str, dict]]:
    """(class name, its decoding parameters) for each processor transformers built."""
    described = []
    for p in processors:
        params = {k: getattr(p, k) for k in ("temperature", "top_k", "top_p", "min_p", "penalty") if hasattr(p, k)}
        described.append((type(p).__name__, params))
    return described


def expected_processors(decoding: Decoding) -> list[tuple[str, dict]]:
    """The warpers that must be active for ``decoding`` (transformers order: temperature, top-k, top-p)."""
    if not decoding.do_sample:
        return []
    expected = []
    if decoding.temperature != 1.0:
        expected.append(("TemperatureLogitsWarper", {"temperature": decoding.temperature}))
    if decoding.top_k and decoding.top_k > 0:
        expected.append(("TopKLogitsWarper", {"top_k": decoding.top_k}))
    if decoding.top_p < 1.0:
        expected.append(("TopPLogitsWarper", {"top_p": decoding.top_p}))
    return expected


def check_processors(processors: Sequence[Any], decoding: Decoding) -> None:
    """Raise :class:`DecodingMismatch` unless exactly the expected warpers (and nothing else) are active."""
    built = describe_processors(processors)
    expected = expected_processors(decoding)
    same = len(built) == len(expected) and all(
        name == ename and all(abs(float(params.get(k, float("nan"))) - float(v)) < 1e-9 for k, v in eparams.items())
        for (name, params), (ename, eparams) in zip(built, expected))
    if not same:
        raise DecodingMismatch(f"transformers built {built} for {decoding.to_dict()}; expected exactly {expected}")


class HFBackend:
    """transformers ``generate`` with the model's own chat template.

    Options: ``device`` ("auto" = cuda when available), ``dtype`` ("auto" =
    bfloat16 on GPU, float32 on CPU), ``batch_size`` (prompts per ``generate``
    call; rows = prompts × n).
    """

    name = "hf"

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = str(model)
        self.batch_size = batch_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(self.model, torch_dtype=torch_dtype,
                                                       trust_remote_code=trust_remote_code).to(self.device)
        self.lm.eval()
        self.chat_template_meta = template_meta(self.tokenizer, "tokenizer.chat_template")
        self.last_processors: list[Any] = []  # what transformers built in the latest generate call
        self._takes_use_model_defaults = "use_model_defaults" in inspect.signature(self.lm.generate).parameters

    # ------------------------------------------------------------------ internals

    def eos_token_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.lm.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)

    def generation_config(self, decoding: Decoding, n: int):
        """A complete GenerationConfig: nothing left for generation_config.json to fill in."""
        from transformers import GenerationConfig

        common = dict(max_new_tokens=decoding.max_new_tokens, num_return_sequences=n,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_ids(),
                      bos_token_id=self.tokenizer.bos_token_id, num_beams=1)
        if decoding.do_sample:
            return GenerationConfig(do_sample=True, top_k=decoding.top_k, top_p=decoding.top_p,
                                    temperature=decoding.temperature, **common)
        return GenerationConfig(do_sample=False, top_k=None, top_p=1.0, temperature=1.0, **common)

    @contextmanager
    def _processor_hook(self, decoding: Decoding, seeds: list[int] | None) -> Iterator[None]:
        """Check what transformers builds, then append the per-row sampler after its warpers."""
        original = self.lm._get_logits_processor

        def build(*args: Any, **kwargs: Any):
            processors = original(*args, **kwargs)
            self.last_processors = list(processors)
            check_processors(processors, decoding)
            if seeds is not None:
                processors.append(_sampler_class()(seeds))
            return processors

        self.lm._get_logits_processor = build
        try:
            yield
        finally:
            del self.lm._get_logits_processor  # back to the class method

    def _generate_chunk(self, chunk: Sequence[GenerationRequest], n: int, decoding: Decoding) -> list[list[str]]:
        import torch

        prompts = [render_prompt(self.tokenizer, r.messages) for r in chunk]
        # The rendered template already carries BOS and other special tokens.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                             return_token_type_ids=False).to(self.device)
        sample = decoding.do_sample
        rows = n if sample else 1  # greedy: one decode, copied n times
        seeds = None
        if sample:
            seeds = []
            for r in chunk:
                if r.seed is None:
                    raise ValueError("the hf backend needs a seed for every sampled request (reproducibility)")
                seeds.extend(replica_seeds(r.seed, n))
        config = self.generation_config(decoding, rows)
        extra = {"use_model_defaults": False} if self._takes_use_model_defaults else {}
        with self._processor_hook(decoding, seeds), torch.no_grad():
            out = self.lm.generate(**enc, generation_config=config, **extra)
        new_tokens = out[:, enc["input_ids"].shape[1]:]  # (len(chunk) × rows, T_new)
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [[texts[i * rows + (j if sample else 0)].strip() for j in range(n)] for i in range(len(chunk))]

    # ------------------------------------------------------------------ interface

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        """Consecutive requests with the same ``n`` share a ``generate`` call, ``batch_size`` prompts at a time."""
        results: list[list[str]] = []
        i = 0
        while i < len(requests):
            n = requests[i].n
            j = i
            while j < len(requests) and j - i < self.batch_size and requests[j].n == n:
                j += 1
            results.extend(self._generate_chunk(requests[i:j], n, decoding))
            i = j
        return results
