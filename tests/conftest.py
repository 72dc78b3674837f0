import os

import pytest

# Keep CPU tests polite on small machines and deterministic.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The official ANAH-v2 protocol files are never downloaded by a test: a cache miss fails at once
# (port 9 is the discard port; nothing listens on it). Tests pin synthetic files instead.
os.environ.setdefault("MASKDPO_PROTOCOL_BASE_URL", "http://127.0.0.1:9")

from . import models  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir():
    return models.smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def smollm2_model_dir():
    return models.smollm2_model_dir()


@pytest.fixture(scope="session")
def tiny_llama_dir():
    return models.tiny_llama_dir()
