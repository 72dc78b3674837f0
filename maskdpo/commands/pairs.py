"""``maskdpo pairs``: a thin shell over :func:`maskdpo.pairs.run_pairs`."""

from __future__ import annotations

from pathlib import Path

import click

from ..settings import click_options, settings_from_options
from ..pairs import PairSettings, PairsRunSettings, run_pairs
from . import report_skipped, reports_errors


@click.command("pairs")
@click.option("--annotations", "annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Annotated samples (JSONL, maskdpo/annotation@1; see data/README.md).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the pairs (JSONL). The effective settings and counts go next to it "
                   "(<name>.settings.json).")
@click_options(PairSettings)
@click.option("--skip-invalid", is_flag=True, help="Skip and count malformed annotation lines instead of stopping.")
@click.option("--allow-empty", is_flag=True, help="Accept an annotations file with no record (otherwise an error).")
@click.option("--authors-format", is_flag=True,
              help="Write the authors' released format exactly (no spans, ids or scores) instead of ours.")
@reports_errors
def pairs(annotations: Path, out: Path, skip_invalid: bool, allow_empty: bool, authors_format: bool, **options) -> None:
    """Build one chosen/rejected pair per question from annotated samples.

    Each sample is scored by its fraction of correct sentences (label policy:
    see --nofact-correct); the best sample is chosen, the worst rejected, ties
    broken by sample index. Questions without a useful pair are dropped and
    counted by reason.
    """
    from ..jsonl import ReadStats

    settings = settings_from_options(PairsRunSettings, {**options, "annotations": annotations, "out": out,
                                                         "authors_format": authors_format,
                                                         "skip_invalid": skip_invalid, "allow_empty": allow_empty})
    read = ReadStats()
    summary = run_pairs(settings, read_stats=read)
    click.echo(summary.read_line)
    report_skipped(read, err=False)
    click.echo(summary.line())
