"""The ``openai`` backend against a real HTTP server on 127.0.0.1 serving the ``hf`` backend."""

import socket
import subprocess
import sys

import pytest
import torch

from maskdpo.backends.base import Decoding, GenerationRequest, load_backend
from maskdpo.backends.openai import OpenAIError, request_body
from maskdpo.backends.prompting import replica_seeds
from maskdpo.backends.serve import start_server

torch.set_num_threads(1)

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]
PAPER = Decoding(max_new_tokens=8)


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    srv = start_server(load_backend("hf", str(tiny_llama_dir), device="cpu"), port=0)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fresh(server):
    server.bodies.clear()
    server.fail_left = 0
    return server


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


def test_retries_after_injected_503s(fresh):
    fresh.fail_left, fresh.fail_status = 2, 503
    backend = client(fresh, concurrency=1)
    out = backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert len(out[0]) == 1
    assert backend.retries == 2 and len(fresh.bodies) == 3


def test_gives_up_after_max_retries(fresh):
    fresh.fail_left, fresh.fail_status = 10, 429
    backend = client(fresh, concurrency=1, max_retries=2)
    with pytest.raises(OpenAIError, match=r"HTTP 429.*gave up after 3 attempts"):
        backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    fresh.fail_left = 0


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
    assert backend.retries == 1


def test_base_url_from_environment_or_a_clear_error(monkeypatch, server):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        load_backend("openai", "tiny")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    assert load_backend("openai", "tiny").base_url == server.base_url


def test_request_body_states_top_p_and_top_k_explicitly():
    body = request_body("m", ADA, Decoding(), 1, 3)
    assert body["top_p"] == 1.0 and body["top_k"] == 40 and body["temperature"] == 0.8 and body["seed"] == 3


def test_serve_module_has_a_help():
    out = subprocess.run([sys.executable, "-m", "maskdpo.backends.serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--fail-first" in out.stdout
