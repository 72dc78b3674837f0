"""The sampling stage: records, seeds, shards, limits, resumption after a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from maskdpo.backends.base import load_backend
from maskdpo.backends.prompting import derive_seed
from maskdpo.jsonl import RecordError
from maskdpo.records import Sample
from maskdpo.backends.serve import start_server
from maskdpo.sample import SampleSettings, run_sampling
from maskdpo.stage import parse_shard, select_items, settings_path, shard_slice
from tests.helpers import write_rows

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def write_questions(path: Path, count: int) -> Path:
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"q{i}", "question": f"Tell me about item number {i}.", "topic": f"t{i}",
                                "language": "en", "document": "A document."}) + "\n")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_backend(tiny_llama_dir):
    return load_backend("hf", str(tiny_llama_dir), device="cpu", batch_size=4)


def settings(tmp_path, tiny_llama_dir, out="s.jsonl", **kw):
    kw.setdefault("n", 3)
    kw.setdefault("max_new_tokens", 6)
    return SampleSettings(questions=tmp_path / "q.jsonl", out=tmp_path / out, model=str(tiny_llama_dir), **kw)


def test_records_seeds_and_settings(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 4)
    summary = run_sampling(settings(tmp_path, tiny_llama_dir, seed=3, api_key="secret"), tiny_backend)
    records = lines(tmp_path / "s.jsonl")
    assert summary.written == 12 and len(records) == 12
    assert [(r["question_id"], r["sample_index"]) for r in records] == [(f"q{i}", j) for i in range(4) for j in range(3)]
    for r in records:
        s = Sample.from_dict(r)
        qseed = derive_seed(3, s.question_id)
        assert s.generation == {"do_sample": True, "top_k": 40, "top_p": 1.0, "temperature": 0.8, "max_new_tokens": 6,
                                "seed": derive_seed(qseed, s.sample_index), "question_seed": qseed, "base_seed": 3}
        assert s.backend == "hf" and s.model == str(tiny_llama_dir)
        assert s.meta["chat_template"] == tiny_backend.chat_template_meta and s.meta["topic"].startswith("t")
        assert s.messages == [{"role": "user", "content": f"Tell me about item number {s.question_id[1:]}."}]
    written = json.loads(settings_path(tmp_path / "s.jsonl").read_text())
    assert written["n"] == 3 and written["decoding"]["top_p"] == 1.0 and written["api_key"] is None
    # A rerun finds everything done.
    again = run_sampling(settings(tmp_path, tiny_llama_dir, seed=3), tiny_backend)
    assert again.written == 0 and again.already_done == 12 and len(lines(tmp_path / "s.jsonl")) == 12


def test_shards_concatenate_to_the_full_run(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 5)
    run_sampling(settings(tmp_path, tiny_llama_dir, out="full.jsonl"), tiny_backend)
    parts = []
    for k in range(3):
        run_sampling(settings(tmp_path, tiny_llama_dir, out=f"part{k}.jsonl", shard=f"{k}/3", batch_size=1),
                     tiny_backend)
        parts.extend(lines(tmp_path / f"part{k}.jsonl"))
    assert parts == lines(tmp_path / "full.jsonl")


def test_limit_takes_the_first_questions(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 5)
    run_sampling(settings(tmp_path, tiny_llama_dir, limit=2, n=1), tiny_backend)
    assert [r["question_id"] for r in lines(tmp_path / "s.jsonl")] == ["q0", "q1"]


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 2)
    run_sampling(settings(tmp_path, tiny_llama_dir, limit=1), tiny_backend)
    with pytest.raises(ValueError, match=r"temperature: 0\.8 → 0\.5"):
        run_sampling(settings(tmp_path, tiny_llama_dir, temperature=0.5), tiny_backend)


def test_bad_questions_name_file_line_and_field(tmp_path, tiny_llama_dir, tiny_backend):
    q = tmp_path / "q.jsonl"
    q.write_text('{"id": "a", "question": "ok?"}\n{"id": "b", "language": "fr", "question": "x"}\n')
    with pytest.raises(RecordError, match=r"q\.jsonl:2: field 'language'"):
        run_sampling(settings(tmp_path, tiny_llama_dir), tiny_backend)
    q.write_text('{"id": "a", "question": "ok?"}\n{"id": "a", "question": "again?"}\n')
    with pytest.raises(RecordError, match=r"q\.jsonl:2: field 'id': question id 'a' repeats line 1"):
        run_sampling(settings(tmp_path, tiny_llama_dir), tiny_backend)


def test_shard_arithmetic():
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    for count in range(0, 12):
        for n in range(1, 6):
            blocks = [list(shard_slice(count, k, n)) for k in range(n)]
            assert sum(blocks, []) == list(range(count))
    assert select_items(list("abcdef"), 4, "1/2") == ["c", "d"]


def test_invalid_settings_fail_before_any_model_loads(tmp_path):
    write_questions(tmp_path / "q.jsonl", 1)
    bad = SampleSettings(questions=tmp_path / "q.jsonl", out=tmp_path / "s.jsonl", model="no/such/model", n=0)
    with pytest.raises(ValueError, match="--n must be >= 1"):
        run_sampling(bad)
    greedy = SampleSettings(questions=tmp_path / "q.jsonl", out=tmp_path / "s.jsonl", model="x", greedy=True, n=2)
    with pytest.raises(ValueError, match="--greedy"):
        run_sampling(greedy)


def test_cli_reports_errors_without_a_traceback(tmp_path):
    from maskdpo.commands.sample import sample

    result = CliRunner().invoke(sample, ["--out", str(tmp_path / "s.jsonl"), "--model", "m"])
    assert result.exit_code != 0 and "--questions is required" in result.output
    assert "Traceback" not in result.output


def kill_then_resume(cut: Path, common: list[str], whole: str) -> None:
    """SIGKILL `tools/sample.py` once some, but not all, records are written; the rerun must resume
    to exactly ``whole`` (the uninterrupted output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tool = [sys.executable, str(ROOT / "tools" / "sample.py")]
    total = len(whole.splitlines())
    proc = subprocess.Popen(tool + common + ["--out", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if cut.exists() and cut.read_text().count("\n") >= 10:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = cut.read_text().count("\n")
    assert 10 <= done_before < total, done_before
    rerun = subprocess.run(tool + common + ["--out", str(cut)], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_before} already there" in rerun.stdout
    assert cut.read_text() == whole


def test_kill_and_resume_gives_exactly_the_uninterrupted_records(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 30)
    run_sampling(settings(tmp_path, tiny_llama_dir, out="whole.jsonl", max_new_tokens=12, batch_size=1), tiny_backend)
    whole = (tmp_path / "whole.jsonl").read_text()
    total = len(whole.splitlines())
    assert total == 90

    common = ["--questions", str(tmp_path / "q.jsonl"), "--model", str(tiny_llama_dir), "--n", "3",
              "--max-new-tokens", "12", "--batch-size", "1", "--device", "cpu"]
    kill_then_resume(tmp_path / "cut.jsonl", common, whole)


# ---------------------------------------------------------------- the openai backend (a real server on 127.0.0.1)


@pytest.fixture(scope="module")
def server(tiny_backend):
    srv = start_server(tiny_backend, port=0, served_model_name="tiny")
    yield srv
    srv.shutdown()
    srv.server_close()


def openai_settings(tmp_path, server, out="s.jsonl", **kw):
    kw.setdefault("n", 2)
    kw.setdefault("max_new_tokens", 6)
    return SampleSettings(questions=tmp_path / "q.jsonl", out=tmp_path / out, model="tiny", backend="openai",
                          base_url=server.base_url, **kw)


def test_each_question_is_written_as_soon_as_it_is_complete(tmp_path, server):
    write_questions(tmp_path / "q.jsonl", 3)
    out = tmp_path / "s.jsonl"
    seen = []  # records in the output while each call is on the server

    def written_so_far(body):
        expected = 2 * (len(seen) // 2)  # every earlier question's samples
        deadline = time.time() + 3  # the writer may be a moment behind the next call
        while time.time() < deadline and (out.read_text().count("\n") if out.exists() else 0) < expected:
            time.sleep(0.01)
        seen.append(out.read_text().count("\n") if out.exists() else 0)

    server.on_request = written_so_far
    try:
        summary = run_sampling(openai_settings(tmp_path, server, concurrency=1, batch_size=16))
    finally:
        server.on_request = None
    # One batch of 16 questions would write nothing before the last call; per question, q0's two
    # samples are on disk before q1's first call, and so on.
    assert seen == [0, 0, 2, 2, 4, 4] and summary.written == 6
    records = lines(out)
    assert [(r["question_id"], r["sample_index"]) for r in records] == [(f"q{i}", j) for i in range(3) for j in range(2)]
    for r in records:
        assert r["generation"]["server"]["sent"]["seed"] == r["generation"]["seed"]
        assert r["finish_reason"] == "length" and r["backend"] == "openai"


def test_summary_reports_retries_and_truncation(tmp_path, server):
    write_questions(tmp_path / "q.jsonl", 2)
    server.fail_left, server.fail_status = 2, 503
    try:
        summary = run_sampling(openai_settings(tmp_path, server, concurrency=1, max_retries=3))
    finally:
        server.fail_left = 0
    assert summary.written == 4 and summary.truncated == 4
    assert "4 TRUNCATED" in summary.line() and "retried calls: 2 (HTTP 503 ×2)" in summary.line()


def test_openai_knobs_reach_the_backend_from_the_cli(tmp_path):
    from maskdpo.commands.sample import sample

    help_text = CliRunner().invoke(sample, ["--help"]).output
    for option in ("--server-profile", "--server-n", "--tokenizer", "--max-retries", "--timeout",
                   "--allow-model-mismatch"):
        assert option in help_text
    settings = SampleSettings(questions=tmp_path / "q", out=tmp_path / "o", model="m", backend="openai",
                              server_profile="openai", server_n=True, tokenizer="tok", max_retries=1, timeout=9.0,
                              allow_model_mismatch=True)
    options = settings.backend_options()
    assert {k: options[k] for k in ("server_profile", "server_n", "tokenizer", "max_retries", "timeout",
                                    "allow_model_mismatch")} == {
        "server_profile": "openai", "server_n": True, "tokenizer": "tok", "max_retries": 1, "timeout": 9.0,
        "allow_model_mismatch": True}
    bad = CliRunner().invoke(sample, ["--questions", "q", "--out", "o", "--model", "m", "--server-profile", "vllm"])
    assert bad.exit_code != 0 and "vllm" in bad.output and "Traceback" not in bad.output


def test_server_n_records_no_per_response_seed(tmp_path, server):
    write_questions(tmp_path / "q.jsonl", 1)
    run_sampling(openai_settings(tmp_path, server, server_n=True))
    for r in lines(tmp_path / "s.jsonl"):  # both responses come from one call seeded with the question's seed
        assert r["generation"]["seed"] is None
        assert r["generation"]["server"]["sent"]["seed"] == r["generation"]["question_seed"]


def test_kill_and_resume_through_a_server_gives_exactly_the_uninterrupted_records(tmp_path, server):
    write_questions(tmp_path / "q.jsonl", 30)
    run_sampling(openai_settings(tmp_path, server, out="whole.jsonl", n=3, max_new_tokens=12))
    whole = (tmp_path / "whole.jsonl").read_text()
    assert len(whole.splitlines()) == 90

    common = ["--questions", str(tmp_path / "q.jsonl"), "--model", "tiny", "--backend", "openai", "--base-url",
              server.base_url, "--n", "3", "--max-new-tokens", "12", "--concurrency", "4"]
    kill_then_resume(tmp_path / "cut.jsonl", common, whole)


def test_ctrl_c_stops_sampling_at_once_and_the_rerun_resumes(tmp_path, server):
    """SIGINT while every call hangs on the server: the command ends without waiting for them."""
    import threading

    write_questions(tmp_path / "q.jsonl", 3)
    release, arrived = threading.Event(), threading.Event()

    def hang(body):
        arrived.set()
        release.wait(120)

    server.on_request = hang
    out = tmp_path / "s.jsonl"
    cmd = [sys.executable, str(ROOT / "tools" / "sample.py"), "--questions", str(tmp_path / "q.jsonl"), "--model",
           "tiny", "--backend", "openai", "--base-url", server.base_url, "--n", "2", "--max-new-tokens", "4",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert arrived.wait(120), "no call reached the server"
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert time.perf_counter() - start < 10 and proc.returncode != 0
    finally:
        release.set()
        server.on_request = None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert [(r["question_id"], r["sample_index"]) for r in lines(out)] == [(f"q{i}", j) for i in range(3) for j in range(2)]


def test_a_server_serving_another_model_stops_the_command_cleanly(tmp_path, server):
    from maskdpo.commands.sample import sample

    write_questions(tmp_path / "q.jsonl", 1)
    result = CliRunner().invoke(sample, ["--questions", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "s.jsonl"),
                                         "--model", "llama-70b", "--backend", "openai", "--base-url", server.base_url])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "serves 'tiny', not the requested model 'llama-70b'" in result.output
    assert not (tmp_path / "s.jsonl").exists() or not (tmp_path / "s.jsonl").read_text()


# ---------------------------------------------------------------- ANAH's layouts and Hub names as --questions

ANAH_ROWS = [  # ANAH-v2's question_document.jsonl layout: no id
    {"question": "Who was Ada Lovelace?", "document": "Ada Lovelace was a mathematician.", "language": "en"},
    {"question": "长城有多长？", "document": "长城是中国古代的军事防御工程。", "language": "zh"},
]


def test_questions_load_anah_layouts_with_the_ids_eval_run_gives(tmp_path):
    from maskdpo.prompt_sets import load_anah_questions
    from maskdpo.prompt_sets import load_questions

    anah = write_rows(tmp_path / "question_document.jsonl", ANAH_ROWS)
    questions = load_questions(anah)
    assert [q.id for q in questions] == [q.id for q in load_anah_questions(anah)]
    assert questions[1].language == "zh" and questions[0].document == "Ada Lovelace was a mathematician."
    # A dataset folder of them (read line by line: the blank line counts) and opencompass/anah topic records.
    folder = tmp_path / "anah"
    folder.mkdir()
    topic = {"name": "Marie Curie", "documents": ["She was a physicist."], "language": "en",
             "selected_questions": ["Where was Marie Curie born?", "What did Marie Curie study?"]}
    write_rows(folder / "test.jsonl", ANAH_ROWS + [topic], blank_after=1)
    from_folder = load_questions(folder)
    assert [q.id for q in from_folder[:2]] == [q.id for q in questions]
    assert [q.question for q in from_folder[2:]] == topic["selected_questions"]
    # Malformed ANAH records are named by file and line.
    bad = write_rows(tmp_path / "bad.jsonl", [ANAH_ROWS[0], {"question": "x", "language": "fr"}], blank_after=1)
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: field 'language'"):
        load_questions(bad)
    with pytest.raises(RecordError, match=r"twice\.jsonl:2: field 'id': question id 'anah-\w+' repeats line 1"):
        load_questions(write_rows(tmp_path / "twice.jsonl", ANAH_ROWS[:1] * 2))


def test_a_file_of_our_question_records_keeps_its_field_errors(tmp_path):
    from maskdpo.prompt_sets import load_questions

    # Starting with our records, a record without its id is an error, never an ANAH question with a made-up id.
    q = write_rows(tmp_path / "q.jsonl", [{"id": "a", "question": "ok?"}, {"question": "where is my id?"}])
    with pytest.raises(RecordError, match=r"q\.jsonl:2: field 'id': missing"):
        load_questions(q)
    from maskdpo.jsonl import ReadStats

    stats = ReadStats()
    assert [x.id for x in load_questions(q, skip_invalid=True, stats=stats)] == ["a"]
    assert stats.read == 1 and [str(e) for e in stats.skipped] == [f"{q}:2: field 'id': missing"]
    from maskdpo.validate import EmptyInput

    with pytest.raises(EmptyInput, match=r"empty\.jsonl: no question to read; pass --allow-empty"):
        load_questions(write_rows(tmp_path / "empty.jsonl", []))


def test_a_hub_name_goes_through_load_dataset(tmp_path, monkeypatch):
    """Tests never download: a double of ``datasets.load_dataset`` serves one Hub name, as the real function
    does for a dataset with one split (a DatasetDict without ``split``), and refuses others as it does."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    from maskdpo.prompt_sets import load_anah_questions
    from maskdpo.prompt_sets import load_questions

    topic = {"name": "Marie Curie", "documents": ["She was a physicist."], "language": "en",
             "selected_questions": ["Where was Marie Curie born?"]}

    def load_dataset_double(path, name=None, *, split=None, **kwargs):
        if path != "opencompass/anah":
            raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed.")
        loaded = datasets.DatasetDict({"train": datasets.Dataset.from_list([topic, dict(topic, name="Ada")])})
        return loaded if split is None else loaded[split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset_double)
    with pytest.raises(ValueError, match=r"opencompass/anah\[train\] row 1: field 'id': question id .* repeats "
                                         r"opencompass/anah\[train\] row 0"):
        load_questions("opencompass/anah")
    topic["selected_questions"] = ["Where was Marie Curie born?", "What did she study?"]

    def distinct(path, name=None, *, split=None, **kwargs):
        if path != "opencompass/anah":
            raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed.")
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([topic])})

    monkeypatch.setattr(datasets, "load_dataset", distinct)
    questions = load_questions("opencompass/anah")
    assert [q.question for q in questions] == topic["selected_questions"] and questions[0].topic == "Marie Curie"
    assert [q.id for q in questions] == [q.id for q in load_anah_questions("opencompass/anah")]
    with pytest.raises(FileNotFoundError, match="someone/nothing: no such file, folder or Hub dataset"):
        load_questions("someone/nothing")


def test_sample_command_takes_anah_questions(tmp_path, tiny_llama_dir):
    from maskdpo.cli import main
    from maskdpo.prompt_sets import load_anah_questions

    anah = write_rows(tmp_path / "question_document.jsonl", ANAH_ROWS)
    out = tmp_path / "s.jsonl"
    result = CliRunner().invoke(main, ["sample", "--questions", str(anah), "--out", str(out), "--model",
                                       str(tiny_llama_dir), "--n", "1", "--max-new-tokens", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [r["question_id"] for r in lines(out)] == [q.id for q in load_anah_questions(anah)]
    assert lines(out)[0]["messages"][-1]["content"] == "Who was Ada Lovelace?"
    for command in ("sample", "annotate"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "question_document.jsonl" in help_text and "Hub name" in help_text
