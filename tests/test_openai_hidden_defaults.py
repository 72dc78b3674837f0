"""`maskdpo sample` and `maskdpo annotate` through servers that apply hidden sampling defaults.

llama.cpp's server applies min-p 0.05 and a repetition penalty of 1.1 to any
request that does not set them; vLLM and LMDeploy fill unset fields from
generation_config.json. Our test server (``maskdpo.backends.serve``) does the
same with ``hidden_defaults``, really applied by the hf backend (SmolLM2-135M,
a real model whose distributions those settings change). The requests the
``openai`` backend sends must neutralise them: samples and judge answers
through such a server equal those through a server without them.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from maskdpo.backends.base import load_backend
from maskdpo.backends.serve import parse_hidden_defaults, start_server
from maskdpo.cli import main

torch.set_num_threads(1)

LLAMA_CPP_DEFAULTS = "min_p=0.05,repetition_penalty=1.1"
QUESTIONS = [
    {"id": "ada", "question": "Who was Ada Lovelace?", "topic": "Ada Lovelace", "language": "en",
     "document": "Ada Lovelace (1815-1852) was an English mathematician. She wrote the first published algorithm."},
    {"id": "curie", "question": "Who was Marie Curie?", "topic": "Marie Curie", "language": "en",
     "document": "Marie Curie (1867-1934) was a physicist and chemist. She won two Nobel Prizes."},
]


@pytest.fixture(scope="module")
def smol(smollm2_model_dir):
    return load_backend("hf", str(smollm2_model_dir), device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def servers(smol):
    plain = start_server(smol, port=0, served_model_name="smol")
    hidden = start_server(smol, port=0, served_model_name="smol", hidden_defaults=parse_hidden_defaults(LLAMA_CPP_DEFAULTS))
    yield plain, hidden
    for srv in (plain, hidden):
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def records(path) -> list[dict]:
    """Records without the server's address (it differs between servers, nothing else may)."""
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        record["meta"].pop("chat_template")
        out.append(record)
    return out


def sample(server, questions, out, *extra: str) -> str:
    return cli("sample", "--backend", "openai", "--base-url", server.base_url, "--model", "smol", "--questions",
               questions, "--out", out, "--n", "2", "--max-new-tokens", "16", "--seed", "3", *extra)


@pytest.fixture(scope="module")
def sampled(servers, questions, tmp_path_factory):
    """The same sampling through both servers, with each profile."""
    plain, hidden = servers
    folder = tmp_path_factory.mktemp("samples")
    outputs = {}
    for name, server in (("plain", plain), ("hidden", hidden)):
        for profile in ("extended", "openai"):
            out = folder / f"{name}-{profile}.jsonl"
            outputs[name, profile] = (out, sample(server, questions, out, "--server-profile", profile))
    return outputs


def test_samples_through_a_server_with_hidden_defaults_equal_those_without(sampled):
    plain, hidden = records(sampled["plain", "extended"][0]), records(sampled["hidden", "extended"][0])
    assert len(plain) == 4 and plain == hidden
    for r in plain:  # what was sent is in each record
        sent = r["generation"]["server"]["sent"]
        assert sent["min_p"] == 0.0 and sent["repetition_penalty"] == 1.0 and sent["repeat_penalty"] == 1.0
        assert sent["top_k"] == 40 and sent["temperature"] == 0.8 and sent["seed"] == r["generation"]["seed"]
        assert r["generation"]["server"]["profile"] == "extended" and r["generation"]["server"]["model"] == "smol"


def test_the_hidden_defaults_change_samples_when_not_neutralised(sampled):
    """The check above can fail: a profile that cannot send min_p / repetition_penalty lets them in."""
    plain, hidden = records(sampled["plain", "openai"][0]), records(sampled["hidden", "openai"][0])
    assert [r["response"] for r in plain] != [r["response"] for r in hidden]
    for r in hidden:
        assert r["generation"]["server"]["not_sent"] == {"top_k": 40, "min_p": 0.0, "repetition_penalty": 1.0,
                                                         "repeat_penalty": 1.0}
    output = sampled["hidden", "openai"][1]
    assert "NOT sent" in output and "top_k=40" in output


