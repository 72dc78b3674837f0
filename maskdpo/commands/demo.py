"""``maskdpo demo``: the whole method on the CPU toy world (see docs/toyworld.md)."""

from __future__ import annotations

import click

from ..settings import click_options, settings_from_options
from ..toyworld.demo import DemoSettings
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
    from ..toyworld.demo import run_demo

    settings = settings_from_options(DemoSettings, options)
    try:
        if settings.study == "topics":
            from ..toyworld.study import run_topic_study

            paths = run_topic_study(settings)
        elif settings.study == "mask":
            from ..toyworld.study import run_mask_study

            paths = run_mask_study(settings)
        else:
            paths = run_demo(settings)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("")
    click.echo(paths["markdown"].read_text(encoding="utf-8"))
    click.echo("Outputs:")
    for name in ("markdown", "json", "png"):
        click.echo(f"  {paths[name]}")
    if settings.study == "topics":
        click.echo(f"  {paths['markdown'].parent}/seed-*/study-topics/ (subsets, models, evaluation)")
    elif settings.study == "mask":
        click.echo(f"  {paths['markdown'].parent}/seed-*/train/ (one model per mask), seed-*/eval/")
    else:
        click.echo(f"  {paths['markdown'].parent}/table1-train.*, table1-test.* (Table-1 files), seed-*/ (every stage)")
