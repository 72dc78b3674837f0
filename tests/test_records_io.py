"""Bad input is reported with file, line and field; the appender resumes without loss or duplicates."""

import json
import os
import subprocess
import sys

import pytest

from maskdpo.jsonl import JsonlAppender, RecordError, load_jsonl
from maskdpo.records import Annotation, Pair, Question, Sample, parse_pair

GOOD_ANNOTATION = {
    "question_id": "q1", "sample_index": 0, "messages": [{"role": "user", "content": "Who?"}],
    "response": "Ada was born in 1815. She died in 1852.", "model": "m", "backend": "hf", "generation": {},
    "sentences": [{"text": "Ada was born in 1815.", "start": 0, "end": 21, "label": "ok"},
                  {"text": "She died in 1852.", "start": 22, "end": 39, "label": "contradictory"}],
}
GOOD_PAIR = {
    "id": "p1", "prompt": [{"role": "user", "content": "Who?"}],
    "chosen": [{"role": "assistant", "content": "Ada was born in 1815."}],
    "rejected": [{"role": "assistant", "content": "Ada was born in 1915."}],
    "chosen_item": {"sents": ["Ada was born in 1815."], "type": ["no_hallucination"], "spans": [[0, 21]]},
    "rejected_item": {"sents": ["Ada was born in 1915."], "type": ["hallucination"]},
}


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def edited(record, edit):
    record = json.loads(json.dumps(record))
    edit(record)
    return record


def expect_error(tmp_path, parse, bad, line_text):
    path = write_lines(tmp_path / "f.jsonl", [GOOD_ANNOTATION if parse == Annotation.from_dict else GOOD_PAIR, bad])
    with pytest.raises(RecordError) as info:
        load_jsonl(path, parse)
    assert str(info.value).startswith(f"{path}:2: ")
    assert line_text in str(info.value)
    return info.value


def test_good_records_read(tmp_path):
    records, stats = load_jsonl(write_lines(tmp_path / "a.jsonl", [GOOD_ANNOTATION, "", GOOD_ANNOTATION]),
                                Annotation.from_dict)
    assert stats.read == 2 and records[0].sentences[1].label == "contradictory"
    assert Annotation.from_dict(records[0].to_dict()) == records[0]


def test_malformed_json(tmp_path):
    err = expect_error(tmp_path, Annotation.from_dict, '{"question_id": "q1",', "invalid JSON")
    assert err.line == 2 and err.field is None
    expect_error(tmp_path, Annotation.from_dict, "[1, 2]", "expected a JSON object")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("response"), "field 'response': missing"),
    (lambda r: r.pop("sentences"), "field 'sentences': missing"),
    (lambda r: r.update(sample_index="zero"), "field 'sample_index': expected an integer"),
    (lambda r: r.update(sample_index=True), "field 'sample_index': expected an integer, got a boolean"),
    (lambda r: r["messages"][0].update(role="robot"), "field 'messages[0].role': expected one of"),
    (lambda r: r["sentences"][1].update(label="wrong"), "field 'sentences[1].label': unknown label 'wrong'"),
    (lambda r: r["sentences"][1].update(end=400), "field 'sentences[1]': span (22, 400) is out of range"),
    (lambda r: r["sentences"][1].update(start=10), "field 'sentences[1]': span (10, 39) overlaps"),
    (lambda r: r["sentences"][0].update(text="Ada was born in 1816."), "field 'sentences[0]': text"),
    (lambda r: r.update(format="maskdpo/sample@1"), "field 'format': expected 'maskdpo/annotation@1'"),
])
def test_annotation_errors_name_file_line_and_field(tmp_path, edit, message):
    expect_error(tmp_path, Annotation.from_dict, edited(GOOD_ANNOTATION, edit), message)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("prompt"), "field 'prompt': expected a non-empty list"),
    (lambda r: r["rejected_item"].update(type=["maybe"]), "field 'rejected_item.type[0]': expected one of"),
    (lambda r: r["rejected_item"].update(type=["hallucination", "hallucination"]), "2 types for 1 sentences"),
    (lambda r: r["chosen_item"].update(spans=[[0, 99]]), "field 'chosen_item.spans[0]': span (0, 99) is out of range"),
    (lambda r: r["chosen_item"].update(spans=[[1, 21]]), "field 'chosen_item.spans[0]': text"),
    (lambda r: r["chosen_item"].update(spans=[["a", 3]]), "expected [start, end] integers"),
    (lambda r: r["chosen_item"].update(labels=["great"]), "field 'chosen_item.labels[0]': unknown label"),
    (lambda r: r.update(chosen=[{"role": "user", "content": "x"}]), "field 'chosen': expected exactly one assistant"),
])
def test_pair_errors_name_file_line_and_field(tmp_path, edit, message):
    expect_error(tmp_path, Pair.from_dict, edited(GOOD_PAIR, edit), message)


