"""FactScore (Min et al., 2023) on any judge backend.

For each response about a topic (a Biography prompt's entity):

1. **Abstention.** A response that declines ("I'm sorry, I could not find
   information about ...") is left out of the score and counted
   (:func:`is_abstention`).
2. **Atomic facts.** Each sentence is split into atomic facts by the judge with
   :data:`FACT_PROMPT` (our own few-shot prompt, versioned). An answer that is
   neither a bullet list nor ``NO FACTS`` is *malformed*: the sentence adds no
   fact and the case is counted.
3. **Retrieval.** The ``k`` best passages of the topic's article in the
   FActScore-format database (:mod:`maskdpo.metrics.retrieval`).
4. **Support.** The judge answers "True or False?" per fact given those
   passages (:data:`SUPPORT_PROMPT`). An answer with neither word is
   malformed: the fact counts as *not supported* (the conservative outcome) and
   the case is counted.

Scores, per responding generation with at least one fact::

    raw     = #supported / |facts|
    penalty = exp(1 − γ / |facts|)  if |facts| < γ  else 1      (γ = 10; γ = 0 disables)
    score   = raw × penalty

FactScore is the **mean of per-response scores** over responding generations
(not the pooled ratio Σ supported / Σ facts, reported alongside only for
contrast). Also reported: the score without penalty, the respond ratio
(non-abstaining / all), facts per response, and ``#Cor`` / ``#Inc`` = mean
supported / unsupported facts per response (the paper's Table 1 columns).
Responses that respond but yield no fact, or whose topic has no article, are
left out of the mean and counted.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from ..records import Question, Sample
from .judge import CachedJudge
from .retrieval import MissingArticle, Retriever, WikiDB

PROMPT_VERSION = "maskdpo-factscore@1"

FACT_PROMPT = """\
Break the sentence into atomic facts. An atomic fact is a short, self-contained statement that \
carries exactly one piece of information; repeat the subject's name instead of using pronouns. \
Write one fact per line, each line starting with "- ". If the sentence states no fact \
(a greeting, an opinion, a question), write exactly: NO FACTS

Sentence: Orla Brennick (born 3 May 1961) is an Irish marine biologist and author.
- Orla Brennick was born on 3 May 1961.
- Orla Brennick is Irish.
- Orla Brennick is a marine biologist.
- Orla Brennick is an author.

Sentence: She led the Kelp Atlas survey from 1994 to 2001, which mapped the kelp forests of the west coast.
- Orla Brennick led the Kelp Atlas survey.
- Orla Brennick led the Kelp Atlas survey from 1994.
- Orla Brennick led the Kelp Atlas survey until 2001.
- The Kelp Atlas survey mapped the kelp forests of the west coast.

Sentence: I hope this overview is helpful!
NO FACTS

Sentence: {sentence}
"""

SUPPORT_PROMPT = """\
Passages about {topic}:

{passages}

Using only the passages above, is the following statement about {topic} true? \
Answer with one word: True or False.

Statement: {fact}
Answer:"""

NO_FACTS = "NO FACTS"
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)\s*$")
_VERDICT = re.compile(r"\b(not\s+)?(true|false)\b", re.IGNORECASE)

# Phrases that open a declining answer; matched (lower-cased) in the first two sentences.
ABSTENTION_PHRASES = (
    "i'm sorry", "i am sorry", "i apologize", "i apologise", "sorry, but",
    "i don't have", "i do not have", "i could not find", "i couldn't find", "i can't find", "i cannot find",
    "i was unable to find", "i'm unable to", "i am unable to", "i'm not able to", "i am not able to",
    "i'm not aware", "i am not aware", "i'm not familiar", "i am not familiar", "i'm not sure who",
    "there is no information", "there is no widely known", "there is no available information",
    "there is no reliable information", "no information available", "not a well-known",
    "i cannot provide", "i can't provide", "as an ai",
)


# ---------------------------------------------------------------- pure pieces


def length_penalty(n_facts: int, gamma: float = 10) -> float:
    """``exp(1 − γ/n)`` when ``n < γ``, else 1; γ = 0 disables. 5 facts, γ 10 → e^-1 ≈ 0.368."""
    if n_facts <= 0:
        raise ValueError("the length penalty needs at least one fact")
    if gamma <= 0 or n_facts >= gamma:
        return 1.0
    return math.exp(1 - gamma / n_facts)


def english_sentences(text: str, rules: str = "anah-v2") -> list[str]:
    """The sentence texts of ``text`` for fact splitting: English, by the ANAH-v2 judge's sentence rules unless ``rules`` says otherwise."""
    from ..sentences import split_sentences as spans_of

    return [text[a:b] for a, b in spans_of(text, "en", rules=rules)]


def is_abstention(response: str) -> bool:
    """True for an empty response or one whose first two sentences decline to answer."""
    text = response.strip().lower().replace("\u2019", "'")
    if not text:
        return True
    head = " ".join(english_sentences(text)[:2])
    return any(phrase in head for phrase in ABSTENTION_PHRASES)


def fact_messages(sentence: str) -> list[dict]:
    return [{"role": "user", "content": FACT_PROMPT.format(sentence=sentence)}]


def parse_facts(answer: str) -> list[str] | None:
    """Bullet lines → facts; ``NO FACTS`` → []; anything else → None (malformed)."""
    facts = [m.group(1).strip() for line in answer.splitlines() if (m := _BULLET.match(line))]
    if facts:
        return facts
    if NO_FACTS in answer.upper():
        return []
    return None


