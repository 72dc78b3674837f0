"""The ``lmdeploy`` backend against ``LMDeployDouble`` (LMDeploy's engines need CUDA).

The double is checked against the real LMDeploy classes in tests/test_lmdeploy_contract.py.
"""

import json
import sys

import pytest

from maskdpo.backends.base import Decoding, GenerationError, GenerationRequest, finish_reason_of, load_backend
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
    assert turbomind.backend_config.max_batch_size is None and turbomind.backend_config.session_len is None
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


def test_unset_options_are_left_out_because_the_real_config_refuses_none(monkeypatch, tiny_llama_dir):
    lmdeploy_double.install(monkeypatch)
    with pytest.raises(ValueError, match="max_batch_size"):  # what the pydantic config does with None
        lmdeploy_double.TurbomindEngineConfig(max_batch_size=None)
    backend = load_backend("lmdeploy", str(tiny_llama_dir), max_batch_size=32, session_len=4096)
    assert (backend.backend_config.max_batch_size, backend.backend_config.session_len) == (32, 4096)


def test_one_trust_remote_code_for_tokenizer_and_pipeline_and_the_hf_template(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    seen = []
    from transformers import AutoTokenizer
    original = AutoTokenizer.from_pretrained

    def spy(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(path, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    for trust in (True, False):
        load_backend("lmdeploy", str(tiny_llama_dir), trust_remote_code=trust)
    assert seen == [True, False]
    assert [p.trust_remote_code for p in lm.pipelines] == [True, False]
    assert {(p.chat_template_config.model_name, p.chat_template_config.model_path) for p in lm.pipelines} == \
        {("hf", str(tiny_llama_dir))}


def test_stop_strings_become_stop_words(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(16, stop=("<|im_end|>",)))
    backend.generate([GenerationRequest(ADA, n=2, seed=1)], Decoding(max_new_tokens=16))
    judged, sampled = lm.pipelines[0].calls
    assert [c.stop_words for c in judged.gen_configs] == [["<|im_end|>"]]
    assert [c.stop_words for c in sampled.gen_configs] == [None, None]  # the template's own stop words apply


def test_finish_reasons_come_back_with_the_texts(monkeypatch, tiny_llama_dir):
    lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    (full,), = backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(16))
    (cut,), = backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(2))
    assert finish_reason_of(full) == "stop" and finish_reason_of(cut) == "length"
    assert cut == "greedy answer" and full.startswith(cut)


def test_an_engine_error_is_retried_once(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    lm.pipelines[0].fail(1)
    out = backend.generate([GenerationRequest(ADA, n=2, seed=5), GenerationRequest(EIFFEL, n=1, seed=6)],
                           Decoding(max_new_tokens=64))
    first, retry = lm.pipelines[0].calls
    assert len(first.prompts) == 3 and len(retry.prompts) == 1  # only the failed prompt again
    assert retry.gen_configs[0].random_seed == replica_seeds(5, 2)[0]  # with its own seed
    assert all(text and finish_reason_of(text) == "stop" for texts in out for text in texts)


def test_an_engine_error_twice_stops_with_the_request_named(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch)
    backend = load_backend("lmdeploy", str(tiny_llama_dir))
    lm.pipelines[0].fail(2, message="input too long", prompt_contains="Ada")
    with pytest.raises(GenerationError, match=r"request 0 \(replica 0, seed \d+.*Ada Lovelace.*2 attempt.*input too long"):
        backend.generate([GenerationRequest(ADA, n=1, seed=5), GenerationRequest(EIFFEL, n=1, seed=6)],
                         Decoding(max_new_tokens=64))


def test_an_empty_length_answer_is_an_error_not_a_sample(monkeypatch, tiny_llama_dir):
    from maskdpo.backends.lmdeploy import failure_of

    assert "session" in failure_of(lmdeploy_double.Response(text="", generate_token_len=0, input_token_len=9000,
                                                            finish_reason="length"))
    assert failure_of(lmdeploy_double.Response(text="cut", generate_token_len=3, input_token_len=9,
                                               finish_reason="length")) is None
    assert "abort" in failure_of(lmdeploy_double.Response(text="x", generate_token_len=1, input_token_len=9,
                                                          finish_reason="abort"))


def test_a_silent_switch_of_engine_is_an_error(monkeypatch, tiny_llama_dir):
    lm = lmdeploy_double.install(monkeypatch, turbomind_available=False)
    with pytest.raises(BackendUnavailable, match="switched from the turbomind engine to the pytorch engine"):
        load_backend("lmdeploy", str(tiny_llama_dir))
    assert lm.pipelines[0].closed
    assert load_backend("lmdeploy", str(tiny_llama_dir), engine="pytorch").engine == "pytorch"


def test_sampling_stage_writes_no_sample_from_an_engine_error(monkeypatch, tiny_llama_dir, tmp_path):
    lm = lmdeploy_double.install(monkeypatch)
    original = lm.pipeline

    def failing_pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        pipe.fail(100)
        return pipe

    monkeypatch.setattr(lm, "pipeline", failing_pipeline)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Who was Ada Lovelace?"}\n')
    out = tmp_path / "s.jsonl"
    with pytest.raises(GenerationError, match="Ada Lovelace"):
        run_sampling(SampleSettings(questions=questions, out=out, model=str(tiny_llama_dir), backend="lmdeploy", n=2))
    assert not out.exists() or out.read_text() == ""
