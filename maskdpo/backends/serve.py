"""A small OpenAI-compatible chat-completions server over the ``hf`` backend.

    python -m maskdpo.backends.serve --model PATH [--host 127.0.0.1] [--port 8000]

Serves ``POST /v1/chat/completions`` (``messages``, ``n``, ``seed``,
``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty`` /
``repeat_penalty``, ``max_tokens`` / ``max_completion_tokens``, ``stop``;
temperature 0 means greedy) and ``GET /v1/models``. It exists so the
``openai`` backend can be checked end to end against a real HTTP server on a
CPU machine; for real serving use ``lmdeploy serve api_server``, vLLM or
llama.cpp's ``llama-server``.

It can behave like those servers do:

- ``--hidden-defaults min_p=0.05,repetition_penalty=1.1`` applies sampling
  defaults the request did not set (llama.cpp's server does; vLLM and
  LMDeploy fill unset fields from ``generation_config.json``);
- ``--strict-fields`` refuses any field outside OpenAI's chat-completions API
  with HTTP 400 ``Unrecognized request argument supplied: top_k`` (OpenAI's
  own API does);
- ``--context-length C`` caps ``max_tokens`` at what the context leaves after
  the prompt and answers ``finish_reason: "length"`` when the cap cuts a
  response (llama.cpp's server does);
- ``--served-model-name`` names the model in ``/v1/models`` and in every
  response, whatever name the request used (llama.cpp's server serves any
  name with its one model);
- ``--fail-first K --fail-status 503`` makes the first K completion calls fail.

Requests are bounded — body size (``--max-body-bytes``), ``n`` (``--max-n``),
``max_tokens`` (``--max-tokens-limit``) — and every malformed request gets a
JSON 4xx answer (``{"error": {"message", "type", "code"}}``), never a
traceback. Generations run one at a time (the model is not thread-safe).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from ..jsonl import FieldError
from ..records import parse_messages
from .base import Decoding, GenerationRequest, finish_reason_of

# The request fields of OpenAI's chat-completions API; --strict-fields refuses any other.
OPENAI_FIELDS = frozenset({
    "model", "messages", "n", "seed", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "stop", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "response_format", "tools", "tool_choice", "parallel_tool_calls", "service_tier", "store", "metadata",
})
# Sampling fields a hidden default can be given for (the ones the hf backend can apply).
HIDDEN_DEFAULT_FIELDS = ("min_p", "repetition_penalty", "temperature", "top_p", "top_k")
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_N = 16
DEFAULT_MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 256


class BadRequest(ValueError):
    """A request the server refuses; ``status`` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_hidden_defaults(text: str | None) -> dict[str, float]:
    """``"min_p=0.05,repetition_penalty=1.1"`` → ``{"min_p": 0.05, "repetition_penalty": 1.1}``."""
    defaults: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip().replace("repeat_penalty", "repetition_penalty")
        if not sep or name not in HIDDEN_DEFAULT_FIELDS:
            raise ValueError(f"--hidden-defaults: expected NAME=VALUE with NAME in {', '.join(HIDDEN_DEFAULT_FIELDS)}, "
                             f"got {item.strip()!r}")
        try:
            defaults[name] = float(value)
        except ValueError:
            raise ValueError(f"--hidden-defaults: {name} must be a number, got {value.strip()!r}") from None
    return defaults


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _alias(body: dict, names: tuple[str, ...]) -> Any:
    """The value of whichever of ``names`` the body sets; two different values are an error."""
    given = {n: body[n] for n in names if body.get(n) is not None}
    if len({json.dumps(v) for v in given.values()}) > 1:
        raise BadRequest(f"{' and '.join(repr(n) for n in given)} disagree: {given}")
    return next(iter(given.values()), None)


