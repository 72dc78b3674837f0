"""Chat-template rendering and exact sentence-span → token mask alignment.

For one side of a pair (chosen or rejected) we build what XTuner's preference
dataset builds (``xtuner/dataset/preference_dataset.py``: ``chosen_ids``,
``chosen_labels``, ...): the prompt and the response rendered with the
tokenizer's chat template (``add_generation_prompt=False``, encoded with
``add_special_tokens=False``), ``labels`` equal to the ids except ``-100``
where the loss must not look. Labels are *not* shifted; the model shifts.

Which tokens are ``-100``:

- every prompt token, and a token that straddles the end of the prompt and the
  start of the response (ChatML's ``"\\n "``) — it is partly prompt;
- in the chosen response, tokens of ``hallucination`` sentences; in the
  rejected response, tokens of ``no_hallucination`` sentences (``mask="both"``;
  ``"chosen"``/``"rejected"`` mask one side only, ``"none"`` is vanilla DPO).

How tokens are mapped to sentences (departure from the authors' code, which
encodes each sentence alone and adds lengths, so masks drift at separators and
silently fall back to no mask when lengths overrun): the whole rendered text is
tokenized once with the tokenizer's offset mapping, and each token is judged by
the characters it covers. Every character of the response content belongs to
exactly one sentence:

- (a) a sentence's own characters belong to it; a token is judged by the
  sentences of its **non-whitespace** characters, and is **masked** when one of
  them belongs to a masked sentence — so a token that joins visible characters
  of a kept and of a masked sentence (Chinese ``"。他"``) is masked, while
  Llama-3's ``"!\\n\\n"`` or ``".\\n"`` after a kept sentence stays kept
  although its newlines belong to the next sentence; a whitespace-only token
  goes with the sentence that owns its characters (the next one, by (b));
- (b) whitespace (or any text no sentence covers) *between* two sentences
  belongs to the **following** sentence — BPE vocabularies attach a leading
  space to the next word (``" The"``), so the separator travels with the
  sentence it introduces; text before the first sentence belongs to the first
  sentence and text after the last sentence to the last one. What the template
  adds after the content (the end-of-turn token, ``<|im_end|>\\n``,
  ``<|eot_id|>``) is **always kept**: ending the answer is not a claim of any
  sentence, and it is kept by vanilla DPO, XTuner and the authors alike;
- (c) with ``max_length``, ids and labels are cut together to the first
  ``max_length`` tokens and the sequence is flagged ``truncated`` (callers count
  these); nothing is re-aligned or dropped silently.

A sentence whose text does not match the response at its span, or (authors'
format, no spans) cannot be found in the response, raises
:class:`AlignmentError` naming the pair and the sentence — never a fallback to
an unmasked pair.

:func:`view_masks` is the ``maskdpo masks`` stage: a pair file checked and
encoded as training would, each side reported as the loss sees it.
"""

from __future__ import annotations

import os as _os
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Iterable, Sequence

from .labels import CORRECT, HALLUCINATED
from .records import Pair, PairItem
from .sentences import SentenceNotFound, locate_sentences

# The label value the loss ignores (prompt and masked tokens); the one spelling, also for loss and model.
IGNORE_INDEX = -100
MASK_MODES = ("both", "chosen", "rejected", "none")


class AlignmentError(ValueError):
    """A pair's sentences cannot be aligned to its text or tokens; names the pair and the sentence."""

    def __init__(self, pair_id: str, message: str):
        super().__init__(f"pair {pair_id!r}: {message}")
        self.pair_id = pair_id


