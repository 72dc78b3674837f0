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

from .base import Completion, Decoding, GenerationRequest
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


def is_noop_min_p(processor: Any) -> bool:
    """A min-p warper with min_p 0 keeps every token (built when min_p=0.0 is sent explicitly)."""
    return type(processor).__name__ == "MinPLogitsWarper" and float(getattr(processor, "min_p", 1.0)) == 0.0


def expected_processors(decoding: Decoding) -> list[tuple[str, dict]]:
    """The processors that must be active for ``decoding`` (transformers order: repetition penalty, then
    the warpers temperature, top-k, top-p, min-p)."""
    expected = []
    if decoding.repetition_penalty != 1.0:  # applies to greedy decoding too
        expected.append(("RepetitionPenaltyLogitsProcessor", {"penalty": decoding.repetition_penalty}))
    if not decoding.do_sample:
        return expected
    if decoding.temperature != 1.0:
        expected.append(("TemperatureLogitsWarper", {"temperature": decoding.temperature}))
    if decoding.top_k and decoding.top_k > 0:
        expected.append(("TopKLogitsWarper", {"top_k": decoding.top_k}))
    if decoding.top_p < 1.0:
        expected.append(("TopPLogitsWarper", {"top_p": decoding.top_p}))
    if decoding.min_p > 0.0:
        expected.append(("MinPLogitsWarper", {"min_p": decoding.min_p}))
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


def shared_prefix_groups(ids: list[list[int]], min_shared: int) -> list[tuple[int, list[int]]]:
    """Group rows that share a token prefix: [(prefix length, row indices)], every row in one group.

    Rows are sorted; a row joins the previous row's group when their common
    prefix is at least ``min_shared`` tokens and at least half the group's
    current prefix (so two samples' prompts that share only the system prompt
    stay apart). The prefix of a sorted group is the smallest common prefix of
    neighbours, and it always leaves each row at least one token of its own.
    """
    def common(a: list[int], b: list[int]) -> int:
        k = 0
        for x, y in zip(a, b):
            if x != y:
                break
            k += 1
        return k

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[int, list[int]]] = []
    members, plen = [order[0]], len(ids[order[0]])
    for i in order[1:]:
        shared = min(plen, common(ids[members[-1]], ids[i]))
        if shared >= min_shared and shared * 2 >= plen:
            members.append(i)
            plen = shared
        else:
            groups.append((plen, members))
            members, plen = [i], len(ids[i])
    groups.append((plen, members))
    return [(max(0, min([plen] + [len(ids[r]) - 1 for r in m])), sorted(m)) for plen, m in groups]


def _copy_cache(cache: Any, index: Any) -> Any:
    """The cache with row r = row ``index[r]`` of ``cache`` (one prefix KV per group → one per row).

    Only public ``Cache`` methods that transformers 4.48 and 5.x share
    (``update``, ``reorder_cache``); the rows are selected in place, so the
    prefill's own cache object is returned. A legacy tuple of per-layer
    ``(keys, values)`` (older remote-code models) is first turned into a
    :class:`~transformers.DynamicCache`.
    """
    from transformers import DynamicCache

    if isinstance(cache, (tuple, list)):
        legacy, cache = cache, DynamicCache()
        for layer, (keys, values) in enumerate(legacy):
            cache.update(keys, values, layer)
    if not hasattr(cache, "reorder_cache"):
        raise TypeError(f"cannot share a prompt prefix with a {type(cache).__name__} KV cache; "
                        "use share_prefix=False")
    cache.reorder_cache(index)
    return cache


