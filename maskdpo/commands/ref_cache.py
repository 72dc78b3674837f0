"""``maskdpo ref-cache``: a thin shell over :func:`maskdpo.xtuner.ref_cache.run_ref_cache`."""

from __future__ import annotations

import click

from ..settings import click_options, settings_from_options
from ..xtuner.ref_cache import RefCacheSettings
from . import reports_errors


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
    from ..xtuner.ref_cache import run_ref_cache

    settings = settings_from_options(RefCacheSettings, options)
    click.echo(run_ref_cache(settings, cfg_options).line())
