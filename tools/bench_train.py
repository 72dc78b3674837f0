"""Training step time and memory: XTuner's stock DPO vs MaskDPO vs MaskDPO with the reference cache.

Same model, same batches, one run:

1. Step time (forward + backward + AdamW step) of (a) XTuner's ``DPO`` (only its CPU bf16
   probe fixed), (b) ``MaskDPO`` with a live reference, (c) ``MaskDPO`` with precomputed
   reference sums. Steps are interleaved a, b, c, a, b, c, ... so machine load hits all
   three alike; the median is reported.
2. Peak memory of a training step for (a), (b), (c), each in a fresh process.
3. Loss-stage peak memory (forward + backward of the per-token log-probs from given
   logits): label-only (``label_logps``) vs full fp32 ``log_softmax`` + gather, at
   vocabularies of 49,152 (SmolLM2) and 128,256 (Llama-3), each in a fresh process.

Memory is measured as the process's resident set, sampled every millisecond, above its
level just before the measured work; large blocks are returned to the system on free
(``MALLOC_MMAP_THRESHOLD_``), so the resident set follows live tensors. On a GPU the same
script reports ``torch.cuda.max_memory_allocated`` instead.

    python tools/bench_train.py                 # defaults: a 4-layer Llama with a 49k vocabulary
    python tools/bench_train.py --steps 5 --seq 256 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# ---------------------------------------------------------------- measurement helpers


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or the sampled resident set on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = _rss_bytes()
        self.max_seen = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.max_seen = max(self.max_seen, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.max_seen, _rss_bytes()) - self.base


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# ---------------------------------------------------------------- the model and the batches


def build_model_dir(out: Path, vocab: int, hidden: int, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                         max_position_embeddings=4096, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def make_items(n_pairs: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    """Preference items with a 25% prompt and a third of each response masked (as Mask-DPO data looks)."""
    import random

    from maskdpo.masking import IGNORE_INDEX
    from maskdpo.xtuner.dataset import item_digest

    rng = random.Random(seed)
    items = []
    for k in range(n_pairs):
        item = {}
        for side in ("chosen", "rejected"):
            ids = [rng.randrange(1, vocab) for _ in range(seq)]
            labels = [IGNORE_INDEX if (t < seq // 4 or (seq // 2 <= t < seq // 2 + seq // 6)) else i for t, i in enumerate(ids)]
            item[f"{side}_ids"], item[f"{side}_labels"] = ids, labels
        item["pair_id"], item["pair_digest"] = f"bench-{k}", item_digest(item)
        items.append(item)
    return items


def write_cache(model_dir: Path, items: list[dict], out: Path, device: str) -> None:
    """The reference sums of ``items`` in the ``maskdpo ref-cache`` file format."""
    import torch
    from transformers import AutoModelForCausalLM

    from maskdpo.xtuner.dataset import maskdpo_collate_fn
    from maskdpo.xtuner.loss import kept_token_counts, masked_sequence_logps
    from maskdpo.xtuner.ref_cache import FORMAT, reference_fingerprint

    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    lines = [{"format": FORMAT, "fingerprint": {"reference": reference_fingerprint(
        {"pretrained_model_name_or_path": str(model_dir)}), "mask": "bench"}}]
    with torch.no_grad():
        for item in items:
            batch = maskdpo_collate_fn([item])["data"]
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            sums, counts = masked_sequence_logps(logits, labels).tolist(), kept_token_counts(labels).tolist()
            lines.append({"pair_id": item["pair_id"], "digest": item["pair_digest"], "chosen": sums[0],
                          "rejected": sums[1], "chosen_tokens": int(counts[0]), "rejected_tokens": int(counts[1])})
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))


def build_variant(name: str, model_dir: Path, cache: Path, device: str):
    from mmengine.config import ConfigDict
    from transformers import AutoModelForCausalLM

    from maskdpo.xtuner.model import MaskDPO, StockDPO

    llm = ConfigDict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=str(model_dir))
    common = dict(llm=llm, use_activation_checkpointing=False)
    if name == "a":
        model = StockDPO(ref_llm=llm.copy(), **common)
    elif name == "b":
        model = MaskDPO(ref_llm=llm.copy(), **common)
    else:
        model = MaskDPO(ref_cache=str(cache), ref_llm=llm.copy(), **common)
    return model.to(device).train()


def train_step(model, optim, batch: dict, device: str) -> float:
    import copy

    import torch

    batch = copy.deepcopy(batch)
    data = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch["data"].items()}
    out = model(data, batch["data_samples"], mode="loss")
    loss = out["loss"].mean()  # XTuner's DPO returns per-pair losses; mmengine averages them
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return loss.item()


def batches_of(items: list[dict], pairs_per_batch: int) -> list[dict]:
    from maskdpo.xtuner.dataset import maskdpo_collate_fn

    return [maskdpo_collate_fn(items[i:i + pairs_per_batch]) for i in range(0, len(items), pairs_per_batch)]


# ---------------------------------------------------------------- the three measurements


def time_steps(args, model_dir: Path, cache: Path, items: list[dict]) -> dict:
    import torch

    batches = batches_of(items, args.pairs)
    models = {v: build_variant(v, model_dir, cache, args.device) for v in "abc"}
    optims = {v: torch.optim.AdamW(m.llm.parameters(), lr=1e-5) for v, m in models.items()}
    times: dict[str, list[float]] = {v: [] for v in "abc"}
    losses: dict[str, list[float]] = {v: [] for v in "abc"}
    for step in range(args.warmup + args.steps):
        batch = batches[step % len(batches)]
        for v in "abc":  # interleaved: the same load for all three
            start = time.perf_counter()
            losses[v].append(train_step(models[v], optims[v], batch, args.device))
            if step >= args.warmup:
                times[v].append(time.perf_counter() - start)
    return {"median_s": {v: statistics.median(t) for v, t in times.items()},
            "losses": losses}


def memory_of_variant(args, model_dir: Path, cache: Path, items: list[dict], variant: str) -> dict:
    import torch

    batches = batches_of(items, args.pairs)
    model = build_variant(variant, model_dir, cache, args.device)
    optim = torch.optim.AdamW(model.llm.parameters(), lr=1e-5)
    train_step(model, optim, batches[0], args.device)  # optimizer state exists from here on
    with PeakMemory(args.device) as total:
        for batch in batches[1:3]:
            train_step(model, optim, batch, args.device)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"step_peak": total.peak, "weights": params}


def memory_of_loss_stage(args, vocab: int, method: str) -> dict:
    import torch

    from maskdpo.masking import IGNORE_INDEX
    from maskdpo.xtuner.loss import label_logps, naive_label_logps

    g = torch.Generator().manual_seed(0)
    rows = args.loss_rows
    logits = torch.randn(1, rows, vocab, generator=g, dtype=torch.float32).to(args.device).requires_grad_()
    labels = torch.randint(0, vocab, (1, rows), generator=g).to(args.device)
    labels[:, : rows // 4] = IGNORE_INDEX
    fn = label_logps if method == "label_only" else naive_label_logps
    with PeakMemory(args.device) as forward:
        out = fn(logits, labels).sum()
        if args.device == "cuda":
            torch.cuda.synchronize()
        held = (torch.cuda.memory_allocated() if args.device == "cuda" else _rss_bytes()) - forward.base
    with PeakMemory(args.device) as backward:
        out.backward()
    # The logits' own gradient ([rows, V], as large as the logits) is part of every method's backward.
    return {"held": max(held, 0), "peak": max(forward.peak, held + backward.peak),
            "logits": logits.numel() * logits.element_size()}


# ---------------------------------------------------------------- driver


def _child(args, job: dict) -> dict:
    """Run one memory job in a fresh process (so one job's peak cannot hide another's)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(job), *sys.argv[1:]]
    env = {**os.environ, **MMAP_ENV}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152, help="model vocabulary (SmolLM2: 49,152)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="tokens per response row")
    parser.add_argument("--pairs", type=int, default=2, help="pairs per batch")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss-rows", type=int, default=2048, help="rows (batch x length) of the loss-stage test")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workdir", default=None, help="where the model and cache go (default: a temp folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    if args.child:
        job = json.loads(args.child)
        if job["kind"] == "variant":
            items = make_items(args.pairs * 3, args.seq, args.vocab)
            out = memory_of_variant(args, Path(job["model_dir"]), Path(job["cache"]), items, job["variant"])
        else:
            out = memory_of_loss_stage(args, job["vocab"], job["method"])
        print(json.dumps(out))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model_dir(work / "model", args.vocab, args.hidden, args.layers)
    items = make_items(args.pairs * 3, args.seq, args.vocab)
    cache = work / "ref.jsonl"
    write_cache(model_dir, items, cache, args.device)
    print(f"device {args.device}, torch threads {args.threads}; model: Llama {args.layers} layers, hidden "
          f"{args.hidden}, vocab {args.vocab:,}; batch {args.pairs} pairs x 2 rows x {args.seq} tokens")

    timing = time_steps(args, model_dir, cache, items)
    med = timing["median_s"]
    print(f"\nStep time (median of {args.steps}, interleaved):")
    for v, label in zip("abc", ("(a) XTuner DPO", "(b) MaskDPO", "(c) MaskDPO + ref cache")):
        print(f"  {label:<26} {med[v] * 1000:8.1f} ms")
    print(f"  (b)/(a) = {med['b'] / med['a']:.3f}   (target <= 1.02)")
    print(f"  (c)/(a) = {med['c'] / med['a']:.3f}   (target <= 0.80)")
    first = {v: timing["losses"][v][0] for v in "abc"}
    print(f"  first-step losses (same batch): a {first['a']:.6f}  b {first['b']:.6f}  c {first['c']:.6f}")

    print("\nTraining-step peak memory above the resident model and optimizer (fresh process each):")
    mem = {v: _child(args, {"kind": "variant", "variant": v, "model_dir": str(model_dir), "cache": str(cache)})
           for v in "abc"}
    for v, label in zip("abc", ("(a) XTuner DPO", "(b) MaskDPO", "(c) MaskDPO + ref cache")):
        print(f"  {label:<26} step {_mib(mem[v]['step_peak']):>12}   weights {_mib(mem[v]['weights']):>10}")
    print(f"  (b)/(a) step peak = {mem['b']['step_peak'] / mem['a']['step_peak']:.3f}; "
          f"(c)/(a) step peak = {mem['c']['step_peak'] / mem['a']['step_peak']:.3f}; "
          f"(c)/(a) weights = {mem['c']['weights'] / mem['a']['weights']:.3f}")

    print(f"\nLoss-stage memory (per-token log-probs from fp32 logits of {args.loss_rows} rows; fresh process each):")
    for vocab in (49152, 128256):
        full = _child(args, {"kind": "loss", "vocab": vocab, "method": "full"})
        ours = _child(args, {"kind": "loss", "vocab": vocab, "method": "label_only"})
        grad = full["logits"]  # the logits' gradient: the same for both, and as large as the logits
        print(f"  vocab {vocab:,} (logits {_mib(grad)}):")
        print(f"    held from forward to backward: full {_mib(full['held']):>10}, label-only {_mib(ours['held']):>10}"
              f" -> {full['held'] / max(ours['held'], 1):,.0f}x lower")
        print(f"    forward + backward peak:       full {_mib(full['peak']):>10}, label-only {_mib(ours['peak']):>10}"
              f" -> {full['peak'] / ours['peak']:.2f}x lower")
        print(f"    peak beyond the logits' grad:  full {_mib(full['peak'] - grad):>10}, label-only "
              f"{_mib(max(ours['peak'] - grad, 0)):>10} -> {(full['peak'] - grad) / max(ours['peak'] - grad, 1):.1f}x "
              f"lower (target >= 4x)")


if __name__ == "__main__":
    main()
