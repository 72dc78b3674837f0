"""The ``hf`` backend: n per prompt, reproducible seeds, and exactly the requested decoding."""

import json
import shutil

import pytest
import torch

from maskdpo.backends.base import Decoding, GenerationRequest, load_backend
from maskdpo.backends.hf import DecodingMismatch, _sampler_class, check_processors, describe_processors
from maskdpo.backends.prompting import derive_seed, replica_seeds, template_sha256

torch.set_num_threads(1)

ADA = [{"role": "user", "content": "Tell me about Ada Lovelace."}]
EIFFEL = [{"role": "user", "content": "Where is the Eiffel Tower? Tell me more about it please."}]
PAPER = Decoding(max_new_tokens=10)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_backend("hf", str(tiny_llama_dir), device="cpu", batch_size=4)


def test_n_responses_per_request_in_order(tiny):
    out = tiny.generate([GenerationRequest(ADA, n=3, seed=1), GenerationRequest(EIFFEL, n=2, seed=2),
                         GenerationRequest(ADA, n=1, seed=3)], PAPER)
    assert [len(texts) for texts in out] == [3, 2, 1]
    assert all(isinstance(t, str) for texts in out for t in texts)
    assert len(set(out[0])) == 3  # replicas get distinct seeds, so distinct samples


def test_seeds_reproduce_and_do_not_depend_on_batch_mates(tiny):
    alone = tiny.generate([GenerationRequest(EIFFEL, n=3, seed=7)], PAPER)[0]
    again = tiny.generate([GenerationRequest(EIFFEL, n=3, seed=7)], PAPER)[0]
    with_mate = tiny.generate([GenerationRequest(ADA, n=3, seed=8), GenerationRequest(EIFFEL, n=3, seed=7)], PAPER)[1]
    other_seed = tiny.generate([GenerationRequest(EIFFEL, n=3, seed=9)], PAPER)[0]
    assert alone == again == with_mate
    assert alone != other_seed


def test_global_rng_does_not_change_seeded_samples(tiny):
    torch.manual_seed(0)
    a = tiny.generate([GenerationRequest(ADA, n=2, seed=5)], PAPER)
    torch.manual_seed(12345)
    b = tiny.generate([GenerationRequest(ADA, n=2, seed=5)], PAPER)
    assert a == b


def test_processors_are_exactly_the_paper_decoding(tiny):
    tiny.generate([GenerationRequest(ADA, n=2, seed=1)], PAPER)
    built = describe_processors(tiny.last_processors)
    assert built == [("TemperatureLogitsWarper", {"temperature": 0.8}), ("TopKLogitsWarper", {"top_k": 40})]
    assert not any(name == "TopPLogitsWarper" for name, _ in built)


def test_generation_config_json_defaults_do_not_leak(tiny_llama_dir, tmp_path):
    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_llama_dir, leaky)
    config = json.loads((leaky / "generation_config.json").read_text())
    config.update(do_sample=True, top_p=0.9, temperature=0.6, top_k=5, repetition_penalty=1.3, min_p=0.1)
    (leaky / "generation_config.json").write_text(json.dumps(config))
    backend = load_backend("hf", str(leaky), device="cpu")
    backend.generate([GenerationRequest(ADA, n=1, seed=1)], PAPER)
    assert describe_processors(backend.last_processors) == [
        ("TemperatureLogitsWarper", {"temperature": 0.8}), ("TopKLogitsWarper", {"top_k": 40})]
    backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(4))
    assert describe_processors(backend.last_processors) == []


def test_requested_top_p_is_applied(tiny):
    tiny.generate([GenerationRequest(ADA, n=1, seed=1)], Decoding(top_p=0.5, max_new_tokens=4))
    assert ("TopPLogitsWarper", {"top_p": 0.5}) in describe_processors(tiny.last_processors)


def test_check_processors_rejects_a_leaked_top_p():
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    ok = [TemperatureLogitsWarper(0.8), TopKLogitsWarper(40)]
    check_processors(ok, PAPER)
    with pytest.raises(DecodingMismatch, match="TopPLogitsWarper"):
        check_processors(ok + [TopPLogitsWarper(0.9)], PAPER)
    with pytest.raises(DecodingMismatch):
        check_processors([TemperatureLogitsWarper(0.6), TopKLogitsWarper(40)], PAPER)


def test_greedy_gives_n_identical_answers_without_warpers(tiny):
    out = tiny.generate([GenerationRequest(EIFFEL, n=2)], Decoding.greedy(6))[0]
    assert out[0] == out[1]
    assert describe_processors(tiny.last_processors) == []


def test_sampling_without_a_seed_is_refused(tiny):
    with pytest.raises(ValueError, match="seed"):
        tiny.generate([GenerationRequest(ADA, n=1)], PAPER)


def test_seeded_row_sampler_draws_from_the_softmax():
    """Gumbel-max per row: empirical frequencies over many seeds match softmax(scores)."""
    scores = torch.tensor([2.0, 1.0, 0.0, float("-inf")])
    rows = 4000
    sampler = _sampler_class()([derive_seed("row", i) for i in range(rows)])
    out = sampler(None, scores.expand(rows, 4).clone())
    chosen = out.argmax(dim=-1)
    assert torch.all(out.max(dim=-1).values == 0) and torch.isinf(out).sum() == rows * 3  # one-hot in log space
    freq = torch.bincount(chosen, minlength=4).float() / rows
    expected = torch.softmax(scores, dim=-1)
    assert freq[3] == 0  # a filtered token is never drawn
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)


