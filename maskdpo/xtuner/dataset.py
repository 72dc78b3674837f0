"""Pair files → XTuner preference-dataset items with Mask-DPO labels, tokenized once into Arrow.

The mask lives in the data: ``maskdpo.masking.encode_pairs`` writes ``-100``
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

**The tokenized cache.** ``build_maskdpo_dataset`` tokenizes the pairs once,
with ``datasets``' ``map(batched=True, num_proc=N)`` over the project's exact
masking code, and keeps the result as memory-mapped Arrow files (int32 ids and
labels) in a folder named by a key: the pair files' content, the tokenizer
(vocabulary, special tokens, chat template), ``max_length``, and the code that
reads, masks and checks pairs (:data:`ENCODING_MODULES`). Another run, a resume, another rank or ``maskdpo ref-cache`` with
the same key opens the files instead of tokenizing; ``maskdpo tokenize``
builds the folder ahead of training. Layout::

    <cache root>/<key>/manifest.json        what it holds: sources, tokenizer, max_length, rows
    <cache root>/<key>/pairs/*.arrow        per line: file, line, byte range, pair id, chosen/rejected ids,
                                            truncated, and the labels of the mode built first
    <cache root>/<key>/labels-<mode>/*.arrow   labels, digest and status of another mask mode

The ids do not depend on the mask mode, so the modes share them (each other
mode adds its labels only; it checks its ids equal the stored ones). Every
line is stored with a status (kept, invalid record, invalid pair, unusable pair),
so ``drop_truncated`` and ``skip_invalid`` only choose rows when the cache is
opened, and errors keep their ``file:line: field`` form on every open.
Ranks other than 0 receive a few hundred bytes (the folder and the choices)
and open the same files; packing keeps row indices, not copies of items.

Lines are read by byte offset and parsed with the project's readers
(:func:`maskdpo.jsonl.parse_line`, :func:`maskdpo.records.parse_pair`) rather
than with ``datasets``' JSON loader: with datasets 5.0 that loader fails a whole
file on a blank line ("Expected object or value") and on one malformed line
("An error occurred while generating the dataset", no line named), and its row
numbers are not the file's line numbers.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import shutil
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..jsonl import ReadStats, RecordError, iter_jsonl
from ..masking import AlignmentError, NotAFastTokenizer, check_chat_tokenizer, check_mask_mode
from ..records import Pair, parse_pair

ENCODE_BATCH = 256  # pairs per tokenizer call
CACHE_FORMAT = "maskdpo/tokenized@1"
MANIFEST = "manifest.json"
# The modules whose code decides ids and labels: an edit to any of them gives new cache keys.
ENCODING_MODULES = ("maskdpo.masking", "maskdpo.sentences", "maskdpo.records", "maskdpo.labels", "maskdpo.jsonl",
                    "maskdpo.validate")
ITEM_COLUMNS = ("chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels", "pair_id", "pair_digest")

KEPT = "kept"
INVALID_RECORD = "invalid record"
INVALID_PAIR = "invalid pair"
UNUSABLE = "unusable pair"  # tokenized, but no training signal or inconsistent (maskdpo.validate)


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


# ---------------------------------------------------------------- encoding (shared by both paths)


def pair_problem(pair: Pair, masked: Any, mask: str) -> str | None:
    """Why a tokenized pair cannot train, or None: the project's pair checks (:mod:`maskdpo.validate`:
    chosen equal to rejected, a side with no kept sentence or no kept response token, an inverted
    pair). The one call site: the in-memory path and the tokenized cache both ask it."""
    from ..validate import token_signal_problem, validate_pair

    return validate_pair(pair, mask) or token_signal_problem(masked)


def _encode_chunk(chunk: list[tuple[str, Pair]], tokenizer: Any, max_length: int, mask: str) -> list:
    """``(MaskedPair, None)`` or ``(None, message)`` per ``(where, pair)``: one tokenizer call for the chunk;
    a chunk with a bad pair is redone pair by pair to name it."""
    from ..masking import encode_pairs_or_errors

    encoded = encode_pairs_or_errors(tokenizer, [p for _, p in chunk], max_length=max_length, mask=mask)
    # AlignmentError names the pair already; other errors get its id here.
    return [(masked, None) if exc is None else
            (None, f"{where}: {exc}" if isinstance(exc, AlignmentError) else f"{where}: pair {pair.id!r}: {exc}")
            for (where, pair), (masked, exc) in zip(chunk, encoded)]


def encode_training_items(
    pairs: Iterable[tuple[str, Pair]],
    tokenizer: Any,
    max_length: int,
    mask: str = "both",
    drop_truncated: bool = False,
    skip_invalid: bool = False,
    report: BuildReport | None = None,
) -> list[dict]:
    """Tokenize ``(where, pair)`` items into preference-dataset items, in memory.

    The reference the tokenized cache is tested against, and a handy path for a
    few pairs. A pair whose spans cannot be mapped to tokens, or that cannot
    train (:func:`pair_problem`), is an error naming it (``skip_invalid`` counts
    it as rejected instead); a pair longer than ``max_length`` is truncated and
    kept, or rejected with ``drop_truncated`` (checked first).
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
        problem = pair_problem(pair, encoded, mask)
        if problem:
            if not skip_invalid:
                raise ValueError(f"{where}: pair {pair.id!r}: {problem}")
            report.reject(UNUSABLE, f"{where}: pair {pair.id!r}: {problem}")
            continue
        item["pair_id"] = pair.id
        item["pair_digest"] = item_digest(item)
        report.kept += 1
        report.truncated += int(truncated)
        items.append(item)
    return items


