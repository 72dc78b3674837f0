"""``maskdpo masks``: show which response tokens the loss sees for each pair.

A shell over :func:`maskdpo.masking.view_masks` (reading, checks, encoding);
here only the options, the colouring and the printing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..masking import MASK_MODES
from . import report_skipped, reports_errors


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
    from ..jsonl import ReadStats
    from ..masking import side_report, view_masks

    stats = ReadStats()
    result = view_masks(pairs_path, tokenizer, max_length=max_length, mask=mask, limit=limit,
                        skip_invalid=skip_invalid, allow_empty=allow_empty, stats=stats)
    tok = result.tokenizer
    colour = sys.stdout.isatty()
    for view in result.views:
        if as_json:
            click.echo(json.dumps(result.report(view), ensure_ascii=False))
            continue
        click.echo(click.style(f"== pair {view.pair.id}", bold=True))
        for side in ("chosen", "rejected"):
            seq = getattr(view.masked, side)
            report = side_report(tok, seq)
            note = ", truncated" if seq.truncated else ""
            click.echo(click.style(f"-- {side}: {report['kept_tokens']} kept, {report['masked_tokens']} masked{note}",
                                   bold=True))
            click.echo(styled(tok, seq, colour))
    click.echo(result.line(), err=True)
    report_skipped(stats)
