# Mask-DPO on Llama-3.1-8B-Instruct: the paper's run (Gu et al., ICLR 2025).
#
#   NPROC_PER_NODE=8 xtuner train xtuner_configs/maskdpo_llama31.py --deepspeed deepspeed_zero3
#
# Paths come from the environment (MASKDPO_MODEL, MASKDPO_PAIRS, MASKDPO_REF_CACHE,
# MASKDPO_TOKENIZED_CACHE, MASKDPO_NUM_PROC)
# or from --cfg-options on the built dicts (model.llm.pretrained_model_name_or_path=...).
# Every knob is in PART 1; the CPU configs differ from this file only there.

from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR, OptimWrapper  # noqa: F401
from torch.optim import AdamW
from transformers import AutoModelForCausalLM, AutoTokenizer
from xtuner.engine.hooks import VarlenAttnArgsToMessageHubHook
from xtuner.engine.runner import TrainLoop

from maskdpo.xtuner import MaskDPO, build_maskdpo_dataset, maskdpo_collate_fn

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
environ = __import__("os").environ  # mmengine's lazy import treats a plain `import os` as a lazy object
# Model
pretrained_model_name_or_path = environ.get("MASKDPO_MODEL", "meta-llama/Llama-3.1-8B-Instruct")
ref_cache = environ.get("MASKDPO_REF_CACHE") or None  # `maskdpo ref-cache` output; None = run the reference live
use_varlen_attn = False  # XTuner packing (GPU + flash-attn only)
use_activation_checkpointing = True  # 8B at 1024 tokens: trade compute for memory
loss_type = "sigmoid"  # paper; also robust, hinge, ipo, kto_pair, sppo_hard, nca_pair
beta = 0.1  # paper
label_smoothing = 0.0  # paper

# Data
pairs_file = environ.get("MASKDPO_PAIRS", "data/pairs.jsonl")  # pair JSONL (ours or the authors') or a `maskdpo tokenize` folder
tokenized_cache = environ.get("MASKDPO_TOKENIZED_CACHE") or None  # tokenized pairs; None = ~/.cache/maskdpo/tokenized
tokenize_num_proc = int(environ.get("MASKDPO_NUM_PROC", "8"))  # tokenizer processes when the cache is built
del environ  # keep the process environment out of the dumped config
mask = "both"  # both = Mask-DPO; chosen / rejected = one side only; none = vanilla DPO on the same pairs
max_length = 1024  # prompt + response tokens (the authors' config)
drop_truncated = False  # False: longer pairs are cut to max_length and kept (counted in the log)

# Scheduler & Optimizer
batch_size = 1  # pairs per GPU per forward
accumulative_counts = 8  # 8 GPUs x (1 x 8) = 64 pairs per optimizer step (paper)
dataloader_num_workers = 0
max_epochs = 3  # paper
optim_type = AdamW  # paper
lr = 5e-6  # paper (the authors' example config uses 5e-7)
betas = (0.9, 0.999)
weight_decay = 0
max_norm = 1  # grad clip
warmup_ratio = 0.03  # 3% linear warmup, then cosine to 0
optim_wrapper_kind = dict(type=AmpOptimWrapper, dtype="bfloat16")  # --deepspeed replaces it (bf16 from its json)

# Save and log
save_steps = 500
save_total_limit = 2  # checkpoints kept (-1 = all)
log_interval = 10
seed = 0

#######################################################################
#                      PART 2  Model & Tokenizer                      #
#######################################################################
tokenizer = dict(
    type=AutoTokenizer.from_pretrained,
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    trust_remote_code=True,
    padding_side="right",
)

model = dict(
    type=MaskDPO,
    use_varlen_attn=use_varlen_attn,
    use_activation_checkpointing=use_activation_checkpointing,
    loss_type=loss_type,
    beta=beta,
    label_smoothing=label_smoothing,
    ref_cache=ref_cache,  # set: the reference below is only checked against the cache, never loaded
    llm=dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=pretrained_model_name_or_path,
        trust_remote_code=True,
    ),
    # The frozen reference, built from disk: ZeRO-3 cannot deep-copy the policy.
    ref_llm=dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=pretrained_model_name_or_path,
        trust_remote_code=True,
    ),
)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset = dict(
    type=build_maskdpo_dataset,
    data_files=pairs_file,
    tokenizer=tokenizer,
    max_length=max_length,
    mask=mask,  # the mask lives in the data (-100 labels); the model has no mask knob
    drop_truncated=drop_truncated,
    cache_dir=tokenized_cache,  # tokenized once, memory-mapped: reruns, resumes and other ranks open it
    num_proc=tokenize_num_proc,
    use_varlen_attn=use_varlen_attn,
    shuffle_before_pack=True,
)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=maskdpo_collate_fn, use_varlen_attn=use_varlen_attn),
)

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper = dict(
    **optim_wrapper_kind,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)

# Linear warmup, then cosine to 0. mmengine rejects a warmup that rounds down to 0 iterations
# ("end should be larger than begin"), so warmup_ratio = 0 leaves it out.
warmup = [
    dict(
        type=LinearLR,
        start_factor=1e-5,
        by_epoch=True,
        begin=0,
        end=warmup_ratio * max_epochs,
        convert_to_iter_based=True,
    ),
] if warmup_ratio > 0 else []
param_scheduler = warmup + [
    dict(
        type=CosineAnnealingLR,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_ratio * max_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]

train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
custom_hooks = [dict(type=VarlenAttnArgsToMessageHubHook)] if use_varlen_attn else []

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=log_interval),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, by_epoch=False, interval=save_steps, max_keep_ckpts=save_total_limit),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)

visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=seed, deterministic=False)
log_processor = dict(by_epoch=False)