def test_replica_seeds_are_stable_and_distinct():
    seeds = replica_seeds(123, 8)
    assert seeds == replica_seeds(123, 8) and len(set(seeds)) == 8
    assert derive_seed(0, "q1") == derive_seed(0, "q1") != derive_seed(0, "q2")
    assert replica_seeds(None, 2) == [None, None]


def test_chat_template_is_the_tokenizers(tiny):
    assert tiny.chat_template_meta == {"source": "tokenizer.chat_template",
                                       "sha256": template_sha256(tiny.tokenizer.chat_template)}


def test_smollm2_samples_reproducibly_with_the_paper_decoding(smollm2_model_dir):
    backend = load_backend("hf", str(smollm2_model_dir), device="cpu", batch_size=2)
    requests = [GenerationRequest([{"role": "user", "content": "Who was Marie Curie?"}], n=2, seed=11),
                GenerationRequest([{"role": "user", "content": "Name a city in France."}], n=2, seed=12)]
    decoding = Decoding(max_new_tokens=8)
    first = backend.generate(requests, decoding)
    assert describe_processors(backend.last_processors) == [
        ("TemperatureLogitsWarper", {"temperature": 0.8}), ("TopKLogitsWarper", {"top_k": 40})]
    second = backend.generate(requests[1:], decoding)
    assert [len(t) for t in first] == [2, 2] and all(t.strip() for texts in first for t in texts)
    assert second[0] == first[1]
    assert backend.chat_template_meta["sha256"] == template_sha256(backend.tokenizer.chat_template)
    assert "<|im_start|>" in backend.tokenizer.chat_template  # SmolLM2's ChatML, not the tiny model's template


def test_shared_prefix_prefill_gives_the_same_samples(tiny_llama_dir, tiny):
    plain = load_backend("hf", str(tiny_llama_dir), device="cpu", batch_size=4, share_prefix=False)
    long_doc = "Reference: Ada Lovelace was born in London in 1815 and worked with Charles Babbage. " * 2
    requests = [GenerationRequest([{"role": "user", "content": long_doc + f"Sentence {i}: she was born."}], n=2, seed=i)
                for i in range(3)] + [GenerationRequest(EIFFEL, n=2, seed=9)]
    assert tiny.generate(requests, PAPER) == plain.generate(requests, PAPER)
    greedy = Decoding.greedy(6)
    assert tiny.generate(requests, greedy) == plain.generate(requests, greedy)


def test_shared_prefix_groups():
    from maskdpo.backends.hf import shared_prefix_groups

    system = list(range(100, 120))
    a, b = system + [1] * 40, system + [2] * 40
    rows = [a + [7, 8], b + [5], a + [9], a + [7, 8], b + [6, 6]]
    groups = shared_prefix_groups(rows, min_shared=16)
    assert sorted(m for _, m in groups) == [[0, 2, 3], [1, 4]]  # not merged over the shared system prompt
    for plen, members in groups:
        assert all(rows[r][:plen] == rows[members[0]][:plen] and len(rows[r]) > plen for r in members)
    assert dict((tuple(m), p) for p, m in groups)[(0, 2, 3)] == 60
    assert shared_prefix_groups([[1, 2, 3]], 16) == [(2, [0])]  # a lone row keeps its last token


def _layer_kv(cache, layer):
    """(keys, values) of one layer: ``cache.layers`` on transformers 5, ``key_cache``/``value_cache`` on 4.x."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


@pytest.mark.parametrize("legacy", [False, True], ids=["DynamicCache", "legacy tuple"])
def test_copy_cache_selects_rows_on_this_transformers_line(legacy):
    from transformers import DynamicCache

    from maskdpo.backends.hf import _copy_cache

    layers = [(torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)) for _ in range(3)]  # (rows, heads, tokens, dim)
    if legacy:
        cache = tuple(layers)
    else:
        cache = DynamicCache()
        for i, (k, v) in enumerate(layers):
            cache.update(k, v, i)
    index = torch.tensor([1, 0, 1, 1])
    copied = _copy_cache(cache, index)
    assert isinstance(copied, DynamicCache)
    for i, (k, v) in enumerate(layers):
        ck, cv = _layer_kv(copied, i)
        assert torch.equal(ck, k.index_select(0, index)) and torch.equal(cv, v.index_select(0, index))


@pytest.mark.parametrize("share_prefix", [True, False])
def test_stop_strings_end_the_text(smollm2_model_dir, share_prefix):
    from maskdpo.backends.base import finish_reason_of

    backend = load_backend("hf", str(smollm2_model_dir), device="cpu", share_prefix=share_prefix)
    (full,), = backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(12))
    assert finish_reason_of(full) == "length" and len(full) > 6, full
    stop = full[3:6]  # a piece of what greedy decoding writes anyway
    (cut,), = backend.generate([GenerationRequest(ADA, n=1)], Decoding.greedy(12, stop=(stop,)))
    assert cut == full[:full.index(stop)].strip() and finish_reason_of(cut) == "stop"
