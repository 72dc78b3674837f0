"""``maskdpo.backends.serve`` under malformed requests, over raw sockets: every one gets a JSON 4xx answer."""

import json
import socket
import time

import pytest
import torch

from maskdpo.backends.base import load_backend
from maskdpo.backends.serve import BadRequest, decoding_from_body, parse_hidden_defaults, start_server

torch.set_num_threads(1)

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    srv = start_server(load_backend("hf", str(tiny_llama_dir), device="cpu"), port=0, served_model_name="tiny",
                       max_body_bytes=4096, max_n=4, max_tokens_limit=64, request_timeout=1.0)
    yield srv
    srv.shutdown()
    srv.server_close()


def raw(server, data: bytes, *, close_write: bool = False, timeout: float = 10.0) -> tuple[int, dict]:
    """Send bytes as they are; return the answer's status and JSON body (the server closes the connection)."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def post(body: bytes, *headers: str, length: str | None = "auto") -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    if length == "auto":
        lines.append(f"Content-Length: {len(body)}")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(**fields) -> bytes:
    return json.dumps({"model": "tiny", "messages": ADA, "max_tokens": 4, "seed": 1, **fields}).encode()


def assert_error(answer: tuple[int, dict], status: int, text: str) -> None:
    got, payload = answer
    assert got == status, payload
    assert text in payload["error"]["message"], payload
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["code"] == status


def test_a_valid_request_is_answered(server):
    status, payload = raw(server, post(request()))
    assert status == 200 and payload["model"] == "tiny" and len(payload["choices"]) == 1
    assert payload["choices"][0]["finish_reason"] in ("stop", "length")


def test_non_utf8_body(server):
    assert_error(raw(server, post(b'{"messages": "\xff\xfe"}')), 400, "not valid UTF-8 (byte 14)")


@pytest.mark.parametrize("value", ["abc", "12abc", "1_0", "+5", "0x10", ""])
def test_malformed_content_length(server, value):
    assert_error(raw(server, post(request(), length=value)), 400, "bad Content-Length")


def test_negative_content_length_answers_at_once(server):
    start = time.perf_counter()
    assert_error(raw(server, post(request(), length="-1")), 400, "bad Content-Length")
    assert time.perf_counter() - start < 2


def test_huge_content_length_is_refused_unread(server):
    assert_error(raw(server, post(b"", length=str(10**15))), 413, "exceeds the limit of 4096")
    assert_error(raw(server, post(b"x" * 5000)), 413, "5000 bytes exceeds the limit of 4096")


def test_conflicting_content_lengths(server):
    body = request()
    assert_error(raw(server, post(body, f"Content-Length: {len(body) + 1}")), 400, "bad Content-Length")


def test_missing_content_length_and_chunked_bodies(server):
    assert_error(raw(server, post(request(), length=None), close_write=True), 411, "Content-Length header is required")
    assert_error(raw(server, post(b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked", length=None)), 411,
                 "chunked")


def test_a_body_shorter_than_its_content_length(server):
    body = request()
    assert_error(raw(server, post(body, length=str(len(body) + 10)), close_write=True), 400,
                 f"ended after {len(body)} of {len(body) + 10} bytes")


def test_a_client_that_stops_sending_times_out(server):
    body = request()
    start = time.perf_counter()
    assert_error(raw(server, post(body[:10], length=str(len(body)))), 408, "timed out")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("body, text", [
    (b"{not json", "invalid JSON"),
    (b'{"messages": NaN}', "NaN is not a JSON number"),
    (b"[1, 2]", "must be a JSON object"),
    (b"", "must be a JSON object"),
])
def test_bad_json(server, body, text):
    assert_error(raw(server, post(body)), 400, text)


def test_deep_json_within_the_size_limit(server):
    assert_error(raw(server, post(b"[" * 2000 + b"]" * 2000)), 400, "invalid JSON: nested too deeply")


@pytest.mark.parametrize("fields, text", [
    ({"n": 5}, "'n' must be an integer in [1, 4]"),
    ({"n": 0}, "'n' must be an integer in [1, 4]"),
    ({"n": True}, "'n' must be an integer"),
    ({"max_tokens": 65}, "'max_tokens' must be an integer in [1, 64]"),
    ({"max_tokens": 0}, "'max_tokens'"),
    ({"max_tokens": 8, "max_completion_tokens": 9}, "disagree"),
    ({"temperature": 3}, "'temperature' must be a number in [0, 2]"),
    ({"seed": "x"}, "'seed' must be an integer"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"frequency_penalty": 0.5}, "not supported"),
    ({"stop": [1]}, "'stop'"),
    ({"stream": True}, "'stream' is not supported"),
    ({"repetition_penalty": 1.0, "repeat_penalty": 1.1}, "disagree"),
])
def test_bounded_and_checked_fields(server, fields, text):
    assert_error(raw(server, post(request(**fields))), 400, text)


def test_unknown_route(server):
    status, payload = raw(server, post(request()).replace(b"/v1/chat/completions", b"/v1/nothing", 1))
    assert status == 404 and "no route" in payload["error"]["message"]


def test_request_bodies_are_not_kept_unless_asked(server):
    raw(server, post(request()))
    assert len(server.bodies) == 0 and server.bodies.maxlen == 0


def test_the_server_survives_all_of_the_above(server):
    status, payload = raw(server, post(request(n=2)))
    assert status == 200 and len(payload["choices"]) == 2


def test_hidden_defaults_apply_only_to_unset_fields():
    hidden = parse_hidden_defaults("min_p=0.05,repeat_penalty=1.1")
    assert hidden == {"min_p": 0.05, "repetition_penalty": 1.1}
    unset = decoding_from_body({"temperature": 0.8, "top_k": 40}, hidden_defaults=hidden)
    assert unset.min_p == 0.05 and unset.repetition_penalty == 1.1
    neutral = decoding_from_body({"temperature": 0.8, "top_k": 40, "min_p": 0, "repeat_penalty": 1.0},
                                 hidden_defaults=hidden)
    assert neutral.min_p == 0.0 and neutral.repetition_penalty == 1.0
    greedy = decoding_from_body({"temperature": 0}, hidden_defaults=hidden)
    assert not greedy.do_sample and greedy.repetition_penalty == 1.1  # penalties reach greedy calls too
    for bad in ("typical_p=0.9", "min_p", "min_p=high"):
        with pytest.raises(ValueError, match="--hidden-defaults"):
            parse_hidden_defaults(bad)
    with pytest.raises(BadRequest, match="disagree"):
        decoding_from_body({"repetition_penalty": 1.0, "repeat_penalty": 1.1})
