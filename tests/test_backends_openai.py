"""The ``openai`` backend against a real HTTP server on 127.0.0.1 serving the ``hf`` backend."""

import _thread
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from maskdpo.backends.base import Decoding, GenerationError, GenerationRequest, finish_reason_of, load_backend
from maskdpo.backends.openai import EXTENDED_FIELDS, OpenAIError, request_body, same_model, sampling_fields
from maskdpo.backends.prompting import replica_seeds
from maskdpo.backends.serve import OPENAI_FIELDS, start_server

torch.set_num_threads(1)

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]
PAPER = Decoding(max_new_tokens=8)
NEUTRAL = {"min_p": 0.0, "repetition_penalty": 1.0, "repeat_penalty": 1.0, "frequency_penalty": 0.0,
           "presence_penalty": 0.0}


@pytest.fixture(scope="module")
def tiny_hf(tiny_llama_dir):
    return load_backend("hf", str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="module")
def server(tiny_hf):
    srv = start_server(tiny_hf, port=0, served_model_name="tiny", keep_bodies=1000)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fresh(server):
    server.bodies.clear()
    server.fail_left = 0
    server.served_model_name = "tiny"
    server.on_request = None
    return server


@pytest.fixture
def strict_server(tiny_hf):
    """Refuses fields outside OpenAI's API, as OpenAI's own API does."""
    srv = start_server(tiny_hf, port=0, served_model_name="tiny", keep_bodies=100, strict_fields=True)
    yield srv
    srv.shutdown()
    srv.server_close()


def client(server, **options):
    options.setdefault("backoff", 0.01)
    return load_backend("openai", "tiny", base_url=server.base_url, **options)


def test_sampling_sends_every_field_and_one_call_per_replica(fresh):
    backend = client(fresh, concurrency=3)
    out = backend.generate([GenerationRequest(ADA, n=3, seed=5)], PAPER)
    assert len(out[0]) == 3 and len(set(out[0])) == 3
    assert len(fresh.bodies) == 3
    assert sorted(b["seed"] for b in fresh.bodies) == sorted(replica_seeds(5, 3))
    for body in fresh.bodies:
        assert body["n"] == 1 and body["top_p"] == 1.0 and body["top_k"] == 40
        assert body["temperature"] == 0.8 and body["max_tokens"] == 8
        assert {k: body[k] for k in NEUTRAL} == NEUTRAL  # a server's hidden min-p / penalties are overridden
    # Each completion records what was sent, the profile and the served model.
    for text, seed in zip(out[0], replica_seeds(5, 3)):
        assert text.server["profile"] == "extended" and text.server["model"] == "tiny"
        assert text.server["sent"]["seed"] == seed and text.server["sent"]["top_k"] == 40
        assert "not_sent" not in text.server
        body = next(b for b in fresh.bodies if b["seed"] == seed)
        assert text.server["sent"] == {k: v for k, v in body.items() if k not in ("model", "messages", "n", "stream")}


def test_seeds_reproduce_over_http(fresh):
    backend = client(fresh)
    a = backend.generate([GenerationRequest(ADA, n=2, seed=5)], PAPER)
    b = backend.generate([GenerationRequest(ADA, n=2, seed=5)], PAPER)
    c = backend.generate([GenerationRequest(ADA, n=2, seed=6)], PAPER)
    assert a == b and a != c


def test_server_n_sends_n_and_seed_in_one_call(fresh):
    out = client(fresh, server_n=True).generate([GenerationRequest(ADA, n=3, seed=9)], PAPER)
    assert len(out[0]) == 3
    assert len(fresh.bodies) == 1 and fresh.bodies[0]["n"] == 3 and fresh.bodies[0]["seed"] == 9


def test_greedy_body(fresh):
    client(fresh).generate([GenerationRequest(ADA, n=1)], Decoding.greedy(4))
    body = fresh.bodies[0]
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and body["top_p"] == 1.0 and "seed" not in body
    assert {k: body[k] for k in NEUTRAL} == NEUTRAL


def test_finish_reason_length_when_max_tokens_cuts_the_response(fresh):
    out = client(fresh).generate([GenerationRequest(ADA, n=2, seed=1)], Decoding(max_new_tokens=3))
    assert [finish_reason_of(t) for t in out[0]] == ["length", "length"]