def _encoded(pairs, tokenizer, max_length, mask, skip_invalid, report):
    """``(where, pair, MaskedPair)``, tokenizing ``ENCODE_BATCH`` pairs per call; a bad pair is an error
    (or rejected with ``skip_invalid``)."""
    from tqdm import tqdm

    pairs = list(pairs)
    with tqdm(total=len(pairs), desc="Tokenizing pairs", unit="pair") as bar:
        for start in range(0, len(pairs), ENCODE_BATCH):
            chunk = pairs[start:start + ENCODE_BATCH]
            report.read += len(chunk)
            bar.update(len(chunk))
            for (where, pair), (encoded, error) in zip(chunk, _encode_chunk(chunk, tokenizer, max_length, mask)):
                if error is not None:
                    if not skip_invalid:
                        raise ValueError(error)
                    report.reject(INVALID_PAIR, error)
                    continue
                yield where, pair, encoded


def read_pairs(paths: str | os.PathLike | Sequence[str | os.PathLike], skip_invalid: bool = False,
               report: BuildReport | None = None) -> list[tuple[str, Pair]]:
    """``(file:line, Pair)`` for every record of one or more pair files (ours or the authors' format).

    A malformed line raises :class:`RecordError` naming file, line and field;
    with ``skip_invalid`` it is counted in ``report`` as rejected instead.
    """
    paths = _as_list(paths)
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
                report.reject(INVALID_RECORD, str(error))
    return out


def _as_list(paths) -> list[str]:
    return [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]


# ---------------------------------------------------------------- the cache key


