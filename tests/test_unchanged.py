"""The CLI and the records stay what they were: a refactor must not change what users see or get.

The golden files in ``tests/data/unchanged/`` were recorded on the tree before the stage plumbing
was reorganised (370509e / 3a90935), by this module (``python -m tests.test_unchanged --write``):

- ``cli.json``: every command's contract — its description and, per option, the flags, type,
  default, whether it is required, a flag or repeatable, and its help text — and every
  ``maskdpo CMD --help`` screen as printed at 100 columns. ``maskdpo --help`` has gained one
  line since: ``--debug``.
- ``pipeline.json``: the records of a small pipeline run through the CLI on a toy world (samples
  from the sampling stage on the LMDeploy test double, oracle annotations, pairs in both formats,
  ``masks --json``, the ANAH report), with this run's temporary folder written as ``<TMP>`` and
  rates dropped.
- ``demo_shape.json``: which JSON / JSONL files a quick demo writes and the fields of their
  records (``tests/test_toyworld_demo.py`` compares a fresh quick demo against it).

Rewrite a golden file only for a change that is meant, and say why in the commit.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

GOLDEN = Path(__file__).parent / "data" / "unchanged"
# Values that differ run to run, not by what the code does.
VOLATILE_KEYS = {"seconds", "wall_seconds", "created", "elapsed"}
RATE = re.compile(r"\b\d+(\.\d+)? (?=samples/s|sentences/s)")


def _option_contract(param: click.Parameter) -> dict:
    entry = {"kind": type(param).__name__, "opts": sorted(param.opts), "secondary_opts": sorted(param.secondary_opts),
             "type": param.type.name if not isinstance(param.type, click.Choice) else sorted(param.type.choices),
             "required": param.required, "multiple": param.multiple,
             "default": None if callable(param.default) else repr(param.default)}
    if isinstance(param, click.Option):
        entry.update(help=param.help, is_flag=param.is_flag, show_default=param.show_default, metavar=param.metavar)
    return entry


def _command_contract(cmd: click.Command, ctx: click.Context) -> dict:
    entry = {"help": cmd.help, "params": {p.name: _option_contract(p) for p in cmd.params}}
    if isinstance(cmd, click.Group):
        entry["commands"] = {name: _command_contract(cmd.get_command(ctx, name), ctx)
                             for name in cmd.list_commands(ctx)}
    return entry


def help_texts() -> dict[str, str]:
    """``maskdpo CMD --help`` as printed (100 columns), for every command and subcommand."""
    from maskdpo.cli import main

    ctx = click.Context(main)
    paths = []
    for name in main.list_commands(ctx):
        paths.append([name])
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            paths += [[name, sub] for sub in cmd.list_commands(ctx)]
    texts = {}
    for path in paths:
        # click keeps a command's help option from its first context: a test that invoked a subcommand
        # on its own leaves it without "-h"; `maskdpo CMD` (what users run) gives it "-h, --help".
        cmd = main
        for name in path:
            cmd = cmd.get_command(ctx, name)
            cmd._help_option = None
        result = CliRunner(env={"COLUMNS": "100"}).invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        texts[" ".join(path)] = result.output
    return texts


def cli_contract() -> dict:
    from maskdpo.cli import main

    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0, top.output
    ctx = click.Context(main)
    return {"maskdpo --help": top.output,
            "commands": {name: _command_contract(main.get_command(ctx, name), ctx)
                         for name in main.list_commands(ctx)}}


# ---------------------------------------------------------------- a small pipeline through the CLI


def _normalise(value, tmp: str, policy: str = "<no policy>"):
    if isinstance(value, dict):
        return {k: _normalise(v, tmp, policy) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normalise(v, tmp, policy) for v in value]
    if isinstance(value, str):
        return RATE.sub("<RATE> ", value.replace(tmp, "<TMP>").replace(policy, "<POLICY>"))
    return value


def _jsonl(path: Path, tmp: str, policy: str = "<no policy>") -> list:
    return [_normalise(json.loads(line), tmp, policy) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _settings_next_to(out: Path, tmp: str, policy: str = "<no policy>") -> dict:
    """The settings file written next to ``out`` (whatever the naming rule), keys and values."""
    found = sorted(out.parent.glob(out.stem + "*.settings.json"))
    assert len(found) == 1, f"expected one settings file next to {out}, found {found}"
    return _normalise(json.loads(found[0].read_text(encoding="utf-8")), tmp, policy)


def _invoke(args: list[str]) -> str:
    from maskdpo.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, f"maskdpo {' '.join(args)}\n{result.output}"
    return result.stdout


def toy_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """A small rich world, its training questions, and samples written from the world's own answer
    generator (pure Python, seeded: the same on every machine)."""
    from maskdpo.jsonl import write_jsonl
    from maskdpo.records import Sample
    from maskdpo.toyworld.rich import RichSettings, generate_rich_world

    world = generate_rich_world(RichSettings(seed=3, regions=2, families_per_region=2, people_per_family=3,
                                             test_per_family=1))
    world_path = world.save(folder / "world.json")
    questions = world.questions_for("train")[:8]
    questions_path = folder / "questions.jsonl"
    write_jsonl(questions_path, [q.to_dict() for q in questions])
    rng = random.Random(7)
    samples = []
    for q in questions:
        person = world.person_for_question(q.id)
        for j in range(4):
            samples.append(Sample(question_id=q.id, sample_index=j,
                                  messages=[{"role": "user", "content": q.question}],
                                  response=world.training_answer(person, rng), model="toy", backend="hf",
                                  generation={"seed": j}, meta={"topic": q.topic, "language": q.language},
                                  finish_reason="stop").to_dict())
    samples_path = folder / "samples.jsonl"
    write_jsonl(samples_path, samples)
    return world_path, questions_path, samples_path


def pipeline_records(folder: Path, monkeypatch, tokenizer_dir: Path, policy_dir: Path) -> dict:
    from .doubles import lmdeploy_double

    tmp = str(folder)
    world, questions, samples = toy_inputs(folder)
    records: dict = {"world": json.loads(world.read_text(encoding="utf-8")), "questions": _jsonl(questions, tmp)}

    # The sampling stage on the LMDeploy test double (the real engine needs CUDA).
    lmdeploy_double.install(monkeypatch)
    sampled = folder / "sampled.jsonl"
    stdout = _invoke(["sample", "--questions", str(questions), "--out", str(sampled), "--model", str(policy_dir),
                      "--backend", "lmdeploy", "--n", "2", "--limit", "3", "--tp", "1", "--engine", "pytorch"])
    records["sample stdout"] = _normalise(stdout, tmp)
    records["samples"] = _jsonl(sampled, tmp, str(policy_dir))
    records["samples settings"] = _settings_next_to(sampled, tmp, str(policy_dir))

    annotations = folder / "annotations.jsonl"
    records["annotate stdout"] = _normalise(_invoke(["annotate", "--samples", str(samples), "--questions", str(questions), "--out", str(annotations),
             "--annotator", "toyworld-oracle", "--annotator-options", json.dumps({"world": str(world)})]), tmp)
    records["annotations"] = _jsonl(annotations, tmp)
    records["annotations settings"] = _settings_next_to(annotations, tmp)

    pairs = folder / "pairs.jsonl"
    records["pairs stdout"] = _normalise(_invoke(["pairs", "--annotations", str(annotations), "--out", str(pairs)]),
                                         tmp)
    records["pairs"] = _jsonl(pairs, tmp)
    records["pairs settings"] = _settings_next_to(pairs, tmp)
    authors = folder / "authors" / "pairs.jsonl"
    _invoke(["pairs", "--annotations", str(annotations), "--out", str(authors), "--authors-format", "--min-gap", "0"])
    records["authors pairs"] = _jsonl(authors, tmp)

    records["masks --json"] = [json.loads(line) for line in _invoke(
        ["masks", "--pairs", str(pairs), "--tokenizer", str(tokenizer_dir), "--mask", "both", "--json"]).splitlines()]

    report = folder / "eval"
    records["eval stdout"] = _normalise(_invoke(["eval", "score", "--anah", f"toy={annotations}", "--metric", "anah",
                                                 "--out", str(report)]), tmp)
    records["eval report.json"] = _normalise(json.loads((report / "report.json").read_text(encoding="utf-8")), tmp)
    records["eval report.md"] = (report / "report.md").read_text(encoding="utf-8")
    return records


# ---------------------------------------------------------------- the demo's outputs, by shape


def _shape(value):
    """A value's structure: dict keys with their shapes, a list as the union of its items' shapes, leaf types."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        shapes = []
        for item in value:
            shape = _shape(item)
            if shape not in shapes:
                shapes.append(shape)
        return {"list of": sorted(shapes, key=json.dumps)}
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def demo_shape(out: Path) -> dict:
    """Every JSON / JSONL file a demo run leaves (the HF model folders and XTuner's work folders aside),
    by path and shape.

    A demo's numbers depend on the CPU's float arithmetic; which files it writes and the fields of
    their records do not.
    """
    shapes = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if "/train/" in f"/{rel}" or path.suffix not in (".json", ".jsonl"):
            continue
        if "/base/" in f"/{rel}" and path.name != "train_log.json":  # the base policy's HF files, not records
            continue
        if path.suffix == ".jsonl":
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            shapes[rel] = _shape(lines)
        else:
            shapes[rel] = _shape(json.loads(path.read_text(encoding="utf-8")))
    return shapes