@dataclass
class MaskedSequence:
    """One tokenized side of a pair.

    ``labels[t]`` is ``input_ids[t]`` where the loss counts token ``t`` and -100
    for prompt and masked tokens (unshifted; the model shifts).
    ``prompt_tokens`` is the number of leading prompt tokens (after truncation).
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    prompt_tokens: int = 0
    content_tokens: int | None = None  # prompt + response-content tokens (what follows is the template's suffix)

    @property
    def kept(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def kept_content(self) -> int:
        """Kept tokens of the response content itself, without the end-of-turn suffix the template adds."""
        end = len(self.labels) if self.content_tokens is None else min(self.content_tokens, len(self.labels))
        return sum(1 for label in self.labels[self.prompt_tokens:end] if label != IGNORE_INDEX)


@dataclass
class MaskedPair:
    id: str
    chosen: MaskedSequence
    rejected: MaskedSequence

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated

    def to_xtuner(self) -> dict:
        """The keys XTuner's preference dataset produces."""
        return {"chosen_ids": self.chosen.input_ids, "chosen_labels": self.chosen.labels,
                "rejected_ids": self.rejected.input_ids, "rejected_labels": self.rejected.labels}


# ---------------------------------------------------------------- sentences → kept flags


def check_mask_mode(mask: str) -> str:
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}, got {mask!r}")
    return mask


# Test only, never a user option: "1" reverses the mask (keep the chosen side's hallucinated sentences and
# the rejected side's correct ones), so a test can prove the toy-world check catches a reversed mask.
# The tokenized cache puts its value in the cache key (maskdpo.xtuner.dataset).
FLIP_MASK_FOR_TESTS = "MASKDPO_TEST_ONLY_FLIP_MASK"


def _warn_flipped_mask() -> None:
    """Say it once per process: a reversed mask must never train a model unnoticed."""
    global _FLIP_WARNED
    if not _FLIP_WARNED:
        _FLIP_WARNED = True
        import sys
        print(f"maskdpo: WARNING: {FLIP_MASK_FOR_TESTS}=1: Mask-DPO masks are REVERSED "
              "(a test-only switch; unset it for real training)", file=sys.stderr)


_FLIP_WARNED = False


def keep_flags(item: PairItem, side: str, mask: str) -> list[bool]:
    """Per sentence, whether its tokens count in the loss.

    chosen: keep ``no_hallucination``; rejected: keep ``hallucination``; a side
    the mode does not mask keeps everything.
    """
    if mask == "none" or (mask != "both" and mask != side):
        return [True] * len(item.type)
    wanted = CORRECT if side == "chosen" else HALLUCINATED
    if _os.environ.get(FLIP_MASK_FOR_TESTS) == "1":  # test only: the bug the toy-world check must catch
        _warn_flipped_mask()
        wanted = HALLUCINATED if wanted == CORRECT else CORRECT
    return [t == wanted for t in item.type]


def item_spans(pair_id: str, side: str, response: str, item: PairItem) -> list[tuple[int, int]]:
    """The item's spans, checked against the response, or located when absent (authors' format)."""
    if item.spans is None:
        try:
            return locate_sentences(response, item.sents)
        except SentenceNotFound as exc:
            raise AlignmentError(pair_id, f"{side}_item.sents[{exc.index}]: {exc}") from None
    previous_end = 0
    for i, ((start, end), sent) in enumerate(zip(item.spans, item.sents)):
        if not (previous_end <= start < end <= len(response)) or response[start:end] != sent:
            raise AlignmentError(pair_id, f"{side}_item.sents[{i}] {sent[:60]!r} does not match the {side} "
                                          f"response at span ({start}, {end}): {response[start:end][:60]!r}")
        previous_end = end
    return list(item.spans)


# ---------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """A conversation rendered by the chat template; ``text[start:end]`` is the response content as rendered."""

    text: str
    start: int
    end: int
    shift: int  # characters the template stripped from the front of the content


_PROBE = "\x00maskdpo-probe\x00"


def template_suffix(tokenizer: Any) -> str | None:
    """What the chat template writes after an assistant message's content (``"<|im_end|>\n"`` for ChatML).

    Found by rendering a probe; None when the template does not put the content
    verbatim in one place (then responses are located after the rendered prompt).
    """
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    return text[text.index(_PROBE) + len(_PROBE):] if text.count(_PROBE) == 1 else None


