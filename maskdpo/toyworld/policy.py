"""The toy world's base policy: a tiny Llama that knows the world imperfectly.

It is trained (plain torch loop, answer tokens only) on answers in which each
fact about a person is right with probability ``fame`` (simple world, see
:func:`maskdpo.toyworld.world.training_answer`) or ``fame ** difficulty``
(rich world, :func:`maskdpo.toyworld.rich.training_answer`), so its own samples at the
paper's decoding (top-k 40, T 0.8) mix right and hallucinated sentences, more
of the latter about obscure people. Saved with ``save_pretrained`` with its
tokenizer and Llama-3-style chat template: the "instruct model" of the world.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..masking import IGNORE_INDEX
from .rich import RichWorld
from .world import World, training_corpus


@dataclass(frozen=True)
class PolicySettings:
    answers_per_question: int = 16  # training answers per question, each with its own right/wrong draws
    epochs: int = 12  # the facts need many passes: fewer leave even famous people half-known
    batch_size: int = 32
    lr: float = 1e-2
    hidden_size: int = 96
    layers: int = 2
    heads: int = 4
    vocab_size: int = 600
    seed: int = 0
    threads: int = 2


def _encode(tokenizer, prompt: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """Token ids of the chat and labels with the prompt masked (-100)."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids, "the chat template must extend the prompt"
    return ids, [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]


def train_base_policy(world: World | RichWorld, out_dir: str | os.PathLike, settings: PolicySettings = PolicySettings(),
                      progress: bool = True) -> Path:
    """Train the tiny base policy on ``world`` and save it to ``out_dir``. Returns ``out_dir``.

    Writes ``train_log.json`` (settings, loss per epoch) next to the model.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from ..tiny import build_tiny_llama, train_tokenizer

    torch.set_num_threads(settings.threads)
    out = Path(out_dir)
    corpus = training_corpus(world, settings.answers_per_question, settings.seed)
    texts = [q.question for q, _ in corpus[:2000]] + [a for _, a in corpus] + [q.document or "" for q in world.questions]
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    build_tiny_llama(tokenizer, out, hidden_size=settings.hidden_size, layers=settings.layers,
                     heads=settings.heads, max_position=256, seed=settings.seed)
    model = AutoModelForCausalLM.from_pretrained(out)

    examples = [_encode(tokenizer, [{"role": "user", "content": q.question}], a) for q, a in corpus]
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    model.train()
    losses = []
    bar = tqdm(total=total, desc="base policy", disable=not progress, unit="step")
    for _ in range(settings.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            batch = [examples[i] for i in order[b * settings.batch_size:(b + 1) * settings.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full((len(batch), width), IGNORE_INDEX)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (x, y) in enumerate(batch):  # right padding: training only
                ids[r, :len(x)], labels[r, :len(y)], mask[r, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            epoch_loss += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(epoch_loss / steps_per_epoch)
    bar.close()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps({"settings": asdict(settings), "examples": len(examples),
                                                    "epoch_loss": losses}, indent=1) + "\n")
    return out
