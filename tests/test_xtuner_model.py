"""MaskDPO against XTuner's stock DPO on the same batch, checkpoints without the reference, the reference cache."""

import copy
import json
import math

import pytest
import torch

from tests.test_xtuner_data import pair_records, write_pairs

torch.set_num_threads(1)

LOSS_CASES = [("sigmoid", 0.0), ("sigmoid", 0.1), ("robust", 0.1), ("hinge", 0.0), ("ipo", 0.0),
              ("kto_pair", 0.0), ("sppo_hard", 0.0), ("nca_pair", 0.0)]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def _llm(folder):
    from mmengine.config import ConfigDict
    from transformers import AutoModelForCausalLM

    # XTuner builds models from config dicts only (a module hits an unbound variable in build_llm_from_cfg).
    return ConfigDict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=str(folder))


@pytest.fixture(scope="module")
def policy_and_reference(tiny_llama_dir, tmp_path_factory):
    """Configs of the tiny Llama as reference and a perturbed copy as policy (so the loss is not ln 2)."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    folder = tmp_path_factory.mktemp("policy")
    policy.save_pretrained(folder)
    return _llm(folder), _llm(tiny_llama_dir)


@pytest.fixture(scope="module")
def batches(tmp_path_factory, tokenizer):
    from maskdpo.xtuner.dataset import build_maskdpo_dataset, maskdpo_collate_fn

    path = write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl")
    out = {}
    for mask in ("none", "both"):
        ds = build_maskdpo_dataset(str(path), tokenizer, max_length=512, mask=mask)
        out[mask] = maskdpo_collate_fn([ds[i] for i in range(len(ds))])
    return out


def _models(policy, reference, loss_type="sigmoid", label_smoothing=0.0):
    from maskdpo.xtuner.model import MaskDPO, StockDPO

    kwargs = dict(llm=policy, ref_llm=reference, beta=0.1, loss_type=loss_type, label_smoothing=label_smoothing,
                  use_activation_checkpointing=False)
    return MaskDPO(**copy.deepcopy(kwargs)), StockDPO(**copy.deepcopy(kwargs))


def _run(model, batch):
    batch = copy.deepcopy(batch)
    return model(batch["data"], batch["data_samples"], mode="loss")


@pytest.mark.parametrize("loss_type,label_smoothing", LOSS_CASES)
def test_mask_none_equals_xtuner_stock_dpo(policy_and_reference, batches, loss_type, label_smoothing):
    ours_model, stock_model = _models(*policy_and_reference, loss_type, label_smoothing)
    batch = batches["none"]
    assert not (batch["data"]["labels"] == 0).any()  # token id 0 is the case below
    ours, stock = _run(ours_model, batch), _run(stock_model, batch)
    assert abs(ours["loss"].item() - math.log(2)) > 1e-3  # policy != reference: a real comparison
    torch.testing.assert_close(ours["loss"], stock["loss"].mean(), atol=1e-5, rtol=1e-5)
    for name in ("chosen_rewards", "rejected_rewards", "reward_acc", "reward_margin"):
        torch.testing.assert_close(ours[name], stock[name], atol=1e-5, rtol=1e-5)


def test_gradients_equal_xtuner_stock_dpo(policy_and_reference, batches):
    ours_model, stock_model = _models(*policy_and_reference)
    _run(ours_model, batches["none"])["loss"].backward()
    _run(stock_model, batches["none"])["loss"].mean().backward()
    ours = dict(ours_model.llm.named_parameters())
    for name, p in stock_model.llm.named_parameters():
        torch.testing.assert_close(ours[name].grad, p.grad, atol=1e-6, rtol=1e-4)


def test_token_id_0_counts_for_us_and_is_dropped_by_xtuner(policy_and_reference, batches):
    """XTuner masks ``labels != 0``; a real token 0 in a response must count."""
    ours_model, stock_model = _models(*policy_and_reference)
    batch = copy.deepcopy(batches["none"])
    labels, ids = batch["data"]["labels"], batch["data"]["input_ids"]
    t = int((labels[0] != -100).nonzero()[2])  # a response token of chosen row 0
    ids[0, t] = labels[0, t] = 0
    ours, stock = _run(ours_model, batch), _run(stock_model, batch)
    assert abs(ours["loss"].item() - stock["loss"].mean().item()) > 1e-4
    # Stock DPO equals ours on the same batch with that token masked: it silently drops it.
    dropped = copy.deepcopy(batch)
    dropped["data"]["labels"][0, t] = -100
    torch.testing.assert_close(_run(ours_model, dropped)["loss"], stock["loss"].mean(), atol=1e-6, rtol=1e-6)
    # Ours counts it: the chosen reward moves by β (log πθ − log πref) of that token.
    policy, reference = ours_model.llm, ours_model.ref_llm
    with torch.no_grad():
        inputs = {k: v[:1] for k, v in batch["data"].items() if k != "labels"}
        logp = lambda m: m(**inputs).logits[0, t - 1].log_softmax(-1)[0].item()  # noqa: E731
        token_reward = 0.1 * (logp(policy) - logp(reference))
    diff = ours["chosen_rewards"].item() - _run(ours_model, dropped)["chosen_rewards"].item()
    assert diff * 4 == pytest.approx(token_reward, abs=1e-5)  # the metric is a mean over 4 pairs


def test_mask_both_uses_fewer_tokens_than_none(policy_and_reference, batches):
    ours_model, _ = _models(*policy_and_reference)
    both, none = _run(ours_model, batches["both"]), _run(ours_model, batches["none"])
    assert not torch.isclose(both["loss"], none["loss"])
    assert (batches["both"]["data"]["labels"] != -100).sum() < (batches["none"]["data"]["labels"] != -100).sum()


def test_policy_equal_to_reference_gives_ln2(tiny_llama_dir, batches):
    from maskdpo.xtuner.model import MaskDPO

    # No ref_llm: a frozen copy of the policy, as in XTuner.
    out = _run(MaskDPO(llm=_llm(tiny_llama_dir), use_activation_checkpointing=False), batches["both"])
    assert out["loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert out["chosen_rewards"].item() == 0 and out["rejected_rewards"].item() == 0


def test_checkpoint_has_no_reference_weights_and_loads_strictly(policy_and_reference):
    ours_model, stock_model = _models(*policy_and_reference)
    state = ours_model.state_dict()
    assert state and not any(k.startswith("ref_llm.") for k in state)
    assert any(k.startswith("ref_llm.") for k in stock_model.state_dict())  # XTuner saves the reference
    ours_model.load_state_dict(state, strict=True)  # the reference's absence is not a missing key
    del state["llm.lm_head.weight" if "llm.lm_head.weight" in state else next(iter(state))]
    with pytest.raises(RuntimeError, match="Missing key"):
        ours_model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- reference cache


@pytest.fixture(scope="module")
def cache_setup(tmp_path_factory, tiny_llama_dir):
    from maskdpo.xtuner.ref_cache import compute_ref_cache

    folder = tmp_path_factory.mktemp("cache")
    pairs = write_pairs(folder / "pairs.jsonl")
    env = {"MASKDPO_MODEL": str(tiny_llama_dir), "MASKDPO_PAIRS": str(pairs)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        cache = compute_ref_cache("xtuner_configs/maskdpo_tiny_cpu.py", folder / "ref.jsonl", batch_size=3)
    return folder, pairs, cache


def _cached_and_live(tiny_llama_dir, cache_path):
    from maskdpo.xtuner.model import MaskDPO

    llm = _llm(tiny_llama_dir)
    cached = MaskDPO(llm=copy.deepcopy(llm), ref_cache=str(cache_path), use_activation_checkpointing=False)
    live = MaskDPO(llm=copy.deepcopy(llm), ref_llm=copy.deepcopy(llm), use_activation_checkpointing=False)
    return cached, live


def test_cached_reference_equals_live_reference_over_training_steps(tiny_llama_dir, cache_setup, tokenizer):
    from maskdpo.xtuner.dataset import build_maskdpo_dataset, maskdpo_collate_fn

    folder, pairs, cache = cache_setup
    assert len(cache.entries) == 4
    cached, live = _cached_and_live(tiny_llama_dir, folder / "ref.jsonl")
    assert cached.ref_llm is None and not any("ref_llm" in n for n, _ in cached.named_parameters())
    ds = build_maskdpo_dataset(str(pairs), tokenizer, max_length=512, mask="both")
    optims = [torch.optim.AdamW(m.llm.parameters(), lr=1e-2) for m in (cached, live)]
    for step in range(3):
        batch = maskdpo_collate_fn([ds[(2 * step) % 4], ds[(2 * step + 1) % 4]])
        losses = []
        for model, optim in zip((cached, live), optims):
            out = _run(model, batch)
            out["loss"].backward()
            optim.step()
            optim.zero_grad()
            losses.append(out["loss"].item())
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0] < math.log(2) - 1e-3  # it trained


def test_mismatching_cache_is_an_error(tiny_llama_dir, cache_setup, tokenizer):
    from maskdpo.xtuner.dataset import build_maskdpo_dataset, maskdpo_collate_fn
    from maskdpo.xtuner.ref_cache import RefCacheMismatch

    folder, pairs, _ = cache_setup
    cached, _ = _cached_and_live(tiny_llama_dir, folder / "ref.jsonl")
    # Other mask mode → other labels → other digests.
    ds = build_maskdpo_dataset(str(pairs), tokenizer, max_length=512, mask="none")
    with pytest.raises(RefCacheMismatch, match="pair 'pair-0' was tokenized differently"):
        _run(cached, maskdpo_collate_fn([ds[0]]))
    # A pair the cache never saw.
    records = pair_records()
    records[0]["id"] = "new-pair"
    ds = build_maskdpo_dataset(str(write_pairs(folder / "other.jsonl", records=records)), tokenizer, max_length=512)
    with pytest.raises(RefCacheMismatch, match="'new-pair' is not in the reference cache"):
        _run(cached, maskdpo_collate_fn([ds[0]]))
    # A batch from the stock collate carries no pair ids.
    from xtuner.dataset.collate_fns.preference_collate_fn import preference_collate_fn

    with pytest.raises(ValueError, match="no pair ids"):
        _run(cached, preference_collate_fn([ds[1]]))
    # Another reference model: refused before anything loads.
    header, *rest = (folder / "ref.jsonl").read_text().splitlines()
    meta = json.loads(header)
    meta["fingerprint"]["reference"] = {"name": "some/other-model", "digest": None}
    (folder / "other_ref.jsonl").write_text("\n".join([json.dumps(meta), *rest]) + "\n")
    with pytest.raises(RefCacheMismatch, match="some/other-model"):
        _cached_and_live(tiny_llama_dir, folder / "other_ref.jsonl")


# ---------------------------------------------------------------- training-step properties


def test_every_policy_parameter_changes_after_a_step(policy_and_reference, batches):
    ours_model, _ = _models(*policy_and_reference)
    before = {n: p.detach().clone() for n, p in ours_model.llm.named_parameters()}
    optim = torch.optim.AdamW(ours_model.llm.parameters(), lr=1e-3)
    _run(ours_model, batches["both"])["loss"].backward()
    optim.step()
    unchanged = [n for n, p in ours_model.llm.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged
    assert all(not p.requires_grad for p in ours_model.ref_llm.parameters())


def test_one_batch_of_four_equals_four_accumulated_batches_of_one(policy_and_reference, tokenizer, tmp_path):
    """The loss is a mean over pairs: batch 4 x accumulation 1 == batch 1 x accumulation 4 (mmengine divides by 4)."""
    from maskdpo.xtuner.dataset import build_maskdpo_dataset, maskdpo_collate_fn

    ds = build_maskdpo_dataset(str(write_pairs(tmp_path / "p.jsonl")), tokenizer, max_length=512)
    ours_model, _ = _models(*policy_and_reference)
    _run(ours_model, maskdpo_collate_fn([ds[i] for i in range(4)]))["loss"].backward()
    whole = {n: p.grad.clone() for n, p in ours_model.llm.named_parameters()}
    ours_model.zero_grad()
    for i in range(4):
        (_run(ours_model, maskdpo_collate_fn([ds[i]]))["loss"] / 4).backward()
    for n, p in ours_model.llm.named_parameters():
        torch.testing.assert_close(p.grad, whole[n], atol=1e-6, rtol=1e-4)


def test_packed_rows_give_the_same_sums_as_padded_rows(policy_and_reference, batches):
    """XTuner's packed layout (one row, cumulative lengths; a trailing sequence-parallel pad) splits
    back into the same per-sequence sums. The packed forward itself needs flash-attention (GPU)."""
    from mmengine import MessageHub

    ours_model, _ = _models(*policy_and_reference)
    labels = batches["both"]["data"]["labels"]  # (4 pairs x 2 rows, T), right-padded with -100
    lengths = batches["both"]["data"]["attention_mask"].sum(-1).tolist()
    g = torch.Generator().manual_seed(0)
    token_logps = torch.randn(labels.shape, generator=g) * (labels != -100)
    padded_sums, padded_counts = ours_model._sequence_sums(token_logps, labels != -100, None)

    pad = 5  # sequence-parallel padding at the end of the packed row
    packed_logps = torch.cat([token_logps[i, :n] for i, n in enumerate(lengths)] + [torch.zeros(pad)])[None]
    packed_mask = torch.cat([(labels[i, :n] != -100) for i, n in enumerate(lengths)] + [torch.zeros(pad, dtype=bool)])[None]
    cu = torch.tensor([0] + lengths + [pad]).cumsum(0)
    MessageHub.get_instance("varlen_attn_args").update_info("cumulative_len_rank_0", cu)
    ours_model.use_varlen_attn = True
    attention_mask = torch.ones(1, packed_logps.shape[1], dtype=bool)
    attention_mask[:, -pad:] = False
    sums, counts = ours_model._sequence_sums(packed_logps, packed_mask, attention_mask)
    torch.testing.assert_close(sums, padded_sums)
    assert torch.equal(counts, padded_counts)
