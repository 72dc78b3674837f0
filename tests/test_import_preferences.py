"""Importing TRL / XTuner preference datasets as questions and samples (local files, offline)."""

import pytest
from click.testing import CliRunner

from maskdpo.cli import main
from maskdpo.jsonl import RecordError
from maskdpo.preferences import import_preferences, parse_preference
from maskdpo.validate import check_known_questions, read_questions, read_samples
from tests.helpers import write_rows


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


ROWS = [
    # TRL standard, explicit prompt
    {"prompt": "Who was Ada Lovelace?", "chosen": "Ada Lovelace was born in London in 1815.",
     "rejected": "Ada Lovelace was born in Paris in 1820."},
    # TRL conversational = XTuner's DPO JSONL (with a system message)
    {"prompt": [{"role": "system", "content": "Be brief."}] + user("Where was Marie Curie born?"),
     "chosen": assistant("Marie Curie was born in Warsaw."), "rejected": assistant("Marie Curie was born in Vienna."),
     "topic": "Marie Curie", "reference": "Marie Curie was born in Warsaw in 1867."},
    # TRL conversational, implicit prompt
    {"chosen": user("How tall is the Eiffel Tower?") + assistant("It is about 330 m tall."),
     "rejected": user("How tall is the Eiffel Tower?") + assistant("It is about 500 m tall.")},
]


def test_every_layout_becomes_a_question_and_two_samples(tmp_path):
    source = write_rows(tmp_path / "prefs.jsonl", ROWS)
    stats = import_preferences(str(source), tmp_path / "out")
    assert stats.rows == 3 and stats.imported == 3 and not stats.skipped
    questions = [q for _, q in read_questions(tmp_path / "out" / "questions.jsonl")]
    located = read_samples(tmp_path / "out" / "samples.jsonl")
    check_known_questions(tmp_path / "out" / "samples.jsonl", located, {q.id: q for q in questions}, "questions")
    samples = [s for _, s in located]
    assert [q.question for q in questions] == ["Who was Ada Lovelace?", "Where was Marie Curie born?",
                                               "How tall is the Eiffel Tower?"]
    assert [(s.sample_index, s.meta["preference"]) for s in samples[:2]] == [(0, "chosen"), (1, "rejected")]
    assert samples[0].response == ROWS[0]["chosen"] and samples[1].response == ROWS[0]["rejected"]
    assert samples[0].messages == user("Who was Ada Lovelace?")
    assert samples[2].messages == ROWS[1]["prompt"]  # the system message stays in the prompt
    assert samples[4].messages == user("How tall is the Eiffel Tower?") and samples[5].response == "It is about 500 m tall."
    assert samples[0].meta["row"] == f"{source}:1" and samples[0].backend == "imported"
    # Ids come from the content: a reordered file gives the same ids.
    import_preferences(str(write_rows(tmp_path / "rev.jsonl", ROWS[::-1])), tmp_path / "rev")
    assert sorted(q.id for _, q in read_questions(tmp_path / "rev" / "questions.jsonl")) == sorted(q.id for q in questions)


def test_topic_and_document_fields(tmp_path):
    source = write_rows(tmp_path / "prefs.jsonl", ROWS[1:2])
    import_preferences(str(source), tmp_path / "out", topic_field="topic", document_field="reference", language="en")
    (_, question), = read_questions(tmp_path / "out" / "questions.jsonl")
    assert question.topic == "Marie Curie" and question.document == "Marie Curie was born in Warsaw in 1867."
    with pytest.raises(RecordError, match=r"prefs2\.jsonl:1: field 'reference': expected a non-empty string"):
        import_preferences(str(write_rows(tmp_path / "prefs2.jsonl", ROWS[:1])), tmp_path / "o2",
                           document_field="reference")


