"""Precomputed reference log-probs: run the frozen reference once, train without it.

DPO's reference model only ever contributes two numbers per pair, the masked
log-prob sums of the chosen and rejected responses. This module computes them
once (``maskdpo ref-cache --config CFG --out F``) and ``MaskDPO(ref_cache=F)``
reads them instead of building the reference, which saves its memory and its
forward pass on every step.

File format (JSONL, written as it goes and resumable)::

    {"format": "maskdpo/ref-cache@1", "fingerprint": {reference, tokenizer, max_length, mask, data, dtype}}
    {"pair_id": ..., "digest": ..., "chosen": Σ log πref, "rejected": ..., "chosen_tokens": n, "rejected_tokens": n}
    ...

A cache that does not match is an error, never a silent recompute: the
reference is checked when the model is built, and every pair of every batch
is checked by id and by ``digest`` (a hash of its token ids and labels, so a
different tokenizer, template, ``max_length``, mask mode or data changes it).

The stage (:func:`run_ref_cache`, ``maskdpo ref-cache``) writes the cache and,
next to it, the settings it was made with (:func:`maskdpo.stage.settings_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..jsonl import JsonlAppender, RecordError, iter_jsonl
from ..settings import knob

FORMAT = "maskdpo/ref-cache@1"
HEADER_KEY = "__header__"


class RefCacheMismatch(ValueError):
    """The cache was computed for another reference, other data or other settings."""


def _name_of(model_cfg: Any) -> str | None:
    if isinstance(model_cfg, dict) or hasattr(model_cfg, "get"):
        name = model_cfg.get("pretrained_model_name_or_path")
        return None if name is None else str(name)
    config = getattr(model_cfg, "config", None)  # an already built module
    return getattr(config, "_name_or_path", None)


def _folder_digest(folder: str, patterns: tuple[str, ...]) -> str | None:
    """Hash of the small JSON files' contents plus the weight files' names and sizes (cheap, no weight read)."""
    path = Path(folder)
    if not path.is_dir():
        return None
    h = hashlib.sha1()
    for f in sorted(path.iterdir()):
        if f.suffix == ".json":
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        elif f.name.endswith(patterns):
            h.update(f"{f.name}\0{f.stat().st_size}".encode())
    return h.hexdigest()[:20]


def reference_fingerprint(model_cfg: Any) -> dict:
    """Identity of a reference model from its config dict (or module): name and, for a local folder, a digest."""
    name = _name_of(model_cfg)
    return {"name": name, "digest": _folder_digest(name, (".safetensors", ".bin")) if name else None}


def tokenizer_fingerprint(tokenizer: Any) -> dict:
    name = str(getattr(tokenizer, "name_or_path", "")) or None
    template = getattr(tokenizer, "chat_template", None) or ""
    return {"name": name, "vocab": len(tokenizer), "chat_template": hashlib.sha1(str(template).encode()).hexdigest()[:12]}


class RefCache:
    """Reference sums by pair id, with the fingerprint they were computed under."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict, entries: dict[str, dict]):
        self.path = str(path)
        self.fingerprint = fingerprint
        self.entries = entries

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RefCache":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such reference cache (make one with `maskdpo ref-cache`)")
        fingerprint, entries = None, {}
        for lineno, obj in iter_jsonl(path, with_lines=True):  # line numbers of the file (blank lines count)
            if fingerprint is None:
                if obj.get("format") != FORMAT:
                    raise RecordError(path, lineno, "format", f"expected {FORMAT!r}, got {obj.get('format')!r}")
                fingerprint = obj.get("fingerprint")
                if not isinstance(fingerprint, dict):
                    raise RecordError(path, lineno, "fingerprint", "missing")
                continue
            try:
                entry = {k: obj[k] for k in ("digest", "chosen", "rejected", "chosen_tokens", "rejected_tokens")}
                entries[str(obj["pair_id"])] = entry
            except KeyError as exc:
                raise RecordError(path, lineno, exc.args[0], "missing") from None
        if fingerprint is None:
            raise RecordError(path, 1, "format", "empty reference cache")
        return cls(path, fingerprint, entries)

    def check_reference(self, expected: dict) -> None:
        """The cache's reference must be the model the config names (same folder digest when local)."""
        have = self.fingerprint.get("reference", {})
        same = (have.get("digest") == expected.get("digest") if have.get("digest") and expected.get("digest")
                else have.get("name") == expected.get("name"))
        if not same:
            raise RefCacheMismatch(f"{self.path}: computed with reference {have}, but the config's reference is "
                                   f"{expected}; recompute it with `maskdpo ref-cache`")

    def lookup(self, data_samples: dict | None, device: Any = None):
        """Reference sums and token counts for a batch, interleaved [c0, r0, c1, r1, ...]: two (2P,) fp32 tensors."""
        import torch

        if not data_samples or "pair_ids" not in data_samples:
            raise ValueError("the batch carries no pair ids: a reference cache needs "
                             "collate_fn=dict(type=maskdpo_collate_fn) and build_maskdpo_dataset")
        sums, counts = [], []
        for pair_id, digest in zip(data_samples["pair_ids"], data_samples["pair_digests"]):
            entry = self.entries.get(pair_id)
            if entry is None:
                raise RefCacheMismatch(f"{self.path}: pair {pair_id!r} is not in the reference cache "
                                       f"(computed for {self._settings()})")
            if entry["digest"] != digest:
                raise RefCacheMismatch(f"{self.path}: pair {pair_id!r} was tokenized differently when the cache "
                                       f"was computed ({self._settings()}): data, tokenizer, max_length or mask "
                                       "mode changed; recompute the cache")
            sums += [entry["chosen"], entry["rejected"]]
            counts += [entry["chosen_tokens"], entry["rejected_tokens"]]
        return (torch.tensor(sums, dtype=torch.float32, device=device),
                torch.tensor(counts, dtype=torch.float32, device=device))

    def _settings(self) -> str:
        fp = self.fingerprint
        return f"mask={fp.get('mask')}, max_length={fp.get('max_length')}, tokenizer={fp.get('tokenizer', {}).get('name')}"