def render_prefix(tokenizer: Any, prompt: list[dict]) -> str:
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def locate_response(tokenizer: Any, prompt: list[dict], text: str, response: str, pair_id: str,
                    suffix: str | None) -> Rendered:
    """Find the response content in the rendered conversation ``text``.

    Fast path: the content sits right before the template's constant ``suffix``
    (:func:`template_suffix`).
    Otherwise it is searched after the rendered prompt; a template that trims
    the content (Llama-3.1's ``| trim``) is handled by locating the stripped
    content and shifting spans by what was cut.
    """
    if suffix is not None and text.endswith(suffix):
        start = len(text) - len(suffix) - len(response)
        if start >= 0 and text.startswith(response, start):
            return Rendered(text, start, start + len(response), 0)
    prefix = render_prefix(tokenizer, prompt)
    search_from = len(prefix) if text.startswith(prefix) else 0
    start = text.find(response, search_from)
    if start >= 0:
        return Rendered(text, start, start + len(response), 0)
    stripped = response.strip()
    start = text.find(stripped, search_from)
    if start < 0 or not stripped:
        raise AlignmentError(pair_id, "the chat template changed the response text; cannot locate it in the "
                                      "rendered conversation")
    return Rendered(text, start, start + len(stripped), response.index(stripped))


def render_response(tokenizer: Any, prompt: list[dict], response: str, pair_id: str) -> Rendered:
    """Render prompt + assistant response (as XTuner does) and locate the content in it."""
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False,
                                         add_generation_prompt=False)
    return locate_response(tokenizer, prompt, text, response, pair_id, template_suffix(tokenizer))


# ---------------------------------------------------------------- the alignment itself