def default_cache_root() -> Path:
    """``$MASKDPO_TOKENIZED_CACHE``, else ``$XDG_CACHE_HOME/maskdpo/tokenized`` (``~/.cache/...``)."""
    if os.environ.get("MASKDPO_TOKENIZED_CACHE"):
        return Path(os.environ["MASKDPO_TOKENIZED_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskdpo" / "tokenized"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_identity(tokenizer: Any) -> dict:
    """What decides a tokenizer's ids: its class, vocabulary and merges, special tokens and chat template.

    The name or path is recorded for people but is not part of the key, so one
    tokenizer loaded from two places shares a cache.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise NotAFastTokenizer(f"{type(tokenizer).__name__} is not a fast tokenizer: the tokenized cache and the "
                                f"exact alignment need one (AutoTokenizer.from_pretrained(..., use_fast=True))")
    content = {
        "class": type(tokenizer).__name__,
        "backend": hashlib.sha256(backend.to_str().encode()).hexdigest(),
        "special_tokens": json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
        "chat_template": hashlib.sha256(str(getattr(tokenizer, "chat_template", None) or "").encode()).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]
    return {"name": str(getattr(tokenizer, "name_or_path", "")) or None, "vocab": len(tokenizer), "digest": digest}


@functools.lru_cache(maxsize=1)
def encoding_code_digest() -> str:
    """A digest of the code that turns a pair line into ids and labels (:data:`ENCODING_MODULES`),
    read once per process: the code that runs is the code that was imported."""
    import importlib

    h = hashlib.sha256(CACHE_FORMAT.encode())
    for name in ENCODING_MODULES:
        h.update(name.encode() + b"\0" + Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()[:20]


def cache_key(file_digests: Sequence[str], tokenizer_id: dict, max_length: int) -> str:
    """The folder name of a tokenization: pair contents (in order), tokenizer, ``max_length``, code, and the
    one switch of the masking code read from the environment (a test-only mask reversal)."""
    from ..masking import FLIP_MASK_FOR_TESTS

    payload = {"files": list(file_digests), "tokenizer": tokenizer_id["digest"], "max_length": int(max_length),
               "code": encoding_code_digest(), "flip_mask_for_tests": os.environ.get(FLIP_MASK_FOR_TESTS)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------- reading lines by offset


def line_index(path: str | os.PathLike, block: int = 1 << 24):
    """``(lines, offsets, lengths)`` of the non-blank lines of ``path`` as numpy arrays (1-based line
    numbers; byte offset and length without the newline). Reads the file in blocks: memory stays flat."""
    import numpy as np

    lines, offsets, lengths = [], [], []
    base, lineno, carry = 0, 0, b""
    with open(path, "rb") as handle:
        while True:
            data = handle.read(block)
            if not data and not carry:
                break
            buf = carry + data
            ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
            if not data:  # last line without a newline
                ends = np.append(ends, len(buf))
            starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else np.zeros(0, dtype=np.int64)
            size = ends - starts
            numbers = lineno + 1 + np.arange(len(ends))
            blank = size == 0
            short = np.flatnonzero((size > 0) & (size <= 16))  # whitespace-only lines are short; check those
            for i in short:
                blank[i] = not buf[starts[i]:ends[i]].strip()
            keep = ~blank
            lines.append(numbers[keep])
            offsets.append(base + starts[keep])
            lengths.append(size[keep])
            lineno += len(ends)
            consumed = int(ends[-1]) + 1 if len(ends) else 0
            carry = buf[consumed:] if data else b""
            base += consumed
            if not data:
                break
    cat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(lines), cat(offsets), cat(lengths)


class _LineReader:
    """Pair files opened once per process; a line read by byte range with ``pread`` (forked
    workers would share a file position)."""

    fds: dict = {}

    @classmethod
    def read(cls, path: str, offset: int, length: int) -> bytes:
        key = (os.getpid(), path)
        fd = cls.fds.get(key)
        if fd is None:
            fd = cls.fds[key] = os.open(path, os.O_RDONLY)
        return os.pread(fd, length, offset)


def _parse_raw(path: str, lineno: int, raw: bytes) -> Pair:
    """A pair from one line's bytes with the project's readers; a bad line is a :class:`RecordError`."""
    from ..jsonl import FieldError, parse_line

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(path, lineno, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                                              f"{exc.start + 1} of the line)") from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    obj = parse_line(path, lineno, text)
    try:
        return parse_pair(obj)
    except FieldError as exc:
        raise RecordError(path, lineno, exc.field, exc.message) from None


# ---------------------------------------------------------------- the map function


def _empty_columns(n: int, with_ids: bool) -> dict:
    cols = {"chosen_labels": [[] for _ in range(n)], "rejected_labels": [[] for _ in range(n)],
            "pair_digest": [""] * n, "status": [KEPT] * n, "error_field": [""] * n, "error": [""] * n}
    if with_ids:
        cols.update({"pair_id": [""] * n, "chosen_ids": [[] for _ in range(n)], "rejected_ids": [[] for _ in range(n)],
                     "truncated": [False] * n})
    return cols


def tokenize_rows(batch: dict, *, files: list[str], tokenizer: Any, max_length: int, mask: str,
                  with_ids: bool) -> dict:
    """The ``datasets.map`` function: a batch of line references → ids, labels and a status per line.

    With ``with_ids`` the batch is the line index and the ids are returned too;
    without, the batch is the stored table and the ids computed here must equal
    the stored ones (the mode shares them). Errors are stored, not raised: the
    file path is not part of the stored message (``where`` is prefixed when the
    cache is opened), so a cache serves the same content at another path.
    """
    n = len(batch["line"])
    out = _empty_columns(n, with_ids)
    good: list[tuple[int, str, Pair]] = []
    for r in range(n):
        path, lineno = files[batch["file_index"][r]], int(batch["line"][r])
        try:
            pair = _parse_raw(path, lineno, _LineReader.read(path, int(batch["offset"][r]), int(batch["length"][r])))
        except RecordError as exc:
            out["status"][r], out["error_field"][r], out["error"][r] = INVALID_RECORD, exc.field or "", exc.message
            continue
        good.append((r, f"{path}:{lineno}", pair))
        if with_ids:
            out["pair_id"][r] = pair.id
    for start in range(0, len(good), ENCODE_BATCH):
        chunk = good[start:start + ENCODE_BATCH]
        results = _encode_chunk([(w, p) for _, w, p in chunk], tokenizer, max_length, mask)
        for (r, where, pair), (encoded, error) in zip(chunk, results):
            if error is not None:
                out["status"][r], out["error"][r] = INVALID_PAIR, error[len(where) + 2:]
                if with_ids and mask != "none":  # the ids do not depend on the mask: keep them for other modes
                    ((plain, _),) = _encode_chunk([(where, pair)], tokenizer, max_length, "none")
                    if plain is not None:
                        encoded = plain
                if encoded is None or not with_ids:
                    continue
            item = {"chosen_ids": encoded.chosen.input_ids, "rejected_ids": encoded.rejected.input_ids}
            if with_ids:
                out["chosen_ids"][r], out["rejected_ids"][r] = item["chosen_ids"], item["rejected_ids"]
                out["truncated"][r] = encoded.truncated
            elif batch["chosen_ids"][r] != item["chosen_ids"] or batch["rejected_ids"][r] != item["rejected_ids"]:
                raise RuntimeError(f"{where}: the ids for mask={mask} differ from the stored ids; the cache is "
                                   "inconsistent, delete it")
            if out["status"][r] == INVALID_PAIR:
                continue
            item.update(chosen_labels=encoded.chosen.labels, rejected_labels=encoded.rejected.labels)
            out["chosen_labels"][r], out["rejected_labels"][r] = item["chosen_labels"], item["rejected_labels"]
            out["pair_digest"][r] = item_digest(item)
            problem = pair_problem(pair, encoded, mask)
            if problem:
                out["status"][r], out["error"][r] = UNUSABLE, f"pair {pair.id!r}: {problem}"
    return out


def _features(with_ids: bool):
    from datasets import Features, List, Value

    ids = List(Value("int32"))
    cols = {"chosen_labels": ids, "rejected_labels": ids, "pair_digest": Value("string"), "status": Value("string"),
            "error_field": Value("string"), "error": Value("string")}
    if with_ids:
        cols = {"file_index": Value("int32"), "line": Value("int64"), "offset": Value("int64"),
                "length": Value("int64"), "pair_id": Value("string"), "chosen_ids": ids, "rejected_ids": ids,
                "truncated": Value("bool"), **cols}
    return Features(cols)


# ---------------------------------------------------------------- the cache folder


def _building_dir(final: Path) -> Path:
    return final.with_name(f"{final.name}.building-{socket.gethostname()}-{os.getpid()}")


def _remove_stale_builds(final: Path) -> None:
    """Folders left by a build on this host that was killed (its process is gone)."""
    prefix = f"{final.name}.building-{socket.gethostname()}-"
    if not final.parent.is_dir():
        return
    for entry in final.parent.iterdir():
        if entry.name.startswith(prefix):
            pid = entry.name[len(prefix):]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished build into place; when another process finished first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _map(dataset, folder: Path, *, files, tokenizer, max_length, mask, with_ids, num_proc, key):
    """Run :func:`tokenize_rows` over ``dataset`` into Arrow shards in ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    num_proc = max(1, min(int(num_proc or 1), len(dataset)))
    kwargs = dict(files=files, tokenizer=tokenizer, max_length=max_length, mask=mask, with_ids=with_ids)
    if num_proc > 1:
        # Forked workers share the parent's heap until written; the garbage collector walking it in each
        # worker would copy it page by page. Frozen objects are left alone.
        gc.freeze()
    try:
        mapped = dataset.map(
            tokenize_rows, batched=True, batch_size=ENCODE_BATCH * 4, fn_kwargs=kwargs,
            num_proc=num_proc if num_proc > 1 else None, features=_features(with_ids),
            remove_columns=None if with_ids else dataset.column_names, cache_file_name=str(folder / "part.arrow"),
            new_fingerprint=f"{key}-{mask}-{with_ids}", desc=f"Tokenizing pairs (mask={mask})",
            load_from_cache_file=False,
        )
    finally:
        if num_proc > 1:
            gc.unfreeze()
    names = [Path(f["filename"]).name for f in mapped.cache_files]
    del mapped
    (folder / "shards.json").write_text(json.dumps(names))
    return names


def _open_shards(folder: Path):
    from datasets import Dataset, concatenate_datasets

    names = json.loads((folder / "shards.json").read_text())
    parts = [Dataset.from_file(str(folder / name), in_memory=False) for name in names]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


@dataclass
class TokenizedPairs:
    """A tokenized cache folder: its manifest and its memory-mapped tables."""

    folder: Path
    manifest: dict

    @property
    def files(self) -> list[str]:
        return [s["path"] for s in self.manifest["sources"]]

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    def modes(self) -> list[str]:
        built = [self.manifest["base_mode"]]
        built += [p.name[len("labels-"):] for p in sorted(self.folder.glob("labels-*")) if (p / "shards.json").exists()]
        return built

    def table(self, mask: str):
        """All rows with the columns of ``mask`` (which must be built: :meth:`ensure_mode`)."""
        from datasets import concatenate_datasets

        base = _open_shards(self.folder / "pairs")
        if mask == self.manifest["base_mode"]:
            return base
        labels = _open_shards(self.folder / f"labels-{mask}")
        shared = base.remove_columns([c for c in _features(False) if c in base.column_names])
        return concatenate_datasets([shared, labels], axis=1)

    def ensure_mode(self, mask: str, tokenizer: Any, num_proc: int = 1) -> None:
        """Compute the labels of ``mask`` once (the ids are reused) unless they are there."""
        check_mask_mode(mask)
        if mask in self.modes():
            return
        if tokenizer is None:
            raise ValueError(f"{self.folder}: mask={mask} is not tokenized yet and no tokenizer was given")
        self.check_tokenizer(tokenizer)
        final = self.folder / f"labels-{mask}"
        _remove_stale_builds(final)
        tmp = _building_dir(final)
        shutil.rmtree(tmp, ignore_errors=True)
        base = _open_shards(self.folder / "pairs").select_columns(
            ["file_index", "line", "offset", "length", "chosen_ids", "rejected_ids"])
        _map(base, tmp, files=self.files, tokenizer=tokenizer, max_length=self.manifest["max_length"], mask=mask,
             with_ids=False, num_proc=num_proc, key=self.folder.name)
        _publish(tmp, final)

    def check_tokenizer(self, tokenizer: Any, max_length: int | None = None) -> None:
        """A cache opened by folder must match the config's tokenizer and ``max_length``."""
        have = tokenizer_identity(tokenizer)
        if have["digest"] != self.manifest["tokenizer"]["digest"]:
            raise ValueError(f"{self.folder}: tokenized with tokenizer {self.manifest['tokenizer']}, but the config's "
                             f"tokenizer is {have}; tokenize again with `maskdpo tokenize`")
        if max_length is not None and int(max_length) != self.manifest["max_length"]:
            raise ValueError(f"{self.folder}: tokenized with max_length {self.manifest['max_length']}, but the config "
                             f"says {max_length}; tokenize again with `maskdpo tokenize`")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "TokenizedPairs":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: not a tokenized cache (no {MANIFEST}; make one with `maskdpo tokenize`)")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: expected format {CACHE_FORMAT!r}, got {manifest.get('format')!r}")
        return cls(folder, manifest)


def is_tokenized_cache(data_files) -> bool:
    """Whether ``data_files`` names a tokenized cache folder instead of pair files."""
    files = _as_list(data_files)
    return len(files) == 1 and (Path(files[0]) / MANIFEST).is_file()


def prepare_tokenized(data_files, tokenizer: Any, max_length: int, mask: str = "both", *,
                      cache_dir: str | os.PathLike | None = None, num_proc: int = 1,
                      allow_empty: bool = False) -> TokenizedPairs:
    """The tokenized cache for these pair files and settings, built when missing (and ``mask`` added when
    missing). ``data_files`` may instead be a cache folder (``maskdpo tokenize``); then the tokenizer and
    ``max_length`` must be the ones it was made with.

    A pair file without a pair is :class:`~maskdpo.validate.EmptyInput` unless ``allow_empty``; no pair
    in any file always is (there is nothing to cache). Both are checked before tokenizing. The manifest
    that makes a folder a cache is written last and the folder renamed into place only then: a failed
    build leaves nothing that looks like a cache (its building folder is removed)."""
    check_mask_mode(mask)
    if int(max_length) <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if is_tokenized_cache(data_files):
        store = TokenizedPairs.open(_as_list(data_files)[0])
        store.check_tokenizer(tokenizer, max_length)
        store.ensure_mode(mask, tokenizer, num_proc)
        return store
    files = _as_list(data_files)
    if not files:
        raise ValueError("no pair files given")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such pair file")
    check_chat_tokenizer(tokenizer)
    digests = [file_sha256(p) for p in files]
    tok = tokenizer_identity(tokenizer)
    root = Path(cache_dir) if cache_dir else default_cache_root()
    final = root / cache_key(digests, tok, max_length)
    if (final / MANIFEST).is_file():
        store = TokenizedPairs.open(final)
        store.ensure_mode(mask, tokenizer, num_proc)
        return store
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(final)
    tmp = _building_dir(final)
    shutil.rmtree(tmp, ignore_errors=True)
    index = _line_table(files)
    _check_not_empty(index, files, allow_empty)
    try:
        names = _map(index, tmp / "pairs", files=files, tokenizer=tokenizer, max_length=max_length, mask=mask,
                     with_ids=True, num_proc=num_proc, key=final.name)
        manifest = {"format": CACHE_FORMAT, "key": final.name, "max_length": int(max_length), "base_mode": mask,
                    "tokenizer": tok, "code": encoding_code_digest(), "rows": len(index),
                    "sources": [{"path": str(p), "sha256": d, "bytes": os.path.getsize(p)}
                                for p, d in zip(files, digests)],
                    "shards": names}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    return TokenizedPairs.open(final)


def _check_not_empty(index, files: list[str], allow_empty: bool) -> None:
    """Each pair file must hold a non-blank line (unless ``allow_empty``), and together they must hold one."""
    import numpy as np

    from ..validate import EmptyInput, check_not_empty

    per_file = np.bincount(index.data.column("file_index").to_numpy(), minlength=len(files)) if len(index) \
        else np.zeros(len(files), dtype=np.int64)
    for path, count in zip(files, per_file):
        if not count:
            check_not_empty(path, ReadStats(), allow_empty, "pair")
    if not len(index):
        raise EmptyInput(f"{', '.join(files)}: no pair to read in any file; nothing to tokenize")


def source_digests(data_files) -> list[dict]:
    """``[{path, sha256}]`` of the pair files behind ``data_files`` (pair files, or a cache folder's sources),
    so a reference cache fingerprints the same data either way."""
    if is_tokenized_cache(data_files):
        return [{"path": s["path"], "sha256": s["sha256"][:20]} for s in TokenizedPairs.open(_as_list(data_files)[0]).manifest["sources"]]
    return [{"path": p, "sha256": file_sha256(p)[:20]} for p in _as_list(data_files)]


def _line_table(files: list[str]):
    """The line index of all pair files as an in-memory ``datasets.Dataset`` (four int columns)."""
    import numpy as np
    from datasets import Dataset

    parts = [line_index(p) for p in files]
    return Dataset.from_dict({
        "file_index": np.concatenate([np.full(len(lines), i, dtype=np.int32) for i, (lines, _, _) in enumerate(parts)]),
        "line": np.concatenate([p[0] for p in parts]), "offset": np.concatenate([p[1] for p in parts]),
        "length": np.concatenate([p[2] for p in parts]),
    })


# ---------------------------------------------------------------- choosing rows


def select_rows(table, files: list[str], max_length: int, drop_truncated: bool, skip_invalid: bool):
    """``(row indices to train on, BuildReport)`` from a cache table's status columns, with the same
    rules, order of checks and messages as :func:`encode_training_items`; an error is raised unless ``skip_invalid``."""
    import numpy as np
    import pyarrow.compute as pc

    data = table.data
    # Boolean columns from Arrow compute: a byte per row, never a Python object per row.
    is_status = lambda s: pc.equal(data.column("status"), s).to_numpy(zero_copy_only=False).astype(bool)  # noqa: E731
    n = table.num_rows
    report = BuildReport(read=n)
    where = lambda r: f"{files[int(data.column('file_index')[r].as_py())]}:{data.column('line')[r].as_py()}"  # noqa: E731
    invalid_record = np.flatnonzero(is_status(INVALID_RECORD))
    invalid_pair = is_status(INVALID_PAIR)
    candidates = ~invalid_pair & ~is_status(INVALID_RECORD)

    if len(invalid_record):
        errors = [_record_error(data, files, int(r)) for r in invalid_record]
        if not skip_invalid:
            raise errors[0]
        for error in errors:
            report.reject(INVALID_RECORD, str(error))
    # Duplicate ids among the pairs that tokenized, checked in file order as the in-memory path does.
    ids = data.column("pair_id")
    candidate_rows = np.flatnonzero(candidates)
    counts = pc.value_counts(ids.take(candidate_rows)) if len(candidate_rows) else None
    duplicated = None
    if counts is not None:
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(repeated):
            mask_rep = pc.is_in(ids, value_set=repeated).to_numpy(zero_copy_only=False) & candidates
            seen: dict[str, int] = {}
            for r in np.flatnonzero(mask_rep):
                pid = ids[int(r)].as_py()
                if pid in seen:
                    duplicated = (int(r), pid, seen[pid])
                    break
                seen[pid] = int(r)
    truncated = data.column("truncated").to_numpy(zero_copy_only=False).astype(bool)
    dropped = candidates & truncated if drop_truncated else np.zeros(n, dtype=bool)
    unusable = candidates & ~dropped & is_status(UNUSABLE)
    kept = candidates & ~dropped & ~unusable
    # The first problem in file order, as the in-memory path meets them: a pair that does not tokenize,
    # a repeated id (an error even with skip_invalid), a pair that cannot train (after drop_truncated).
    firsts = [(int(np.flatnonzero(rows)[0]), kind) for rows, kind in ((invalid_pair, "pair"), (unusable, "unusable"))
              if rows.any() and not skip_invalid]
    if duplicated:
        firsts.append((duplicated[0], "duplicate"))
    if firsts:
        r, kind = min(firsts)
        if kind == "duplicate":
            _, pid, earlier = duplicated
            raise ValueError(f"{where(r)}: pair id {pid!r} repeats the pair at {where(earlier)}; ids must be unique")
        raise ValueError(f"{where(r)}: {data.column('error')[r].as_py()}")
    # Rejection reasons in order of first occurrence, as the in-memory path records them.
    reasons = []
    if invalid_pair.any():
        reasons.append((int(np.flatnonzero(invalid_pair)[0]), INVALID_PAIR, invalid_pair,
                        lambda r: f"{where(r)}: {data.column('error')[r].as_py()}"))
    if dropped.any():
        reasons.append((int(np.flatnonzero(dropped)[0]), f"longer than max_length {max_length}", dropped,
                        lambda r: f"{where(r)}: pair {ids[r].as_py()!r}"))
    if unusable.any():
        reasons.append((int(np.flatnonzero(unusable)[0]), UNUSABLE, unusable,
                        lambda r: f"{where(r)}: {data.column('error')[r].as_py()}"))
    for first, reason, rows, example in sorted(reasons, key=lambda x: x[0]):
        report.rejected[reason] += int(rows.sum())
        report.examples.setdefault(reason, example(first))
    indices = np.flatnonzero(kept)
    report.kept = len(indices)
    report.truncated = int((kept & truncated).sum())
    return indices, report


def _record_error(data, files: list[str], r: int) -> RecordError:
    field_name = data.column("error_field")[r].as_py() or None
    path = files[int(data.column("file_index")[r].as_py())]
    return RecordError(path, int(data.column("line")[r].as_py()), field_name, data.column("error")[r].as_py())


# ---------------------------------------------------------------- the datasets XTuner sees


class PairDataset:
    """Preference items read from a tokenized cache (memory-mapped), indexable like XTuner's
    ``PreferenceDataset``. Pickles as its folder and choices only: a rank that receives it opens
    the same files and chooses the same rows."""

    def __init__(self, folder: str | os.PathLike, mask: str, files: list[str], drop_truncated: bool = False,
                 skip_invalid: bool = False):
        self._state = {"folder": str(folder), "mask": mask, "files": list(files),
                       "drop_truncated": drop_truncated, "skip_invalid": skip_invalid}
        self._open()

    def _open(self) -> None:
        s = self._state
        store = TokenizedPairs.open(s["folder"])
        table = store.table(s["mask"])
        self.indices, self.report = select_rows(table, s["files"], store.manifest["max_length"],
                                                s["drop_truncated"], s["skip_invalid"])
        self.items = table.select_columns(list(ITEM_COLUMNS))
        self.store = store

    def __getstate__(self) -> dict:
        return dict(self._state)

    def __setstate__(self, state: dict) -> None:
        self._state = state
        if not (Path(state["folder"]) / MANIFEST).is_file():
            raise FileNotFoundError(f"{state['folder']}: rank 0 tokenized the pairs here, but this process cannot see "
                                    "it; put the tokenized cache on a file system every node reads (cache_dir=, "
                                    "MASKDPO_TOKENIZED_CACHE) or run `maskdpo tokenize` on every node first")
        self._open()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.items[int(self.indices[index])]

    def pair_lengths(self):
        """``len(chosen_ids) + len(rejected_ids)`` of every item, from the Arrow offsets (no item is read)."""
        import pyarrow.compute as pc

        data = self.items.data
        total = (pc.list_value_length(data.column("chosen_ids")).to_numpy(zero_copy_only=False)
                 + pc.list_value_length(data.column("rejected_ids")).to_numpy(zero_copy_only=False))
        return total[self.indices]


class PackedPairDataset:
    """XTuner's packing (``PackedDatasetWrapper``: greedy bins of chosen + rejected up to
    ``max_packed_length``, in shuffled order) over a :class:`PairDataset`, holding row indices only,
    plus the ids and digests of the pairs in each packed row (in order).

    The shuffle draws its seed from numpy's global generator on the building rank (as XTuner's
    ``np.random.shuffle`` does, so seeded runs repeat) and ships the seed, so every rank packs alike.
    """

    def __init__(self, dataset: PairDataset, max_packed_length: int = 16384, shuffle_before_pack: bool = True,
                 seed: int | None = None):
        import numpy as np

        if seed is None and shuffle_before_pack:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._state = {"max_packed_length": max_packed_length, "shuffle_before_pack": shuffle_before_pack,
                       "seed": seed}
        self.dataset = dataset
        self._pack(log=True)

    def _pack(self, log: bool = False) -> None:
        import numpy as np

        s = self._state
        lengths = self.dataset.pair_lengths()
        order = np.arange(len(lengths))
        if s["shuffle_before_pack"]:
            np.random.default_rng(s["seed"]).shuffle(order)
        rows, bounds, bins, current, removed = [], [0], [], 0, 0
        for idx in order.tolist():
            size = int(lengths[idx])
            if size > s["max_packed_length"]:
                removed += 1
                continue
            if current + size > s["max_packed_length"] and current > 0:
                bounds.append(len(rows))
                bins.append(current)
                current = 0
            rows.append(idx)
            current += size
        if current > 0:
            bounds.append(len(rows))
            bins.append(current)
        self.order = np.asarray(rows, dtype=np.int64)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.lengths = bins
        if log:
            from mmengine.logging import print_log

            if removed:
                print_log(f"removed {removed} pairs longer than max_packed_length {s['max_packed_length']}",
                          logger="current")
            print_log(f"{len(lengths)} pairs packed into {len(self)} rows (use_varlen_attn)", logger="current")

    def __getstate__(self) -> dict:
        return {"dataset": self.dataset, **self._state}

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        self.dataset = state.pop("dataset")
        self._state = state
        self._pack()

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def pairs_of(self, index: int) -> list[dict]:
        return [self.dataset[int(i)] for i in self.order[self.bounds[index]:self.bounds[index + 1]]]

    def __getitem__(self, index: int) -> dict:
        pairs = self.pairs_of(index)
        input_ids, labels, position_ids, cu_seqlens = [], [], [], [0]
        for pair in pairs:
            for side in ("chosen", "rejected"):
                ids = pair[f"{side}_ids"]
                input_ids.extend(ids)
                labels.extend(pair[f"{side}_labels"])
                position_ids.extend(range(len(ids)))
                cu_seqlens.append(cu_seqlens[-1] + len(ids))
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "cumulative_len": cu_seqlens,
                "pair_ids": [p["pair_id"] for p in pairs], "pair_digests": [p["pair_digest"] for p in pairs]}


