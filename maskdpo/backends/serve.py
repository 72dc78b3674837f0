"""A small OpenAI-compatible chat-completions server over the ``hf`` backend.

    python -m maskdpo.backends.serve --model PATH [--host 127.0.0.1] [--port 8000]

Serves ``POST /v1/chat/completions`` (``messages``, ``n``, ``seed``,
``temperature``, ``top_p``, ``top_k``, ``max_tokens``; temperature 0 means
greedy) and ``GET /v1/models``. It exists so the ``openai`` backend can be
checked end to end against a real HTTP server on a CPU machine; for real
serving use ``lmdeploy serve api_server``. ``--fail-first K --fail-status 503``
makes the first K completion calls fail, to exercise client retries.
Requests are served one generation at a time (the model is not thread-safe).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..jsonl import FieldError
from ..records import parse_messages
from .base import Decoding, GenerationRequest


class BadRequest(ValueError):
    pass


def decoding_from_body(body: dict) -> Decoding:
    def number(name: str, default: float, lo: float, hi: float) -> float:
        value = body.get(name, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise BadRequest(f"'{name}' must be a number in [{lo}, {hi}], got {value!r}")
        return float(value)

    temperature = number("temperature", 1.0, 0.0, 2.0)
    top_p = number("top_p", 1.0, 1e-9, 1.0)
    top_k = int(number("top_k", 0, 0, 1e9))
    max_tokens = int(number("max_tokens", 256, 1, 1e6))
    if temperature == 0.0 or top_k == 1:
        return Decoding.greedy(max_tokens)
    return Decoding(do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature, max_new_tokens=max_tokens)


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Any, *, fail_first: int = 0, fail_status: int = 503):
        super().__init__(address, ChatHandler)
        self.backend = backend
        self.lock = threading.Lock()  # one generation at a time
        self.fail_left = fail_first
        self.fail_status = fail_status
        self.bodies: list[dict] = []  # every completion request received, for inspection

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def complete(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        try:
            messages = parse_messages(body.get("messages"), "messages")
        except FieldError as exc:
            raise BadRequest(str(exc)) from None
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadRequest(f"'n' must be a positive integer, got {n!r}")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest(f"'seed' must be an integer, got {seed!r}")
        decoding = decoding_from_body(body)
        if seed is None:  # like OpenAI: without a seed, sampling is not reproducible
            seed = random.getrandbits(31)
        with self.lock:
            texts = self.backend.generate([GenerationRequest(messages, n=n, seed=seed)], decoding)[0]
        return {"id": f"chatcmpl-{random.getrandbits(48):x}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or self.backend.model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)]}


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and tools print their own progress
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.backend.model, "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            self._error(400, f"invalid JSON: {exc.msg}", "invalid_request_error")
            return
        self.server.bodies.append(body)
        with self.server.lock:
            inject = self.server.fail_left > 0
            if inject:
                self.server.fail_left -= 1
        if inject:
            self._error(self.server.fail_status, "injected failure (--fail-first)", "server_error")
            return
        try:
            self._send(200, self.server.complete(body))
        except BadRequest as exc:
            self._error(400, str(exc), "invalid_request_error")
        except Exception as exc:  # a generation failure is the server's fault, reported as 500
            self._error(500, f"{type(exc).__name__}: {exc}", "server_error")


def start_server(backend: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> ChatServer:
    """Serve ``backend`` in a background thread; ``port=0`` picks a free port (see ``server.base_url``)."""
    server = ChatServer((host, port), backend, **options)
    threading.Thread(target=server.serve_forever, name="maskdpo-serve", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m maskdpo.backends.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a transformers model folder (or hub name already cached)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fail-first", type=int, default=0, help="fail the first K completion calls (testing retries)")
    parser.add_argument("--fail-status", type=int, default=503)
    args = parser.parse_args(argv)
    from .hf import HFBackend

    backend = HFBackend(args.model, device=args.device, batch_size=args.batch_size)
    server = ChatServer((args.host, args.port), backend, fail_first=args.fail_first, fail_status=args.fail_status)
    print(f"serving {args.model} at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
