"""``maskdpo annotate``: a thin shell over :func:`maskdpo.annotate.run.run_annotation`."""

from __future__ import annotations

import click

from ..annotate.run import AnnotateSettings, run_annotation
from ..settings import click_options, settings_from_options
from . import report_skipped, reports_errors


@click.command("annotate", context_settings={"max_content_width": 100})
@click_options(AnnotateSettings)
@reports_errors
def annotate(**options: object) -> None:
    """Split every sample's response into sentences and label each one.

    With --annotator anah-v2 (default) the ANAH-v2 judge runs its three-turn
    protocol per sentence (facts? → reference points → hallucination type),
    greedily, each turn batched over all pending sentences. By default
    (--prompts official) this is the official protocol, exactly: ANAH-v2's own
    prompt functions and system message (fetched at pinned commits into the
    protocol cache; see `maskdpo protocol`), its answer matching, and its
    sentence splitter (--splitter anah-v2). Labels: ok, nofact,
    contradictory, unverifiable; a judge answer the protocol cannot read
    becomes --unparseable and is counted in the summary. Every record names
    the protocol, the prompts' sha256 and the splitter. Resumable and
    shardable like `maskdpo sample`.
    """
    from ..jsonl import ReadStats

    settings = settings_from_options(AnnotateSettings, options)
    stats = ReadStats()
    summary = run_annotation(settings, read_stats=stats)
    report_skipped(stats)
    click.echo(summary.line())
