"""``MaskDPO``: XTuner's DPO model with label-only log-probs, -100 masks and an optional reference cache.

A thin subclass of ``xtuner.model.dpo.DPO``. It keeps the parent's machinery
(model building, LoRA, the interleaved chosen/rejected batch, packed
``use_varlen_attn`` rows, the sequence-parallel split and gather) and replaces
only:

- the log-prob gathering: ``label_logps`` (chunked log-sum-exp minus the label
  logit) instead of a full-vocabulary ``log_softmax``; the policy and the
  reference are called without ``labels``, so the HF model does not compute a
  cross-entropy nobody uses;
- the mask: ``labels != -100`` only. XTuner 0.2.0 uses ``labels != 0``, which
  also drops every real token with id 0;
- the loss: :func:`maskdpo.xtuner.loss.mask_dpo_loss` on masked sums;
- the reference: optional precomputed sums (``ref_cache=``), in which case no
  reference model is built at all; and checkpoints never carry the frozen
  reference's weights.

There is no ``mask`` argument: which tokens count is decided by the data
(``build_maskdpo_dataset(mask=...)`` writes -100 into the labels), so a model
knob could only disagree with it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from xtuner.model.dpo import DPO, create_reference_model, disable_grad
from xtuner.model.sft import SupervisedFinetune

from ..masking import IGNORE_INDEX
from .loss import DEFAULT_CHUNK_SIZE, check_loss_type, label_logps, mask_dpo_loss, shift_labels
from .ref_cache import RefCache, reference_fingerprint

REF_PREFIX = "ref_llm."


def _prepare_for_flash_attn(cfg, llm_cfg):
    """XTuner's choice of attention and dtype, except on CPU.

    XTuner probes bf16 support with ``torch.cpu.is_bf16_supported()``, which
    does not exist: on CPU keep the model's own dtype and attention.
    """
    from xtuner.utils.device import get_torch_device

    if hasattr(get_torch_device(), "is_bf16_supported"):
        return DPO._prepare_for_flash_attn(cfg, llm_cfg)
    return cfg


class MaskDPO(DPO):
    """Mask-DPO for XTuner configs.

    Args:
        llm: the policy's config dict, as for XTuner's ``DPO`` (XTuner 0.2.0 cannot take a built module).
        ref_llm: the frozen reference; ``None`` = a copy of the initial policy
            (or the adapter-disabled policy with LoRA), as in XTuner.
        beta, loss_type, label_smoothing: as XTuner's ``DPO`` (the paper: 0.1, sigmoid, 0).
        ref_cache: path of a ``maskdpo ref-cache`` file. Then the reference
            model is not built; its masked sums are read from the file, which
            must have been computed by the same reference on the same tokens.
        logp_chunk_size: rows per chunk of the label-only log-softmax.
        **kwargs: ``SupervisedFinetune``'s (``use_varlen_attn``, ``lora``, ...).
    """

    def __init__(self, llm, ref_llm=None, beta: float = 0.1, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0, ref_cache: str | None = None,
                 logp_chunk_size: int = DEFAULT_CHUNK_SIZE, **kwargs):
        # Validate before any model loads.
        check_loss_type(loss_type, label_smoothing)
        cache = None
        if ref_cache is not None:
            cache = RefCache.load(ref_cache)
            cache.check_reference(reference_fingerprint(ref_llm if ref_llm is not None else llm))
        # DPO.__init__ would build (or copy) a reference; with a cache there is none.
        SupervisedFinetune.__init__(self, llm, **kwargs)
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.logp_chunk_size = logp_chunk_size
        self.ref_cache = cache
        if cache is not None:
            from mmengine.logging import print_log

            self.ref_llm = None
            print_log(f"Reference: {len(cache.entries)} precomputed pair sums from {cache.path}; "
                      "no reference model loaded", logger="current")
        elif ref_llm is not None:
            ref_llm = self.build_llm_from_cfg(ref_llm, kwargs.get("use_varlen_attn", False),
                                              kwargs.get("max_position_embeddings", None))
            self.ref_llm = disable_grad(ref_llm)
        else:
            self.ref_llm = None if self.use_lora else create_reference_model(self.llm)
        self.register_load_state_dict_post_hook(_ignore_missing_reference)

    _prepare_for_flash_attn = staticmethod(_prepare_for_flash_attn)

    def state_dict(self, *args, **kwargs):
        """The policy only: the frozen reference is rebuilt from the config (or the cache) on load."""
        state = super().state_dict(*args, **kwargs)
        return OrderedDict((k, v) for k, v in state.items() if not k.startswith(REF_PREFIX))

    # ------------------------------------------------------------------ loss

    def _token_logps(self, llm, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """(B, T_local) label log-probs of one model on this rank's slice, gathered to (B, T)."""
        from xtuner.parallel.sequence import (gather_forward_split_backward, get_sequence_parallel_group,
                                              get_sequence_parallel_world_size)

        logits = llm(**inputs).logits  # (B, T_local, V)
        token_logps = label_logps(logits, labels, self.logp_chunk_size)  # (B, T_local) fp32
        del logits
        if get_sequence_parallel_world_size() > 1:
            token_logps = gather_forward_split_backward(token_logps, dim=1, sp_group=get_sequence_parallel_group(),
                                                        grad_scale="up")
        return token_logps

    def _sequence_sums(self, token_logps: torch.Tensor, loss_mask: torch.Tensor, attention_mask) -> tuple:
        """Per-sequence sums and kept-token counts, in pair order [c0, r0, c1, r1, ...].

        Unpacked: one sequence per row. Packed (``use_varlen_attn``): split the
        single row at XTuner's cumulative lengths, dropping the sequence-parallel pad.
        """
        if not self.use_varlen_attn:
            return token_logps.sum(-1), loss_mask.sum(-1).float()  # (2P,), (2P,)
        import torch.distributed as dist
        from mmengine import MessageHub

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        cu_seqlens = MessageHub.get_instance("varlen_attn_args").get_info(f"cumulative_len_rank_{rank}")
        seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        logps = torch.split(token_logps, seqlens, dim=1)
        masks = torch.split(loss_mask, seqlens, dim=1)
        if attention_mask is not None:  # XTuner pads packed rows for sequence parallel; drop the pad
            logps, masks = logps[:-1], masks[:-1]
        sums = torch.stack([x.sum() for x in logps])
        counts = torch.stack([m.sum() for m in masks]).float()
        return sums, counts

    def compute_loss(self, data, data_samples=None):
        from xtuner.parallel.sequence import get_sequence_parallel_world_size

        # Shift once for the whole (unsplit) row, as XTuner does, so sequence
        # parallel ranks get aligned slices: labels[:, t] is scored by logits[:, t].
        data["labels"] = shift_labels(data["labels"])
        loss_mask = data["labels"] != IGNORE_INDEX  # (B, T) on all ranks; -100 only, never != 0
        if get_sequence_parallel_world_size() > 1:
            data = self._split_for_sequence_parallel(data)
        labels = data["labels"]
        inputs = {k: v for k, v in data.items() if k != "labels"}  # no HF cross-entropy

        if self.ref_cache is not None:
            ref_sums, ref_counts = self.ref_cache.lookup(data_samples, device=labels.device)
        else:
            with torch.no_grad():  # reference first: its logits are freed before the policy's exist
                if self.ref_llm is None:
                    with self.llm.disable_adapter():
                        ref_tokens = self._token_logps(self.llm, inputs, labels)
                else:
                    ref_tokens = self._token_logps(self.ref_llm, inputs, labels)
                ref_sums, ref_counts = self._sequence_sums(ref_tokens, loss_mask, data.get("attention_mask"))
        policy_tokens = self._token_logps(self.llm, inputs, labels)
        policy_sums, counts = self._sequence_sums(policy_tokens, loss_mask, data.get("attention_mask"))
        if self.ref_cache is not None and not torch.equal(ref_counts, counts):
            raise ValueError("reference cache token counts differ from the batch's: the cache was computed on "
                             "different labels (data, tokenizer, max_length or mask mode)")

        if self.loss_type == "ipo":  # IPO works on per-token means, as in XTuner
            policy_sums, ref_sums = policy_sums / counts.clamp(min=1), ref_sums / counts.clamp(min=1)
        out = mask_dpo_loss(policy_sums[0::2], policy_sums[1::2], ref_sums[0::2], ref_sums[1::2],
                            beta=self.beta, loss_type=self.loss_type, label_smoothing=self.label_smoothing)
        return {"loss": out.losses.mean(), **out.metrics()}


class StockDPO(DPO):
    """XTuner's DPO unchanged except for the CPU bf16 probe: the baseline of tests and benchmarks."""

    _prepare_for_flash_attn = staticmethod(_prepare_for_flash_attn)


def _ignore_missing_reference(module, incompatible_keys) -> None:
    """Checkpoints hold no reference weights by design: their absence is not a missing key."""
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(REF_PREFIX) and f".{REF_PREFIX}" not in k]