class HFBackend:
    """transformers ``generate`` with the model's own chat template.

    Options: ``device`` ("auto" = cuda when available), ``dtype`` ("auto" =
    bfloat16 on GPU, float32 on CPU), ``batch_size`` (prompts per ``generate``
    call; rows = prompts × n), ``share_prefix`` (prefill a prompt prefix shared
    by several rows once: see :func:`shared_prefix_groups`; off = plain
    ``num_return_sequences=n``), ``min_shared_prefix`` (tokens).
    """

    name = "hf"

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 share_prefix: bool = True, min_shared_prefix: int = 16, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = str(model)
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
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

        # transformers 5 fills every field left None from generation_config.json (there is no
        # use_model_defaults switch any more), so the other sampling knobs get their neutral values too.
        common = dict(max_new_tokens=decoding.max_new_tokens, num_return_sequences=n,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_ids(),
                      bos_token_id=self.tokenizer.bos_token_id, num_beams=1,
                      repetition_penalty=decoding.repetition_penalty, no_repeat_ngram_size=0)
        if decoding.stop:
            common["stop_strings"] = list(decoding.stop)
        if decoding.do_sample:
            # min_p 0.0 (not None) keeps a model's min_p out; the no-op warper it builds is dropped
            # (_processor_hook).
            return GenerationConfig(do_sample=True, top_k=decoding.top_k, top_p=decoding.top_p,
                                    temperature=decoding.temperature, min_p=decoding.min_p, typical_p=1.0,
                                    epsilon_cutoff=0.0, eta_cutoff=0.0, **common)
        return GenerationConfig(do_sample=False, top_k=None, top_p=1.0, temperature=1.0, **common)

    @contextmanager
    def _processor_hook(self, decoding: Decoding, seeds: list[int] | None) -> Iterator[None]:
        """Check what transformers builds, then append the per-row sampler after its warpers."""
        original = self.lm._get_logits_processor

        def build(*args: Any, **kwargs: Any):
            processors = original(*args, **kwargs)
            for p in [p for p in processors if is_noop_min_p(p)]:
                processors.remove(p)
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
        prompts = [render_prompt(self.tokenizer, r.messages) for r in chunk]
        sample = decoding.do_sample
        rows = n if sample else 1  # greedy: one decode, copied n times
        seeds = None
        if sample:
            seeds = []
            for r in chunk:
                if r.seed is None:
                    raise ValueError("the hf backend needs a seed for every sampled request (reproducibility)")
                seeds.extend(replica_seeds(r.seed, n))
        if self.share_prefix:
            texts = self._generate_shared([p for p in prompts for _ in range(rows)], decoding, seeds)
        else:
            texts = self._generate_plain(prompts, rows, decoding, seeds)
        picked = [[texts[i * rows + (j if sample else 0)] for j in range(n)] for i in range(len(chunk))]
        return [[Completion(t.strip(), t.finish_reason, raw=str(t)) for t in row] for row in picked]

    def _completions(self, new_tokens: Any, stop: Sequence[str] = ()) -> list[Completion]:
        """Decoded rows of generated ids; a row without an end-of-turn token or a stop string ran out of
        tokens ("length"). A stop string ends the text and is not part of it (as with LMDeploy and servers)."""
        eos = set(self.eos_token_ids())
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        raw = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=False) if stop else texts
        out = []
        for text, full, row in zip(texts, raw, new_tokens):
            stopped = any(s in full for s in stop)
            cuts = [text.find(s) for s in stop if s in text]  # a special-token stop string is already gone
            if cuts:
                text = text[:min(cuts)]
            out.append(Completion(text, "stop" if stopped or eos.intersection(row.tolist()) else "length"))
        return out

    def _generate(self, decoding: Decoding, seeds: list[int] | None, rows: int, **inputs: Any):
        import torch

        config = self.generation_config(decoding, rows)
        extra = {"use_model_defaults": False} if self._takes_use_model_defaults else {}
        if decoding.stop:
            extra["tokenizer"] = self.tokenizer  # transformers needs it to match stop_strings
        with self._processor_hook(decoding, seeds), torch.no_grad():
            return self.lm.generate(**inputs, generation_config=config, **extra)

    def _generate_plain(self, prompts: list[str], rows: int, decoding: Decoding, seeds: list[int] | None) -> list[str]:
        """Left-padded batch, ``num_return_sequences=rows``: every row is prefilled in full."""
        # The rendered template already carries BOS and other special tokens.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                             return_token_type_ids=False).to(self.device)
        out = self._generate(decoding, seeds, rows, **enc)
        return self._completions(out[:, enc["input_ids"].shape[1]:], decoding.stop)

    def _generate_shared(self, prompts: list[str], decoding: Decoding, seeds: list[int] | None) -> list[str]:
        """One row per prompt; a prefix shared by several rows is prefilled once and its KV cache copied.

        Rows are laid out as [left pad | group prefix | pad | own suffix] with
        attention mask 0 on pads; positions come from the mask's cumulative
        sum, so every real token sits where it would without sharing.
        """
        import torch

        pad = self.tokenizer.pad_token_id
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        groups = shared_prefix_groups(ids, self.min_shared_prefix)
        if any(plen == 0 for plen, _ in groups):  # a one-token prompt: nothing to share, nothing to cache
            return self._generate_plain(prompts, 1, decoding, seeds)
        group_of = [0] * len(ids)
        prefix_len = [0] * len(ids)
        for g, (plen, members) in enumerate(groups):
            for r in members:
                group_of[r], prefix_len[r] = g, plen
        width = max(plen for plen, _ in groups)

        def left_pad(seqs: list[list[int]], length: int) -> tuple[Any, Any]:
            tokens = torch.tensor([[pad] * (length - len(x)) + x for x in seqs], dtype=torch.long)
            mask = torch.tensor([[0] * (length - len(x)) + [1] * len(x) for x in seqs], dtype=torch.long)
            return tokens.to(self.device), mask.to(self.device)

        prefix_ids, prefix_mask = left_pad([ids[members[0]][:plen] for plen, members in groups], width)
        positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            cached = self.lm(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=positions,
                             use_cache=True).past_key_values
        index = torch.tensor(group_of, device=self.device)
        cache = _copy_cache(cached, index)
        suffixes = [ids[r][prefix_len[r]:] for r in range(len(ids))]
        suffix_ids, suffix_mask = left_pad(suffixes, max(len(x) for x in suffixes))
        input_ids = torch.cat([prefix_ids.index_select(0, index), suffix_ids], dim=1)
        attention_mask = torch.cat([prefix_mask.index_select(0, index), suffix_mask], dim=1)
        out = self._generate(decoding, seeds, 1, input_ids=input_ids, attention_mask=attention_mask,
                             past_key_values=cache)
        return self._completions(out[:, input_ids.shape[1]:], decoding.stop)

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
