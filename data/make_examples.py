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

# (question id, sample index, response, labels per sentence in split order)
samples = [
    ("anah-en-0001", 0,
     "Ada Lovelace (1815-1852) was an English mathematician and writer. She was the only legitimate child of "
     "Lord Byron. She is chiefly known for her work on Charles Babbage's Analytical Engine, e.g. her notes on it. "
     "Those notes include what is often called the first computer algorithm.",
     ["ok", "ok", "ok", "ok", "ok"]),
    ("anah-en-0001", 1,
     "Ada Lovelace was a French physicist born in 1825. She worked with Dr. Charles Babbage on the Difference "
     "Engine No. 2 in the U.S. capital. Her notes include the first published algorithm. Great question!",
     ["contradictory", "contradictory", "ok", "nofact"]),
    ("anah-en-0001", 2,
     "Sure! Here is a short overview.\n\n1. Ada Lovelace was an English mathematician.\n2. She died in 1852 at "
     "the age of 36.\n3. She invented the telephone in 1849.",
     ["nofact", "nofact", "ok", "unverifiable", "contradictory"]),
    ("anah-en-0002", 0,
     "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It is 330 m tall. It was designed by "
     "Gustave Eiffel's company and built from 1887 to 1889. It is repainted every 3 years to protect it from rust.",
     ["ok", "ok", "ok", "unverifiable"]),
    ("anah-en-0002", 1,
     "The Eiffel Tower stands on the Champ de Mars in Paris. It is 3.5 km tall and was finished in 1901. "
     "Approx. 7 million people visit it every year. It was the tallest structure in the world until 1930.",
     ["ok", "contradictory", "nofact", "unverifiable", "ok"]),
    ("anah-en-0003", 0,
     "Marie Curie was a Polish and naturalised-French physicist and chemist. She won the Nobel Prize in "
     "Physics in 1903 and in Chemistry in 1911. She discovered polonium and radium with Pierre Curie.",
     ["ok", "ok", "ok"]),
    ("anah-en-0003", 1,
     "Marie Curie was a German chemist. She won three Nobel Prizes. She discovered radium with Pierre Curie; "
     "she also discovered the neutron. I hope this helps!",
     ["contradictory", "contradictory", "ok", "contradictory", "nofact"]),
    # both samples score the same: this question is dropped (gap below min)
    ("anah-en-0004", 0,
     "Python is a high-level, general-purpose programming language. It was created by James Gosling.",
     ["ok", "contradictory"]),
    ("anah-en-0004", 1,
     "Python was first released in 1991. Its design philosophy emphasizes readability with significant "
     "indentation. Python 3.0 came out in 2005. Its mascot is a green snake named Monty.",
     ["ok", "ok", "contradictory", "unverifiable"]),
    ("anah-zh-0001", 0,
     "长城是中国古代的军事防御工程。它的修筑历史可以上溯到西周时期。明长城总长度为8851.8千米。",
     ["ok", "ok", "ok"]),
    ("anah-zh-0001", 1,
     "长城是中国古代的军事防御工程！它始建于清朝。明长城总长约2万千米；1987年被列入《世界遗产名录》。",
     ["ok", "contradictory", "contradictory", "ok"]),
    ("anah-zh-0002", 0,
     "李白是唐朝浪漫主义诗人，被誉为“诗仙”。他出生于公元前701年。他的代表作有《静夜思》和《将进酒》。",
     ["ok", "contradictory", "ok"]),
    ("anah-zh-0002", 1,
     "李白是宋朝的诗人。他的代表作有《蜀道难》。他一生写了十万首诗。",
     ["contradictory", "ok", "unverifiable"]),
]

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
