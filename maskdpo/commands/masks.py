"""``maskdpo masks``: show which response tokens the loss sees for each pair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..masking import MASK_MODES


def load_tokenizer(name: str):
    """A fast tokenizer from a local folder or a hub name (offline when HF_HUB_OFFLINE=1)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, use_fast=True)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load tokenizer {name!r}: {exc}") from None


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
@click.option("--skip-invalid", is_flag=True, help="Skip and count malformed pair lines instead of stopping.")
def masks(pairs_path: Path, tokenizer: str, max_length: int | None, mask: str, as_json: bool, limit: int | None,
          skip_invalid: bool) -> None:
    """Show, for each pair, the response text as the loss sees it.

    Kept tokens are green, masked tokens red and struck through ([-like this-]
    without a terminal). The prompt is never shown (it is always masked); what
    the chat template adds after the response (the end-of-turn token) is kept.
    """
    from tqdm import tqdm

    from ..jsonl import ReadStats, RecordError, iter_jsonl
    from ..masking import AlignmentError, encode_pairs
    from ..records import parse_pair

    tok = load_tokenizer(tokenizer)
    stats = ReadStats()
    try:
        records, lines = [], {}
        for lineno, pair in iter_jsonl(pairs_path, parse_pair, skip_invalid=skip_invalid, stats=stats,
                                       with_lines=True):
            if limit is not None and len(records) >= limit:
                break
            records.append(pair)
            lines.setdefault(pair.id, lineno)
        encoded = []
        with tqdm(total=len(records), desc="Tokenizing pairs", unit="pair", disable=len(records) < 2000) as bar:
            for start in range(0, len(records), 256):
                encoded.extend(encode_pairs(tok, records[start:start + 256], max_length=max_length, mask=mask))
                bar.update(len(records[start:start + 256]))
    except AlignmentError as exc:
        raise click.ClickException(f"{pairs_path}:{lines.get(exc.pair_id, '?')}: {exc}") from None
    except (RecordError, TypeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    colour = sys.stdout.isatty()
    for pair, mp in zip(records, encoded):
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
    truncated = sum(mp.truncated for mp in encoded)
    click.echo(f"{len(encoded)} pairs, {truncated} truncated", err=True)
    if stats.skipped:
        click.echo(stats.summary(pairs_path), err=True)
