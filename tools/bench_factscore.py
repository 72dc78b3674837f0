#!/usr/bin/env python
"""Benchmark the FactScore stage: batched vs one-call-at-a-time judge, and a cached rerun.

A fixed set of short biographies is scored against a small FActScore-format
database written to a temporary folder, with SmolLM2-135M-Instruct (the test
models' copy, ``tests.models.smollm2_model_dir()``) as a stand-in judge on the
``hf`` backend, greedy, side by side in one process:

1. **support judging** (one judge call per fact, the bulk of FactScore's calls)
   on a fixed fact list (each sentence of the fixed responses is one fact):
   facts/s one call at a time vs batched (target ≥ 3×);
2. **the whole stage** (fact splitting + retrieval + support) batched, writing
   the on-disk judge cache, then the same stage again over that cache
   (target: zero judge calls).

    python tools/bench_factscore.py [--batch-size 16] [--max-new-tokens 32] [--threads 1]

Use one torch thread per process on a shared CPU: with more threads than free
cores, OpenMP oversubscription made every call 5-10× slower here.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.models lives next to the package

ARTICLES = {
    "Ada Lovelace": "Ada Lovelace was an English mathematician and writer. She was born in London in 1815. "
                    "She worked with Charles Babbage on the Analytical Engine. She died in 1852.",
    "Marie Curie": "Marie Curie was a Polish and naturalised-French physicist and chemist. She was born in Warsaw "
                   "in 1867. She won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "Alan Turing": "Alan Turing was an English mathematician and computer scientist. He was born in Maida Vale, "
                   "London, in 1912. He worked at Bletchley Park during the Second World War.",
}

RESPONSES = [
    ("Ada Lovelace", "Ada Lovelace was an English mathematician. She was born in London in 1815. "
                     "She worked with Charles Babbage."),
    ("Ada Lovelace", "Ada Lovelace was a French painter. She was born in Paris."),
    ("Marie Curie", "Marie Curie was a physicist and chemist. She was born in Warsaw. She won two Nobel Prizes."),
    ("Marie Curie", "Marie Curie was born in Berlin in 1901. She was a composer."),
    ("Alan Turing", "Alan Turing was an English mathematician. He was born in London in 1912. "
                    "He worked at Bletchley Park."),
    ("Alan Turing", "Alan Turing was an American actor. He was born in 1950."),
]


def build_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE documents (title PRIMARY KEY, text)")
    conn.executemany("INSERT INTO documents VALUES (?, ?)", list(ARTICLES.items()))
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16, help="judge prompts per call in the batched runs")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="judge answer length cap (greedy)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--model", default=None, help="judge model path (default: the tests' SmolLM2-135M copy)")
    args = parser.parse_args()

    import torch

    from maskdpo.backends.base import Decoding, load_backend
    from maskdpo.metrics.factscore import FactItem, english_sentences, factscore, support_messages
    from maskdpo.metrics.judge import CachedJudge
    from maskdpo.metrics.retrieval import BM25Retriever, WikiDB

    torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        from tests.models import smollm2_model_dir

        model = str(smollm2_model_dir())
    items = [FactItem(f"r{i}", topic, text) for i, (topic, text) in enumerate(RESPONSES)]
    decoding = Decoding.greedy(max_new_tokens=args.max_new_tokens)
    backends = {1: load_backend("hf", model, device="cpu", batch_size=1),
                args.batch_size: load_backend("hf", model, device="cpu", batch_size=args.batch_size)}
    print(f"judge {Path(model).name} (hf, cpu, {args.threads} thread(s), greedy, max_new_tokens {args.max_new_tokens})")

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "wiki.db"
        build_db(db_path)
        db = WikiDB(db_path)
        retriever = BM25Retriever()

        # 1. support judging on a fixed fact list
        facts = [(it.topic, s) for it in items for s in english_sentences(it.response)]
        prompts = [support_messages(t, f, retriever.retrieve(t, f"{t} {f}", db.passages(t), 5)) for t, f in facts]
        print(f"\n1. support judging, {len(prompts)} facts")
        print(f"{'run':<24}{'judge calls':>12}{'seconds':>9}{'facts/s':>9}{'supported':>10}", flush=True)
        rates = []
        for label, batch in (("one call at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
            judge = CachedJudge(backends[batch], decoding, batch_size=batch, cache_path=None)
            start = time.perf_counter()
            answers = judge.ask(prompts)
            seconds = time.perf_counter() - start
            rates.append(len(prompts) / seconds)
            supported = sum(a.strip().lower().startswith("true") for a in answers)
            print(f"{label:<24}{judge.stats.calls:>12}{seconds:>9.1f}{rates[-1]:>9.2f}{supported:>10}", flush=True)
        print(f"speed-up batched / one at a time: {rates[1] / rates[0]:.2f}x (target >= 3x)")

        # 2. the whole stage, batched and cached, then again over the cache
        cache = Path(tmp) / "judge-cache.jsonl"
        print(f"\n2. whole FactScore stage, {len(items)} responses")
        print(f"{'run':<24}{'judge calls':>12}{'cache hits':>11}{'seconds':>9}{'facts':>7}{'score':>8}"
              f"{'bad split':>10}{'bad verdict':>12}", flush=True)
        calls = []
        for label in (f"batched ({args.batch_size})", "cached rerun"):
            judge = CachedJudge(backends[args.batch_size], decoding, batch_size=args.batch_size, cache_path=cache)
            start = time.perf_counter()
            summary = factscore(items, judge, db, retriever, progress=False).summary()
            seconds = time.perf_counter() - start
            judge.close()
            calls.append(judge.stats.calls)
            n_facts = round(summary["facts_per_response"] * summary["scored"]) if summary["scored"] else 0
            score = "–" if summary["score"] is None else f"{summary['score']:.2f}"  # None: no response scored
            print(f"{label:<24}{judge.stats.calls:>12}{judge.stats.cache_hits:>11}{seconds:>9.1f}{n_facts:>7}"
                  f"{score:>8}{summary['malformed_split']:>10}{summary['malformed_support']:>12}", flush=True)
        print(f"cached rerun judge calls: {calls[1]} (target 0)")
        db.close()


if __name__ == "__main__":
    main()
