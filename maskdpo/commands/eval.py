"""``maskdpo eval``: thin shells over :mod:`maskdpo.evaluate`.

``maskdpo eval score`` scores existing annotation / response files;
``maskdpo eval run`` goes from model paths and prompt sets to the report.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..evaluate import EndToEndSettings, ScoreSettings  # light: heavy imports happen inside the stages
from ..settings import click_options, settings_from_options
from . import report_skipped, reports_errors

_CONTEXT = {"max_content_width": 100, "help_option_names": ["-h", "--help"]}


@click.group("eval", context_settings=_CONTEXT)
def eval_command() -> None:
    """Score responses with the ANAH score and FactScore; write Table-1 reports.

    \b
    maskdpo eval score   annotation / response files  → report.md, report.json, report.png
    maskdpo eval run     model paths + prompt sets    → sample, annotate, score, report (resumable)
    """


def _echo_paths(paths: dict) -> None:
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
    click.echo(Path(paths["markdown"]).read_text(encoding="utf-8"))


@eval_command.command("score", context_settings=_CONTEXT)
@click.option("--anah", "anah", multiple=True, metavar="NAME=FILE[,FILE...]",
              help="ANAH score input: a model's annotation JSONL files, one file per run (seed). Repeat per model.")
@click.option("--factscore", "facts", multiple=True, metavar="NAME=FILE[,FILE...]",
              help="FactScore input: a model's response (sample) JSONL files for the Biography prompts, one per run. "
                   "Repeat per model.")
@click.option("--questions", multiple=True, type=click.Path(path_type=Path),
              help="Question files giving each response's topic: FActScore entity list (.txt) or question/ANAH "
                   "files. Optional when samples carry meta.topic.")
@click_options(ScoreSettings)
@click.option("--skip-invalid", is_flag=True, help="Skip and count malformed input lines instead of stopping.")
@click.option("--allow-empty", is_flag=True, help="Accept an input file with no record (otherwise an error).")
@reports_errors
def score(anah: tuple[str, ...], facts: tuple[str, ...], questions: tuple[Path, ...], skip_invalid: bool,
          allow_empty: bool, **options: object) -> None:
    """Compute the ANAH score and/or FactScore of one or several models and write the report.

    \b
    ANAH:      %Score = 100 × (N − #contradictory − #unverifiable) / N over all sentences
               of all responses (nofact correct), truncated to two decimals.
    FactScore: mean over responding generations of supported/facts × exp(1 − γ/|facts|)
               below γ facts; abstentions left out and counted. Judge calls are batched
               and cached (OUT/judge-cache.jsonl), so a rerun pays no call twice.
    """
    from ..evaluate import score_files
    from ..jsonl import ReadStats

    settings = settings_from_options(ScoreSettings, options)
    stats = ReadStats()
    paths = score_files(settings, list(anah), list(facts), list(questions), skip_invalid=skip_invalid,
                        allow_empty=allow_empty, read_stats=stats)
    report_skipped(stats)
    _echo_paths(paths)


@eval_command.command("run", context_settings=_CONTEXT)
@click.option("--model", "models", multiple=True, required=True, metavar="NAME=PATH",
              help="A model to evaluate (path or served name). Repeat per model.")
@click_options(EndToEndSettings)
@reports_errors
def run(models: tuple[str, ...], **options: object) -> None:
    """Evaluate models end to end: sample (greedy by default), annotate, score, report.

    Every step writes as it goes under OUT/<model>/ and is skipped or resumed
    when rerun with the same settings.
    """
    from ..evaluate import run_end_to_end

    settings = settings_from_options(EndToEndSettings, options)
    paths = run_end_to_end(settings, list(models))
    _echo_paths(paths)
