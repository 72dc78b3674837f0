"""The Mask-DPO loss as pure tensor functions (no XTuner import).

Conventions (the same as XTuner's DPO and the DPO reference code):

- ``labels`` are the input ids with ``-100`` wherever the loss must not look:
  the prompt, padding, and (Mask-DPO) the tokens of sentences left out of the
  preference signal. ``-100`` is the only "ignore" value; a real token id 0
  counts like any other token (XTuner 0.2.0 masks ``labels != 0`` and so drops
  it: we do not copy that).
- Causal shift: ``logits[:, t]`` scores ``labels[:, t + 1]``.
- Rows interleave pairs: ``[chosen_0, rejected_0, chosen_1, rejected_1, ...]``.

Mask-DPO (DESIGN §1), with ``M_w`` / ``M_l`` the kept tokens of chosen / rejected::

    L = -log σ( β [ Σ_{t∈M_w} (log πθ − log πref)(y_w,t) − Σ_{t∈M_l} (log πθ − log πref)(y_l,t) ] )
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..masking import IGNORE_INDEX  # -100, the one spelling (the data writes it)
LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo", "kto_pair", "sppo_hard", "nca_pair")
DEFAULT_CHUNK_SIZE = 256  # rows of [chunk, V] fp32 at a time: 256 x 128k x 4 B = 128 MiB


class _LabelLogps(torch.autograd.Function):
    """``log softmax(logits)[label]`` row by row, chunked, with a hand-written backward.

    Forward keeps only the per-row log-sum-exp (N floats) for backward, not an
    [N, V] log-softmax; backward writes ``g * (onehot(label) - softmax)`` chunk
    by chunk straight into the logits' gradient.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
        n = logits.shape[0]
        keep = labels != IGNORE_INDEX  # (N,)
        index = torch.where(keep, labels, torch.zeros_like(labels)).unsqueeze(1)  # (N, 1)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        picked = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            chunk = logits[rows].float()  # (C, V) fp32, one chunk at a time
            lse[rows] = torch.logsumexp(chunk, dim=-1)
            picked[rows] = chunk.gather(1, index[rows]).squeeze(1)
        out = torch.where(keep, picked - lse, torch.zeros_like(lse))  # (N,)
        ctx.save_for_backward(logits, index, keep, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, index, keep, lse = ctx.saved_tensors
        # Ignored rows get exactly zero gradient.
        g = torch.where(keep, grad_out.float(), torch.zeros_like(grad_out, dtype=torch.float32))  # (N,)
        grad = torch.empty_like(logits)  # (N, V) in the logits' dtype
        for start in range(0, logits.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            probs = (logits[rows].float() - lse[rows, None]).exp_()  # (C, V) softmax
            probs.mul_(-g[rows, None])  # -g * softmax
            probs.scatter_add_(1, index[rows], g[rows, None])  # + g * onehot(label)
            grad[rows] = probs.to(grad.dtype)
        return grad, None, None


def label_logps(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Log-probability of each label token, without an [B, T, V] fp32 log-softmax.

    ``out[b, t] = logits[b, t, labels[b, t]] - logsumexp(logits[b, t, :])`` in
    fp32, computed ``chunk_size`` rows at a time; ``0`` where ``labels == -100``
    (and there the gradient is exactly zero). No shift here: ``labels`` must be
    already aligned with ``logits``.

    Args:
        logits: (B, T, V), any float dtype.
        labels: (B, T) int, ``-100`` = ignored.
    Returns:
        (B, T) fp32.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    vocab = logits.shape[-1]
    flat = _LabelLogps.apply(logits.reshape(-1, vocab), labels.reshape(-1), chunk_size)
    return flat.view(labels.shape)


def naive_label_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The textbook computation (full fp32 log-softmax, then gather): a reference for tests and benchmarks.

    (B, T, V), (B, T) -> (B, T) fp32, ``0`` where ``labels == -100``.
    """
    keep = labels != IGNORE_INDEX
    index = torch.where(keep, labels, torch.zeros_like(labels))
    logp = logits.float().log_softmax(-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return logp * keep


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Align labels with logits for a causal LM: ``out[:, t] = labels[:, t + 1]``, last column ``-100``.

    (B, T) -> (B, T). Shifting the labels (not slicing ``logits[:, :-1]``)
    avoids copying the [B, T, V] logits; it is the shift XTuner's DPO does.
    """
    return torch.cat((labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)), dim=1)


def masked_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Sum of log-probs over the kept tokens of each row.

    ``out[b] = Σ_{t : labels[b, t+1] != -100} log softmax(logits[b, t])[labels[b, t+1]]``

    Args:
        logits: (B, T, V); ``logits[:, t]`` predicts ``labels[:, t + 1]``.
        labels: (B, T) unshifted, ``-100`` = not in the sum.
    Returns:
        (B,) fp32.
    """
    return label_logps(logits, shift_labels(labels), chunk_size).sum(-1)


def kept_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Number of tokens in each row's sum: (B, T) unshifted labels -> (B,) fp32."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(-1).float()


class DPOOutput(NamedTuple):
    losses: torch.Tensor  # (P,) per pair; (2P,) for kto_pair
    chosen_rewards: torch.Tensor  # (P,) β (log πθ − log πref)(y_w) over kept tokens
    rejected_rewards: torch.Tensor  # (P,)

    def metrics(self) -> dict[str, torch.Tensor]:
        """Logged scalars; none of the names contains ``loss`` (mmengine would add them to the loss)."""
        chosen, rejected = self.chosen_rewards.detach(), self.rejected_rewards.detach()
        return {
            "chosen_rewards": chosen.mean(),
            "rejected_rewards": rejected.mean(),
            "reward_acc": (chosen > rejected).float().mean(),
            "reward_margin": (chosen - rejected).mean(),
        }


def check_loss_type(loss_type: str, label_smoothing: float = 0.0) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


def mask_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO and its variants on masked log-prob sums (all inputs (P,) fp32).

    With ``h = (π_w − ref_w) − (π_l − ref_l)`` (Mask-DPO eq.: sums over kept tokens only):

    - sigmoid:  ``−(1−ε) log σ(βh) − ε log σ(−βh)``  (ε = label smoothing; the paper: ε = 0)
    - robust:   ``(−(1−ε) log σ(βh) + ε log σ(−βh)) / (1 − 2ε)``
    - hinge:    ``relu(1 − βh)``
    - ipo:      ``(h − 1/(2β))²``  (pass per-token means, as XTuner does for ipo)
    - kto_pair, sppo_hard, nca_pair: as in XTuner 0.2.0's ``DPO.compute_loss``.

    Returns per-pair losses (the caller takes the mean) and the rewards.
    """
    check_loss_type(loss_type, label_smoothing)
    chosen_logratios = policy_chosen - ref_chosen  # (P,)
    rejected_logratios = policy_rejected - ref_rejected  # (P,)
    h = chosen_logratios - rejected_logratios  # (P,)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - eps) - F.logsigmoid(-beta * h) * eps
    elif loss_type == "robust":
        losses = (-F.logsigmoid(beta * h) * (1 - eps) + F.logsigmoid(-beta * h) * eps) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "kto_pair":
        # HALOs eq. 7: the KL term of one side is estimated from the other side.
        chosen_kl = chosen_logratios.mean().clamp(min=0)
        rejected_kl = rejected_logratios.mean().clamp(min=0)
        losses = torch.cat((1 - torch.sigmoid(beta * (chosen_logratios - rejected_kl)),
                            1 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))), 0)
    elif loss_type == "sppo_hard":
        losses = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    else:  # nca_pair
        chosen_r, rejected_r = beta * chosen_logratios, beta * rejected_logratios
        losses = -F.logsigmoid(chosen_r) - 0.5 * F.logsigmoid(-chosen_r) - 0.5 * F.logsigmoid(-rejected_r)
    return DPOOutput(losses, beta * chosen_logratios, beta * rejected_logratios)