def open_pair_dataset(store: TokenizedPairs, mask: str, data_files=None, drop_truncated: bool = False,
                      skip_invalid: bool = False) -> PairDataset:
    """The rows of ``store`` to train on; ``data_files`` (the paths the user gave) name errors."""
    files = store.files if data_files is None or is_tokenized_cache(data_files) else _as_list(data_files)
    return PairDataset(store.folder, mask, files, drop_truncated=drop_truncated, skip_invalid=skip_invalid)


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
    cache_dir: str | None = None,
    num_proc: int = 1,
):
    """The ``train_dataset`` of a Mask-DPO config (``type=build_maskdpo_dataset``).

    Args:
        data_files: one or more pair JSONL files (``maskdpo pairs`` output or the authors' format),
            or a tokenized cache folder made by ``maskdpo tokenize``.
        tokenizer: a tokenizer or its config dict (as in XTuner configs).
        max_length: the longest prompt + response, in tokens.
        mask: ``both`` (Mask-DPO), ``chosen``, ``rejected`` or ``none`` (vanilla DPO on the same pairs).
        drop_truncated: reject pairs longer than ``max_length`` instead of truncating them.
        skip_invalid: count malformed records and unmappable pairs as rejected instead of failing.
        use_varlen_attn, max_packed_length, shuffle_before_pack: XTuner's packing (GPU only).
        cache_dir: where tokenized caches live (default :func:`default_cache_root`).
        num_proc: tokenizer processes when the cache has to be built.

    Returns a dataset of preference items (packed rows with ``use_varlen_attn``)
    read from the memory-mapped cache. Rank 0 builds or opens the cache and logs
    the kept / truncated / rejected counts; the other ranks receive only the
    folder and open the same files.
    """
    from mmengine.config import Config, ConfigDict
    from mmengine.logging import print_log
    from xtuner.dataset.preference_dataset import broad_cast_dataset
    from xtuner.registry import BUILDER

    import torch.distributed as dist

    check_mask_mode(mask)
    dataset = None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        if isinstance(tokenizer, (dict, Config, ConfigDict)):
            tokenizer = BUILDER.build(tokenizer)
        store = prepare_tokenized(data_files, tokenizer, max_length, mask, cache_dir=cache_dir, num_proc=num_proc)
        dataset = open_pair_dataset(store, mask, data_files, drop_truncated=drop_truncated, skip_invalid=skip_invalid)
        print_log(f"Mask-DPO data (mask={mask}, max_length={max_length}): {dataset.report.summary()} "
                  f"[tokenized cache {store.folder}]", logger="current")
        if not len(dataset):
            raise ValueError(f"no usable pairs in {data_files}: {dataset.report.summary()}")
        if use_varlen_attn:
            dataset = PackedPairDataset(dataset, max_packed_length=max_packed_length,
                                        shuffle_before_pack=shuffle_before_pack)
    # What travels is the pickled dataset: a folder name and a few settings (see PairDataset).
    return broad_cast_dataset(dataset)


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


