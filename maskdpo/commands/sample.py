"""``maskdpo sample``: a thin shell over :func:`maskdpo.sample.run_sampling`."""

from __future__ import annotations

import click

from ..sample import SampleSettings, run_sampling
from ..settings import click_options, settings_from_options
from . import report_skipped, reports_errors


@click.command("sample", context_settings={"max_content_width": 100})
@click_options(SampleSettings)
@reports_errors
def sample(**options: object) -> None:
    """Sample n responses per question from the policy model (on-policy data for Mask-DPO).

    Writes one sample record per (question, sample index) as it goes; rerun
    the same command after an interruption to resume. Split a large set over
    N GPUs or servers with --shard 0/N ... N-1/N and concatenate the outputs.
    Paper decoding: top-k 40, temperature 0.8, top-p 1.0.
    """
    from ..jsonl import ReadStats

    settings = settings_from_options(SampleSettings, options)
    stats = ReadStats()
    summary = run_sampling(settings, read_stats=stats)
    report_skipped(stats)
    click.echo(summary.line())