# ---------------------------------------------------------------- tests


def _golden(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def cli_changes(golden: dict, now: dict) -> list[str]:
    """What differs between two CLI contracts: ``maskdpo --help``, a command's options or help, a help screen."""
    changes = []
    if now["maskdpo --help"] != golden["maskdpo --help"]:
        changes.append("maskdpo --help")
    for name in sorted(set(golden["commands"]) | set(now["commands"])):
        if now["commands"].get(name) != golden["commands"].get(name):
            changes.append(f"maskdpo {name}: options or help")
    for name in sorted(set(golden["help texts"]) | set(now["help texts"])):
        if now["help texts"].get(name) != golden["help texts"].get(name):
            changes.append(f"maskdpo {name} --help")
    return changes


def current_cli() -> dict:
    return {**cli_contract(), "help texts": help_texts()}


def test_every_command_keeps_its_options_defaults_and_help():
    """Options, defaults and help texts, and every ``--help`` screen as printed (the screens were recorded
    from the tree before the stage refactor; ``maskdpo --help`` has gained ``--debug`` since)."""
    assert cli_changes(_golden("cli.json"), current_cli()) == []


def test_the_cli_comparison_sees_a_changed_default_or_help_text(monkeypatch):
    from maskdpo.commands.sample import sample

    golden = _golden("cli.json")
    top_k = next(p for p in sample.params if p.name == "top_k")
    monkeypatch.setattr(top_k, "default", 50)
    assert cli_changes(golden, current_cli()) == ["maskdpo sample: options or help", "maskdpo sample --help"]
    monkeypatch.setattr(top_k, "default", 40)
    monkeypatch.setattr(top_k, "help", "Top-k, reworded.")
    assert cli_changes(golden, current_cli()) == ["maskdpo sample: options or help", "maskdpo sample --help"]
    monkeypatch.setattr(top_k, "help", golden["commands"]["sample"]["params"]["top_k"]["help"])
    assert cli_changes(golden, current_cli()) == []


def test_a_pipeline_run_writes_the_same_records(tmp_path, monkeypatch, smollm2_tokenizer_dir, tiny_llama_dir):
    golden = _golden("pipeline.json")
    now = json.loads(json.dumps(pipeline_records(tmp_path, monkeypatch, smollm2_tokenizer_dir, tiny_llama_dir)))
    assert sorted(now) == sorted(golden)
    for key, value in golden.items():
        assert now[key] == value, f"{key} changed"


def test_the_records_comparison_is_not_vacuous():
    records = _golden("pipeline.json")
    assert records["pairs"] and records["annotations"] and records["samples"] and records["masks --json"]
    assert any(line["chosen_item"]["type"] != line["rejected_item"]["type"] for line in records["pairs"])


def _write(tmp: Path) -> None:
    import pytest as _pytest

    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "cli.json").write_text(json.dumps(current_cli(), indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                                     encoding="utf-8")
    from . import models

    with _pytest.MonkeyPatch.context() as mp:
        records = pipeline_records(tmp, mp, models.smollm2_tokenizer_dir(), models.tiny_llama_dir())
    (GOLDEN / "pipeline.json").write_text(json.dumps(records, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                                          encoding="utf-8")


if __name__ == "__main__":  # python -m tests.test_unchanged --write [--demo OUT]
    import tempfile

    if sys.argv[1:2] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_unchanged --write [--demo OUT_OF_A_QUICK_DEMO]")
    if sys.argv[2:3] == ["--demo"]:
        (GOLDEN / "demo_shape.json").write_text(json.dumps(demo_shape(Path(sys.argv[3])), indent=1, sort_keys=True)
                                                + "\n", encoding="utf-8")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _write(Path(tmp))
