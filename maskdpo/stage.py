"""What every stage shares: input selection, resume checks, the settings file, and the backend knobs.

A stage is ``Settings → run_<stage>(settings, ...) → records + a summary``
(``maskdpo.sample.run_sampling``, ``maskdpo.annotate.run.run_annotation``,
``maskdpo.pairs.run_pairs``, ``maskdpo.evaluate.score_files`` / ``run_end_to_end``).
What they have in common lives here, once:

- **Selection**: ``--limit`` then ``--shard K/N`` (:func:`select_items`): the K-th
  of N contiguous blocks, so N shard outputs concatenated equal the unsharded one.
- **The settings file**: a stage writing ``OUT`` records its effective settings
  in ``OUT.settings.json`` (:func:`settings_path`), atomically.
- **Resume**: appending to ``OUT`` is refused when it was made with other
  record-defining settings, when its settings file is missing although ``OUT``
  holds records, or when the settings file is corrupt (:func:`check_resumable`).
- **Outputs** are checked writable before any model loads (:func:`check_outputs`); whole files are
  written atomically (:func:`maskdpo.jsonl.atomic_file`, :func:`maskdpo.jsonl.write_jsonl`), record
  streams appended and resumed by key (:class:`maskdpo.jsonl.JsonlAppender`). A stage whose output is a
  folder (``eval``, ``demo``) keeps its settings file inside it (``eval-settings.json``).
- **Backends**: :class:`BackendSettings` declares every backend knob once;
  :meth:`BackendSettings.load` maps them to the backend's options, once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from .settings import knob, read_settings
from .validate import check_output_file

SETTINGS_SUFFIX = ".settings.json"


# ---------------------------------------------------------------- selection


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like K/N (e.g. 0/8), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def shard_slice(count: int, k: int, n: int) -> range:
    """The K-th of N contiguous blocks of ``range(count)``; sizes differ by at most one."""
    return range(count * k // n, count * (k + 1) // n)


def select_items(items: list, limit: int | None, shard: str) -> list:
    """First ``limit`` items, then this shard's contiguous block."""
    k, n = parse_shard(shard)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"--limit must be >= 0, got {limit}")
        items = items[:limit]
    return [items[i] for i in shard_slice(len(items), k, n)]


# ---------------------------------------------------------------- the settings file, resume, outputs


def settings_path(out: str | os.PathLike) -> Path:
    """Where a stage records the settings ``out`` was made with: ``out`` + ``.settings.json``
    (``pairs.jsonl`` → ``pairs.jsonl.settings.json``)."""
    out = Path(out)
    return out.with_name(out.name + SETTINGS_SUFFIX)


def check_outputs(out: str | os.PathLike) -> None:
    """``out`` and its settings file can be written; checked before any work or model load."""
    check_output_file(out)
    check_output_file(settings_path(out), "settings file")


def same_setting(previous: Any, current: Any) -> bool:
    """Equal settings values; paths compare resolved, so ``q.jsonl`` and ``/abs/q.jsonl`` are the same file."""
    if str(previous) == str(current):
        return True
    if isinstance(previous, str) and isinstance(current, (str, os.PathLike)) and previous and str(current):
        a, b = Path(previous).expanduser(), Path(current).expanduser()
        if a.exists() and b.exists():
            return a.resolve() == b.resolve()
    return False


def check_resumable(out: str | os.PathLike, current: dict, fields: tuple[str, ...]) -> None:
    """Refuse to append to ``out`` when it was made with different record-defining ``fields``.

    The settings file next to ``out`` must be readable when it exists (a
    corrupt one is an error naming it); when it is missing but ``out``
    already holds records, the settings they were made with are unknown,
    which is an error too.
    """
    out = Path(out)
    path = settings_path(out)
    if not path.exists():
        if out.is_file() and out.stat().st_size > 0:
            raise ValueError(f"{out} exists but its settings file {path} is missing: cannot check that it was "
                             "made with the same settings; use a new --out, or restore the settings file")
        return
    previous = read_settings(path)
    changed = [f for f in fields if f in previous and not same_setting(previous[f], current.get(f))]
    if changed:
        detail = ", ".join(f"{f}: {previous[f]!r} → {current.get(f)!r}" for f in changed)
        raise ValueError(f"{path}: the existing output was made with other settings ({detail}); "
                         "use a new --out or the same settings to resume")


# ---------------------------------------------------------------- decoding


