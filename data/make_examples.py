"""How the example samples and annotations were made, for the hand-written questions.jsonl:
hand-written responses and per-sentence labels; spans come from
maskdpo.sentences.split_sentences with the ANAH-v2 judge's rules (so "e.g." and "Approx." end a
sentence, as the judge's own splitter does). Run from the repository root:

    python data/make_examples.py
    maskdpo pairs --annotations data/annotations.jsonl --out data/pairs.jsonl
    maskdpo pairs --annotations data/annotations.jsonl --out runs/authors_pairs.jsonl --authors-format
"""

import json
from pathlib import Path

from maskdpo.jsonl import load_jsonl
from maskdpo.records import Annotation, Question, Sample, Sentence
from maskdpo.sentences import split_sentences

ROOT = Path(__file__).resolve().parent
GEN = {"top_k": 40, "top_p": 1.0, "temperature": 0.8, "max_new_tokens": 512}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# Hand-written responses with a label per sentence (in split order): example_responses.jsonl. The two
# samples of anah-en-0004 score the same, so `maskdpo pairs` drops that question (gap below min).
samples = [(r["question_id"], r["sample_index"], r["response"], r["labels"])
           for r in map(json.loads, (ROOT / "example_responses.jsonl").read_text(encoding="utf-8").splitlines())]

# The questions (with their reference documents) are written by hand in questions.jsonl.
qmap = {q.id: q for q in load_jsonl(ROOT / "questions.jsonl", Question.from_dict)[0]}
srecs, arecs = [], []
for qid, idx, response, labels in samples:
    q = qmap[qid]
    messages = [{"role": "user", "content": q.question}]
    s = Sample(question_id=qid, sample_index=idx, messages=messages, response=response, model=MODEL,
               backend="lmdeploy", generation={**GEN, "seed": 1000 + idx},
               meta={"topic": q.topic, "language": q.language})
    spans = split_sentences(response, q.language, rules="anah-v2")
    assert len(spans) == len(labels), (qid, idx, [response[a:b] for a, b in spans])
    raw = {"ok": "<No Hallucination>", "nofact": "<No Facts>", "contradictory": "<Contradictory>",
           "unverifiable": "<Unverifiable>"}
    if q.language == "zh":
        raw = {"ok": "<无幻觉>", "nofact": "<无事实>", "contradictory": "<矛盾>", "unverifiable": "<无法验证>"}
    sents = [Sentence(response[a:b], a, b, l, raw[l]) for (a, b), l in zip(spans, labels)]
    srecs.append(s)
    arecs.append(Annotation.from_sample(s, sents, "anah-v2"))

def dump(path, recs):
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")

dump(ROOT / "samples.jsonl", srecs)
dump(ROOT / "annotations.jsonl", arecs)
