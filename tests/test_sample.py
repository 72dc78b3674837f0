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
from maskdpo.sample import SampleSettings, parse_shard, run_sampling, select_items, settings_path, shard_slice

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


def test_kill_and_resume_gives_exactly_the_uninterrupted_records(tmp_path, tiny_llama_dir, tiny_backend):
    write_questions(tmp_path / "q.jsonl", 30)
    run_sampling(settings(tmp_path, tiny_llama_dir, out="whole.jsonl", max_new_tokens=12, batch_size=1), tiny_backend)
    whole = (tmp_path / "whole.jsonl").read_text()
    total = len(whole.splitlines())
    assert total == 90

    common = ["--questions", str(tmp_path / "q.jsonl"), "--model", str(tiny_llama_dir), "--n", "3",
              "--max-new-tokens", "12", "--batch-size", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tool = [sys.executable, str(ROOT / "tools" / "sample.py")]
    cut = tmp_path / "cut.jsonl"
    proc = subprocess.Popen(tool + common + ["--out", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill once some, but not all, records are written
            if cut.exists() and cut.read_text().count("\n") >= 10:
                break
            time.sleep(0.01)
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