def test_truncated_samples_are_marked_and_counted(sampled, servers, questions, tmp_path, smol):
    # 16 new tokens cut every one of these answers off.
    for (out, output) in sampled.values():
        reasons = [r["finish_reason"] for r in records(out)]
        assert reasons == ["length"] * 4
        assert "4 TRUNCATED" in output
    # A context that leaves room for 3 tokens, whatever max_tokens asks (llama.cpp caps silently).
    _, hidden = servers
    prompts = {q["id"]: hidden.prompt_tokens([{"role": "user", "content": q["question"]}]) for q in QUESTIONS}
    hidden.context_length = max(prompts.values()) + 3
    try:
        output = cli("sample", "--backend", "openai", "--base-url", hidden.base_url, "--model", "smol",
                     "--questions", questions, "--out", tmp_path / "capped.jsonl", "--n", "1",
                     "--max-new-tokens", "200")
    finally:
        hidden.context_length = None
    capped = records(tmp_path / "capped.jsonl")
    assert [r["finish_reason"] for r in capped] == ["length", "length"] and "2 TRUNCATED" in output
    for r in capped:  # what the context left (re-tokenising the text may differ by a token)
        room = max(prompts.values()) + 3 - prompts[r["question_id"]]
        assert len(smol.tokenizer(r["response"], add_special_tokens=False)["input_ids"]) <= room + 1, (room, r)


def test_a_finished_answer_is_not_marked(servers, tmp_path):
    plain, _ = servers
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "hi", "question": "Say hello.", "language": "en"}) + "\n")
    output = cli("sample", "--backend", "openai", "--base-url", plain.base_url, "--model", "smol", "--questions",
                 path, "--out", tmp_path / "s.jsonl", "--n", "1", "--max-new-tokens", "64", "--greedy")
    (record,) = records(tmp_path / "s.jsonl")
    assert record["finish_reason"] == "stop" and "TRUNCATED" not in output


def annotate(server, samples, questions, out, *extra: str) -> str:
    return cli("annotate", "--backend", "openai", "--base-url", server.base_url, "--model", "smol", "--samples",
               samples, "--questions", questions, "--out", out, "--prompts", "maskdpo", "--max-new-tokens", "12",
               "--limit", "2", *extra)


def test_judge_answers_through_a_server_with_hidden_defaults_equal_those_without(sampled, servers, questions,
                                                                                tmp_path):
    plain, hidden = servers
    samples = sampled["plain", "extended"][0]
    annotate(plain, samples, questions, tmp_path / "plain.jsonl")
    annotate(hidden, samples, questions, tmp_path / "hidden.jsonl")
    a, b = records(tmp_path / "plain.jsonl"), records(tmp_path / "hidden.jsonl")
    assert len(a) == 2 and a == b
    answers = [s["raw"]["answers"] for r in a for s in r["sentences"]]
    assert answers and all(answers)
    # The check can fail: without the neutral penalty the server's 1.1 changes the greedy judge's answers.
    annotate(hidden, samples, questions, tmp_path / "leaky.jsonl", "--server-profile", "openai")
    leaky = records(tmp_path / "leaky.jsonl")
    assert [s["raw"]["answers"] for r in leaky for s in r["sentences"]] != answers


def test_the_server_really_applies_its_hidden_defaults(servers, smol):
    from maskdpo.backends.base import Decoding, GenerationRequest
    from maskdpo.backends.hf import describe_processors

    _, hidden = servers
    ask = [GenerationRequest([{"role": "user", "content": "Hi"}], n=1, seed=1)]
    load_backend("openai", "smol", base_url=hidden.base_url, server_profile="openai").generate(ask, Decoding(max_new_tokens=2))
    built = dict(describe_processors(smol.last_processors))
    assert built["RepetitionPenaltyLogitsProcessor"] == {"penalty": 1.1}
    assert built["MinPLogitsWarper"] == {"min_p": 0.05}
    load_backend("openai", "smol", base_url=hidden.base_url).generate(ask, Decoding(max_new_tokens=2))
    built = dict(describe_processors(smol.last_processors))
    assert "RepetitionPenaltyLogitsProcessor" not in built and "MinPLogitsWarper" not in built
