"""``maskdpo protocol``: the official ANAH-v2 judge protocol files in the local cache (see :mod:`maskdpo.protocol`)."""

from __future__ import annotations

from pathlib import Path

import click

from . import reports_errors

_CONTEXT = {"max_content_width": 100}


@click.group("protocol", context_settings=_CONTEXT)
def protocol_command() -> None:
    """The official ANAH-v2 judge protocol files: fetch, add, list.

    The judge is fine-tuned on one exact protocol. Its prompt functions (ANAH's
    eval/anah_v2/anahv2_prompt.py) and InternLM's default system message
    (LMDeploy 0.5.2's lmdeploy/model.py) and its splitter's sentence rewrites
    (ANAH's eval/anah_v2/utils.py) are downloaded at pinned commits,
    checked by sha256, and kept in $MASKDPO_CACHE/protocol/<sha256>
    (default ~/.cache/maskdpo). `maskdpo annotate --prompts official` reads them
    from there (and fetches them on first use).
    """


@protocol_command.command("fetch", context_settings=_CONTEXT)
@click.option("--base-url", default=None, help="Download from this mirror of raw.githubusercontent.com "
                                               "(default: $MASKDPO_PROTOCOL_BASE_URL or GitHub).")
@reports_errors
def fetch_command(base_url: str | None) -> None:
    """Download the pinned files that are not cached yet and check their sha256."""
    from .. import protocol

    rows = protocol.fetch(base_url)
    for pin, path, downloaded in rows:
        state = "downloaded" if downloaded else "cached    "
        click.echo(f"{state} {pin.kind:<13} {pin.label}  sha256 {pin.sha256}  {path}")


@protocol_command.command("add", context_settings=_CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@reports_errors
def add_command(files: tuple[Path, ...]) -> None:
    """Add local copies of the pinned files (e.g. from clones at the pinned commits); hashes are checked."""
    from .. import protocol

    for file in files:
        pin, path = protocol.add(file)
        click.echo(f"added {file} as the {pin.kind} file {pin.label} (sha256 {pin.sha256}): {path}")


@protocol_command.command("list", context_settings=_CONTEXT)
@reports_errors
def list_command() -> None:
    """Show the pinned files and whether each is cached (and any unknown file in the cache)."""
    from .. import protocol

    rows = protocol.listing()
    click.echo(f"protocol cache: {protocol.cache_dir()}")
    for row in rows:
        click.echo(f"{row['status']:<8} {row['kind']:<13} {row['source']}  sha256 {row['sha256']}")