def test_finish_reason_length_when_the_server_context_caps_max_tokens(tiny_hf):
    srv = start_server(tiny_hf, port=0, served_model_name="tiny", keep_bodies=10, context_length=10_000)
    try:
        prompt_tokens = srv.prompt_tokens(ADA)
        srv.context_length = prompt_tokens + 2  # room for two new tokens although 50 are asked
        out = client(srv).generate([GenerationRequest(ADA, n=1, seed=1)], Decoding(max_new_tokens=50))
        assert finish_reason_of(out[0][0]) == "length" and srv.bodies[0]["max_tokens"] == 50
        two = client(srv).generate([GenerationRequest(ADA, n=1, seed=1)], Decoding(max_new_tokens=2))
        assert out == two  # the context left room for exactly two tokens
    finally:
        srv.shutdown()
        srv.server_close()


def test_retries_after_injected_503s_are_counted_and_logged(fresh, caplog):
    fresh.fail_left, fresh.fail_status = 2, 503
    backend = client(fresh, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="maskdpo.backends.openai"):
        out = backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert len(out[0]) == 1
    assert backend.retries == 2 and len(fresh.bodies) == 3 and backend.retry_reasons == {"HTTP 503": 2}
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all("HTTP 503" in m and "injected failure" in m for m in retries)
    assert any("retried calls: 2 (HTTP 503 ×2)" in note for note in backend.notes())


def test_gives_up_after_max_retries(fresh):
    fresh.fail_left, fresh.fail_status = 10, 429
    backend = client(fresh, concurrency=1, max_retries=2)
    with pytest.raises(OpenAIError, match=r"HTTP 429.*gave up after 3 attempts"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)


