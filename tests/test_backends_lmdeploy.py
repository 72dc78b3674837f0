"""The ``lmdeploy`` backend against ``LMDeployDouble`` (LMDeploy itself needs CUDA)."""

import json
import sys

import pytest

from maskdpo.backends.base import Decoding, GenerationRequest, load_backend
from maskdpo.backends.lmdeploy import BackendUnavailable
from maskdpo.backends.prompting import replica_seeds
from maskdpo.records import Sample
from maskdpo.sample import SampleSettings, run_sampling
from tests.doubles import lmdeploy_double

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]
EIFFEL = [{"role": "user", "content": "Where is the Eiffel Tower?"}]


def test_missing_lmdeploy_is_a_clear_error(monkeypatch, tiny_llama_dir):
    monkeypatch.setitem(sys.modules, "lmdeploy", None)  # import lmdeploy raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[lmdeploy\]'"):
        load_backend("lmdeploy", str(tiny_llama_dir))


def test_missing_cuda_is_a_clear_error(monkeypatch, tiny_llama_dir):
    lmdeploy_double.install(monkeypatch, cuda=False)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        load_backend("lmdeploy", str(tiny_llama_dir))


def test_engine_configs_carry_tp_and_prefix_caching(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    turbomind = load_backend("lmdeploy", str(tiny_llama_dir), tp=2)
    assert isinstance(turbomind.backend_config, lmdeploy_double.TurbomindEngineConfig)
    pytorch = load_backend("lmdeploy", str(tiny_llama_dir), engine="pytorch", tp=4)
    assert isinstance(pytorch.backend_config, lmdeploy_double.PytorchEngineConfig)
    assert [(p.backend_config.tp, p.backend_config.enable_prefix_caching) for p in lm.pipelines] == [(2, True), (4, True)]
    assert lm.pipelines[0].model_path == str(tiny_llama_dir)
    with pytest.raises(ValueError, match="engine"):
        load_backend("lmdeploy", str(tiny_llama_dir), engine="vllm")


def test_n_by_replication_with_distinct_seeds_and_explicit_sampling(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    out = backend.generate([GenerationRequest(ADA, n=3, seed=10), GenerationRequest(EIFFEL, n=2, seed=20)],
                           Decoding(max_new_tokens=64))
    (call,) = lm.pipelines[0].calls  # one pipeline call for the whole batch
    assert len(call.prompts) == 5 and call.do_preprocess is False
    for cfg in call.gen_configs:
        assert (cfg.do_sample, cfg.top_p, cfg.top_k, cfg.temperature, cfg.max_new_tokens, cfg.n) == \
            (True, 1.0, 40, 0.8, 64, 1)
    seeds = [cfg.random_seed for cfg in call.gen_configs]
    assert seeds == replica_seeds(10, 3) + replica_seeds(20, 2) and len(set(seeds)) == 5
    assert [len(texts) for texts in out] == [3, 2] and len(set(out[0])) == 3
    # The prompt is the tokenizer's own template, BOS left to LMDeploy's encoder when it adds one.
    rendered = backend.tokenizer.apply_chat_template(ADA, tokenize=False, add_generation_prompt=True)
    bos = backend.tokenizer.bos_token
    expected = rendered[len(bos):] if backend.drop_bos else rendered
    assert call.prompts[:3] == [expected] * 3
    assert backend.chat_template_meta["sha256"]


def test_greedy_configs(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    out = backend.generate([GenerationRequest(ADA, n=2)], Decoding.greedy(16))
    cfgs = lm.pipelines[0].calls[0].gen_configs
    assert all(not c.do_sample and c.top_k == 1 and c.top_p == 1.0 for c in cfgs)
    assert out[0][0] == out[0][1]


def test_sampling_stage_on_lmdeploy(monkeypatch, tiny_llama_dir, tmp_path):
    lmdeploy_double.install(monkeypatch)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Who was Ada Lovelace?"}\n{"id": "b", "question": "Who was Curie?"}\n')
    out = tmp_path / "s.jsonl"
    summary = run_sampling(SampleSettings(questions=questions, out=out, model=str(tiny_llama_dir), backend="lmdeploy",
                                          n=4, tp=2))
    assert summary.written == 8
    samples = [Sample.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert {s.backend for s in samples} == {"lmdeploy"}
    assert len({s.generation["seed"] for s in samples}) == 8
    assert all(f"seed {s.generation['seed']}" in s.response for s in samples)  # each sample used its own seed
