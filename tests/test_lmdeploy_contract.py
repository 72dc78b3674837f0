"""The lmdeploy backend and ``LMDeployDouble`` against the real LMDeploy Python API.

LMDeploy's engines need CUDA, but its Python API imports and its config,
request and response classes work on the CPU. This test builds everything the
backend hands to LMDeploy with the real classes (engine configs,
``GenerationConfig``, ``ChatTemplateConfig``, the pipeline's request
generator), feeds the backend real ``Response`` objects (including engine
errors), checks LMDeploy's silent engine switch, and checks that the double
accepts and refuses exactly what the real classes do.

It runs where the real ``lmdeploy`` is importable: CI's inference environment
(``scripts/ensure-env.sh infer`` installs the 0.18 wheel without its CUDA
dependencies). Elsewhere it is skipped, unless ``MASKDPO_REQUIRE_REAL_LMDEPLOY=1``
(set by ``make test`` for that environment) makes a missing package a failure.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import pytest

import maskdpo.backends.lmdeploy as backend_module
from maskdpo.backends.base import Decoding, GenerationError, GenerationRequest, finish_reason_of
from maskdpo.backends.lmdeploy import BackendUnavailable, LMDeployBackend, engine_config, generation_configs
from maskdpo.backends.prompting import render_prompt, replica_seeds
from tests.doubles import lmdeploy_double as double

if os.environ.get("MASKDPO_REQUIRE_REAL_LMDEPLOY") != "1":
    pytest.importorskip("lmdeploy", reason="the real lmdeploy package is in the inference environment "
                                           "(scripts/ensure-env.sh infer)")

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]
EIFFEL = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the Eiffel Tower?"}]


@pytest.fixture(scope="module")
def lm():
    """The real ``lmdeploy`` package."""
    try:
        import lmdeploy
    except ImportError as exc:
        if os.environ.get("MASKDPO_REQUIRE_REAL_LMDEPLOY") == "1":
            pytest.fail(f"the real lmdeploy package is required here and cannot be imported: {exc}")
        pytest.skip(f"the real lmdeploy package is not installed here ({exc}); scripts/ensure-env.sh infer has it")
    assert not (lmdeploy.__doc__ or "").startswith("LMDeployDouble"), "the double, not the real package"
    assert lmdeploy.__version__.startswith("0.18"), lmdeploy.__version__
    return lmdeploy


# ---------------------------------------------------------------- what the backend builds


@pytest.mark.parametrize("engine", ["turbomind", "pytorch"])
def test_engine_configs_are_real_configs(lm, engine):
    cls = lm.TurbomindEngineConfig if engine == "turbomind" else lm.PytorchEngineConfig
    # The backend's defaults: unset options (None) are left to LMDeploy.
    config = engine_config(lm, engine, tp=1, session_len=None, cache_max_entry_count=0.8, max_batch_size=None,
                           enable_prefix_caching=True, dtype="auto")
    assert type(config) is cls and config.enable_prefix_caching and config.max_batch_size is None
    config = engine_config(lm, engine, tp=2, session_len=8192, cache_max_entry_count=0.5, max_batch_size=64,
                           enable_prefix_caching=True, dtype="bfloat16")
    assert (config.tp, config.session_len, config.cache_max_entry_count, config.max_batch_size, config.dtype) == \
        (2, 8192, 0.5, 64, "bfloat16")


def test_the_real_turbomind_config_refuses_none_for_max_batch_size(lm):
    """Why unset options are left out: the pydantic config validates an explicit None."""
    with pytest.raises(ValueError, match="max_batch_size"):
        lm.TurbomindEngineConfig(max_batch_size=None)


def test_generation_configs_are_real_configs(lm, smollm2_model_dir):
    sampled = generation_configs(lm, Decoding(top_k=40, temperature=0.8, max_new_tokens=64), replica_seeds(7, 3))
    assert all(type(c) is lm.GenerationConfig for c in sampled)
    assert [(c.n, c.do_sample, c.top_k, c.top_p, c.temperature, c.max_new_tokens, c.stop_words) for c in sampled] == \
        [(1, True, 40, 1.0, 0.8, 64, None)] * 3
    assert [c.random_seed for c in sampled] == replica_seeds(7, 3)
    assert [(c.min_p, c.repetition_penalty) for c in sampled] == [(0.0, 1.0)] * 3
    (tuned,) = generation_configs(lm, Decoding(min_p=0.05, repetition_penalty=1.1), [1])
    assert (tuned.min_p, tuned.repetition_penalty) == (0.05, 1.1)
    (greedy,) = generation_configs(lm, Decoding.greedy(32, stop=("<|im_end|>",)), [None])
    assert (greedy.do_sample, greedy.top_k, greedy.max_new_tokens, greedy.stop_words) == (False, 1, 32, ["<|im_end|>"])
    # LMDeploy turns the stop words into token ids with its own tokenizer (a real ChatML vocabulary here).
    tokenizer = lm.Tokenizer(str(smollm2_model_dir))
    greedy.convert_stop_bad_words_to_ids(tokenizer)
    im_end = tokenizer.model.model.convert_tokens_to_ids("<|im_end|>")
    assert greedy.stop_token_ids == [im_end]


def test_the_hf_chat_template_is_the_tokenizer_template_and_stops_on_its_end_token(lm, smollm2_model_dir):
    from transformers import AutoTokenizer

    config = lm.ChatTemplateConfig(model_name="hf", model_path=str(smollm2_model_dir))
    template = config.chat_template()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_model_dir))
    for messages in (ADA, EIFFEL):
        assert template.messages2prompt(messages) == render_prompt(tokenizer, messages)
    assert tokenizer.eos_token in template.stop_words
    # No `internlm2` template any more (removed in 0.12): that name falls back to a bare template.
    from lmdeploy.model import MODELS

    assert "internlm2" not in MODELS.module_dict and "hf" in MODELS.module_dict


# ---------------------------------------------------------------- requests and responses


class RecordingPipelineDouble:
    """Stands in for the engine only: LMDeploy's own request generator and ``Response`` class do the rest.

    ``script`` lists, per call, the finish reason of each response ("stop",
    "length", "error", "abort"); texts are made up per prompt.
    """

    def __init__(self, lm, backend_config, script):
        from lmdeploy.serve.managers import SessionManager

        self.lm = lm
        self.backend_config = backend_config
        self.session_mgr = SessionManager()
        self._is_single = lm.Pipeline._is_single  # what _request_generator asks of its pipeline
        self.script = list(script)
        self.requests: list[list[dict]] = []
        self.closed = False

    def __call__(self, prompts, gen_config=None, **kwargs):
        assert not self.lm.Pipeline._is_single(prompts)
        requests = list(self.lm.Pipeline._request_generator(self, prompts, gen_config=gen_config, **kwargs))
        self.requests.append(requests)
        reasons = self.script.pop(0)
        from lmdeploy.messages import Response

        out = []
        for i, (request, reason) in enumerate(zip(requests, reasons)):
            if reason in ("error", "abort"):
                out.append(Response(text="", generate_token_len=0, input_token_len=11, finish_reason=reason,
                                    index=i, error_code="OUT_OF_MEMORY", error_message="engine ran out of memory"))
            else:
                seed = request["gen_config"].random_seed
                out.append(Response(text=f" answer {i} seed {seed} ", generate_token_len=4, input_token_len=11,
                                    finish_reason=reason, index=i))
        return out

    def close(self):
        self.closed = True


def _backend(lm, monkeypatch, model_dir, script, **options):
    pipes = []

    def pipeline(model_path, backend_config=None, chat_template_config=None, trust_remote_code=False, **kwargs):
        # The real signature accepts these keywords (checked below for the double too).
        inspect.signature(lm.pipeline).bind(model_path, backend_config=backend_config,
                                            chat_template_config=chat_template_config,
                                            trust_remote_code=trust_remote_code, **kwargs)
        assert type(chat_template_config) is lm.ChatTemplateConfig
        pipes.append(RecordingPipelineDouble(lm, backend_config, script))
        return pipes[-1]

    monkeypatch.setattr(backend_module, "cuda_available", lambda: True)
    monkeypatch.setattr(lm, "pipeline", pipeline)
    return LMDeployBackend(str(model_dir), **options), pipes


def test_request_and_response_handling_with_real_classes(lm, monkeypatch, smollm2_model_dir):
    backend, pipes = _backend(lm, monkeypatch, smollm2_model_dir, [["stop", "error", "length"], ["stop"]],
                              max_batch_size=None, session_len=None)
    assert type(backend.backend_config) is lm.TurbomindEngineConfig
    out = backend.generate([GenerationRequest(ADA, n=2, seed=3), GenerationRequest(EIFFEL, n=1, seed=4)],
                           Decoding(max_new_tokens=64))
    first, retry = pipes[0].requests
    assert len(first) == 3 and len(retry) == 1  # the failed prompt, alone, with its own config
    assert retry[0]["gen_config"].random_seed == replica_seeds(3, 2)[1]
    assert all(r["do_preprocess"] is False for r in first + retry)
    assert [[finish_reason_of(t) for t in texts] for texts in out] == [["stop", "stop"], ["length"]]
    assert out[0][1] == f"answer 0 seed {replica_seeds(3, 2)[1]}"


@pytest.mark.parametrize("reason", ["error", "abort"])
def test_a_real_error_response_twice_is_a_generation_error(lm, monkeypatch, smollm2_model_dir, reason):
    backend, _ = _backend(lm, monkeypatch, smollm2_model_dir, [["stop", reason], [reason]])
    with pytest.raises(GenerationError, match=r"request 1 \(replica 0.*Eiffel.*out of memory"):
        backend.generate([GenerationRequest(ADA, n=1), GenerationRequest(EIFFEL, n=1)], Decoding.greedy(16))


def test_the_silent_engine_switch_is_refused(lm, monkeypatch, tiny_llama_dir):
    """LMDeploy's own ``autoget_backend_config`` decides the engine; here TurboMind is not built (no CUDA)."""
    from lmdeploy import turbomind
    from lmdeploy.archs import autoget_backend_config

    if turbomind.is_available():
        pytest.skip("TurboMind loads on this machine: no switch to observe")
    requested = engine_config(lm, "turbomind", tp=2, session_len=4096, cache_max_entry_count=0.5,
                              enable_prefix_caching=True, dtype="auto")
    engine, used = autoget_backend_config(str(tiny_llama_dir), requested)
    assert engine == "pytorch" and type(used) is lm.PytorchEngineConfig
    # The double switches the same way, carrying the same settings over.
    mirrored = double.PipelineDouble._autoget_backend_config(
        double.TurbomindEngineConfig(tp=2, session_len=4096, cache_max_entry_count=0.5, enable_prefix_caching=True),
        turbomind_available=False)
    for name in ("tp", "session_len", "cache_max_entry_count", "enable_prefix_caching", "dtype"):
        assert getattr(mirrored, name) == getattr(used, name), name

    class SwitchingPipelineDouble(RecordingPipelineDouble):
        def __init__(self, lm, backend_config, script):
            super().__init__(lm, autoget_backend_config(str(tiny_llama_dir), backend_config)[1], script)

    monkeypatch.setattr(backend_module, "cuda_available", lambda: True)
    made = []
    monkeypatch.setattr(lm, "pipeline", lambda path, backend_config=None, **kw: made.append(
        SwitchingPipelineDouble(lm, backend_config, [])) or made[-1])
    with pytest.raises(BackendUnavailable, match="switched from the turbomind engine to the pytorch engine"):
        LMDeployBackend(str(tiny_llama_dir))
    assert made[0].closed
    assert LMDeployBackend(str(tiny_llama_dir), engine="pytorch").engine == "pytorch"


