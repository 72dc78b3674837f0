"""The ``openai`` backend: any OpenAI-compatible chat-completions server.

Works with ``lmdeploy serve api_server``, vLLM, or :mod:`maskdpo.backends.serve`.
The base URL and key come from the options or from ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``.

Every request states its whole decoding: servers fill unset fields from the
model's ``generation_config.json`` (``lmdeploy serve api_server`` with
Llama-3.1: T 0.6, top-p 0.9), so ``top_p`` is always sent, and ``top_k`` is a
top-level JSON field (where the OpenAI client's ``extra_body`` puts it).

By default each of a request's ``n`` responses is its own call with ``n=1``
and the replica seed ``derive_seed(seed, j)`` (``lmdeploy serve`` honours only
``n=1``, and per-replica seeds make each response reproducible on its own);
``server_n=True`` sends one call with ``n`` and ``seed`` instead.

Transient failures (HTTP 429 and 5xx, connection errors, timeouts) are retried
with exponential backoff (honouring ``Retry-After``); any other HTTP error
fails at once with the server's message.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from .base import Decoding, GenerationRequest
from .prompting import replica_seeds, template_meta

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIError(RuntimeError):
    """A chat-completions call failed for good (non-transient error, or retries exhausted)."""


def request_body(model: str, messages: list[dict], decoding: Decoding, n: int, seed: int | None) -> dict:
    """The JSON body of one chat-completions call, with every sampling field explicit."""
    body: dict[str, Any] = {"model": model, "messages": messages, "n": n, "max_tokens": decoding.max_new_tokens,
                            "stream": False}
    if decoding.do_sample:
        body.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)
    else:  # greedy on every server: temperature 0 and top-k 1
        body.update(temperature=0.0, top_p=1.0, top_k=1)
    if seed is not None:
        body["seed"] = seed
    return body


def _error_message(response: Any) -> str:
    try:
        payload = response.json()
        err = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)
        return str(err)
    except ValueError:
        return response.text[:500]


class OpenAIBackend:
    """Chat completions over HTTP with bounded concurrency and retries.

    Options: ``base_url`` (e.g. ``http://127.0.0.1:23333/v1``), ``api_key``,
    ``concurrency`` (calls in flight), ``max_retries``, ``backoff`` (seconds,
    doubled per retry), ``timeout`` (seconds per call), ``server_n``,
    ``tokenizer`` (a local copy of the served model's tokenizer, only to record
    which chat template the server is expected to apply).
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 5, backoff: float = 1.0, timeout: float = 600.0,
                 server_n: bool = False, tokenizer: str | None = None):
        import httpx

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("the openai backend needs a server: pass --base-url or set OPENAI_BASE_URL "
                             "(e.g. http://127.0.0.1:23333/v1 for `lmdeploy serve api_server`)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.server_n = server_n
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.retries = 0  # transient failures retried so far
        if tokenizer:
            from transformers import AutoTokenizer

            self.chat_template_meta = template_meta(AutoTokenizer.from_pretrained(tokenizer),
                                                    f"server {self.base_url}, expected tokenizer.chat_template of {tokenizer}")
        else:
            self.chat_template_meta = {"source": f"server {self.base_url}", "sha256": None}

    def _post(self, body: dict) -> list[str]:
        """One call; retried on transient errors; returns the choices' texts in index order."""
        import httpx

        attempt = 0
        while True:
            delay = self.backoff * (2**attempt)
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._texts(response, body["n"])
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in TRANSIENT_STATUS:
                    raise OpenAIError(f"{self.url}: {problem} (not retried)")
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            if attempt >= self.max_retries:
                raise OpenAIError(f"{self.url}: {problem} (gave up after {attempt + 1} attempts)")
            attempt += 1
            self.retries += 1
            time.sleep(delay)

    def _texts(self, response: Any, n: int) -> list[str]:
        try:
            choices = sorted(response.json()["choices"], key=lambda c: c.get("index", 0))
            texts = [c["message"]["content"] or "" for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            raise OpenAIError(f"{self.url}: malformed chat-completions response ({exc!r}): {response.text[:300]}") from None
        if len(texts) != n:
            raise OpenAIError(f"{self.url}: asked for n={n} choices, got {len(texts)}")
        return [t.strip() for t in texts]

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        calls: list[tuple[int, dict]] = []  # (request index, body)
        for i, r in enumerate(requests):
            if self.server_n:
                calls.append((i, request_body(self.model, r.messages, decoding, r.n, r.seed)))
            else:
                for seed in replica_seeds(r.seed, r.n):
                    calls.append((i, request_body(self.model, r.messages, decoding, 1, seed)))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            outputs = list(pool.map(lambda call: self._post(call[1]), calls))
        results: list[list[str]] = [[] for _ in requests]
        for (i, _), texts in zip(calls, outputs):
            results[i].extend(texts)
        return results

    def close(self) -> None:
        self.client.close()