def _read_header(path: Path) -> dict | None:
    """The fingerprint of an existing cache (its first line), or None; the rest may end in a torn line."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordError(path, 1, "format", f"not a reference cache (expected {FORMAT!r} on the first line)")
    return header.get("fingerprint")


def compute_ref_cache(config: str | os.PathLike, out: str | os.PathLike, cfg_options: dict | None = None,
                      batch_size: int = 8, device: str | None = None, dtype: str | None = None) -> RefCache:
    """Run the config's reference model over its training pairs; write (or complete) the cache at ``out``.

    The reference is ``model.ref_llm`` of the config, or ``model.llm`` (the
    initial policy) when that is unset. Pairs are tokenized by the config's own
    ``train_dataset`` settings, so the digests match training. An existing
    ``out`` with another fingerprint is an error; with the same one, pairs
    already there are skipped (resume after a kill). ``dtype`` (``bfloat16``,
    ``float16``, ``float32``) overrides the reference's ``torch_dtype``.
    """
    import torch
    from mmengine.config import Config
    from tqdm import tqdm
    from xtuner.model.utils import traverse_dict
    from xtuner.registry import BUILDER

    from .dataset import maskdpo_collate_fn, source_digests
    from .loss import kept_token_counts, masked_sequence_logps

    from ..validate import check_output_file

    check_output_file(out)  # before the config, the data and the reference load
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = cfg.model
    if model_cfg.get("ref_cache"):
        raise ValueError(f"{config}: model.ref_cache is set; compute the cache from a config without it")
    ref_cfg = (model_cfg.get("ref_llm") or model_cfg["llm"]).copy()
    if dtype is not None:  # the dtype the reference runs in during training (bf16 on GPUs)
        ref_cfg["torch_dtype"] = getattr(torch, dtype)
    data_cfg = cfg.train_dataloader.dataset.copy()
    data_cfg["use_varlen_attn"] = False  # one pair per item
    for key in ("mask", "max_length", "data_files"):
        if key not in data_cfg:
            raise ValueError(f"{config}: train_dataloader.dataset has no {key!r}: is it build_maskdpo_dataset?")
    tokenizer = BUILDER.build(data_cfg["tokenizer"]) if isinstance(data_cfg["tokenizer"], dict) else data_cfg["tokenizer"]
    data_cfg["tokenizer"] = tokenizer
    build = data_cfg.get("type")
    if callable(build):  # called directly: the registry re-raises errors as type(e)(text), losing their file:line
        dataset = build(**{k: v for k, v in data_cfg.items() if k != "type"})
    else:
        dataset = BUILDER.build(data_cfg)
    fingerprint = {
        "reference": reference_fingerprint(ref_cfg),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": data_cfg["max_length"],
        "mask": data_cfg["mask"],
        "data": source_digests(data_cfg["data_files"]),
        "dtype": str(ref_cfg.get("torch_dtype", "model default")),
    }

    out = Path(out)
    existing = _read_header(out)
    if existing is not None and existing != fingerprint:
        raise RefCacheMismatch(f"{out} holds a cache for other settings ({existing}); "
                               "delete it or choose another --out")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    traverse_dict(ref_cfg)
    model = BUILDER.build(ref_cfg).to(device).eval()
    model.config.use_cache = False

    with JsonlAppender(out, key=lambda o: o.get("pair_id", HEADER_KEY)) as writer:
        if HEADER_KEY not in writer:
            writer.write({"format": FORMAT, "fingerprint": fingerprint})
        todo = [dataset[i] for i in range(len(dataset)) if dataset[i]["pair_id"] not in writer]
        with torch.no_grad(), tqdm(total=len(todo), desc="Reference log-probs", unit="pair") as bar:
            for start in range(0, len(todo), batch_size):
                items = todo[start:start + batch_size]
                batch = maskdpo_collate_fn(items)["data"]
                labels = batch.pop("labels").to(device)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # (2P, T, V)
                sums = masked_sequence_logps(logits, labels).tolist()  # (2P,)
                counts = kept_token_counts(labels).tolist()
                for i, item in enumerate(items):
                    writer.write({"pair_id": item["pair_id"], "digest": item["pair_digest"],
                                  "chosen": sums[2 * i], "rejected": sums[2 * i + 1],
                                  "chosen_tokens": int(counts[2 * i]), "rejected_tokens": int(counts[2 * i + 1])})
                bar.update(len(items))
    return RefCache.load(out)


# ---------------------------------------------------------------- the stage


@dataclass
class RefCacheSettings:
    config: Path = field(metadata={"help": "XTuner config of the training run (xtuner_configs/...): its reference, "
                                           "pairs, tokenizer, max_length and mask are used."})
    out: Path = field(metadata={"help": "Cache file to write (JSONL). An existing file with the same fingerprint "
                                        "is completed (resume); one with another fingerprint is an error."})
    batch_size: int = knob(8, "Pairs per reference forward.")
    device: Optional[str] = knob(None, "Device for the reference (default: cuda when available, else cpu).")
    dtype: Optional[Literal["bfloat16", "float16", "float32"]] = knob(
        None, "Run the reference in this dtype (default: the config's); use the dtype training runs in.")


def parse_cfg_options(values: tuple[str, ...] | list[str]) -> dict:
    """``KEY=VALUE`` overrides of a config, parsed as ``xtuner train --cfg-options`` parses them."""
    from mmengine.config import DictAction

    options: dict = {}
    for value in values:
        if "=" not in value:
            raise ValueError(f"--cfg-options: expected KEY=VALUE, got {value!r}")
        key, raw = value.split("=", 1)
        options[key] = DictAction._parse_iterable(raw)
    return options


@dataclass
class RefCacheSummary:
    out: Path
    pairs: int  # pairs in the cache (computed now or found there)
    mask: str
    max_length: int

    def line(self) -> str:
        return f"{self.out}: reference sums for {self.pairs} pairs (mask={self.mask}, max_length={self.max_length})"


def run_ref_cache(settings: RefCacheSettings, cfg_options: tuple[str, ...] | list[str] = ()) -> RefCacheSummary:
    """Compute (or complete) the reference cache of ``settings.config`` and record its settings next to it.

    The config must exist and the cache and its settings file be writable
    before anything loads; ``cfg_options`` are ``KEY=VALUE`` overrides, recorded
    as given.
    """
    from ..settings import write_settings
    from ..stage import check_outputs, settings_path

    config = Path(settings.config)
    if not config.is_file():
        raise FileNotFoundError(f"--config {config}: no such config file")
    check_outputs(settings.out)
    cache = compute_ref_cache(config, settings.out, cfg_options=parse_cfg_options(cfg_options),
                              batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype)
    write_settings(settings_path(settings.out), settings, cfg_options=list(cfg_options))
    return RefCacheSummary(Path(settings.out), len(cache.entries), cache.fingerprint["mask"],
                           cache.fingerprint["max_length"])