# ---------------------------------------------------------------- maskdpo tokenize


@dataclass
class TrainingData:
    """What a config's ``train_dataset`` (``build_maskdpo_dataset``) tokenizes, and how."""

    data_files: Any  # a path, a list of paths or a tokenized cache folder, as the config gives it
    tokenizer: Any  # built
    max_length: int
    mask: str = "both"
    drop_truncated: bool = False
    skip_invalid: bool = False
    cache_dir: str | None = None


def training_data_from_config(config: str | os.PathLike, cfg_options: Sequence[str] = ()) -> TrainingData:
    """The training data of an XTuner config (``cfg_options``: ``KEY=VALUE`` overrides), its tokenizer built."""
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    from .ref_cache import parse_cfg_options

    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(parse_cfg_options(cfg_options))
    data = cfg.train_dataloader.dataset
    for key in ("data_files", "tokenizer", "max_length"):
        if key not in data:
            raise ValueError(f"{config}: train_dataloader.dataset has no {key!r}: is it build_maskdpo_dataset?")
    tok = BUILDER.build(data["tokenizer"]) if isinstance(data["tokenizer"], dict) else data["tokenizer"]
    return TrainingData(data["data_files"], tok, data["max_length"], data.get("mask", "both"),
                        data.get("drop_truncated", False), data.get("skip_invalid", False), data.get("cache_dir"))