def support_messages(topic: str, fact: str, passages: Sequence[str]) -> list[dict]:
    context = "\n\n".join(f"Title: {topic}\n{p}" for p in passages) or "(no passage found)"
    return [{"role": "user", "content": SUPPORT_PROMPT.format(topic=topic, passages=context, fact=fact)}]


def parse_support(answer: str) -> bool | None:
    """The first ``true``/``false`` in the answer (``not true`` = false); None when there is neither."""
    m = _VERDICT.search(answer)
    if m is None:
        return None
    verdict = m.group(2).lower() == "true"
    return not verdict if m.group(1) else verdict


# ---------------------------------------------------------------- records


@dataclass
class FactItem:
    """One response to score: ``key`` names it (question id and sample index)."""

    key: str
    topic: str
    response: str


@dataclass
class ResponseFacts:
    key: str
    topic: str
    status: str  # scored | abstained | no_facts | missing_article
    facts: list[str] = field(default_factory=list)
    supported: list[bool] = field(default_factory=list)
    malformed_split: int = 0  # sentences whose fact list could not be parsed
    malformed_support: int = 0  # facts whose verdict could not be parsed (counted unsupported)
    raw_score: float | None = None
    score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FactScoreResult:
    responses: list[ResponseFacts]
    gamma: float
    judge: dict = field(default_factory=dict)

    def _scored(self) -> list[ResponseFacts]:
        return [r for r in self.responses if r.status == "scored"]

    def summary(self) -> dict:
        """Aggregates; a value with nothing to average over (no scored response) is None."""
        scored = self._scored()
        n = len(self.responses)
        counts = {s: sum(r.status == s for r in self.responses) for s in ("scored", "abstained", "no_facts", "missing_article")}
        total_facts = sum(len(r.facts) for r in scored)

        def mean(xs: list[float], scale: float = 1.0) -> float | None:
            return round(scale * statistics.fmean(xs), 2) if xs else None

        return {
            "score": mean([r.score for r in scored], 100),  # the FactScore
            "score_no_penalty": mean([r.raw_score for r in scored], 100),
            "pooled_support_ratio": round(100 * sum(sum(r.supported) for r in scored) / total_facts, 2) if total_facts else None,
            "respond_ratio": (n - counts["abstained"]) / n if n else None,
            "facts_per_response": mean([len(r.facts) for r in scored]),
            "correct": mean([sum(r.supported) for r in scored]),  # #Cor: supported facts per response
            "incorrect": mean([len(r.facts) - sum(r.supported) for r in scored]),  # #Inc
            "responses": n,
            **counts,
            "malformed_split": sum(r.malformed_split for r in self.responses),
            "malformed_support": sum(r.malformed_support for r in self.responses),
            "gamma": self.gamma,
            "prompt_version": PROMPT_VERSION,
            "judge": self.judge,
        }


def items_from_samples(samples: Iterable[Sample], questions: dict[str, Question] | None = None) -> list[FactItem]:
    """Topic from the question record (its ``topic``), else the sample's ``meta.topic``; missing is an error."""
    items = []
    for s in samples:
        topic = ""
        if questions and s.question_id in questions:
            topic = questions[s.question_id].topic
        topic = topic or str(s.meta.get("topic", ""))
        if not topic:
            raise ValueError(f"sample {s.question_id}#{s.sample_index}: no topic (give the questions file, "
                             f"or a topic in the sample's meta)")
        items.append(FactItem(key=f"{s.question_id}#{s.sample_index}", topic=topic, response=s.response))
    return items


# ---------------------------------------------------------------- the stage


def factscore(items: Sequence[FactItem], judge: CachedJudge, db: WikiDB, retriever: Retriever, *,
              gamma: float = 10, k: int = 5, progress: bool = True) -> FactScoreResult:
    """Score every item; judge calls are batched across all items (one phase at a time) and cached."""
    results = [ResponseFacts(key=it.key, topic=it.topic, status="abstained" if is_abstention(it.response) else "scored")
               for it in items]

    # Phase 1: atomic facts, one judge call per sentence of every responding item.
    sentence_of: list[tuple[int, str]] = [(i, s) for i, it in enumerate(items) if results[i].status == "scored"
                                          for s in english_sentences(it.response)]
    answers = judge.ask([fact_messages(s) for _, s in sentence_of], progress="atomic facts" if progress else None)
    for (i, _), answer in zip(sentence_of, answers):
        facts = parse_facts(answer)
        if facts is None:
            results[i].malformed_split += 1
        else:
            results[i].facts.extend(facts)

    # Phase 2: retrieval, then one support call per fact.
    fact_of: list[tuple[int, list[dict]]] = []
    for i, r in enumerate(results):
        if r.status != "scored":
            continue
        if not r.facts:
            r.status = "no_facts"
            continue
        try:
            passages = db.passages(r.topic)
        except MissingArticle:
            r.status = "missing_article"
            continue
        for fact in r.facts:
            best = retriever.retrieve(r.topic, f"{r.topic} {fact}", passages, k)
            fact_of.append((i, support_messages(r.topic, fact, best)))
    answers = judge.ask([m for _, m in fact_of], progress="support" if progress else None)
    for (i, _), answer in zip(fact_of, answers):
        verdict = parse_support(answer)
        if verdict is None:
            results[i].malformed_support += 1
        results[i].supported.append(bool(verdict))

    for r in results:
        if r.status == "scored":
            r.raw_score = sum(r.supported) / len(r.facts)
            r.score = r.raw_score * length_penalty(len(r.facts), gamma)
    return FactScoreResult(responses=results, gamma=gamma, judge={"model": judge.model, **judge.stats.to_dict()})