def decoding_from_body(body: dict, *, hidden_defaults: dict[str, float] | None = None,
                       max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT) -> Decoding:
    """The decoding a request asks for; fields it leaves unset take ``hidden_defaults`` first."""
    body = dict(body)
    body["repetition_penalty"] = _alias(body, ("repetition_penalty", "repeat_penalty"))
    body["max_tokens"] = _alias(body, ("max_tokens", "max_completion_tokens"))
    for name, value in (hidden_defaults or {}).items():
        if body.get(name) is None:
            body[name] = value
    for name in ("frequency_penalty", "presence_penalty"):  # not implemented here: only the neutral value
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise BadRequest(f"'{name}' other than 0 is not supported by this server")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise BadRequest(f"'stop' must be a string or a list of non-empty strings, got {body.get('stop')!r}")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        raise BadRequest(f"'max_tokens' must be an integer in [1, {max_tokens_limit}], got {max_tokens!r}")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 1e-9, 1.0)
    top_k = int(_number(body, "top_k", 0, 0, 1e9))
    min_p = _number(body, "min_p", 0.0, 0.0, 1.0)
    penalty = _number(body, "repetition_penalty", 1.0, 1e-3, 10.0)
    extra = dict(stop=tuple(stop or ()), repetition_penalty=penalty)
    if temperature == 0.0 or top_k == 1:
        return dataclasses.replace(Decoding.greedy(max_tokens), **extra)
    return Decoding(do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature, max_new_tokens=max_tokens,
                    min_p=min_p, **extra)


