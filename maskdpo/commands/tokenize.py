"""``maskdpo tokenize``: tokenize pair files once into the memory-mapped cache training reads.

The options and the printing; the cache (:func:`maskdpo.xtuner.dataset.prepare_tokenized`), a config's
training data and the description of a cache live in :mod:`maskdpo.xtuner.dataset`."""

from __future__ import annotations

from pathlib import Path

import click

from ..masking import MASK_MODES
from . import reports_errors


@click.command("tokenize")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="XTuner config (xtuner_configs/...): tokenize its train_dataset's pairs with its tokenizer, "
                   "max_length and mask, exactly as training will.")
@click.option("--cfg-options", "cfg_options", multiple=True, metavar="KEY=VALUE",
              help="Override config entries, as `xtuner train --cfg-options` (repeatable).")
@click.option("--pairs", "pairs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pair JSONL file(s) (ours or the authors' format), instead of --config (repeatable).")
@click.option("--tokenizer", help="Tokenizer name or folder (with --pairs).")
@click.option("--max-length", type=int, help="Longest prompt + response in tokens (with --pairs).")
@click.option("--mask", "masks", multiple=True, type=click.Choice(MASK_MODES),
              help="Mask mode(s) to compute labels for; repeat to build several (they share the ids). "
                   "Default: the config's, or both.")
@click.option("--num-proc", type=int, default=1, show_default=True, help="Tokenizer processes.")
@click.option("--skip-invalid", is_flag=True, help="Count bad records and unusable pairs instead of stopping at "
                                                   "the first (the cache keeps every line's status either way).")
@click.option("--allow-empty", is_flag=True,
              help="Accept a pair file with no pair (otherwise an error); with no pair in any file, nothing is "
                   "tokenized and no cache is written.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Root of the tokenized caches (default: $MASKDPO_TOKENIZED_CACHE or ~/.cache/maskdpo/tokenized; "
                   "with --config, the config's cache_dir when it sets one). Use a folder every node can read.")
@reports_errors
def tokenize(config, cfg_options, pairs, tokenizer, max_length, masks, num_proc, skip_invalid, allow_empty,
             cache_dir) -> None:
    """Tokenize training pairs ahead of training (e.g. on a CPU node) into Arrow files keyed by the
    pairs' content, the tokenizer, its chat template and max_length. Training with the same settings
    opens them instead of tokenizing; so does `maskdpo ref-cache`. Point MASKDPO_PAIRS (or the config's
    data_files) at the printed folder to train from it directly.
    """
    from ..xtuner.dataset import run_tokenize

    if bool(config) == bool(pairs):
        raise click.UsageError("give --config or --pairs (with --tokenizer and --max-length)")
    if num_proc < 1:
        raise click.BadParameter(f"must be at least 1, got {num_proc}", param_hint="--num-proc")
    if pairs and (not tokenizer or not max_length):
        raise click.UsageError("--pairs needs --tokenizer and --max-length")
    for line in run_tokenize(config=config, cfg_options=cfg_options, pairs=pairs, tokenizer=tokenizer,
                             max_length=max_length, masks=masks, num_proc=num_proc, skip_invalid=skip_invalid,
                             allow_empty=allow_empty, cache_dir=cache_dir):
        click.echo(line)
