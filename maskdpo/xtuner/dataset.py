"""Pair files → XTuner preference-dataset items with Mask-DPO labels.

The mask lives in the data: ``maskdpo.masking.encode_pair`` writes ``-100``
into the labels of every token the loss must not see (prompt, and per the
``mask`` mode the hallucinated sentences of the chosen response and the
correct sentences of the rejected one). Because of that, XTuner's stock
``preference_collate_fn``, its packing (``use_varlen_attn``) and its sequence
parallel split carry the mask unchanged, and the model needs no mask knob:
``mask`` is set once, here, in PART 1 of the config. ``mask='none'`` gives
vanilla DPO on the same pairs.

Each item is what XTuner's ``PreferenceDataset`` yields plus the pair's id
and a digest of its tokens, used by the reference cache::

    {chosen_ids, chosen_labels, rejected_ids, rejected_labels, pair_id, pair_digest}
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..jsonl import ReadStats, iter_jsonl
from ..masking import AlignmentError, check_mask_mode
from ..records import Pair, parse_pair

ENCODE_BATCH = 256  # pairs per tokenizer call


def item_digest(item: dict) -> str:
    """A digest of a pair's tokens and labels: any change of data, tokenizer, template,
    ``max_length`` or mask mode changes it."""
    payload = [item["chosen_ids"], item["chosen_labels"], item["rejected_ids"], item["rejected_labels"]]
    return hashlib.sha1(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()[:20]


@dataclass
class BuildReport:
    """What the builder did with each pair: kept, truncated (and kept), rejected (with reason)."""

    read: int = 0
    kept: int = 0
    truncated: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> first "file:line: message"

    def reject(self, reason: str, where: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> str:
        text = f"{self.read} pairs read: {self.kept} kept ({self.truncated} of them truncated)"
        if self.rejected:
            reasons = "; ".join(f"{n} {reason} (first: {self.examples[reason]})" for reason, n in self.rejected.items())
            text += f", {sum(self.rejected.values())} rejected: {reasons}"
        else:
            text += ", 0 rejected"
        return text


def encode_pairs(
    pairs: Iterable[tuple[str, Pair]],
    tokenizer: Any,
    max_length: int,
    mask: str = "both",
    drop_truncated: bool = False,
    skip_invalid: bool = False,
    report: BuildReport | None = None,
) -> list[dict]:
    """Tokenize ``(where, pair)`` items into preference-dataset items.

    A pair whose spans cannot be mapped to tokens is an error naming it
    (``skip_invalid`` counts it as rejected instead); a pair with no kept
    token on either side carries no signal and is rejected; a pair longer
    than ``max_length`` is truncated and kept, or rejected with ``drop_truncated``.
    """
    check_mask_mode(mask)
    report = report if report is not None else BuildReport()
    items: list[dict] = []
    seen: dict[str, str] = {}
    for where, pair, encoded in _encoded(pairs, tokenizer, max_length, mask, skip_invalid, report):
        if pair.id in seen:
            raise ValueError(f"{where}: pair id {pair.id!r} repeats the pair at {seen[pair.id]}; ids must be unique")
        seen[pair.id] = where
        item = {
            "chosen_ids": list(encoded.chosen.input_ids), "chosen_labels": list(encoded.chosen.labels),
            "rejected_ids": list(encoded.rejected.input_ids), "rejected_labels": list(encoded.rejected.labels),
        }
        truncated = encoded.chosen.truncated or encoded.rejected.truncated
        if truncated and drop_truncated:
            report.reject(f"longer than max_length {max_length}", f"{where}: pair {pair.id!r}")
            continue
        if all(label == -100 for label in item["chosen_labels"] + item["rejected_labels"]):
            report.reject("no kept token on either side", f"{where}: pair {pair.id!r}")
            continue
        item["pair_id"] = pair.id
        item["pair_digest"] = item_digest(item)
        report.kept += 1
        report.truncated += int(truncated)
        items.append(item)
    return items


def _encoded(pairs, tokenizer, max_length, mask, skip_invalid, report):
    """``(where, pair, MaskedPair)``, tokenizing ``ENCODE_BATCH`` pairs per call; a batch with a
    bad pair is redone pair by pair to name it (error, or rejected with ``skip_invalid``)."""
    from tqdm import tqdm

    from ..masking import encode_pair, encode_pairs as encode_many

    pairs = list(pairs)
    with tqdm(total=len(pairs), desc="Tokenizing pairs", unit="pair") as bar:
        for start in range(0, len(pairs), ENCODE_BATCH):
            chunk = pairs[start:start + ENCODE_BATCH]
            report.read += len(chunk)
            bar.update(len(chunk))
            try:
                encoded = encode_many(tokenizer, [p for _, p in chunk], max_length=max_length, mask=mask)
            except ValueError:
                encoded = None
            if encoded is not None:
                yield from ((where, pair, e) for (where, pair), e in zip(chunk, encoded))
                continue
            for where, pair in chunk:
                try:
                    one = encode_pair(tokenizer, pair, max_length=max_length, mask=mask)
                except ValueError as exc:
                    # AlignmentError names the pair already; other errors get its id here.
                    message = f"{where}: {exc}" if isinstance(exc, AlignmentError) else f"{where}: pair {pair.id!r}: {exc}"
                    if not skip_invalid:
                        raise ValueError(message) from exc
                    report.reject("invalid pair", message)
                    continue
                yield where, pair, one


def read_pairs(paths: str | os.PathLike | Sequence[str | os.PathLike], skip_invalid: bool = False,
               report: BuildReport | None = None) -> list[tuple[str, Pair]]:
    """``(file:line, Pair)`` for every record of one or more pair files (ours or the authors' format).

    A malformed line raises :class:`RecordError` naming file, line and field;
    with ``skip_invalid`` it is counted in ``report`` as rejected instead.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[tuple[str, Pair]] = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such pair file")
        stats = ReadStats()
        for lineno, pair in iter_jsonl(path, parse_pair, skip_invalid=skip_invalid, stats=stats, with_lines=True):
            out.append((f"{path}:{lineno}", pair))
        if report is not None:
            for error in stats.skipped:
                report.read += 1
                report.reject("invalid record", str(error))
    return out


def build_maskdpo_dataset(
    data_files: str | Sequence[str],
    tokenizer: Any,
    max_length: int,
    mask: str = "both",
    drop_truncated: bool = False,
    skip_invalid: bool = False,
    use_varlen_attn: bool = False,
    max_packed_length: int = 16384,
    shuffle_before_pack: bool = True,
):
    """The ``train_dataset`` of a Mask-DPO config (``type=build_maskdpo_dataset``).

    Args:
        data_files: one or more pair JSONL files (``maskdpo pairs`` output or the authors' format).
        tokenizer: a tokenizer or its config dict (as in XTuner configs).
        max_length: the longest prompt + response, in tokens.
        mask: ``both`` (Mask-DPO), ``chosen``, ``rejected`` or ``none`` (vanilla DPO on the same pairs).
        drop_truncated: reject pairs longer than ``max_length`` instead of truncating them.
        skip_invalid: count malformed records and unmappable pairs as rejected instead of failing.
        use_varlen_attn, max_packed_length, shuffle_before_pack: XTuner's packing (GPU only).

    Returns a ``torch.utils.data.Dataset`` of preference items (packed rows with
    ``use_varlen_attn``). The counts of kept / truncated / rejected pairs are logged.
    """
    import torch.distributed as dist
    from mmengine.config import Config, ConfigDict
    from mmengine.logging import print_log
    from xtuner.dataset.preference_dataset import broad_cast_dataset
    from xtuner.registry import BUILDER

    check_mask_mode(mask)
    dataset = None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        if isinstance(tokenizer, (dict, Config, ConfigDict)):
            tokenizer = BUILDER.build(tokenizer)
        report = BuildReport()
        pairs = read_pairs(data_files, skip_invalid=skip_invalid, report=report)
        items = encode_pairs(pairs, tokenizer, max_length, mask=mask, drop_truncated=drop_truncated,
                             skip_invalid=skip_invalid, report=report)
        print_log(f"Mask-DPO data (mask={mask}, max_length={max_length}): {report.summary()}", logger="current")
        if not items:
            raise ValueError(f"no usable pairs in {data_files}: {report.summary()}")
        dataset = PairDataset(items)
        if use_varlen_attn:
            dataset = PackedPairDataset(dataset, max_packed_length=max_packed_length,
                                        shuffle_before_pack=shuffle_before_pack)
    return broad_cast_dataset(dataset)


class PairDataset:
    """A list of preference items, indexable like XTuner's ``PreferenceDataset``."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _packed_dataset_class():
    from xtuner.dataset.preference_dataset import PackedDatasetWrapper

    class PackedPairDataset(PackedDatasetWrapper):
        """XTuner's packing, plus the ids and digests of the pairs in each packed row (in order)."""

        def __getitem__(self, index: int) -> dict:
            row = super().__getitem__(index)
            row["pair_ids"] = [p["pair_id"] for p in self.data[index]]
            row["pair_digests"] = [p["pair_digest"] for p in self.data[index]]
            return row

    return PackedPairDataset


def PackedPairDataset(dataset, **kwargs):  # noqa: N802 - a class built on first use (xtuner is a heavy import)
    return _packed_dataset_class()(dataset, **kwargs)


def maskdpo_collate_fn(instances: Sequence[dict], pad_index: int = 0, return_hf_format: bool = False,
                       use_varlen_attn: bool = False) -> dict:
    """XTuner's ``preference_collate_fn``, plus ``pair_ids`` / ``pair_digests`` in ``data_samples``
    (one per pair, in row order) for the reference cache."""
    from xtuner.dataset.collate_fns.preference_collate_fn import preference_collate_fn

    batch = preference_collate_fn(instances, pad_index=pad_index, return_hf_format=return_hf_format,
                                  use_varlen_attn=use_varlen_attn)
    if return_hf_format:
        return batch
    if use_varlen_attn:
        ids = [i for row in instances for i in row["pair_ids"]]
        digests = [d for row in instances for d in row["pair_digests"]]
    else:
        ids = [row["pair_id"] for row in instances]
        digests = [row["pair_digest"] for row in instances]
    batch["data_samples"]["pair_ids"] = ids
    batch["data_samples"]["pair_digests"] = digests
    return batch
