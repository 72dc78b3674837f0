"""The one narrow interface every text-generation backend implements.

Chat messages in, texts out, with seeds. Backends: ``lmdeploy`` (in-process
pipeline), ``openai`` (any OpenAI-compatible server, e.g. ``lmdeploy serve
api_server``), ``hf`` (transformers ``generate``). Heavy libraries are imported
only when a backend is chosen (:func:`load_backend`).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Decoding:
    """Decoding settings. Defaults are the paper's sampling (top-k 40, T 0.8).

    ``top_p`` is always sent explicitly as 1.0: LMDeploy's server and
    transformers otherwise fill it from the model's generation_config.json
    (Llama-3.1: 0.9), silently changing the distribution.
    """

    do_sample: bool = True
    top_k: int = 40
    top_p: float = 1.0
    temperature: float = 0.8
    max_new_tokens: int = 512
    # Extra stop strings (besides the model's end-of-turn token), e.g. the
    # ANAH-v2 judge's `<|im_end|>`, which some engines' default templates miss.
    stop: tuple[str, ...] = ()
    # Off by default (0 and 1.0, the neutral values); servers that apply their
    # own (llama.cpp: min-p 0.05, repeat penalty 1.1) are sent these explicitly.
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    @classmethod
    def greedy(cls, max_new_tokens: int = 512, stop: tuple[str, ...] = ()) -> "Decoding":
        return cls(do_sample=False, top_k=1, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                   stop=tuple(stop))

    def to_dict(self) -> dict:
        d = asdict(self)
        # Records written before `stop` existed have no such key; keep it out when unused.
        if not d["stop"]:
            del d["stop"]
        else:
            d["stop"] = list(d["stop"])
        # Likewise the extra knobs at their neutral values.
        if d["min_p"] == 0.0:
            del d["min_p"]
        if d["repetition_penalty"] == 1.0:
            del d["repetition_penalty"]
        return d


class Completion(str):
    """One generated text that also says why generation ended.

    A ``str`` subclass, so callers that only need the text use it as one.
    ``finish_reason`` follows the OpenAI vocabulary: ``"stop"`` (end of turn or
    a stop string), ``"length"`` (``max_new_tokens`` or the context ran out:
    the text is truncated), or ``None`` when the backend cannot tell.
    """

    finish_reason: str | None
    # The text exactly as the engine produced it. Backends strip what they
    # return, but the official ANAH-v2 protocol compares and feeds back the
    # judge's answer unstripped, so the annotator reads this one.
    raw: str

    def __new__(cls, text: str, finish_reason: str | None = None, raw: str | None = None) -> "Completion":
        obj = super().__new__(cls, text)
        obj.finish_reason = finish_reason
        obj.raw = text if raw is None else raw
        return obj


def finish_reason_of(text: str) -> str | None:
    return getattr(text, "finish_reason", None)


class GenerationError(RuntimeError):
    """The engine reported a failure for a request (after the backend's retry).

    Backends raise it instead of returning an empty text, so no sample or
    judge label is ever written from an engine error.
    """


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt; ``n`` responses; ``seed`` makes sampling reproducible."""

    messages: list[dict]
    n: int = 1
    seed: int | None = None


class ChatBackend(Protocol):
    name: str  # "hf", "openai", "lmdeploy", ...
    model: str  # the model path or served name, recorded in every sample

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        """For each request, ``request.n`` response texts (:class:`Completion` where the
        backend knows the finish reason), in order. Engine failures raise
        :class:`GenerationError`; they are never returned as text."""
        ...


# name -> "module:class"; test doubles register here too, named as doubles.
BACKENDS: dict[str, str] = {
    "hf": "maskdpo.backends.hf:HFBackend",
    "openai": "maskdpo.backends.openai:OpenAIBackend",
    "lmdeploy": "maskdpo.backends.lmdeploy:LMDeployBackend",
}


def load_backend(name: str, model: str, **options: Any) -> ChatBackend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(model=model, **options)
