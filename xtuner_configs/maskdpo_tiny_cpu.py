# Mask-DPO on one CPU: the smoke run, the tests and the toy world.
#
#   MASKDPO_MODEL=path/to/small/model MASKDPO_PAIRS=pairs.jsonl \
#   python -m xtuner.tools.train xtuner_configs/maskdpo_tiny_cpu.py --work-dir work_dirs/tiny
#
# Same layout as maskdpo_llama31.py; only PART 1 differs (fp32, no packing, small sizes).
# Environment: MASKDPO_MODEL, MASKDPO_PAIRS, MASKDPO_REF_CACHE, MASKDPO_TOKENIZED_CACHE,
# MASKDPO_NUM_PROC, MASKDPO_EPOCHS, MASKDPO_LR, MASKDPO_BATCH_SIZE, MASKDPO_SAVE_STEPS.

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
# The environment sets paths and sizes, so other pipelines can point this config elsewhere.
environ = __import__("os").environ  # mmengine's lazy import treats a plain `import os` as a lazy object
pretrained_model_name_or_path = environ.get("MASKDPO_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")  # policy + reference
pairs_file = environ.get("MASKDPO_PAIRS", "data/pairs.jsonl")  # pair JSONL (ours or the authors') or a `maskdpo tokenize` folder
tokenized_cache = environ.get("MASKDPO_TOKENIZED_CACHE") or None  # tokenized pairs; None = ~/.cache/maskdpo/tokenized
tokenize_num_proc = int(environ.get("MASKDPO_NUM_PROC", "1"))  # tokenizer processes when the cache is built
ref_cache = environ.get("MASKDPO_REF_CACHE") or None  # `maskdpo ref-cache` output; None = run the reference live
max_epochs = int(environ.get("MASKDPO_EPOCHS", "3"))
lr = float(environ.get("MASKDPO_LR", "1e-4"))  # small models need a larger step than the paper's 5e-6
batch_size = int(environ.get("MASKDPO_BATCH_SIZE", "2"))  # pairs per forward
save_steps = int(environ.get("MASKDPO_SAVE_STEPS", "100"))
del environ  # keep the process environment out of the dumped config

# Model
use_varlen_attn = False  # packing needs CUDA + flash-attn
use_activation_checkpointing = False  # small model: speed over memory
loss_type = "sigmoid"
beta = 0.1
label_smoothing = 0.0

# Data
mask = "both"  # both = Mask-DPO; chosen / rejected = one side only; none = vanilla DPO on the same pairs
max_length = 512
drop_truncated = False  # False: longer pairs are cut to max_length and kept (counted in the log)

# Scheduler & Optimizer
accumulative_counts = 1
dataloader_num_workers = 0
optim_type = AdamW
betas = (0.9, 0.999)
weight_decay = 0
max_norm = 1  # grad clip
warmup_ratio = 0.0  # tiny runs have too few iterations for a warmup (see PART 4)
optim_wrapper_kind = dict(type=OptimWrapper)  # fp32: AmpOptimWrapper needs an accelerator

# Save and log
save_total_limit = -1  # checkpoints kept (-1 = all)
log_interval = 1
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
