"""The ``maskdpo`` subcommands, and the one way they report errors.

Each command is a thin shell over one stage's run function: options → the
stage's settings → ``run_<stage>(settings)`` → its summary printed.
:func:`reports_errors` wraps every command so that the project's errors (bad
input, an unwritable output, a model that cannot load, a failed engine call)
end it with a one-line ``Error: ...`` message and exit code 2, never a
traceback. ``maskdpo --debug CMD`` (or ``MASKDPO_TRACEBACK=1``) shows the
traceback instead.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import click

EXIT_ERROR = 2
# What the project raises for bad input, outputs and engines (RecordError, FieldError, EmptyInput and
# OutputError are ValueErrors; missing or unreadable files OSErrors; GenerationError a RuntimeError).
PROJECT_ERRORS = (ValueError, OSError, RuntimeError, LookupError)


class CommandError(click.ClickException):
    """A failed command: ``Error: <message>`` on stderr, exit code 2."""

    exit_code = EXIT_ERROR


def one_line(message: str) -> str:
    """The message on one line (multi-line messages from libraries joined with ' | ')."""
    return " | ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "failed"


def debugging() -> bool:
    """``maskdpo --debug`` was given (or ``MASKDPO_TRACEBACK`` is set): let errors show their traceback."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug"):
        return True
    return bool(os.environ.get("MASKDPO_TRACEBACK"))


def reports_errors(command: Callable) -> Callable:
    """Turn the project's errors raised by ``command`` into :class:`CommandError`."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.ClickException as exc:
            if type(exc) is click.ClickException:  # a plain ClickException exits 1; every failure exits 2
                raise CommandError(one_line(exc.message)) from None
            raise
        except PROJECT_ERRORS as exc:
            if debugging():
                raise
            raise CommandError(one_line(exc)) from None

    wrapper.reports_errors = True  # type: ignore[attr-defined]  # tests check that every command has it
    return wrapper


def report_skipped(stats, err: bool = True) -> None:
    """One line, the same in every command: how many input lines ``--skip-invalid`` skipped, and the first."""
    if stats is not None and stats.skipped:
        click.echo(f"skipped {len(stats.skipped)} invalid input lines (first: {stats.skipped[0]})", err=err)
