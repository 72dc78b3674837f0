"""``maskdpo pairs``: annotated samples → chosen/rejected pairs with sentence spans."""

from __future__ import annotations

from pathlib import Path

import click

from ..settings import click_options, settings_from_options
from ..pairs import PairSettings
from . import reports_errors


def settings_path(out: Path) -> Path:
    """Where a stage's effective settings go: next to its output (``pairs.jsonl`` → ``pairs.settings.json``)."""
    return out.with_name(out.stem + ".settings.json")


def run_pairs(annotations: Path, out: Path, settings: PairSettings, *, skip_invalid: bool = False,
              authors_format: bool = False, allow_empty: bool = False, echo=click.echo):
    """Read annotations, build pairs, write them and the effective settings; return ``(pairs, stats)``.

    The output location is checked first; the annotations are checked across
    records (a repeated sample, two prompts for one question) with file and line.
    """
    from ..jsonl import ReadStats, write_jsonl
    from ..pairs import build_pairs
    from ..settings import write_settings
    from ..validate import check_output_file, check_same_prompt, read_annotations
    from . import report_skipped

    check_output_file(out)
    check_output_file(settings_path(out), "settings file")
    read = ReadStats()
    located = read_annotations(annotations, skip_invalid=skip_invalid, allow_empty=allow_empty, stats=read)
    located = check_same_prompt(annotations, located, skip_invalid=skip_invalid, stats=read)
    echo(read.summary(annotations))
    report_skipped(read, err=False)
    pairs, stats = build_pairs([a for _, a in located], settings)
    write_jsonl(out, [p.to_authors_dict() if authors_format else p.to_dict() for p in pairs])
    write_settings(settings_path(out), settings, annotations=str(annotations), authors_format=authors_format,
                   invalid_lines_skipped=len(read.skipped), stats=stats.to_dict())
    echo(stats.summary())
    echo(f"wrote {len(pairs)} pairs to {out}")
    return pairs, stats


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
    settings = settings_from_options(PairSettings, options)
    run_pairs(annotations, out, settings, skip_invalid=skip_invalid, authors_format=authors_format,
              allow_empty=allow_empty)