def test_http_500_is_retried_at_most_twice(fresh):
    fresh.fail_left, fresh.fail_status = 10, 500
    backend = client(fresh, concurrency=1, max_retries=5)
    with pytest.raises(GenerationError, match=r"HTTP 500.*gave up after 3 attempts"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert backend.retries == 2 and len(fresh.bodies) == 3


@pytest.mark.parametrize("status", [400, 404, 408, 409, 422])
def test_4xx_other_than_429_is_never_retried(fresh, status):
    fresh.fail_left, fresh.fail_status = 1, status
    backend = client(fresh, concurrency=1)
    with pytest.raises(OpenAIError, match=rf"HTTP {status}: .*\(not retried\)"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert backend.retries == 0 and len(fresh.bodies) == 1


def test_400_is_a_clear_error_and_not_retried(fresh):
    backend = client(fresh)
    bad = [{"role": "robot", "content": "hi"}]
    with pytest.raises(OpenAIError, match=r"HTTP 400: .*role.*\(not retried\)"):
        backend.generate([GenerationRequest(bad, n=1, seed=1)], PAPER)
    assert backend.retries == 0 and len(fresh.bodies) == 1


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    backend = load_backend("openai", "tiny", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(OpenAIError, match="ConnectError.*gave up after 2 attempts"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert backend.retries == 1 and backend.retry_reasons == {"ConnectError": 1}


def test_base_url_from_environment_or_a_clear_error(monkeypatch, server):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        load_backend("openai", "tiny")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    assert load_backend("openai", "tiny").base_url == server.base_url


def test_a_model_the_server_does_not_serve_is_an_error(fresh):
    with pytest.raises(OpenAIError, match=r"serves 'tiny', not the requested model 'llama-70b'"):
        load_backend("openai", "llama-70b", base_url=fresh.base_url).generate([GenerationRequest(ADA, seed=1)], PAPER)
    assert not fresh.bodies  # refused before any completion call


def test_model_mismatch_in_a_response_is_an_error_or_a_counted_warning(fresh, caplog):
    backend = client(fresh)
    backend.generate([GenerationRequest(ADA, seed=1)], PAPER)  # /models lists "tiny": fine
    fresh.served_model_name = "something-else"
    with pytest.raises(OpenAIError, match="serves 'something-else'"):
        backend.generate([GenerationRequest(ADA, seed=1)], PAPER)
    lenient = client(fresh, allow_model_mismatch=True)
    with caplog.at_level(logging.WARNING, logger="maskdpo.backends.openai"):
        out = lenient.generate([GenerationRequest(ADA, n=3, seed=1)], PAPER)
    assert all(t.server["model"] == "something-else" for t in out[0])
    assert lenient.mismatched_models == {"something-else": 3}  # one per response
    assert any("something-else" in note for note in lenient.notes())
    assert any("not the requested model" in r.getMessage() for r in caplog.records)


def test_same_model_accepts_dated_snapshots_only():
    assert same_model("gpt-4o", "gpt-4o") and same_model("gpt-4o", "gpt-4o-2024-08-06")
    assert not same_model("gpt-4o", "gpt-4o-mini") and not same_model("tiny", "other")


def test_auto_profile_switches_once_and_loudly_on_a_strict_server(strict_server, caplog):
    backend = client(strict_server, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="maskdpo.backends.openai"):
        out = backend.generate([GenerationRequest(ADA, n=3, seed=5)], PAPER)
    assert len(out[0]) == 3 and backend.profile == "openai"
    refused, *accepted = list(strict_server.bodies)
    assert "top_k" in refused and len(accepted) == 3  # one refused call, then only OpenAI's fields
    for body in accepted:
        assert set(body) <= OPENAI_FIELDS and not set(body) & set(EXTENDED_FIELDS)
        assert body["frequency_penalty"] == 0.0 and body["presence_penalty"] == 0.0 and body["top_p"] == 1.0
    for text in out[0]:  # what could not be sent is in every record...
        assert text.server["profile"] == "openai"
        assert text.server["not_sent"] == {"top_k": 40, "min_p": 0.0, "repetition_penalty": 1.0,
                                           "repeat_penalty": 1.0}
    notes = " ".join(backend.notes())  # ... and in the summary
    assert "switched to 'openai'" in notes and "NOT sent" in notes and "top_k=40" in notes
    assert any("switching to the 'openai' server profile" in r.getMessage() for r in caplog.records)
    assert backend.retries == 0


def test_openai_profile_sends_only_openai_fields_from_the_start(strict_server):
    backend = client(strict_server, server_profile="openai")
    out = backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(4))
    assert len(strict_server.bodies) == 1 and set(strict_server.bodies[0]) <= OPENAI_FIELDS
    assert strict_server.bodies[0]["temperature"] == 0.0
    assert out[0][0].server["not_sent"]["top_k"] == 1


def test_extended_profile_chosen_explicitly_does_not_switch(strict_server):
    backend = client(strict_server, server_profile="extended")
    with pytest.raises(OpenAIError, match=r"HTTP 400: Unrecognized request arguments supplied: .*top_k.*not retried"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert backend.profile == "extended"


def test_only_an_unknown_field_message_switches_profiles():
    from maskdpo.backends.openai import names_extended_field

    assert names_extended_field("Unrecognized request argument supplied: top_k")
    assert names_extended_field("min_p: Extra inputs are not permitted")
    assert not names_extended_field("top_k must be -1 (disable), or at least 1, got 0.")
    assert not names_extended_field("Unrecognized request argument supplied: foo")


def test_sampling_fields_per_profile():
    sent, not_sent = sampling_fields(Decoding(), "extended")
    assert sent["top_k"] == 40 and sent["min_p"] == 0.0 and not not_sent
    sent, not_sent = sampling_fields(Decoding(), "openai")
    assert "top_k" not in sent and not_sent["top_k"] == 40 and sent["temperature"] == 0.8
    with pytest.raises(ValueError, match="profile"):
        load_backend("openai", "m", base_url="http://127.0.0.1:1/v1", server_profile="vllm")


def test_ctrl_c_does_not_wait_for_calls_in_flight(fresh):
    release = threading.Event()
    fresh.on_request = lambda body: release.wait(60)  # every call hangs for up to a minute
    backend = client(fresh, concurrency=2)
    threading.Timer(0.5, _thread.interrupt_main).start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.generate([GenerationRequest(ADA, n=4, seed=1)], PAPER)
        assert time.perf_counter() - start < 5
    finally:
        release.set()


def test_request_body_states_every_sampling_field_explicitly():
    body = request_body("m", ADA, Decoding(), 1, 3)
    assert body["top_p"] == 1.0 and body["top_k"] == 40 and body["temperature"] == 0.8 and body["seed"] == 3
    assert {k: body[k] for k in NEUTRAL} == NEUTRAL and "stop" not in body
    assert request_body("m", ADA, Decoding.greedy(4, stop=("<|im_end|>",)), 1, None)["stop"] == ["<|im_end|>"]


def test_serve_module_has_a_help():
    out = subprocess.run([sys.executable, "-m", "maskdpo.backends.serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for option in ("--fail-first", "--hidden-defaults", "--strict-fields", "--context-length", "--max-n"):
        assert option in out.stdout
