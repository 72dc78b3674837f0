"""Every command reports errors one way: ``Error: ...`` and exit code 2; ``maskdpo --debug`` shows the traceback."""

import click
import pytest
from click.testing import CliRunner

from maskdpo.cli import main


def _leaf_commands():
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                yield f"{name} {sub}", cmd.get_command(ctx, sub)
        else:
            yield name, cmd


@pytest.mark.parametrize("name,cmd", list(_leaf_commands()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_command_goes_through_the_error_wrapper(name, cmd):
    assert getattr(cmd.callback, "reports_errors", False), f"maskdpo {name} is not wrapped by reports_errors"


def test_an_error_is_one_line_with_exit_code_2_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("MASKDPO_TRACEBACK", raising=False)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Who?"}\n{"id": "a", "question": "Who?"}\n')
    args = ["sample", "--questions", str(questions), "--out", str(tmp_path / "s.jsonl"), "--model", "m"]
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 2
    assert plain.output.startswith("Error: ") and "Traceback" not in plain.output
    assert f"{questions}:2" in plain.output  # the repeated id, named by file and line
    debug = CliRunner().invoke(main, ["--debug", *args])
    assert debug.exit_code != 2 and isinstance(debug.exception, ValueError)
    assert f"{questions}:2" in str(debug.exception)


def test_the_debug_flag_is_documented():
    assert "--debug" in CliRunner().invoke(main, ["--help"]).output
