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


@pytest.fixture(autouse=True, scope="session")
def _tokenized_cache(tmp_path_factory):
    """Tokenized pair caches of a test session (and the training runs it starts) stay in its temporary folder."""
    os.environ.setdefault("MASKDPO_TOKENIZED_CACHE", str(tmp_path_factory.mktemp("tokenized")))

# The tests of the stages meant for the inference environment (sampling, annotation, evaluation,
# masks, pairs, the generation backends). `make test` runs them twice: in the training environment
# (transformers 4.48) with everything else, and with `-m inference` in the inference environment
# (the newest transformers LMDeploy allows, and the real lmdeploy package), where only these files
# are collected (the others need xtuner). A new test file of an inference stage belongs here.
INFERENCE_TEST_FILES = frozenset({
    "test_annotate.py", "test_backends_hf.py", "test_commands.py", "test_layout.py", "test_stage.py", "test_unchanged.py", "test_backends_lmdeploy.py", "test_backends_openai.py",
    "test_bad_input.py", "test_eval_end_to_end.py", "test_eval_prompt_sets.py", "test_eval_score.py",
    "test_lmdeploy_contract.py", "test_masking.py", "test_metrics_anah.py", "test_metrics_factscore.py",
    "test_openai_hidden_defaults.py", "test_openai_knobs.py", "test_pairs.py", "test_protocol.py", "test_protocol_annotate.py",
    "test_records_io.py", "test_report.py", "test_sample.py", "test_sentences.py", "test_sentences_anah_v2.py",
    "test_serve_hardening.py", "test_toyworld_oracle.py", "test_toyworld_rich.py", "test_toyworld_world.py",
})


def _inference_only(config) -> bool:
    return (config.getoption("markexpr", "") or "").strip() == "inference"


def pytest_sessionstart(session):
    if _inference_only(session.config):
        here = os.path.dirname(__file__)
        missing = sorted(name for name in INFERENCE_TEST_FILES if not os.path.exists(os.path.join(here, name)))
        if missing:
            raise pytest.UsageError(f"tests/conftest.py lists inference-side test files that do not exist: {missing}")


def pytest_ignore_collect(collection_path, config):
    """Under ``-m inference`` collect only the inference-side files (the rest import xtuner)."""
    if _inference_only(config) and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in INFERENCE_TEST_FILES
    return None


def pytest_collection_modifyitems(config, items):
    """Mark the tests of the listed files ``inference``, except those marked ``training`` (they need xtuner)."""
    for item in items:
        if item.path.name in INFERENCE_TEST_FILES and item.get_closest_marker("training") is None:
            item.add_marker(pytest.mark.inference)


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir():
    return models.smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def smollm2_model_dir():
    return models.smollm2_model_dir()


@pytest.fixture(scope="session")
def tiny_llama_dir():
    return models.tiny_llama_dir()