def token_labels(input_ids: Sequence[int], offsets: Sequence[tuple[int, int]], response_start: int,
                 response_end: int, sentence_ends: Sequence[int], keep: Sequence[bool],
                 text: str) -> tuple[list[int], int]:
    """Labels for one rendered sequence, and the number of prompt tokens.

    ``text`` is the rendered text; ``offsets[t] = (s_t, e_t)``: characters of
    token ``t`` in it (an empty token counts as covering ``[s_t, s_t + 1)``).
    ``sentence_ends[i]``: end of sentence ``i`` in the rendered text. Sentence
    ``i`` owns the content characters ``[end_{i-1}, end_i)`` (the first from
    ``response_start``, the last up to ``response_end``); characters past
    ``response_end`` are template suffix (kept). A token is judged by the owners
    of its non-whitespace content characters, or of its whitespace ones when it
    has no other (:func:`_straddler_is_masked`). With offsets monotone, a
    character range maps to a token range:

        prompt tokens          = #{t : s_t < response_start}
        tokens touching [a, b) = { t : e_t > a and s_t < b }      (bisect on e, s)
        labels[t] = -100 if t is a prompt token, lies inside a masked run's range,
                    or straddles its border and is judged masked; else input_ids[t]
    """
    from bisect import bisect_left, bisect_right
    from itertools import islice
    from operator import eq, itemgetter, le

    # map() with C functions: this runs once per sequence over every token, so it is the hot loop.
    starts = list(map(itemgetter(0), offsets))
    ends = list(map(itemgetter(1), offsets))
    if not all(map(le, starts, islice(starts, 1, None))):
        raise ValueError("token offsets are not monotone; this tokenizer cannot be aligned by offsets")
    if any(map(eq, starts, ends)):
        ends = [e if e > s else s + 1 for s, e in offsets]
    labels = list(input_ids)
    prompt_tokens = bisect_left(starts, response_start)
    labels[:prompt_tokens] = [IGNORE_INDEX] * prompt_tokens
    n = len(keep)
    i = 0
    while i < n:
        if keep[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and not keep[j + 1]:  # one range for a run of masked sentences
            j += 1
        a = response_start if i == 0 else sentence_ends[i - 1]
        b = response_end if j == n - 1 else sentence_ends[j]
        if b > a:
            first = max(bisect_right(ends, a), prompt_tokens)
            last = bisect_left(starts, b)  # one past the last token starting before b
            for t in range(first, last):
                if (starts[t] < a or ends[t] > b) and not _straddler_is_masked(
                        text, starts[t], ends[t], response_start, response_end, sentence_ends, keep):
                    continue  # crosses the run's border and its content is kept
                labels[t] = IGNORE_INDEX
        i = j + 1
    return labels, prompt_tokens


def _straddler_is_masked(text: str, start: int, end: int, response_start: int, response_end: int,
                         sentence_ends: Sequence[int], keep: Sequence[bool]) -> bool:
    """Whether a token crossing a sentence border is masked.

    Its non-whitespace content characters decide: masked when one of them
    belongs to a masked sentence (``"!\\n\\n"`` after a kept sentence stays
    kept although the newlines belong to the next sentence; Chinese ``"。他"``
    joining a kept and a masked sentence is masked). A whitespace-only token
    goes with the sentence that owns its characters (the next one).
    """
    from bisect import bisect_right

    lo, hi = max(start, response_start), min(end, response_end)
    chars = range(lo, hi)
    deciding = [c for c in chars if not text[c].isspace()] or chars
    last = len(keep) - 1
    return any(not keep[min(bisect_right(sentence_ends, c), last)] for c in deciding)


def _side_inputs(pair: Pair, side: str, mask: str) -> tuple[str, list[tuple[int, int]], list[bool]]:
    item: PairItem = getattr(pair, f"{side}_item")
    response: str = getattr(pair, side)
    if mask == "none":  # vanilla DPO: sentences play no part
        return response, [], []
    # Checked even on a side whose sentences are all kept: bad data is reported, not hidden.
    spans = item_spans(pair.id, side, response, item)
    if not spans:
        raise AlignmentError(pair.id, f"{side}_item has no sentences")
    return response, spans, keep_flags(item, side, mask)


def _truncate(ids: list[int], labels: list[int], prompt_tokens: int, max_length: int | None,
              content_tokens: int | None = None) -> MaskedSequence:
    if max_length is not None and len(ids) > max_length:
        return MaskedSequence(ids[:max_length], labels[:max_length], True, min(prompt_tokens, max_length),
                              None if content_tokens is None else min(content_tokens, max_length))
    return MaskedSequence(ids, labels, False, prompt_tokens, content_tokens)


class NotAFastTokenizer(TypeError, ValueError):
    """A tokenizer without an offset mapping: exact alignment is impossible. A TypeError (the object is of
    the wrong kind) and a ValueError (bad input, reported by the commands as one ``Error:`` line)."""


def check_chat_tokenizer(tokenizer: Any) -> None:
    """The tokenizer can be aligned exactly (a fast one: offset mapping) and renders chats (a chat template)."""
    if not getattr(tokenizer, "is_fast", False):
        raise NotAFastTokenizer(f"{type(tokenizer).__name__} is not a fast tokenizer: exact alignment needs the "
                                f"offset mapping (load it with AutoTokenizer.from_pretrained(..., use_fast=True))")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template")


def encode_pairs(tokenizer: Any, pairs: Iterable[Pair], *, max_length: int | None = None,
                 mask: str = "both", batch_size: int = 256) -> list[MaskedPair]:
    """:func:`encode_pair` for many pairs: one template call and one tokenizer call per ``batch_size`` pairs."""
    check_mask_mode(mask)
    check_chat_tokenizer(tokenizer)
    if max_length is not None and max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    out: list[MaskedPair] = []
    batch: list[Pair] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == batch_size:
            out.extend(_encode_batch(tokenizer, batch, max_length, mask))
            batch = []
    if batch:
        out.extend(_encode_batch(tokenizer, batch, max_length, mask))
    return out


def _encode_batch(tokenizer: Any, pairs: list[Pair], max_length: int | None, mask: str) -> list[MaskedPair]:
    sides = []  # (pair, response, spans, keep), chosen then rejected for each pair
    for pair in pairs:
        for side in ("chosen", "rejected"):
            sides.append((pair, *_side_inputs(pair, side, mask)))
    # Rendered exactly as XTuner's preference dataset renders (add_generation_prompt=False), in one batched call.
    texts = tokenizer.apply_chat_template([p.prompt + [{"role": "assistant", "content": r}] for p, r, _, _ in sides],
                                          tokenize=False, add_generation_prompt=False)
    suffix = template_suffix(tokenizer)
    plans: list[tuple[Rendered, list[int], list[bool]]] = []
    for text, (pair, response, spans, keep) in zip(texts, sides):
        rendered = locate_response(tokenizer, pair.prompt, text, response, pair.id, suffix)
        # Sentence ends in rendered-text coordinates (clipped to what the template kept).
        ends = [min(max(rendered.start, rendered.start + end - rendered.shift), rendered.end) for _, end in spans]
        plans.append((rendered, ends, keep))
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
    sequences = []
    for ids, offsets, (rendered, ends, keep) in zip(enc["input_ids"], enc["offset_mapping"], plans):
        labels, prompt_tokens = token_labels(ids, offsets, rendered.start, rendered.end, ends, keep,
                                             rendered.text)
        # Tokens starting before the template's suffix (offsets are monotone: token_labels checked).
        content_tokens = bisect_left(offsets, rendered.end, key=itemgetter(0))
        sequences.append(_truncate(list(ids), labels, prompt_tokens, max_length, content_tokens))
    return [MaskedPair(pair.id, sequences[2 * i], sequences[2 * i + 1]) for i, pair in enumerate(pairs)]


def encode_pair(tokenizer: Any, pair: Pair, *, max_length: int | None = None, mask: str = "both") -> MaskedPair:
    """Tokenize a pair's chosen and rejected sides with Mask-DPO labels (see the module docstring)."""
    return encode_pairs(tokenizer, [pair], max_length=max_length, mask=mask)[0]


# ---------------------------------------------------------------- inspection


def response_pieces(tokenizer: Any, seq: MaskedSequence) -> list[tuple[str, bool]]:
    """The response tokens (after the prompt) as ``(decoded text, kept)`` runs, in order."""
    runs: list[tuple[list[int], bool]] = []
    for tid, label in zip(seq.input_ids[seq.prompt_tokens:], seq.labels[seq.prompt_tokens:]):
        kept = label != IGNORE_INDEX
        if runs and runs[-1][1] == kept:
            runs[-1][0].append(tid)
        else:
            runs.append(([tid], kept))
    return [(tokenizer.decode(ids, skip_special_tokens=False), kept) for ids, kept in runs]


def kept_and_masked_text(tokenizer: Any, seq: MaskedSequence) -> dict[str, str]:
    """``kept_text``: the decoded kept response tokens in order; ``masked_text``: the masked ones."""
    response_ids = seq.input_ids[seq.prompt_tokens:]
    response_labels = seq.labels[seq.prompt_tokens:]
    kept = [t for t, label in zip(response_ids, response_labels) if label != IGNORE_INDEX]
    masked = [t for t, label in zip(response_ids, response_labels) if label == IGNORE_INDEX]
    return {"kept_text": tokenizer.decode(kept, skip_special_tokens=False),
            "masked_text": tokenizer.decode(masked, skip_special_tokens=False)}


def side_report(tokenizer: Any, seq: MaskedSequence) -> dict:
    """One side as the loss sees it: kept/masked response text and token counts, and whether it was cut."""
    response_labels = seq.labels[seq.prompt_tokens:]
    kept = sum(1 for label in response_labels if label != IGNORE_INDEX)
    return {**kept_and_masked_text(tokenizer, seq), "kept_tokens": kept,
            "masked_tokens": len(response_labels) - kept, "truncated": seq.truncated}


# ---------------------------------------------------------------- the masks stage


def encode_pairs_or_errors(tokenizer: Any, pairs: list[Pair], *, max_length: int | None = None,
                           mask: str = "both") -> list[tuple[MaskedPair | None, ValueError | None]]:
    """``(masked pair, None)`` or ``(None, the error)`` per pair: one batched :func:`encode_pairs` call,
    and where a pair of the batch fails, the batch again pair by pair, so each bad pair is named."""
    try:
        return [(masked, None) for masked in encode_pairs(tokenizer, pairs, max_length=max_length, mask=mask)]
    except ValueError:
        pass
    out: list[tuple[MaskedPair | None, ValueError | None]] = []
    for pair in pairs:
        try:
            out.append((encode_pair(tokenizer, pair, max_length=max_length, mask=mask), None))
        except ValueError as exc:
            out.append((None, exc))
    return out


def load_chat_tokenizer(name: str) -> Any:
    """A fast tokenizer with a chat template, from a local folder or a hub name (offline when HF_HUB_OFFLINE=1).

    Exact alignment needs the offset mapping (a fast tokenizer) and the
    conversation is rendered by the chat template; either missing is an error
    naming the tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, use_fast=True)
    except (OSError, ValueError, TypeError) as exc:
        raise OSError(f"cannot load tokenizer {name!r}: {exc}") from None
    check_chat_tokenizer(tok)
    return tok


@dataclass
class MaskView:
    """One pair as the loss sees it."""

    pair: Pair
    masked: MaskedPair


@dataclass
class MaskViews:
    """The pairs of a file that can be shown, encoded, and the tokenizer that decodes them
    (None when no pair was left to show: nothing was loaded)."""

    tokenizer: Any
    views: list[MaskView]

    @property
    def truncated(self) -> int:
        return sum(view.masked.truncated for view in self.views)

    def report(self, view: MaskView) -> dict:
        """``masks --json``'s record: the pair id and, per side, :func:`side_report`."""
        return {"id": view.pair.id, "chosen": side_report(self.tokenizer, view.masked.chosen),
                "rejected": side_report(self.tokenizer, view.masked.rejected)}

    def line(self) -> str:
        return f"{len(self.views)} pairs, {self.truncated} truncated"


# Pairs per tokenizer call; a chunk with a bad pair is redone one pair at a time to name it.
VIEW_CHUNK = 256


def view_masks(pairs_path: str | _os.PathLike, tokenizer: str, *, max_length: int | None = None, mask: str = "both",
               limit: int | None = None, skip_invalid: bool = False, allow_empty: bool = False,
               stats: Any = None) -> MaskViews:
    """Read, check and encode a pair file as training would, for showing its masks.

    A pair that carries no signal on a side (no kept sentence, or no kept token
    besides the end-of-turn token), is inverted, repeats another pair's id or
    cannot be aligned is an error naming file and line (with ``skip_invalid``:
    skipped and counted in ``stats``, a :class:`maskdpo.jsonl.ReadStats`).
    ``limit`` keeps the first usable pairs. The tokenizer loads only after the
    sentence-level checks, so bad data fails without loading anything.
    """
    from tqdm import tqdm

    from .jsonl import ReadStats, RecordError
    from .validate import read_pair_records, skip_line, token_signal_problem, validate_pair

    check_mask_mode(mask)
    stats = stats if stats is not None else ReadStats()
    located = read_pair_records(pairs_path, skip_invalid=skip_invalid, allow_empty=allow_empty, stats=stats)
    usable = []
    for lineno, pair in located:
        problem = validate_pair(pair, mask)
        if problem:
            skip_line(RecordError(pairs_path, lineno, None, f"pair {pair.id!r}: {problem}"), skip_invalid, stats)
            continue
        usable.append((lineno, pair))
    if limit is not None:
        usable = usable[:limit]
    if not usable:  # nothing to show (an allowed empty file, or everything skipped): nothing to load
        return MaskViews(None, [])
    tok = load_chat_tokenizer(tokenizer)
    views = []
    with tqdm(total=len(usable), desc="Tokenizing pairs", unit="pair", disable=len(usable) < 2000) as bar:
        for start in range(0, len(usable), VIEW_CHUNK):
            chunk = usable[start:start + VIEW_CHUNK]
            encoded = encode_pairs_or_errors(tok, [p for _, p in chunk], max_length=max_length, mask=mask)
            for (lineno, pair), (masked, error) in zip(chunk, encoded):
                problem = str(error) if error is not None else token_signal_problem(masked)
                if problem:
                    prefix = "" if problem.startswith("pair ") else f"pair {pair.id!r}: "
                    skip_line(RecordError(pairs_path, lineno, None, prefix + problem), skip_invalid, stats)
                    continue
                views.append(MaskView(pair, masked))
            bar.update(len(chunk))
    return MaskViews(tok, views)