def describe_tokenized(store: TokenizedPairs, masks: list[str], drop_truncated: bool = False,
                       skip_invalid: bool = False, files: list[str] | None = None) -> list[str]:
    """Lines saying where a tokenized cache is and what it holds (per mask mode: kept / truncated / rejected,
    tokens stored). The rows are chosen as training chooses them (:func:`select_rows`): a bad record or
    pair is an error naming file and line unless ``skip_invalid``; ``files`` name them (default: the
    cache's sources)."""
    import pyarrow.compute as pc

    m = store.manifest
    lines = [f"tokenized cache: {Path(store.folder).absolute()}",
             "  sources: " + ", ".join(f"{s['path']} (sha256 {s['sha256'][:12]}, {s['bytes']:,} bytes)"
                                       for s in m["sources"]),
             f"  tokenizer: {m['tokenizer']['name']} (vocab {m['tokenizer']['vocab']}, digest {m['tokenizer']['digest']})",
             f"  max_length: {m['max_length']}   lines: {m['rows']:,}   size on disk: {store.size_bytes() / 2**20:.1f} MiB"]
    for mask in masks:
        table = store.table(mask)
        _, report = select_rows(table, files or store.files, m["max_length"], drop_truncated, skip_invalid)
        data = table.data
        tokens = int(pc.sum(pc.list_value_length(data.column("chosen_ids"))).as_py() or 0) + \
            int(pc.sum(pc.list_value_length(data.column("rejected_ids"))).as_py() or 0)
        lines.append(f"  mask={mask}: {report.summary()}; {tokens:,} tokens stored")
    return lines