def test_question_and_sample_errors(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"id": "q1", "question": "Why?", "language": "fr"}])
    with pytest.raises(RecordError, match=r"q.jsonl:1: field 'language': expected one of en, zh"):
        load_jsonl(path, Question.from_dict)
    path = write_lines(tmp_path / "s.jsonl", [{"question_id": "q1", "sample_index": -1, "messages": [], "response": ""}])
    with pytest.raises(RecordError, match=r"s.jsonl:1: field 'sample_index': must be >= 0"):
        load_jsonl(path, Sample.from_dict)


def test_authors_pairs_get_ids_from_their_content(tmp_path):
    authors = {k: v for k, v in GOOD_PAIR.items() if k != "id"}
    other = {**authors, "rejected": [{"role": "assistant", "content": "Something else."}]}
    path = write_lines(tmp_path / "authors.jsonl", [authors, other, authors])
    pairs, _ = load_jsonl(path, parse_pair)
    assert pairs[0].id.startswith("sha1:") and pairs[0].id == pairs[2].id != pairs[1].id
    assert pairs[0].chosen_item.spans == [(0, 21)] and pairs[0].rejected_item.spans is None


def test_skip_invalid_counts_every_bad_line(tmp_path):
    bad = edited(GOOD_ANNOTATION, lambda r: r["sentences"][0].update(label="?"))
    path = write_lines(tmp_path / "a.jsonl", [GOOD_ANNOTATION, "{oops", bad, GOOD_ANNOTATION])
    records, stats = load_jsonl(path, Annotation.from_dict, skip_invalid=True)
    assert len(records) == 2 and stats.read == 2
    assert [e.line for e in stats.skipped] == [2, 3]
    assert "2 invalid lines skipped" in stats.summary(path)


def test_appender_resumes_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "out.jsonl"
    key = lambda obj: obj["id"]  # noqa: E731
    with JsonlAppender(path, key) as out:
        for i in range(3):
            out.write({"id": i, "text": "x" * 10})
    # a kill mid-write leaves a torn last line
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"id": 3, "te')
    with JsonlAppender(path, key) as out:
        assert out.done == {0, 1, 2} and 3 not in out
        for i in range(6):
            if i not in out:
                out.write({"id": i, "text": "y"})
        with pytest.raises(ValueError, match="already written"):
            out.write({"id": 1})
    records, _ = load_jsonl(path)
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4, 5]


def test_appender_survives_a_real_kill(tmp_path):
    """A writer process killed at a random point: the restart completes the file exactly once per key."""
    path = tmp_path / "killed.jsonl"
    script = (
        "import sys, time\nfrom maskdpo.jsonl import JsonlAppender\n"
        "with JsonlAppender(sys.argv[1], key=lambda o: o['id']) as out:\n"
        "    for i in range(100000):\n"
        "        if i not in out:\n"
        "            out.write({'id': i, 'pad': 'z' * 200})\n"
        "            if i == 50: print('started', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    os.kill(proc.pid, 9)
    proc.wait()
    with JsonlAppender(path, key=lambda o: o["id"]) as out:
        first_run = len(out.done)
        assert out.done == set(range(first_run))
        for i in range(first_run + 10):
            if i not in out:
                out.write({"id": i, "pad": "z"})
    records, _ = load_jsonl(path)
    assert [r["id"] for r in records] == list(range(first_run + 10))
