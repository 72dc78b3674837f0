"""``maskdpo demo``: the whole method on the CPU toy world (see docs/toyworld.md)."""

from __future__ import annotations

import click

from ..settings import click_options, settings_from_options
from ..toyworld.demo import DemoSettings, run_demo
from ..toyworld.report import printed_summary
from . import reports_errors


@click.command("demo")
@click_options(DemoSettings)
@reports_errors
def demo(**options) -> None:
    """Run the whole Mask-DPO pipeline on a generated knowledge world, on the CPU.

    Generates the world, trains a tiny base policy, samples n answers per
    training question (hf backend, top-k 40, T 0.8), labels every sentence
    with the knowledge-base oracle, builds best-vs-worst pairs, trains
    Mask-DPO and plain DPO on the same pairs through the XTuner plugin,
    converts both, and scores base / DPO / Mask-DPO on fresh samples of the
    training questions and on held-out people. Writes report.md/json/png
    into --out and prints the table. A rerun with the same --out resumes.

    --study topics instead trains Mask-DPO only, on equal-size pair subsets
    drawn from 1/3, 2/3 and all of the families (the paper's Table 4: more
    topics vs more questions per topic), and writes study-topics.md/json/png.
    It reuses the demo's world, base policy and pairs when --out has them.

    --study mask trains the same pairs with the mask on both sides, the
    chosen side only, the rejected side only and neither, and writes
    study-mask.md/json/png (it reuses the demo's Mask-DPO and DPO runs).

    --world rich (default) or simple picks the world (docs/toyworld.md).
    """
    settings = settings_from_options(DemoSettings, options)
    for line in printed_summary(settings, run_demo(settings)):
        click.echo(line)
