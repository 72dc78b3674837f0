"""``maskdpo ref-cache``: precompute the reference model's masked log-prob sums for a training config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import click

from ..settings import click_options, knob, settings_from_options, write_settings
from . import reports_errors


@dataclass
class RefCacheSettings:
    config: Path = field(metadata={"help": "XTuner config of the training run (xtuner_configs/...): its reference, "
                                           "pairs, tokenizer, max_length and mask are used."})
    out: Path = field(metadata={"help": "Cache file to write (JSONL). An existing file with the same fingerprint "
                                        "is completed (resume); one with another fingerprint is an error."})
    batch_size: int = knob(8, "Pairs per reference forward.")
    device: Optional[str] = knob(None, "Device for the reference (default: cuda when available, else cpu).")
    dtype: Optional[Literal["bfloat16", "float16", "float32"]] = knob(
        None, "Run the reference in this dtype (default: the config's); use the dtype training runs in.")


def _parse_cfg_options(values: tuple[str, ...]) -> dict:
    from mmengine.config import DictAction

    options: dict = {}
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--cfg-options")
        key, raw = value.split("=", 1)
        options[key] = DictAction._parse_iterable(raw)
    return options


@click.command("ref-cache")
@click_options(RefCacheSettings)
@click.option("--cfg-options", "cfg_options", multiple=True, metavar="KEY=VALUE",
              help="Override config entries, as `xtuner train --cfg-options` (repeatable).")
@reports_errors
def ref_cache(cfg_options: tuple[str, ...], **options) -> None:
    """Run the reference model of CONFIG once over its training pairs and store, per pair id, the
    masked chosen/rejected log-prob sums with a fingerprint of model, tokenizer, max_length, mask
    mode and data. Train with it by setting MASKDPO_REF_CACHE=OUT (or --cfg-options
    model.ref_cache=OUT): no reference model is loaded, and a cache that does not match is an error.
    """
    settings = settings_from_options(RefCacheSettings, options)
    if not settings.config.is_file():
        raise click.BadParameter(f"{settings.config}: no such config file", param_hint="--config")
    from ..validate import check_output_file
    from ..xtuner.ref_cache import compute_ref_cache

    check_output_file(settings.out)
    check_output_file(Path(str(settings.out) + ".settings.json"), "settings file")

    cache = compute_ref_cache(settings.config, settings.out, cfg_options=_parse_cfg_options(cfg_options),
                              batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype)
    write_settings(Path(str(settings.out) + ".settings.json"), settings, cfg_options=list(cfg_options))
    click.echo(f"{settings.out}: reference sums for {len(cache.entries)} pairs "
               f"(mask={cache.fingerprint['mask']}, max_length={cache.fingerprint['max_length']})")