@pytest.mark.parametrize("row,field,message", [
    ({"chosen": "A.", "rejected": "B."}, "chosen", "needs a 'prompt' field"),
    ({"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}, "rejected", "carries no preference"),
    ({"chosen": user("Q1?") + assistant("A."), "rejected": user("Q2?") + assistant("B.")}, "rejected",
     "share every message but the last"),
    ({"prompt": user("Q?"), "chosen": user("A."), "rejected": assistant("B.")}, r"chosen\[0\]\.role",
     "must be the assistant's answer"),
    ({"prompt": "Q?", "rejected": "B."}, "chosen", "missing"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, message):
    source = write_rows(tmp_path / "bad.jsonl", ROWS[:1] + [row], blank_after=1)
    with pytest.raises(RecordError, match=rf"bad\.jsonl:3: field '{field}': .*{message}"):
        import_preferences(str(source), tmp_path / "out")
    assert not (tmp_path / "out" / "samples.jsonl").exists()  # nothing half-written
    stats = import_preferences(str(source), tmp_path / "out", skip_invalid=True)
    assert stats.imported == 1 and len(stats.skipped) == 1 and "bad.jsonl:3" in stats.skipped[0]


def test_a_repeated_row_is_written_once_and_counted(tmp_path):
    source = write_rows(tmp_path / "prefs.jsonl", ROWS + ROWS[:1])
    stats = import_preferences(str(source), tmp_path / "out")
    assert stats.imported == 3 and stats.repeated == 1 and "prefs.jsonl:4 repeats" in stats.summary()
    assert len(read_samples(tmp_path / "out" / "samples.jsonl")) == 6


def test_a_parquet_dataset_folder_goes_through_load_dataset(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "my-prefs"
    (folder / "data").mkdir(parents=True)
    # XTuner's DPO rows (all conversational: one schema for Arrow)
    rows = [{"prompt": user(f"Question {i}?"), "chosen": assistant(f"Right {i}."), "rejected": assistant(f"Wrong {i}.")}
            for i in range(5)]
    Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    stats = import_preferences(str(folder), tmp_path / "out", split="train", limit=4)
    assert stats.rows == 4 and stats.imported == 4
    samples = [s for _, s in read_samples(tmp_path / "out" / "samples.jsonl")]
    assert samples[0].meta["row"] == f"{folder}[train] row 0" and samples[7].response == "Wrong 3."
    rows[2]["chosen"] = assistant("Wrong 2.")
    Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=r"my-prefs\[train\] row 2: field 'rejected': .*no preference"):
        import_preferences(str(folder), tmp_path / "out2", split="train")
    with pytest.raises(FileNotFoundError, match="no such file, folder or Hub dataset"):
        import_preferences(str(tmp_path / "missing"), tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_command(tmp_path):
    source = write_rows(tmp_path / "prefs.jsonl", ROWS)
    result = CliRunner().invoke(main, ["import-preferences", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 rows: 3 imported (6 samples)" in result.output
    bad = write_rows(tmp_path / "bad.jsonl", [{"prompt": "Q?", "chosen": "A."}])
    result = CliRunner().invoke(main, ["import-preferences", str(bad), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "bad.jsonl:1: field 'rejected': missing" in result.output


def test_parse_preference_keeps_the_whole_prompt():
    pref = parse_preference({"chosen": [{"role": "system", "content": "S"}] + user("Q?") + assistant("A."),
                             "rejected": [{"role": "system", "content": "S"}] + user("Q?") + assistant("B.")})
    assert pref.prompt == [{"role": "system", "content": "S"}] + user("Q?") and pref.question == "Q?"


def invoke(*args):
    return CliRunner().invoke(main, ["import-preferences", *map(str, args)])


def one_error_line(result) -> str:
    """Exit 2 through the command wrapper, no traceback, exactly one ``Error:`` line (returned)."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_local_json_in_a_folder_is_read_line_by_line(tmp_path):
    folder = tmp_path / "prefs"
    (folder / "data").mkdir(parents=True)
    rows = [{"prompt": f"Question {i}?", "chosen": f"Right {i}.", "rejected": f"Wrong {i}."} for i in range(3)]
    train = write_rows(folder / "data" / "train.jsonl", rows, blank_after=1)  # a blank line: pandas' JSON reader fails
    stats = import_preferences(str(folder), tmp_path / "out")
    assert stats.imported == 3
    samples = [s for _, s in read_samples(tmp_path / "out" / "samples.jsonl")]
    assert [s.meta["row"] for s in samples[::2]] == [f"{train}:1", f"{train}:3", f"{train}:4"]
    # A malformed line in a folder's file is named by file and line, through the command too.
    train.write_text(train.read_text() + '{"prompt": "Q?", \n', encoding="utf-8")
    error = one_error_line(invoke(folder, "--out", tmp_path / "out2"))
    assert f"{train}:5: invalid JSON" in error
    assert not (tmp_path / "out2").exists()
    skipped = invoke(folder, "--out", tmp_path / "out3", "--skip-invalid")
    assert skipped.exit_code == 0 and f"1 invalid rows skipped (first: {train}:5: invalid JSON" in skipped.output
    # Splits are found by file name, as datasets finds them.
    test = write_rows(folder / "data" / "test.jsonl", rows[:1])
    with pytest.raises(ValueError, match=r"prefs has splits .*: choose one"):
        import_preferences(str(folder), tmp_path / "out4")
    assert import_preferences(str(folder), tmp_path / "out4", split="test").imported == 1
    assert [s.meta["row"] for _, s in read_samples(tmp_path / "out4" / "samples.jsonl")] == [f"{test}:1"] * 2
    with pytest.raises(ValueError, match=r"prefs: no split 'dev' \(it has "):
        import_preferences(str(folder), tmp_path / "out5", split="dev")


def test_a_json_list_names_the_line_of_the_bad_record(tmp_path):
    source = tmp_path / "prefs.json"
    source.write_text('[\n  {"prompt": "Q?", "chosen": "A.", "rejected": "B."},\n\n  {"prompt": "Q2?",\n'
                      '   "chosen": "A."}\n]\n', encoding="utf-8")
    error = one_error_line(invoke(source, "--out", tmp_path / "out"))
    assert f"{source}:4: field 'rejected': missing" in error
    source.write_text('[{"prompt": "Q?", "chosen": "A.", "rejected": "B."},\n {"prompt": "Q2?", "chosen": NaN}]\n')
    assert f"{source}:2: field 'chosen': NaN is not a finite number" in one_error_line(
        invoke(source, "--out", tmp_path / "out"))
    source.write_text('[{"prompt": "Q?", "chosen": "A.", "rejected": "B."},\n {"prompt": "Q2?" "chosen": 1}]\n')
    assert f"{source}:2: invalid JSON" in one_error_line(invoke(source, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_what_datasets_cannot_read_is_one_error_naming_the_source(tmp_path):
    broken = tmp_path / "prefs.parquet"
    broken.write_bytes(b"not a parquet file\n")
    error = one_error_line(invoke(broken, "--out", tmp_path / "out"))
    assert error.startswith(f"Error: {broken}: datasets cannot read it:") and "Parquet" in error
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.parquet").write_bytes(b"garbage")
    error = one_error_line(invoke(folder, "--out", tmp_path / "out"))
    assert error.startswith(f"Error: {folder}: datasets cannot read it:")
    assert not (tmp_path / "out").exists()


def test_a_subprocess_error_is_one_line(tmp_path):
    import os
    import subprocess
    import sys

    broken = tmp_path / "prefs.parquet"
    broken.write_bytes(b"not a parquet file\n")
    env = {k: v for k, v in os.environ.items() if k != "MASKDPO_TRACEBACK"}
    done = subprocess.run([sys.executable, "-m", "maskdpo.cli", "import-preferences", str(broken), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {broken}: datasets cannot read it:"), done.stderr


def test_empty_input_writes_nothing_unless_allowed(tmp_path):
    source = tmp_path / "prefs.jsonl"
    source.write_text("\n  \n", encoding="utf-8")
    result = invoke(source, "--out", tmp_path / "out")
    error = one_error_line(result)
    assert f"{source}: no preference row to read" in error and "--allow-empty" in error
    assert "wrote" not in result.output and not (tmp_path / "out").exists()
    # Every row invalid and skipped: also empty, and the count is said.
    bad = write_rows(tmp_path / "bad.jsonl", [{"prompt": "Q?", "chosen": "A."}])
    error = one_error_line(invoke(bad, "--out", tmp_path / "out", "--skip-invalid"))
    assert "no preference row to read (1 invalid rows skipped, first: " in error and f"{bad}:1" in error
    assert not (tmp_path / "out").exists()
    allowed = invoke(source, "--out", tmp_path / "out", "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "out" / "questions.jsonl").read_text() == "" == (tmp_path / "out" / "samples.jsonl").read_text()