class ChatServer(ThreadingHTTPServer):
    """The server; options as in the module docstring. ``keep_bodies`` keeps the latest K completion
    request bodies in ``bodies`` (for inspection by tests); ``on_request(body)`` is called before each
    generation (tests use it to observe or slow the server)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Any, *, fail_first: int = 0, fail_status: int = 503,
                 hidden_defaults: dict[str, float] | None = None, strict_fields: bool = False,
                 context_length: int | None = None, served_model_name: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_n: int = DEFAULT_MAX_N,
                 max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT, keep_bodies: int = 0,
                 request_timeout: float = 30.0, on_request: Callable[[dict], None] | None = None):
        super().__init__(address, ChatHandler)
        self.backend = backend
        self.lock = threading.Lock()  # one generation at a time
        self.fail_left = fail_first
        self.fail_status = fail_status
        self.hidden_defaults = dict(hidden_defaults or {})
        self.strict_fields = strict_fields
        self.context_length = context_length
        self.served_model_name = served_model_name or str(backend.model)
        self.max_body_bytes = max_body_bytes
        self.max_n = max_n
        self.max_tokens_limit = max_tokens_limit
        self.request_timeout = request_timeout
        self.on_request = on_request
        self.bodies: deque = deque(maxlen=keep_bodies)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def prompt_tokens(self, messages: list[dict]) -> int:
        from .prompting import render_prompt

        tokenizer = self.backend.tokenizer
        return len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])

    def complete(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if self.strict_fields:
            unknown = sorted(set(body) - OPENAI_FIELDS)
            if unknown:
                raise BadRequest(f"Unrecognized request argument{'s' if len(unknown) > 1 else ''} supplied: "
                                 f"{', '.join(unknown)}")
        if body.get("stream"):
            raise BadRequest("'stream' is not supported by this server")
        try:
            messages = parse_messages(body.get("messages"), "messages")
        except FieldError as exc:
            raise BadRequest(str(exc)) from None
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.max_n:
            raise BadRequest(f"'n' must be an integer in [1, {self.max_n}], got {n!r}")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest(f"'seed' must be an integer, got {seed!r}")
        decoding = decoding_from_body(body, hidden_defaults=self.hidden_defaults,
                                      max_tokens_limit=self.max_tokens_limit)
        if self.context_length is not None:
            room = self.context_length - self.prompt_tokens(messages)
            if room < 1:
                raise BadRequest(f"the prompt does not fit the context of {self.context_length} tokens")
            if decoding.max_new_tokens > room:  # like llama.cpp: silently capped, reported as "length"
                decoding = dataclasses.replace(decoding, max_new_tokens=room)
        if seed is None:  # like OpenAI: without a seed, sampling is not reproducible
            seed = random.getrandbits(31)
        if self.on_request is not None:
            self.on_request(body)
        with self.lock:
            texts = self.backend.generate([GenerationRequest(messages, n=n, seed=seed)], decoding)[0]
        return {"id": f"chatcmpl-{random.getrandbits(48):x}", "object": "chat.completion", "created": int(time.time()),
                "model": self.served_model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": str(t)},
                             "finish_reason": finish_reason_of(t)}
                            for i, t in enumerate(texts)]}


_DIGITS = re.compile(r"[0-9]+")


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # a client that stops sending cannot hold a thread forever
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and tools print their own progress
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away
            self.close_connection = True

    def _error(self, status: int, message: str, kind: str | None = None) -> None:
        kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.served_model_name, "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def _read_body(self) -> bytes:
        """The request body, within the size limit; :class:`BadRequest` for any bad framing."""
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("chunked request bodies are not supported: send Content-Length", 411)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise BadRequest("a Content-Length header is required", 411)
        if len(set(v.strip() for v in lengths)) > 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise BadRequest(f"bad Content-Length: {', '.join(lengths)!r}")
        length = int(lengths[0])
        if length > self.server.max_body_bytes:
            raise BadRequest(f"request body of {length} bytes exceeds the limit of {self.server.max_body_bytes}", 413)
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise BadRequest(f"request body ended after {len(raw)} of {length} bytes")
        return raw

    def do_POST(self) -> None:
        # The server speaks HTTP/1.0: every connection closes after its answer, so a body left
        # unread (too large, bad length) cannot be taken for the next request.
        try:
            self._post()
        except BadRequest as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # a generation failure is the server's fault, reported as 500
            self._error(500, f"{type(exc).__name__}: {exc}")

    def _post(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            raise BadRequest(f"no route {self.path}", 404)
        try:
            raw = self._read_body()
        except TimeoutError:
            raise BadRequest("timed out reading the request body", 408) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None

        def no_constants(name: str) -> Any:
            raise BadRequest(f"invalid JSON: {name} is not a JSON number")

        try:
            body = json.loads(text or "null", parse_constant=no_constants)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except RecursionError:
            raise BadRequest("invalid JSON: nested too deeply") from None
        self.server.bodies.append(body)
        with self.server.lock:
            inject = self.server.fail_left > 0
            if inject:
                self.server.fail_left -= 1
        if inject:
            self._error(self.server.fail_status, "injected failure (--fail-first)")
            return
        self._send(200, self.server.complete(body))


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
    parser.add_argument("--served-model-name", default=None,
                        help="the name in /v1/models and in every response (default: --model)")
    parser.add_argument("--hidden-defaults", default=None,
                        help="NAME=VALUE,... applied when a request leaves NAME unset "
                             f"(NAME in {', '.join(HIDDEN_DEFAULT_FIELDS)}), e.g. min_p=0.05,repetition_penalty=1.1")
    parser.add_argument("--strict-fields", action="store_true",
                        help="refuse fields outside OpenAI's chat-completions API with HTTP 400 (as OpenAI does)")
    parser.add_argument("--context-length", type=int, default=None,
                        help="cap max_tokens at what the context leaves after the prompt (finish_reason 'length')")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max-n", type=int, default=DEFAULT_MAX_N)
    parser.add_argument("--max-tokens-limit", type=int, default=DEFAULT_MAX_TOKENS_LIMIT)
    parser.add_argument("--fail-first", type=int, default=0, help="fail the first K completion calls (testing retries)")
    parser.add_argument("--fail-status", type=int, default=503)
    args = parser.parse_args(argv)
    try:
        hidden = parse_hidden_defaults(args.hidden_defaults)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("max_body_bytes", "max_n", "max_tokens_limit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    from .hf import HFBackend

    backend = HFBackend(args.model, device=args.device, batch_size=args.batch_size)
    server = ChatServer((args.host, args.port), backend, fail_first=args.fail_first, fail_status=args.fail_status,
                        hidden_defaults=hidden, strict_fields=args.strict_fields, context_length=args.context_length,
                        served_model_name=args.served_model_name, max_body_bytes=args.max_body_bytes,
                        max_n=args.max_n, max_tokens_limit=args.max_tokens_limit)
    print(f"serving {args.model} as {server.served_model_name!r} at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
