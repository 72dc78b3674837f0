"""``maskdpo masks``: show which response tokens the loss sees for each pair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..masking import MASK_MODES
from . import report_skipped, reports_errors


def load_tokenizer(name: str):
    """A fast tokenizer from a local folder or a hub name (offline when HF_HUB_OFFLINE=1)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, use_fast=True)
    except (OSError, ValueError, TypeError) as exc:
        raise click.ClickException(f"cannot load tokenizer {name!r}: {exc}") from None
    if not getattr(tok, "is_fast", False):
        raise click.ClickException(f"tokenizer {name!r} is not a fast tokenizer: exact alignment needs the offset mapping")
    if not getattr(tok, "chat_template", None):
        raise click.ClickException(f"tokenizer {name!r} has no chat template")
    return tok


def side_report(tokenizer, seq) -> dict:
    from ..masking import kept_and_masked_text

    response_labels = seq.labels[seq.prompt_tokens:]
    kept = sum(1 for label in response_labels if label != -100)
    return {**kept_and_masked_text(tokenizer, seq), "kept_tokens": kept,
            "masked_tokens": len(response_labels) - kept, "truncated": seq.truncated}


def styled(tokenizer, seq, colour: bool) -> str:
    from ..masking import response_pieces

    out = []
    for text, kept in response_pieces(tokenizer, seq):
        if colour:
            out.append(click.style(text, fg="green") if kept else click.style(text, fg="red", strikethrough=True))
        else:  # no terminal: mark masked runs so the view still says what is masked
            out.append(text if kept else f"[-{text}-]")
    return "".join(out)


@click.command("masks")
@click.option("--pairs", "pairs_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Pairs (JSONL): ours or the authors' format (sentences are then located in the responses).")
@click.option("--tokenizer", required=True, help="Tokenizer or model folder, or a hub name; it must have a chat template.")
@click.option("--max-length", type=int, default=None, help="Cut each sequence to this many tokens (as training does).")
@click.option("--mask", type=click.Choice(MASK_MODES), default="both", show_default=True,
              help="both = Mask-DPO; chosen / rejected = mask one side only; none = vanilla DPO.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per pair: for chosen and rejected, kept_text and masked_text "
                   "(the decoded kept / masked response tokens, in order) and token counts.")
@click.option("--limit", type=int, default=None, help="Show only the first N pairs.")
@click.option("--skip-invalid", is_flag=True,
              help="Skip and count malformed pair lines (and pairs that carry no signal or cannot be aligned) "
                   "instead of stopping.")
@click.option("--allow-empty", is_flag=True, help="Accept a pair file with no pair (otherwise an error).")
@reports_errors
def masks(pairs_path: Path, tokenizer: str, max_length: int | None, mask: str, as_json: bool, limit: int | None,
          skip_invalid: bool, allow_empty: bool) -> None:
    """Show, for each pair, the response text as the loss sees it.

    Kept tokens are green, masked tokens red and struck through ([-like this-]
    without a terminal). The prompt is never shown (it is always masked); what
    the chat template adds after the response (the end-of-turn token) is kept.
    A pair is refused, naming its line, when it carries no signal on a side
    (no kept sentence, or no kept token besides the end-of-turn token), is
    inverted, or repeats another pair's id.
    """
    from tqdm import tqdm

    from ..jsonl import ReadStats, RecordError
    from ..masking import encode_pairs
    from ..validate import read_pair_records, skip_line, token_signal_problem, validate_pair

    stats = ReadStats()
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
        click.echo("0 pairs, 0 truncated", err=True)
        report_skipped(stats)
        return
    tok = load_tokenizer(tokenizer)  # after the cheap checks: bad data fails without loading anything
    shown = []
    with tqdm(total=len(usable), desc="Tokenizing pairs", unit="pair", disable=len(usable) < 2000) as bar:
        for start in range(0, len(usable), 256):
            chunk = usable[start:start + 256]
            try:
                encoded = encode_pairs(tok, [p for _, p in chunk], max_length=max_length, mask=mask)
            except ValueError:  # find the bad pair(s): one at a time
                encoded = None
            for i, (lineno, pair) in enumerate(chunk):
                try:
                    mp = encoded[i] if encoded is not None else encode_pairs(tok, [pair], max_length=max_length,
                                                                            mask=mask)[0]
                    problem = token_signal_problem(mp)
                except ValueError as exc:
                    mp, problem = None, str(exc)
                if problem:
                    prefix = "" if problem.startswith("pair ") else f"pair {pair.id!r}: "
                    skip_line(RecordError(pairs_path, lineno, None, prefix + problem), skip_invalid, stats)
                    continue
                shown.append((pair, mp))
            bar.update(len(chunk))
    colour = sys.stdout.isatty()
    for pair, mp in shown:
        if as_json:
            click.echo(json.dumps({"id": pair.id, "chosen": side_report(tok, mp.chosen),
                                   "rejected": side_report(tok, mp.rejected)}, ensure_ascii=False))
            continue
        click.echo(click.style(f"== pair {pair.id}", bold=True))
        for side in ("chosen", "rejected"):
            seq = getattr(mp, side)
            report = side_report(tok, seq)
            note = ", truncated" if seq.truncated else ""
            click.echo(click.style(f"-- {side}: {report['kept_tokens']} kept, {report['masked_tokens']} masked{note}",
                                   bold=True))
            click.echo(styled(tok, seq, colour))
    truncated = sum(mp.truncated for _, mp in shown)
    click.echo(f"{len(shown)} pairs, {truncated} truncated", err=True)
    report_skipped(stats)
