"""The ``openai`` backend: any OpenAI-compatible chat-completions server.

Works with ``lmdeploy serve api_server``, vLLM, llama.cpp's ``llama-server``,
OpenAI's API, or :mod:`maskdpo.backends.serve`. The base URL and key come from
the options or from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

**What is sent.** Every request states its whole decoding, because servers
apply their own defaults to whatever a request leaves unset: llama.cpp's
server a min-p of 0.05 and (older builds) a repeat penalty of 1.1, vLLM and
LMDeploy the model's ``generation_config.json`` (Llama-3.1: T 0.6, top-p
0.9). The ``extended`` server profile sends ``temperature``, ``top_p``,
``top_k``, ``min_p: 0``, ``repetition_penalty: 1.0`` (vLLM, LMDeploy, SGLang)
and ``repeat_penalty: 1.0`` (llama.cpp), ``frequency_penalty: 0``,
``presence_penalty: 0``, ``max_tokens`` and ``seed``. The ``openai`` profile
sends only fields of OpenAI's own API (which refuses unknown ones); what it
cannot send (``top_k`` above all) is recorded with every completion and
reported, never dropped silently. ``auto`` (the default) starts with
``extended`` and switches to ``openai`` once, loudly, when the server answers
400/422 naming one of the extended fields. Each completion carries
``.server``: the profile, the fields sent, those not sent, and the model the
server says it used.

**Checks.** The served model must be the requested one: ``GET /models`` is
asked once (a server that lists models must list it), and every response's
``model`` must equal it (or be a dated snapshot of it, ``name-2024-08-06``).
A mismatch is an error, or with ``allow_model_mismatch`` a warning, counted.
A response cut off by ``max_tokens`` or the context has ``finish_reason
"length"``, kept on each :class:`~maskdpo.backends.base.Completion`.

**Retries.** Connection errors, timeouts and HTTP 429/502/503/504 are retried
up to ``max_retries`` times with exponential backoff (honouring
``Retry-After``); HTTP 500 at most :data:`RETRIES_ON_500` times (some
servers, llama.cpp's among them, answer an invalid request with 500); any
other status fails at once with the server's message. Every retry is logged
with its reason and counted (``retries``, ``retry_reasons``).

By default each of a request's ``n`` responses is its own call with ``n=1``
and the replica seed ``derive_seed(seed, j)`` (llama.cpp's server ignores
``n``; per-replica seeds make each response reproducible on its own);
``server_n=True`` sends one call with ``n`` and ``seed`` instead.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from typing import Any, Iterator, Sequence

from .base import Completion, Decoding, GenerationError, GenerationRequest
from .prompting import replica_seeds, template_meta

log = logging.getLogger(__name__)

PROFILES = ("auto", "extended", "openai")
RETRIED_STATUS = frozenset({429, 502, 503, 504})
RETRIES_ON_500 = 2
# Sampling fields OpenAI's API does not take; the `extended` profile sends them, `openai` cannot.
EXTENDED_FIELDS = ("top_k", "min_p", "repetition_penalty", "repeat_penalty")


class OpenAIError(GenerationError):
    """A chat-completions call failed for good (non-retried error, retries exhausted, wrong model...)."""


class ServerCompletion(Completion):
    """A completion with what the server was sent and said: ``server = {"profile", "sent",
    "not_sent" (only when something could not be sent), "model" (the served model's name)}``."""

    server: dict

    def __new__(cls, text: str, finish_reason: str | None, server: dict, raw: str | None = None) -> "ServerCompletion":
        obj = super().__new__(cls, text, finish_reason, raw)
        obj.server = server
        return obj


def sampling_fields(decoding: Decoding, profile: str) -> tuple[dict, dict]:
    """(fields sent, fields the profile cannot send) for ``decoding``; neutral values are explicit."""
    if profile not in ("extended", "openai"):
        raise ValueError(f"unknown server profile {profile!r}")
    if decoding.do_sample:
        fields: dict[str, Any] = {"temperature": decoding.temperature, "top_p": decoding.top_p,
                                  "top_k": decoding.top_k}
    else:  # greedy on every server: temperature 0 (and top-k 1 where the server takes it)
        fields = {"temperature": 0.0, "top_p": 1.0, "top_k": 1}
    fields.update(min_p=decoding.min_p if decoding.do_sample else 0.0,
                  repetition_penalty=decoding.repetition_penalty, repeat_penalty=decoding.repetition_penalty,
                  frequency_penalty=0.0, presence_penalty=0.0)
    if profile == "extended":
        return fields, {}
    return ({k: v for k, v in fields.items() if k not in EXTENDED_FIELDS},
            {k: v for k, v in fields.items() if k in EXTENDED_FIELDS})


def request_body(model: str, messages: list[dict], decoding: Decoding, n: int, seed: int | None,
                 profile: str = "extended") -> dict:
    """The JSON body of one chat-completions call, with every sampling field the profile can send."""
    sent, _ = sampling_fields(decoding, profile)
    body: dict[str, Any] = {"model": model, "messages": messages, "n": n, "max_tokens": decoding.max_new_tokens,
                            "stream": False, **sent}
    if seed is not None:
        body["seed"] = seed
    if decoding.stop:
        body["stop"] = list(decoding.stop)
    return body


# How servers say a field is unknown: OpenAI "Unrecognized request argument supplied: top_k",
# pydantic "Extra inputs are not permitted", others "unknown field" / "unexpected keyword".
UNKNOWN_FIELD_WORDS = ("unrecognized", "unrecognised", "unknown", "not permitted", "not allowed", "unexpected",
                       "unsupported", "extra")


def names_extended_field(message: str) -> bool:
    """Does a 400/422 message refuse one of the extended profile's fields as unknown? (A message about a
    value, such as "top_k must be -1 or at least 1, got 0", is not a reason to switch profiles.)"""
    lowered = message.lower()
    return any(name in message for name in EXTENDED_FIELDS) and any(w in lowered for w in UNKNOWN_FIELD_WORDS)


def same_model(requested: str, served: str) -> bool:
    """The served name is the requested one, or a dated snapshot of it (OpenAI: gpt-4o → gpt-4o-2024-08-06)."""
    if served == requested:
        return True
    rest = served[len(requested) + 1:] if served.startswith(requested + "-") else ""
    return len(rest) >= 4 and rest.replace("-", "").isdigit()


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
    """Chat completions over HTTP with bounded concurrency, checks and retries.

    Options: ``base_url`` (e.g. ``http://127.0.0.1:23333/v1``), ``api_key``,
    ``concurrency`` (calls in flight), ``max_retries``, ``backoff`` (seconds,
    doubled per retry), ``timeout`` (seconds per call), ``server_n``,
    ``tokenizer`` (a local copy of the served model's tokenizer, only to record
    which chat template the server is expected to apply), ``server_profile``
    (``auto``, ``extended``, ``openai``), ``allow_model_mismatch``.
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 5, backoff: float = 1.0, timeout: float = 600.0,
                 server_n: bool = False, tokenizer: str | None = None, server_profile: str = "auto",
                 allow_model_mismatch: bool = False):
        import httpx

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("the openai backend needs a server: pass --base-url or set OPENAI_BASE_URL "
                             "(e.g. http://127.0.0.1:23333/v1 for `lmdeploy serve api_server`)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0 or timeout <= 0:
            raise ValueError(f"max_retries must be >= 0 and timeout > 0, got {max_retries} and {timeout}")
        if server_profile not in PROFILES:
            raise ValueError(f"server profile must be one of {', '.join(PROFILES)}, got {server_profile!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.server_n = server_n
        self.requested_profile = server_profile
        self.profile = "extended" if server_profile == "auto" else server_profile
        self.profile_switch: str | None = None  # why `auto` switched profiles
        self.allow_model_mismatch = allow_model_mismatch
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency))
        self._lock = threading.Lock()
        self.retries = 0  # failed attempts retried so far
        self.retry_reasons: Counter = Counter()  # "HTTP 503", "ReadTimeout", ... → count
        self.mismatched_models: Counter = Counter()  # served name → responses (with allow_model_mismatch)
        self.not_sent: dict = {}  # what the profile could not send, once anything was
        self._models_checked = False
        self.models_note: str | None = None  # why /models could not be checked
        if tokenizer:
            from transformers import AutoTokenizer

            self.chat_template_meta = template_meta(AutoTokenizer.from_pretrained(tokenizer),
                                                    f"server {self.base_url}, expected tokenizer.chat_template of {tokenizer}")
        else:
            self.chat_template_meta = {"source": f"server {self.base_url}", "sha256": None}

    # ------------------------------------------------------------------ checks

    def _mismatch(self, served: str, where: str, count: bool = True) -> None:
        if not self.allow_model_mismatch:
            raise OpenAIError(f"{where}: the server serves {served!r}, not the requested model {self.model!r}; "
                              f"pass the server's name as --model (or --allow-model-mismatch to only warn)")
        with self._lock:
            first = served not in self.mismatched_models
            if count:  # responses are counted; the /models listing only warns
                self.mismatched_models[served] += 1
        if first:
            log.warning("%s: the server serves %r, not the requested model %r (allowed: --allow-model-mismatch)",
                        where, served, self.model)

    def check_served_models(self) -> None:
        """Once: the requested model must be among those ``GET /models`` lists (when the server lists any)."""
        if self._models_checked:
            return
        self._models_checked = True
        import httpx

        url = self.base_url + "/models"
        try:
            response = self.client.get(url)
            ids = [m["id"] for m in response.json()["data"]] if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            ids, problem = None, f"{type(exc).__name__}: {exc}"
        else:
            problem = f"HTTP {response.status_code}"
        if ids is None:
            self.models_note = f"could not list the server's models at {url} ({problem}); checking each response"
            log.warning("%s", self.models_note)
        elif ids and not any(same_model(self.model, str(i)) for i in ids):
            listed = ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
            self._mismatch(listed, url, count=False)

    # ------------------------------------------------------------------ calls

    def _retry_limit(self, status: int | None) -> int:
        """How many times a failure is retried: None = transport error."""
        if status is None or status in RETRIED_STATUS:
            return self.max_retries
        if status == 500:
            return min(self.max_retries, RETRIES_ON_500)
        return 0

    def _switch_profile(self, message: str) -> None:
        with self._lock:
            if self.profile == "openai":
                return
            self.profile = "openai"
            self.profile_switch = message
        log.warning("%s refused the extended sampling fields (%s): switching to the 'openai' server profile. "
                    "From now on %s are NOT sent; the server's own sampling applies to them (OpenAI's API "
                    "has no top-k). Pass --server-profile to choose explicitly.", self.url, message,
                    ", ".join(EXTENDED_FIELDS))

    def _post(self, messages: list[dict], decoding: Decoding, n: int, seed: int | None) -> list[ServerCompletion]:
        """One call; retried as the module docstring says; returns the choices in index order."""
        import httpx

        attempt = 0
        while True:
            profile = self.profile
            body = request_body(self.model, messages, decoding, n, seed, profile)
            delay = self.backoff * (2**attempt)
            status = None
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                problem = f"{type(exc).__name__}: {exc}"
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status == 200:
                    return self._completions(response, body, profile, decoding)
                problem = f"HTTP {status}: {_error_message(response)}"
                reason = f"HTTP {status}"
                if (status in (400, 422) and self.requested_profile == "auto" and profile == "extended"
                        and names_extended_field(problem)):
                    self._switch_profile(problem)
                    continue  # the same call with the openai profile; not a retry
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            limit = self._retry_limit(status)
            if limit == 0:
                raise OpenAIError(f"{self.url}: {problem} (not retried)")
            if attempt >= limit:
                raise OpenAIError(f"{self.url}: {problem} (gave up after {attempt + 1} attempts)")
            attempt += 1
            with self._lock:
                self.retries += 1
                self.retry_reasons[reason] += 1
            log.warning("%s: %s; retry %d of %d in %.1f s", self.url, problem, attempt, limit, delay)
            time.sleep(delay)

    def _completions(self, response: Any, body: dict, profile: str, decoding: Decoding) -> list[ServerCompletion]:
        n = body["n"]
        try:
            payload = response.json()
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
            texts = [(c["message"]["content"] or "", c.get("finish_reason")) for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OpenAIError(f"{self.url}: malformed chat-completions response ({exc!r}): {response.text[:300]}") from None
        if len(texts) != n:
            hint = " (this server ignores n: drop --server-n)" if len(texts) == 1 else ""
            raise OpenAIError(f"{self.url}: asked for n={n} choices, got {len(texts)}{hint}")
        served = payload.get("model")
        if served is not None and not same_model(self.model, str(served)):
            self._mismatch(str(served), self.url)
        sent = {k: v for k, v in body.items() if k not in ("model", "messages", "n", "stream")}
        server = {"profile": profile, "sent": sent, "model": served}
        _, not_sent = sampling_fields(decoding, profile)
        if not_sent:
            server["not_sent"] = not_sent
            with self._lock:
                self.not_sent = not_sent
        return [ServerCompletion(text.strip(), reason, server, raw=text) for text, reason in texts]

    def _calls(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, int, int | None]]:
        """(request index, replica index, n of the call, seed) for every call, in request order."""
        for i, r in enumerate(requests):
            if self.server_n:
                yield i, 0, r.n, r.seed
            else:
                yield from ((i, j, 1, seed) for j, seed in enumerate(replica_seeds(r.seed, r.n)))

    def generate_stream(self, requests: Sequence[GenerationRequest],
                        decoding: Decoding) -> Iterator[tuple[int, list[ServerCompletion]]]:
        """``(request index, its n completions)`` in request order, each as soon as it and every
        request before it are complete.

        Calls run in ``concurrency`` daemon threads that take them in order, at most a window of
        calls ahead of the oldest unfinished request (so a slow call does not let finished results
        pile up), and an interruption (Ctrl-C) returns at once instead of waiting for the calls in
        flight.
        """
        self.check_served_models()
        if not requests:
            return
        calls_per_request = [1 if self.server_n else r.n for r in requests]
        source = self._calls(requests)
        take = threading.Lock()  # one thread at a time draws the next call
        ahead = threading.Semaphore(4 * self.concurrency + max(calls_per_request))  # calls not yet handed back
        done: queue.Queue = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                if not ahead.acquire(timeout=0.5):
                    continue
                with take:
                    call = next(source, None)
                if call is None:
                    return
                i, j, n, seed = call
                try:
                    done.put((i, j, self._post(requests[i].messages, decoding, n, seed), None))
                except BaseException as exc:  # handed to the caller's thread
                    done.put((i, j, None, exc))
                    return

        for _ in range(min(self.concurrency, sum(calls_per_request))):
            threading.Thread(target=work, name="maskdpo-openai", daemon=True).start()
        # Completions of unfinished requests by replica index (calls finish in any order).
        finished: dict[int, dict[int, list[ServerCompletion]]] = {}
        next_request = 0
        try:
            while next_request < len(requests):
                got = finished.get(next_request, {})
                if len(got) == calls_per_request[next_request]:
                    del finished[next_request]
                    for _ in got:
                        ahead.release()
                    yield next_request, [c for j in sorted(got) for c in got[j]]
                    next_request += 1
                    continue
                try:
                    i, j, result, exc = done.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive everywhere
                except queue.Empty:
                    continue
                if exc is not None:
                    raise exc
                finished.setdefault(i, {})[j] = result
        finally:
            stop.set()  # threads finish the call they are in and take no other

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        results: list[list[str]] = [[] for _ in requests]
        for i, completions in self.generate_stream(requests, decoding):
            results[i] = list(completions)
        return results

    # ------------------------------------------------------------------ reporting

    def notes(self) -> list[str]:
        """What a run's summary must say about this server: profile switches, fields not sent,
        retries, model mismatches."""
        notes = []
        if self.profile_switch:
            notes.append(f"server profile switched to 'openai' after: {self.profile_switch}")
        if self.not_sent:
            fields = ", ".join(f"{k}={v}" for k, v in self.not_sent.items())
            notes.append(f"server profile 'openai': NOT sent (the server's own sampling applies): {fields}")
        if self.retries:
            reasons = ", ".join(f"{r} ×{c}" for r, c in sorted(self.retry_reasons.items()))
            notes.append(f"retried calls: {self.retries} ({reasons})")
        if self.mismatched_models:
            served = ", ".join(f"{m!r} ×{c}" for m, c in sorted(self.mismatched_models.items()))
            notes.append(f"served model differs from {self.model!r}: {served}")
        if self.models_note:
            notes.append(self.models_note)
        return notes

    def close(self) -> None:
        self.client.close()