# ---------------------------------------------------------------- the double against the real classes


def _real_fields(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = dataclasses.MISSING
    return out


def _double_fields(cls) -> dict:
    if cls is double.TurbomindEngineConfig:
        return double.config_fields(cls)
    return _real_fields(cls)


@pytest.mark.parametrize("name", ["GenerationConfig", "TurbomindEngineConfig", "PytorchEngineConfig",
                                  "ChatTemplateConfig", "Response"])
def test_the_double_has_the_real_fields_and_defaults(lm, name):
    from lmdeploy import messages, model

    real_cls = getattr(messages, name, None) or getattr(model, name)
    real, mine = _real_fields(real_cls), _double_fields(getattr(double, name))
    assert set(mine) <= set(real), f"fields the real {name} lacks: {set(mine) - set(real)}"
    assert {k: v for k, v in mine.items()} == {k: real[k] for k in mine}


def test_the_double_pipeline_takes_what_the_real_one_takes(lm):
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    pipe = double.build_module().pipeline
    assert params(pipe) == params(lm.pipeline)
    assert params(double.PipelineDouble.infer) == params(lm.Pipeline.infer)
    assert params(double.PipelineDouble.__call__) == params(lm.Pipeline.__call__)


CASES = {
    "GenerationConfig": [
        {}, {"do_sample": True, "top_k": 40, "top_p": 1.0, "temperature": 0.8, "random_seed": 3},
        {"stop_words": ["<|im_end|>"]}, {"n": 0}, {"n": 2.0}, {"top_p": 1.5}, {"top_k": -1},
        {"temperature": 2.5}, {"min_p": 1.5}, {"logprob_start_len": -2}, {"max_new_tokens": 1}, {"bogus": 1},
    ],
    "TurbomindEngineConfig": [
        {}, {"max_batch_size": None}, {"max_batch_size": 8}, {"session_len": None}, {"session_len": 4096},
        {"tp": 0}, {"tp": "two"}, {"ep": 0}, {"dtype": "float32"}, {"dtype": "bfloat16"},
        {"cache_max_entry_count": 0}, {"cache_max_entry_count": 1.5}, {"quant_policy": 3}, {"quant_policy": 8},
        {"enable_prefix_caching": True}, {"rope_scaling_factor": -1.0}, {"bogus": 1},
    ],
    "PytorchEngineConfig": [
        {}, {"max_batch_size": None}, {"session_len": None}, {"tp": 0}, {"dp": 0}, {"dtype": "float32"},
        {"cache_max_entry_count": 1.0}, {"cache_max_entry_count": 0.5}, {"quant_policy": 3},
        {"quant_policy": 8}, {"device_type": "cpu"}, {"enable_prefix_caching": True}, {"bogus": 1},
    ],
}


def _outcome(cls, kwargs) -> str:
    try:
        cls(**kwargs)
    except TypeError:
        return "TypeError"
    except AssertionError:
        return "AssertionError"
    except ValueError:  # pydantic's ValidationError included
        return "ValueError"
    return "accepted"


@pytest.mark.parametrize("name,kwargs", [(n, kw) for n, cases in CASES.items() for kw in cases],
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()) or "-")
def test_the_double_refuses_what_the_real_class_refuses(lm, name, kwargs):
    assert _outcome(getattr(double, name), kwargs) == _outcome(getattr(lm, name), kwargs)
