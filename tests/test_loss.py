"""The pure Mask-DPO loss functions (no XTuner)."""

import math

import pytest
import torch
import torch.nn.functional as F

from maskdpo.xtuner.loss import (
    LOSS_TYPES,
    kept_token_counts,
    label_logps,
    mask_dpo_loss,
    masked_sequence_logps,
    naive_label_logps,
    shift_labels,
)

torch.set_num_threads(1)


def _random_batch(rows=4, length=12, vocab=50, masked=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=g)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    keep = torch.rand(rows, length, generator=g) > masked
    keep[:, 0] = False  # the first token is never predicted
    labels = torch.where(keep, ids, torch.full_like(ids, -100))
    return logits, ids, labels


@pytest.mark.parametrize("vocab", [49152, 128256])
def test_label_logps_equal_naive_log_softmax(vocab):
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(2, 24, vocab, generator=g)
    labels = torch.randint(0, vocab, (2, 24), generator=g)
    labels[0, :5] = -100
    labels[1, 7] = 0  # token id 0 is a real token
    ours = label_logps(logits, labels, chunk_size=7)  # chunks that do not divide the rows
    naive = naive_label_logps(logits, labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=0)
    assert ours[1, 7] != 0 and torch.all(ours[0, :5] == 0)


def test_label_logps_are_closer_to_float64_than_the_naive_fp32_path():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 24, 128256, generator=g) * 3  # wide logits: fp32 rounding shows
    labels = torch.randint(0, 128256, (2, 24), generator=g)
    truth = logits.double().log_softmax(-1).gather(-1, labels[..., None])[..., 0]
    ours_error = (label_logps(logits, labels) - truth).abs().max().item()
    naive_error = (naive_label_logps(logits, labels) - truth).abs().max().item()
    assert ours_error < 5e-6 and ours_error <= naive_error


def test_label_logps_gradient_equals_autograd_of_naive():
    logits, _, labels = _random_batch(vocab=300)
    a = logits.clone().double().requires_grad_()
    b = logits.clone().double().requires_grad_()
    weights = torch.randn(labels.shape, dtype=torch.float64)
    (label_logps(a, labels, chunk_size=5) * weights).sum().backward()
    (naive_label_logps(b, labels) * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


def test_label_logps_bf16_logits_are_upcast():
    logits, _, labels = _random_batch(vocab=1000)
    ours = label_logps(logits.bfloat16(), labels)
    naive = naive_label_logps(logits.bfloat16().float(), labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=0)


def test_masked_sum_equals_a_plain_loop_over_kept_tokens():
    logits, _, labels = _random_batch()
    sums = masked_sequence_logps(logits, labels)
    logp = logits.log_softmax(-1)
    for b in range(labels.shape[0]):
        expected = sum(logp[b, t - 1, labels[b, t]].item() for t in range(1, labels.shape[1]) if labels[b, t] != -100)
        assert sums[b].item() == pytest.approx(expected, abs=1e-4)
    assert kept_token_counts(labels).tolist() == (labels[:, 1:] != -100).sum(-1).float().tolist()


def test_shift_matches_xtuner_convention():
    labels = torch.tensor([[-100, 5, 6, -100, 7]])
    assert shift_labels(labels).tolist() == [[5, 6, -100, 7, -100]]


def test_changing_token_ids_inside_masked_spans_leaves_sums_unchanged():
    logits, ids, labels = _random_batch()
    masked = labels == -100
    other_ids = torch.where(masked, (ids + 17) % logits.shape[-1], ids)
    other_labels = torch.where(masked, torch.full_like(ids, -100), other_ids)
    assert not torch.equal(ids, other_ids)
    assert torch.equal(masked_sequence_logps(logits, labels), masked_sequence_logps(logits, other_labels))
    # Changing a kept token does change the sum: the test can fail.
    kept = (~masked).nonzero()[0]
    changed = labels.clone()
    changed[kept[0], kept[1]] = (labels[kept[0], kept[1]] + 1) % logits.shape[-1]
    assert not torch.equal(masked_sequence_logps(logits, labels), masked_sequence_logps(logits, changed))


def test_gradients_at_masked_positions_are_exactly_zero():
    logits, _, labels = _random_batch()
    logits.requires_grad_()
    masked_sequence_logps(logits, labels).sum().backward()
    scored_label = shift_labels(labels)  # logits[:, t] scores labels[:, t + 1]
    grad_norm = logits.grad.abs().sum(-1)
    assert torch.all(grad_norm[scored_label == -100] == 0)
    assert torch.all(grad_norm[scored_label != -100] > 0)


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards():
    sums = torch.randn(8) * 30
    chosen, rejected = sums[0::2], sums[1::2]
    out = mask_dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1)
    torch.testing.assert_close(out.losses, torch.full((4,), math.log(2)))
    assert torch.all(out.chosen_rewards == 0) and torch.all(out.rejected_rewards == 0)
    metrics = out.metrics()
    assert metrics["reward_margin"] == 0 and metrics["reward_acc"] == 0
    assert not any("loss" in name for name in metrics)  # mmengine would add them to the loss


def test_sigmoid_loss_formula_and_label_smoothing():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-10.0, -20.0, -12.0, -15.0))
    h = (pc - rc) - (pr - rr)  # 2 - (-5) = 7
    out = mask_dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert out.losses.item() == pytest.approx(-F.logsigmoid(0.1 * h).item())
    smoothed = mask_dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2)
    expected = -0.8 * F.logsigmoid(0.1 * h) - 0.2 * F.logsigmoid(-0.1 * h)
    assert smoothed.losses.item() == pytest.approx(expected.item())
    assert out.chosen_rewards.item() == pytest.approx(0.2) and out.rejected_rewards.item() == pytest.approx(-0.5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_is_finite_and_differentiable(loss_type):
    policy = torch.randn(6, requires_grad=True)
    ref = torch.randn(6)
    out = mask_dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta=0.1, loss_type=loss_type,
                        label_smoothing=0.1 if loss_type in ("sigmoid", "robust") else 0.0)
    out.losses.mean().backward()
    assert torch.isfinite(out.losses).all() and policy.grad.abs().sum() > 0


def test_unknown_loss_type_and_bad_smoothing_are_errors():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'"):
        mask_dpo_loss(x, x, x, x, loss_type="dpo")
    with pytest.raises(ValueError, match="label_smoothing"):
        mask_dpo_loss(x, x, x, x, label_smoothing=0.5)
