#!/usr/bin/env python
"""Benchmark: sentences/s of ANAH-v2 annotation, turn-batched vs sentence by sentence, in one run.

    python tools/bench_annotate.py [--model DIR] [--samples 8] [--max-new-tokens 24]

The same annotator code, judge, prompts and greedy decoding run in both
orders: "turn-batched" sends each turn as one backend call over all pending
sentences of all samples; "sentence by sentence" runs one sentence through
its turns before the next (the official script's order). The judge is
SmolLM2-135M-Instruct (a stand-in for the 7B ``opencompass/anah-v2``: it
rarely follows the tag protocol, so many sentences stop after turn 1 as
unparseable; the call counts printed show how many turns ran). Target: ≥ 5×.
"""

from __future__ import annotations

import time

CASES = [  # responses of about eight sentences, like a chat model's answer to an ANAH question
    ("Who was Marie Curie?",
     "Marie Curie was a physicist and chemist born in Warsaw in 1867. She won Nobel Prizes in Physics (1903) and "
     "Chemistry (1911). She died in 1934.",
     "Marie Curie was born in Warsaw in 1867. She moved to Paris to study physics. She won two Nobel Prizes. "
     "She was the first woman to win a Nobel Prize. She discovered polonium and radium. She was born in Paris. "
     "She died in 1950. I hope this helps!"),
    ("Tell me about the Eiffel Tower.",
     "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889, about 330 metres tall.",
     "The Eiffel Tower is in Paris. It was completed in 1889. It was designed by Gustave Eiffel's company. "
     "It is 500 metres tall. It is made of wood. It was built for a world's fair. Millions visit it every year. "
     "Let me know if you have more questions."),
    ("Who was Ada Lovelace?",
     "Ada Lovelace (1815-1852) was an English mathematician who wrote about Babbage's Analytical Engine.",
     "Ada Lovelace was born in 1815. She was the daughter of Lord Byron. She worked with Charles Babbage. "
     "She wrote notes on the Analytical Engine. She was a famous painter. She died in 1852. "
     "Some call her the first programmer. Thanks for asking."),
    ("What is the Great Wall of China?",
     "The Great Wall of China is a series of fortifications in northern China, built over many centuries.",
     "The Great Wall is in northern China. It is a series of fortifications. It was built in one year. "
     "It was meant to keep out invaders. It is visible from the Moon. It is made of stone, brick and earth. "
     "It is a UNESCO World Heritage Site. What else would you like to know?"),
]


def main() -> None:
    from bench_sample import default_model, generation_parser  # tools/ is on the path of a tool script

    parser = generation_parser(__doc__, max_new_tokens=24)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompts", default="maskdpo",
                        help="judge prompts (as `maskdpo annotate --prompts`; official needs the protocol cache)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="rows per transformers generate call inside the one backend call per turn "
                             "(on CPU, bigger batches become compute- and copy-bound)")
    args = parser.parse_args()

    import torch

    from maskdpo.annotate.anah_v2 import AnahV2Annotator
    from maskdpo.backends.base import load_backend
    from maskdpo.records import Question, Sample

    torch.set_num_threads(args.threads)
    model = args.model or default_model()
    # Past the four cases, copies get a reworded question, so no two prompts share more than the system prompt.
    cases = [(q if i < len(CASES) else f"{q} Please answer in detail (request {i}).", d, r)
             for i, (q, d, r) in enumerate((CASES * (args.samples // len(CASES) + 1))[: args.samples])]
    questions, samples = {}, []
    for i, (question, document, response) in enumerate(cases):
        questions[f"q{i}"] = Question(id=f"q{i}", question=question, document=document, language="en")
        samples.append(Sample(question_id=f"q{i}", sample_index=0, messages=[{"role": "user", "content": question}],
                              response=response, model="bench", backend="bench", generation={}))
    # One backend for both runs.
    backend = load_backend("hf", model, device="cpu", batch_size=args.batch_size)
    # Warm-up (first-call allocations), then both orders on the same warm model.
    AnahV2Annotator(backend=backend, max_new_tokens=2, prompts=args.prompts).annotate(samples[:1], questions)
    results = {}
    for mode, batching in (("turn-batched", True), ("sentence by sentence", False)):
        annotator = AnahV2Annotator(backend=backend, max_new_tokens=args.max_new_tokens, turn_batching=batching,
                                    prompts=args.prompts)
        t0 = time.perf_counter()
        annotations = annotator.annotate(samples, questions)
        seconds = time.perf_counter() - t0
        labels = [s.label for a in annotations for s in a.sentences]
        results[mode] = (seconds, labels, annotator.stats)

    print(f"judge: {model} (greedy, max_new_tokens={args.max_new_tokens}, CPU threads={args.threads}, "
          f"hf batch_size={args.batch_size}); {len(samples)} responses")
    for mode, (seconds, labels, stats) in results.items():
        print(f"{mode:>20}: {len(labels)} sentences in {seconds:7.2f} s = {len(labels) / seconds:6.2f} sentences/s; "
              f"{stats['judge_calls']} judge calls, {stats['judge_prompts']} judge prompts, "
              f"{stats['unparseable']} unparseable")
    (tb, lb, _), (ts, ls, _) = results["turn-batched"], results["sentence by sentence"]
    agree = sum(a == b for a, b in zip(lb, ls))
    print(f"labels agree between the two orders: {agree}/{len(lb)}")
    print(f"speed-up turn-batched / sentence by sentence: {ts / tb:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
