"""Chat-template rendering and seed derivation shared by the generation backends.

The prompt a policy is sampled with must be the prompt it is trained on: both
come from ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``
of the model's own tokenizer (the rendering :mod:`maskdpo.masking` uses for
training). Every sample records which template produced it
(:func:`template_meta`), so a mismatch between sampling and training is
visible in the data rather than silent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def chat_template_of(tokenizer: Any) -> str:
    """The tokenizer's own chat template; a model without one is an error, never a default."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one is used
        template = template.get("default")
    if not template:
        name = getattr(tokenizer, "name_or_path", "?")
        raise ValueError(f"the tokenizer of {name} has no chat template; sampling needs the same template as training")
    return template


def template_meta(tokenizer: Any, source: str) -> dict:
    """What goes into each sample's ``meta["chat_template"]``: source and sha256 of the template."""
    return {"source": source, "sha256": template_sha256(chat_template_of(tokenizer))}


def render_prompt(tokenizer: Any, messages: list[dict], *, drop_bos: bool = False) -> str:
    """The prompt text exactly as training renders it (generation prompt appended).

    With ``drop_bos`` a leading BOS token string is removed, for engines whose
    tokenizer adds BOS itself when encoding (LMDeploy), so it is not doubled.
    """
    chat_template_of(tokenizer)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    if drop_bos and bos and text.startswith(bos):
        text = text[len(bos):]
    return text


def adds_bos(tokenizer: Any) -> bool:
    """True when plain encoding already prepends BOS (so rendered text must not carry one too)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos_id


def derive_seed(*parts: Any) -> int:
    """A seed in [0, 2**31) from any JSON-able parts, stable across runs, machines and Python versions.

    seed = int(sha256(json(parts))[:8 bytes]) mod 2**31 (not Python's ``hash``,
    which is salted per process).
    """
    digest = hashlib.sha256(json.dumps(list(parts), ensure_ascii=False, default=str).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def replica_seeds(seed: int | None, n: int) -> list[int | None]:
    """Per-replica seeds of one request: replica j gets ``derive_seed(seed, j)`` (None stays None)."""
    if seed is None:
        return [None] * n
    return [derive_seed(seed, j) for j in range(n)]
