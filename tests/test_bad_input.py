"""Bad input through the real CLI of every command that reads it.

Each case takes a valid example file from ``data/``, breaks it in one way and
runs the command: the run must fail with exit code 2, a one-line message that
names the file and the line (and the field where there is one), no
traceback, and leave no output behind. ``--skip-invalid`` must skip and count
the same lines the same way in every command. Errors come before any model
loads, so the error cases need no model.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskdpo.cli import main
from maskdpo.jsonl import JsonlAppender, RecordError, dump_line, iter_jsonl, write_jsonl
from maskdpo.records import Annotation, Sample, parse_pair
from maskdpo.settings import read_settings, write_settings
from maskdpo.validate import validate_pair

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CONFIG = ROOT / "xtuner_configs" / "maskdpo_tiny_cpu.py"
NOT_UTF8 = b'{"id": "caf\xe9", "question": "\xff?"}'


# ---------------------------------------------------------------- helpers


def data_lines(name: str) -> list[str]:
    if name in DERIVED:
        return DERIVED[name]()
    return (DATA / name).read_text(encoding="utf-8").splitlines()


def preference_lines() -> list[str]:
    """A TRL conversational preference file (XTuner's DPO JSONL) made from ``data/samples.jsonl``: per
    question, its first two samples as chosen and rejected (with UltraFeedback-style scores)."""
    by_question: dict[str, list[dict]] = {}
    for line in data_lines("samples.jsonl"):
        d = json.loads(line)
        by_question.setdefault(d["question_id"], []).append(d)
    rows = [{"prompt": first["messages"], "chosen": [{"role": "assistant", "content": first["response"]}],
             "rejected": [{"role": "assistant", "content": second["response"]}], "score_chosen": 8.0,
             "score_rejected": 3.0}
            for first, second, *_ in by_question.values()]
    return [json.dumps(row, ensure_ascii=False) for row in rows]


DERIVED = {"preferences.jsonl": preference_lines}


def write_lines(path: Path, lines: list[str | bytes], end: bytes = b"\n") -> Path:
    """Write lines as bytes (str lines UTF-8 encoded), each ending with ``end``."""
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + end for x in lines))
    return path


def edit(line: str, change) -> str:
    d = json.loads(line)
    change(d)
    return json.dumps(d, ensure_ascii=False)


def invoke(args: list[str], env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_refused(result, *expected: str) -> str:
    """Exit 2, no traceback, one ``Error:`` line holding every ``expected`` text; returns that line."""
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    return errors[0]


# ---------------------------------------------------------------- the commands and their inputs


def questions_file(tmp: Path) -> Path:
    return write_lines(tmp / "questions.jsonl", data_lines("questions.jsonl"))


def command_args(command: str, tmp: Path, path: Path, tiny: Path) -> tuple[list, list[Path]]:
    """``(args, outputs)`` of ``command`` reading the broken file ``path`` as its main input."""
    if command == "sample":
        out = tmp / "out" / "samples.jsonl"
        return ["sample", "--questions", path, "--out", out, "--model", tiny, "--n", 1], [out.parent]
    if command == "annotate":
        out = tmp / "out" / "annotations.jsonl"
        return (["annotate", "--samples", path, "--questions", questions_file(tmp), "--out", out,
                 "--annotator", "toyworld-oracle", "--annotator-options", '{"world": "no-world.json"}'], [out.parent])
    if command == "pairs":
        out = tmp / "out" / "pairs.jsonl"
        return ["pairs", "--annotations", path, "--out", out], [out.parent]
    if command == "eval score":
        out = tmp / "out"
        return ["eval", "score", "--metric", "anah", "--anah", f"m={path}", "--out", out], [out]
    if command == "masks":  # the tokenizer loads only after the pairs pass; here it never does
        return ["masks", "--pairs", path, "--tokenizer", tmp / "no-tokenizer"], []
    if command == "tokenize":
        # The cache records every line's status (complete for that file's content, by design: training with
        # skip_invalid reuses it); a bad line is reported when it is read. So no output is checked here, but
        # a failed build must leave no folder that looks like a cache (test_tokenize_empty_input_...).
        return ["tokenize", "--pairs", path, "--tokenizer", tiny, "--max-length", 512, "--cache-dir",
                tmp / "cache"], []
    if command == "import-preferences":
        out = tmp / "out"
        return ["import-preferences", path, "--out", out], [out]
    raise AssertionError(command)


INPUT_OF = {"sample": "questions.jsonl", "annotate": "samples.jsonl", "pairs": "annotations.jsonl",
            "eval score": "annotations.jsonl", "masks": "pairs.jsonl", "tokenize": "pairs.jsonl",
            "import-preferences": "preferences.jsonl"}
COMMANDS = list(INPUT_OF)


def _nan_field(name: str):
    def change(d):
        if name == "questions.jsonl":
            d["topic"] = float("nan")
        elif name == "preferences.jsonl":
            d["score_chosen"] = float("nan")
        elif name == "pairs.jsonl":
            d["chosen_score"] = float("nan")
        else:
            d["generation"]["temperature"] = float("nan")
    return change


NAN_FIELD = {"questions.jsonl": "topic", "preferences.jsonl": "score_chosen", "samples.jsonl": "generation.temperature",
             "annotations.jsonl": "generation.temperature", "pairs.jsonl": "chosen_score"}


def line_mutations(name: str) -> dict:
    """Breakages that apply to every input kind: ``name -> (lines, line to name, texts expected)``."""
    lines = data_lines(name)
    n = len(lines)
    return {
        "invalid_json": (lines[:2] + ['{"id": "x", ', *lines[3:]], 3, ["invalid JSON"]),
        "not_utf8": (lines[:2] + [NOT_UTF8, *lines[3:]], 3, ["not valid UTF-8"]),
        "blank_line_before": (lines[:1] + ["", "{oops", *lines[2:]], 3, ["invalid JSON"]),
        "crlf_line_ends": ([x + "\r" for x in lines[:3]] + ["[1, 2]", *lines[4:]], 4, ["expected a JSON object"]),
        "not_an_object": (lines[:1] + ["[1, 2]", *lines[2:]], 2, ["expected a JSON object"]),
        "duplicate": (lines + [lines[0]], n + 1, ["repeats line 1"]),
        "nan": (lines[:1] + [edit_nan(lines[1], name), *lines[2:]], 2,
                [f"field '{NAN_FIELD[name]}'", "not a finite number"]),
        "infinity_literal": (lines[:1] + [edit_nan(lines[1], name).replace("NaN", "-Infinity"), *lines[2:]], 2,
                             ["-Infinity is not a finite number"]),
    }


def edit_nan(line: str, name: str) -> str:
    d = json.loads(line)
    _nan_field(name)(d)
    return json.dumps(d, ensure_ascii=False)  # allow_nan: writes a bare NaN, as a careless tool would


CASES = [(command, mutation) for command in COMMANDS for mutation in line_mutations(INPUT_OF[command])]


@pytest.mark.parametrize("command,mutation", CASES, ids=[f"{c.replace(' ', '-')}:{m}" for c, m in CASES])
def test_broken_line_is_named_with_file_and_line(tmp_path, tiny_llama_dir, command, mutation):
    lines, line, expected = line_mutations(INPUT_OF[command])[mutation]
    path = write_lines(tmp_path / INPUT_OF[command], lines, end=b"\n")
    args, outputs = command_args(command, tmp_path, path, tiny_llama_dir)
    if command == "import-preferences" and mutation == "duplicate":
        # Public preference datasets repeat rows verbatim: the importer writes such a row once and says so
        # (its documented rule), naming both lines, instead of stopping.
        result = invoke(args)
        assert result.exit_code == 0, result.output
        assert f"1 repeated an earlier row and were written once (first: {path}:{line} repeats {path}:1)" \
            in result.output
        return
    if command == "tokenize" and mutation == "duplicate":  # the builder reads several files: it names file and line
        expected = ["repeats the pair at", f"{path}:1;"]
    assert_refused(invoke(args), f"{path}:{line}:", *expected)
    for out in outputs:
        assert not out.exists(), f"{out} left behind"


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_input_is_an_error_unless_allowed(tmp_path, tiny_llama_dir, command):
    path = write_lines(tmp_path / INPUT_OF[command], ["", "   "])
    args, outputs = command_args(command, tmp_path, path, tiny_llama_dir)
    assert_refused(invoke(args), str(path), "--allow-empty")
    for out in outputs:
        assert not out.exists()
    if command in ("pairs", "masks", "tokenize", "import-preferences"):  # cheap: nothing to load for no record
        result = invoke(args + ["--allow-empty"])
        assert result.exit_code == 0, result.output
        assert "Error" not in result.output


# ---------------------------------------------------------------- annotations (pairs, eval score)


def annotation_cases() -> dict:
    lines = data_lines("annotations.jsonl")
    first = json.loads(lines[0])

    def whitespace_sentence(d):
        a, b = d["sentences"][0], d["sentences"][1]
        assert b["start"] > a["end"] and not d["response"][a["end"]:b["start"]].strip()
        d["sentences"].insert(1, {"text": d["response"][a["end"]:b["start"]], "start": a["end"],
                                  "end": b["start"], "label": "ok"})

    def other_prompt(d):
        d["messages"][0]["content"] += " Answer briefly."

    assert json.loads(lines[1])["question_id"] == first["question_id"]
    return {
        "whitespace_sentence": (0, whitespace_sentence, ["field 'sentences[1].text'", "whitespace"]),
        "response_without_sentences": (2, lambda d: d.update(sentences=[]), ["field 'sentences'",
                                                                              "non-empty response"]),
        "unknown_label": (2, lambda d: d["sentences"][0].update(label="maybe"), ["field 'sentences[0].label'"]),
    }, other_prompt


@pytest.mark.parametrize("command", ["pairs", "eval score"])
@pytest.mark.parametrize("case", ["whitespace_sentence", "response_without_sentences", "unknown_label"])
def test_bad_annotation_is_refused(tmp_path, tiny_llama_dir, command, case):
    cases, _ = annotation_cases()
    index, change, expected = cases[case]
    lines = data_lines("annotations.jsonl")
    lines[index] = edit(lines[index], change)
    path = write_lines(tmp_path / "annotations.jsonl", lines)
    args, outputs = command_args(command, tmp_path, path, tiny_llama_dir)
    assert_refused(invoke(args), f"{path}:{index + 1}:", *expected)
    assert not any(out.exists() for out in outputs)


def test_two_prompts_for_one_question_are_named(tmp_path, tiny_llama_dir):
    _, other_prompt = annotation_cases()
    lines = data_lines("annotations.jsonl")
    lines[1] = edit(lines[1], other_prompt)
    path = write_lines(tmp_path / "annotations.jsonl", lines)
    args, outputs = command_args("pairs", tmp_path, path, tiny_llama_dir)
    assert_refused(invoke(args), f"{path}:2:", "field 'messages'", "another prompt on line 1")
    assert not any(out.exists() for out in outputs)


def test_a_repeated_annotation_is_never_counted_twice(tmp_path):
    lines = data_lines("annotations.jsonl")
    once = write_lines(tmp_path / "once.jsonl", lines)
    twice = write_lines(tmp_path / "twice.jsonl", lines[:4] + [lines[2]] + lines[4:])
    result = invoke(["eval", "score", "--metric", "anah", "--anah", f"m={once}", "--out", tmp_path / "a"])
    assert result.exit_code == 0, result.output
    assert_refused(invoke(["eval", "score", "--metric", "anah", "--anah", f"m={twice}", "--out", tmp_path / "b"]),
                   f"{twice}:5:", "repeats line 3")
    assert not (tmp_path / "b").exists()
    skipped = invoke(["eval", "score", "--metric", "anah", "--anah", f"m={twice}", "--out", tmp_path / "c",
                      "--skip-invalid"])
    assert skipped.exit_code == 0 and "skipped 1 invalid input lines" in skipped.output
    report = lambda folder: json.loads((folder / "report.json").read_text())  # noqa: E731
    assert report(tmp_path / "c")["models"] == report(tmp_path / "a")["models"]


def test_eval_score_refuses_a_directory_and_a_missing_file(tmp_path):
    assert_refused(invoke(["eval", "score", "--metric", "anah", "--anah", f"m={tmp_path}", "--out", tmp_path / "o"]),
                   str(tmp_path), "is a directory")
    assert_refused(invoke(["eval", "score", "--metric", "anah", "--anah", f"m={tmp_path / 'nope.jsonl'}",
                           "--out", tmp_path / "o"]), "nope.jsonl", "no such file")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- samples (annotate)


def test_sample_of_an_unknown_question_is_named(tmp_path, tiny_llama_dir):
    lines = data_lines("samples.jsonl")
    lines[4] = edit(lines[4], lambda d: d.update(question_id="nowhere-0001"))
    path = write_lines(tmp_path / "samples.jsonl", lines)
    args, outputs = command_args("annotate", tmp_path, path, tiny_llama_dir)
    assert_refused(invoke(args), f"{path}:5:", "field 'question_id'", "'nowhere-0001' is not in",
                   "questions.jsonl")
    assert not any(out.exists() for out in outputs)


# ---------------------------------------------------------------- pairs (masks, the builder)


def pair_cases() -> dict:
    def same(d):
        d["rejected"] = d["chosen"]
        d["rejected_item"] = d["chosen_item"]
        d.pop("chosen_score"), d.pop("rejected_score")

    def swapped(d):
        d["chosen"], d["rejected"] = d["rejected"], d["chosen"]
        d["chosen_item"], d["rejected_item"] = d["rejected_item"], d["chosen_item"]
        d.pop("chosen_score"), d.pop("rejected_score")

    def swapped_scores(d):
        d["chosen_score"], d["rejected_score"] = d["rejected_score"], d["chosen_score"]

    def all_hallucinated(d):
        n = len(d["chosen_item"]["sents"])
        d["chosen_item"].update(type=["hallucination"] * n, labels=["contradictory"] * n)
        d.pop("chosen_score"), d.pop("rejected_score")

    def labels_disagree(d):
        d["chosen_item"]["labels"][0] = "contradictory" if d["chosen_item"]["type"][0] == "no_hallucination" else "ok"

    def whitespace_sentence(d):
        d["chosen_item"]["sents"][0] = "  "

    return {
        "chosen_equals_rejected": (same, ["same response"]),
        "inverted": (swapped, ["sentence is kept by the loss", "no signal"]),
        "chosen_all_hallucinated": (all_hallucinated, ["no chosen sentence is kept", "no signal"]),
        "chosen_score_below_rejected": (swapped_scores, ["field 'chosen_score'", "below rejected_score"]),
        "type_and_labels_disagree": (labels_disagree, ["field 'chosen_item.labels[0]'", "disagrees with type"]),
        "whitespace_sentence": (whitespace_sentence, ["field 'chosen_item.sents[0]'", "whitespace"]),
    }


@pytest.mark.parametrize("case", list(pair_cases()))
def test_pair_without_signal_or_consistency_is_refused_by_masks(tmp_path, case):
    change, expected = pair_cases()[case]
    lines = data_lines("pairs.jsonl")
    lines[2] = edit(lines[2], change)
    path = write_lines(tmp_path / "pairs.jsonl", lines)
    assert_refused(invoke(["masks", "--pairs", path, "--tokenizer", tmp_path / "no-tokenizer"]), f"{path}:3:",
                   *expected)
    skipped = invoke(["masks", "--pairs", path, "--tokenizer", tmp_path / "no-tokenizer", "--skip-invalid",
                      "--limit", "0"])
    assert skipped.exit_code == 0 and "skipped 1 invalid input lines" in skipped.output, skipped.output


def test_validate_pair_is_the_builders_check():
    """The API the dataset builder calls: a problem text, or None for a usable pair."""
    pairs = [parse_pair(json.loads(line)) for line in data_lines("pairs.jsonl")]
    assert all(validate_pair(p) is None for p in pairs)
    inverted = parse_pair(json.loads(edit(data_lines("pairs.jsonl")[0], pair_cases()["inverted"][0])))
    assert "carries no signal" in validate_pair(inverted, "both")
    assert "inverted pair" in validate_pair(inverted, "none")  # vanilla DPO keeps every sentence: still inverted
    same = parse_pair(json.loads(edit(data_lines("pairs.jsonl")[0], pair_cases()["chosen_equals_rejected"][0])))
    assert validate_pair(same, "none") == "chosen and rejected are the same response"


def test_token_level_signal_check_catches_what_sentences_miss(tmp_path, smollm2_tokenizer_dir):
    # "The" is kept, "re is a cat." masked: the token "There" straddles both and is masked, so no token
    # of the chosen response is kept although one sentence is.
    d = json.loads(data_lines("pairs.jsonl")[0])
    chosen = "There is a cat."
    d["chosen"] = [{"role": "assistant", "content": chosen}]
    d["chosen_item"] = {"sents": ["The", "re is a cat."], "type": ["no_hallucination", "hallucination"],
                        "spans": [[0, 3], [3, len(chosen)]]}
    d.pop("chosen_score"), d.pop("rejected_score")
    pair = parse_pair(d)
    assert validate_pair(pair) is None  # the sentences alone look fine
    path = write_lines(tmp_path / "pairs.jsonl", data_lines("pairs.jsonl")[1:2] + [json.dumps(d, ensure_ascii=False)])
    assert_refused(invoke(["masks", "--pairs", path, "--tokenizer", smollm2_tokenizer_dir]), f"{path}:2:",
                   "no chosen response token is kept", "end-of-turn")


@pytest.mark.training  # ref-cache imports xtuner
def test_ref_cache_names_a_bad_pair_file_line_before_the_model_loads(tmp_path, tiny_llama_dir):
    lines = data_lines("pairs.jsonl")
    cases = {"invalid_json": (lines[:1] + ["{oops"] + lines[1:], 2, "invalid JSON"),
             "not_utf8": (lines[:2] + [NOT_UTF8], 3, "not valid UTF-8"),
             "type_and_labels_disagree": (lines[:3] + [edit(lines[3], pair_cases()["type_and_labels_disagree"][0])],
                                          4, "disagrees with type")}
    for name, (broken, line, text) in cases.items():
        path = write_lines(tmp_path / f"{name}.jsonl", broken)
        out = tmp_path / f"{name}-cache.jsonl"
        result = invoke(["ref-cache", "--config", CONFIG, "--out", out],
                        env={"MASKDPO_PAIRS": str(path), "MASKDPO_MODEL": str(tiny_llama_dir)})
        assert_refused(result, f"{path}:{line}", text)
        assert not out.exists() and not Path(f"{out}.settings.json").exists()


# ---------------------------------------------------------------- outputs, models, resume guards


@pytest.mark.parametrize("command", ["sample", "annotate", "pairs", "eval score"])
def test_output_under_a_regular_file_is_refused_before_work(tmp_path, tiny_llama_dir, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    path = write_lines(tmp_path / INPUT_OF[command], data_lines(INPUT_OF[command]))
    args, _ = command_args(command, tmp_path, path, tiny_llama_dir)
    target = blocker / "out" / ("report" if command == "eval score" else "out.jsonl")
    args[args.index("--out") + 1] = target
    assert_refused(invoke(args), str(target), "is a file, not a folder")
    assert blocker.read_text() == "a file, not a folder\n"


def test_output_in_an_unwritable_place_is_refused(tmp_path):
    # /proc refuses new files even to root (a chmod'ed folder would not stop root)
    target = Path("/proc/maskdpo-bad-input/pairs.jsonl")
    assert_refused(invoke(["pairs", "--annotations", DATA / "annotations.jsonl", "--out", target]),
                   str(target), "cannot create it")
    assert_refused(invoke(["eval", "score", "--metric", "anah", "--anah", f"m={DATA / 'annotations.jsonl'}",
                           "--out", "/proc/maskdpo-bad-input"]), "cannot create it")


def test_eval_score_out_that_is_a_file_is_refused(tmp_path):
    out = write_lines(tmp_path / "report", ["keep me"])
    assert_refused(invoke(["eval", "score", "--metric", "anah", "--anah", f"m={DATA / 'annotations.jsonl'}",
                           "--out", out]), str(out), "is a file")
    assert out.read_text() == "keep me\n"


def test_eval_run_checks_its_output_and_models_before_loading(tmp_path):
    blocker = write_lines(tmp_path / "blocker", ["a file"])
    base = ["eval", "run", "--metric", "anah", "--anah-questions", DATA / "questions.jsonl"]
    assert_refused(invoke(base + ["--model", f"m={tmp_path}", "--out", blocker / "eval"]), "is a file, not a folder")
    assert_refused(invoke(base + ["--model", f"m={tmp_path / 'no-such-model'}", "--out", tmp_path / "eval"]),
                   "no-such-model", "no such model folder")
    assert not (tmp_path / "eval").exists()


def test_reference_cache_lines_are_the_files(tmp_path):
    from maskdpo.xtuner.ref_cache import FORMAT, RefCache

    path = write_lines(tmp_path / "ref.jsonl", [json.dumps({"format": FORMAT, "fingerprint": {}}), "",
                                                json.dumps({"pair_id": "a"})])
    with pytest.raises(RecordError, match=r"ref\.jsonl:3: field 'digest': missing"):
        RefCache.load(path)


def test_sample_with_a_missing_model_leaves_no_output(tmp_path):
    out = tmp_path / "s.jsonl"
    assert_refused(invoke(["sample", "--questions", DATA / "questions.jsonl", "--out", out, "--model",
                           tmp_path / "no-such-model"]), "no-such-model", "no such model folder")
    assert not out.exists() and not Path(f"{out}.settings.json").exists()


def test_resumed_output_without_question_id_is_named(tmp_path, tiny_llama_dir):
    out = tmp_path / "s.jsonl"
    record = json.loads(data_lines("samples.jsonl")[0])
    del record["question_id"]
    write_lines(out, ["", json.dumps(record)])
    write_settings(Path(f"{out}.settings.json"), _Settings())
    before = out.read_bytes()
    assert_refused(invoke(["sample", "--questions", DATA / "questions.jsonl", "--out", out, "--model",
                           tiny_llama_dir, "--n", 1]), f"{out}:2:", "field 'question_id'", "missing")
    assert out.read_bytes() == before


@dataclass
class _Settings:
    """A settings object with nothing in it (write_settings accepts any dataclass)."""


def test_corrupt_or_missing_settings_file_blocks_a_resume(tmp_path, tiny_llama_dir):
    out = tmp_path / "s.jsonl"
    write_lines(out, data_lines("samples.jsonl")[:2])
    settings = Path(f"{out}.settings.json")
    settings.write_text('{"questions": "data/questions.jsonl", "seed": 7, "n"')  # truncated by a kill
    before = out.read_bytes()
    args = ["sample", "--questions", DATA / "questions.jsonl", "--out", out, "--model", tiny_llama_dir, "--seed", 8]
    assert_refused(invoke(args), str(settings), "corrupt")
    settings.unlink()
    assert_refused(invoke(args), str(settings), "is missing")
    assert out.read_bytes() == before


def test_settings_files_are_written_atomically(tmp_path):
    path = tmp_path / "x.settings.json"
    write_settings(path, _Settings(), seed=7)
    assert read_settings(path) == {"seed": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.settings.json"]  # no temporary left
    with pytest.raises(ValueError):
        write_settings(path, _Settings(), score=float("nan"))
    assert read_settings(path) == {"seed": 7}  # the old file survives a failed write


def test_relative_and_absolute_paths_of_one_file_resume(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "q.jsonl", data_lines("questions.jsonl")[:2])
    common = ["--model", tiny_llama_dir, "--n", 1, "--max-new-tokens", 2, "--device", "cpu"]
    first = invoke(["sample", "--questions", "q.jsonl", "--out", "s.jsonl", "--limit", 1, *common])
    assert first.exit_code == 0, first.output
    again = invoke(["sample", "--questions", tmp_path / "q.jsonl", "--out", tmp_path / "s.jsonl", *common])
    assert again.exit_code == 0, again.output
    assert [json.loads(x)["question_id"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == \
        ["anah-en-0001", "anah-en-0002"]
    other = invoke(["sample", "--questions", "q.jsonl", "--out", "s.jsonl", "--seed", 8, *common])
    assert_refused(other, "seed: 0 → 8")


# ---------------------------------------------------------------- --skip-invalid counts the same everywhere


def toy_world_inputs(tmp: Path) -> tuple[Path, Path, Path]:
    from maskdpo.toyworld.world import WorldSettings, generate_world

    world = generate_world(WorldSettings(families=1, people_per_family=3, test_per_family=0))
    world_path = world.save(tmp / "world.json")
    questions = world.questions_for("train")
    rng = random.Random(0)
    samples = [Sample(question_id=q.id, sample_index=0, messages=[{"role": "user", "content": q.question}],
                      response=world.training_answer(world.person_for_question(q.id), rng), model="m", backend="b",
                      generation={}).to_dict() for q in questions]
    write_jsonl(tmp / "world-questions.jsonl", [q.to_dict() for q in questions])
    write_jsonl(tmp / "world-samples.jsonl", samples)
    return world_path, tmp / "world-questions.jsonl", tmp / "world-samples.jsonl"


def with_two_bad_lines(path: Path) -> Path:
    """The file with a non-UTF-8 line (file line 2), a blank line and an invalid JSON line (file line 4)."""
    lines = path.read_bytes().decode("utf-8").splitlines()
    return write_lines(path, lines[:1] + [NOT_UTF8, "", "{oops"] + lines[1:])


def test_skip_invalid_counts_identically_across_commands(tmp_path, tiny_llama_dir, smollm2_tokenizer_dir):
    world, world_questions, world_samples = toy_world_inputs(tmp_path)
    inputs = {name: with_two_bad_lines(write_lines(tmp_path / f"bad-{name}", data_lines(name)))
              for name in ("questions.jsonl", "annotations.jsonl", "pairs.jsonl")}
    samples = with_two_bad_lines(world_samples)
    runs = {
        "sample": (["sample", "--questions", inputs["questions.jsonl"], "--out", tmp_path / "s.jsonl", "--model",
                    tiny_llama_dir, "--n", 1, "--max-new-tokens", 2, "--device", "cpu", "--limit", 1],
                   inputs["questions.jsonl"]),
        "annotate": (["annotate", "--samples", samples, "--questions", world_questions, "--out", tmp_path / "a.jsonl",
                      "--annotator", "toyworld-oracle", "--annotator-options", json.dumps({"world": str(world)})],
                     samples),
        "pairs": (["pairs", "--annotations", inputs["annotations.jsonl"], "--out", tmp_path / "p.jsonl"],
                  inputs["annotations.jsonl"]),
        "masks": (["masks", "--pairs", inputs["pairs.jsonl"], "--tokenizer", smollm2_tokenizer_dir, "--json"],
                  inputs["pairs.jsonl"]),
        "eval score": (["eval", "score", "--metric", "anah", "--anah", f"m={inputs['annotations.jsonl']}", "--out",
                        tmp_path / "e"], inputs["annotations.jsonl"]),
    }
    for command, (args, path) in runs.items():
        refused = invoke(args)
        assert_refused(refused, f"{path}:2:", "not valid UTF-8")
        result = invoke(args + ["--skip-invalid"])
        assert result.exit_code == 0, (command, result.output)
        counted = [line for line in result.output.splitlines() if line.startswith("skipped ")]
        assert len(counted) == 1, (command, result.output)
        assert counted[0].startswith(f"skipped 2 invalid input lines (first: {path}:2: not valid UTF-8 (byte 0xe9"), \
            (command, counted)


# ---------------------------------------------------------------- the reader and writer themselves


def test_line_numbers_count_blank_lines_and_lone_carriage_returns(tmp_path):
    good = data_lines("questions.jsonl")[0]
    path = write_lines(tmp_path / "q.jsonl", ["", good, "", "", good.replace('"id"', '"id" \r ', 1)])
    assert [n for n, _ in iter_jsonl(path, with_lines=True)] == [2, 5]  # \r inside a line is not a line end


def test_nan_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        dump_line({"score": float("nan")})
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, {"b": float("inf")}])
    assert list(tmp_path.iterdir()) == []
    appender = JsonlAppender(tmp_path / "y.jsonl", key=lambda o: o["k"])
    with pytest.raises(ValueError):
        appender.write({"k": 1, "v": float("nan")})
    appender.close()
    assert not (tmp_path / "y.jsonl").exists()  # created at the first record written, never empty


def test_record_checks_hold_for_python_dicts_too():
    sample = json.loads(data_lines("samples.jsonl")[0])
    annotation = json.loads(data_lines("annotations.jsonl")[0])
    annotation["sentences"] = []
    with pytest.raises(Exception, match="non-empty response"):
        Annotation.from_dict(annotation)
    pair = json.loads(data_lines("pairs.jsonl")[0])
    pair["rejected_score"] = float("inf")
    with pytest.raises(Exception, match="rejected_score"):
        parse_pair(pair)
    assert Sample.from_dict(sample).question_id == "anah-en-0001"


def test_a_bad_line_inside_the_appender_is_named(tmp_path):
    path = write_lines(tmp_path / "o.jsonl", ['{"k": 1}', "", '{"k": 1}'])
    with pytest.raises(RecordError, match=r"o\.jsonl:3: record key 1 repeats line 1"):
        JsonlAppender(path, key=lambda o: o["k"])


# ---------------------------------------------------------------- no traceback reaches a real terminal


@pytest.mark.parametrize("args", [
    ["pairs", "--annotations", "{bad}", "--out", "{tmp}/p.jsonl"],
    ["eval", "score", "--metric", "anah", "--anah", "m={tmp}", "--out", "{tmp}/e"],
    ["masks", "--pairs", "{bad}", "--tokenizer", "{tmp}/none"],
], ids=["pairs-not-utf8", "eval-score-directory", "masks-not-utf8"])
def test_subprocess_errors_are_one_line_without_traceback(tmp_path, args):
    bad = write_lines(tmp_path / "bad.jsonl", [NOT_UTF8])
    argv = [a.format(bad=bad, tmp=tmp_path) for a in args]
    env = {k: v for k, v in os.environ.items() if k != "MASKDPO_TRACEBACK"}
    done = subprocess.run([sys.executable, "-m", "maskdpo.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert [line for line in done.stderr.splitlines() if line.strip()] == \
        [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert str(bad) in done.stderr or str(tmp_path) in done.stderr
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "e").exists()