@dataclass
class SamplingKnobs:
    """The decoding knobs of generated responses, declared once (sampling, and ``eval run``'s responses)."""

    top_k: int = knob(40, "Top-k (paper: 40).")
    temperature: float = knob(0.8, "Sampling temperature (paper: 0.8).")
    max_new_tokens: int = knob(512, "Maximum new tokens per response.")
    seed: int = knob(0, "Base seed; per-sample seeds derive from it, the question id and the sample index.")


# ---------------------------------------------------------------- backends


@dataclass
class ServerKnobs:
    """What every backend of a run shares, even a run with several (``eval``: policy, ANAH judge, FactScore judge)."""

    device: str = knob("auto", "hf backend: auto, cpu or cuda.")
    server_profile: Literal["auto", "extended", "openai"] = knob(
        "auto", "openai backend: which sampling fields the server is sent. extended: top_k, min_p 0 and "
                "repetition penalty 1.0 too (vLLM, LMDeploy, llama.cpp); openai: OpenAI's own fields only (top_k "
                "is then NOT sent, and said so); auto: extended, switching once to openai if the server refuses "
                "the extra fields.")
    max_retries: int = knob(5, "openai backend: retries of a failed call (connection errors, timeouts, HTTP 429/"
                               "502/503/504; HTTP 500 at most twice; other errors never).")
    timeout: float = knob(600.0, "openai backend: seconds per call.")


@dataclass
class BackendSettings(ServerKnobs):
    """One backend's knobs, every one declared here once; stage settings inherit them."""

    backend: str = knob("hf", "Generation backend: lmdeploy (in-process, GPU), openai (any OpenAI-compatible "
                              "server, e.g. `lmdeploy serve api_server`), hf (transformers, CPU or GPU).")
    trust_remote_code: bool = knob(False, "hf and lmdeploy backends: run the model repository's own code "
                                          "(needed by repos that ship their modeling code, e.g. InternLM2).")
    tp: int = knob(1, "lmdeploy backend: GPUs for tensor parallelism.")
    engine: str = knob("turbomind", "lmdeploy backend: turbomind or pytorch.")
    base_url: Optional[str] = knob(None, "openai backend: server URL, e.g. http://127.0.0.1:23333/v1 "
                                         "(default: $OPENAI_BASE_URL).")
    api_key: Optional[str] = knob(None, "openai backend: API key (default: $OPENAI_API_KEY). Never written to disk.")
    concurrency: int = knob(8, "openai backend: calls in flight.")
    server_n: bool = knob(False, "openai backend: one call with n and the question's seed instead of n calls with "
                                 "per-response seeds (only for servers that honour n).")
    tokenizer: Optional[str] = knob(None, "openai backend: a local copy of the served model's tokenizer, to record "
                                          "the chat template the server is expected to apply.")
    allow_model_mismatch: bool = knob(False, "openai backend: only warn (and count) when the server serves another "
                                             "model than --model, instead of stopping.")

    def for_the_record(self, **changes: Any):
        """A copy to write into the settings file: the API key never goes to disk."""
        return dataclasses.replace(self, api_key=None, **changes)

    def backend_options(self, batch_size: int | None = None) -> dict:
        """The options :func:`maskdpo.backends.base.load_backend` takes for ``self.backend`` (the one mapping).

        ``batch_size``: prompts per forward of the hf backend (a stage's own knob).
        """
        if self.backend == "hf":
            options: dict = {"device": self.device, "trust_remote_code": self.trust_remote_code}
            if batch_size is not None:
                options["batch_size"] = batch_size
            return options
        if self.backend == "lmdeploy":
            return {"tp": self.tp, "engine": self.engine, "trust_remote_code": self.trust_remote_code}
        if self.backend == "openai":
            return {"base_url": self.base_url, "api_key": self.api_key, "concurrency": self.concurrency,
                    "server_profile": self.server_profile, "server_n": self.server_n, "tokenizer": self.tokenizer,
                    "max_retries": self.max_retries, "timeout": self.timeout,
                    "allow_model_mismatch": self.allow_model_mismatch}
        return {}

    def load(self, model: str, batch_size: int | None = None):
        """The backend these settings name, loaded with ``model``."""
        from .backends.base import load_backend

        return load_backend(self.backend, model, **self.backend_options(batch_size))


def check_model_path(backend: str, model: str) -> None:
    """A local model path that does not exist fails before anything else (hub names pass)."""
    if backend in ("hf", "lmdeploy") and model.startswith(("/", "./", "../", "~")) \
            and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"--model {model}: no such model folder")
