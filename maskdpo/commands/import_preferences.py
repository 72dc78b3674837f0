"""``maskdpo import-preferences``: an existing preference dataset → questions and samples to annotate."""

from __future__ import annotations

from pathlib import Path

import click

from . import reports_errors


@click.command("import-preferences")
@click.argument("source")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for questions.jsonl and samples.jsonl (replaced when the import finishes).")
@click.option("--split", default=None, help="Split of a Hub or folder dataset (default: its only split).")
@click.option("--config", "config_name", default=None, help="Configuration (subset) of a Hub dataset.")
@click.option("--limit", type=int, default=None, help="Import the first N rows only.")
@click.option("--language", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="Language of the questions (the judge's prompts depend on it).")
@click.option("--topic-field", default=None, help="Row field holding each question's topic.")
@click.option("--document-field", default=None,
              help="Row field holding each question's reference document (the ANAH-v2 judge checks against it).")
@click.option("--skip-invalid", is_flag=True, help="Skip and count invalid rows instead of stopping.")
@click.option("--allow-empty", is_flag=True,
              help="Accept a source with no row to import (writes empty files; otherwise an error, and nothing "
                   "is written).")
@reports_errors
def import_preferences_command(source, out_dir, split, config_name, limit, language, topic_field, document_field,
                               skip_invalid, allow_empty) -> None:
    """Turn a preference dataset into maskdpo questions and samples, so its responses can be
    annotated (`maskdpo annotate`) and paired and masked (`maskdpo pairs`).

    SOURCE is a local data file (.jsonl, .json, .parquet, .csv), a local dataset folder, or a Hugging
    Face Hub dataset name. Local JSON (also inside a folder) is read line by line, so a bad record is
    named FILE:LINE; other sources are read with `datasets` (rows named SOURCE[SPLIT] row N). Rows in TRL's preference layouts (prompt/chosen/rejected as strings
    or as chat messages, or chosen/rejected as whole chats with an implicit prompt) and XTuner's DPO
    JSONL are read. Each row becomes one question and two samples: sample 0 the dataset's chosen
    response, sample 1 its rejected one.
    """
    from ..preferences import import_preferences

    stats = import_preferences(source, out_dir, split=split, config=config_name, limit=limit, language=language,
                               topic_field=topic_field, document_field=document_field, skip_invalid=skip_invalid,
                               allow_empty=allow_empty)
    click.echo(stats.summary())
    click.echo(f"wrote {out_dir / 'questions.jsonl'} and {out_dir / 'samples.jsonl'}")