def run_tokenize(*, config: str | os.PathLike | None = None, cfg_options: Sequence[str] = (),
                 pairs: Sequence[str | os.PathLike] = (), tokenizer: str | None = None, max_length: int | None = None,
                 masks: Sequence[str] = (), num_proc: int = 1, skip_invalid: bool = False, allow_empty: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> list[str]:
    """``maskdpo tokenize``: build the tokenized cache of a config's training pairs (or of ``pairs`` with
    ``tokenizer`` and ``max_length``) for each mask mode; returns the lines describing it.

    With ``allow_empty`` and no pair in any file, nothing is tokenized and the one line says so.
    """
    from ..validate import EmptyInput

    drop_truncated = False
    if config:
        data = training_data_from_config(config, cfg_options)
        data_files, tok, max_length = data.data_files, data.tokenizer, data.max_length
        drop_truncated = data.drop_truncated
        masks = list(masks) or [data.mask]
        skip_invalid = skip_invalid or data.skip_invalid
        cache_dir = cache_dir or data.cache_dir
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer, use_fast=True)
        data_files = [str(p) for p in pairs]
        masks = list(masks) or ["both"]
    masks = list(dict.fromkeys(masks))
    store = None
    for mask in masks:
        try:
            store = prepare_tokenized(data_files, tok, max_length, mask, cache_dir=cache_dir, num_proc=num_proc,
                                      allow_empty=allow_empty)
        except EmptyInput as exc:
            if not allow_empty:
                raise
            return [f"{exc} (--allow-empty): no cache written"]
    folder = Path(store.folder).absolute()
    return describe_tokenized(store, masks, drop_truncated, skip_invalid, None if config else data_files) + \
        [f"train from it: MASKDPO_PAIRS={folder} (or data_files='{folder}' in the config)"]
