import math
import sqlite3

import pytest

from maskdpo.backends.base import Decoding
from maskdpo.metrics.factscore import (FactItem, english_sentences, factscore, is_abstention, length_penalty,
                                       parse_facts, parse_support)
from maskdpo.metrics.judge import CachedJudge
from maskdpo.metrics.retrieval import (FACTSCORE_SEPARATOR, BM25Retriever, MissingArticle, WikiDB,
                                       split_passages)
from tests.doubles.judge_scripted import ScriptedJudgeDouble

ARTICLES = {
    "Ada Lovelace": FACTSCORE_SEPARATOR.join([
        "Ada Lovelace was an English mathematician. Ada Lovelace was born in London.",
        "Ada Lovelace worked on the Analytical Engine with Charles Babbage.",
        "Ada Lovelace died in 1852 at the age of 36.",
    ]),
    "Marie Curie": "Marie Curie was a physicist and chemist.\n\nMarie Curie was born in Warsaw. "
                   "Marie Curie won two Nobel Prizes.",
    "Alan Turing": "Alan Turing was a mathematician. Alan Turing was born in Maida Vale.",
}


@pytest.fixture
def wiki_db(tmp_path):
    path = tmp_path / "wiki.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE documents (title PRIMARY KEY, text)")
    conn.executemany("INSERT INTO documents VALUES (?, ?)", list(ARTICLES.items()))
    conn.commit()
    conn.close()
    return WikiDB(path)


def test_length_penalty_values():
    assert length_penalty(5) == pytest.approx(math.exp(-1)) and round(length_penalty(5), 3) == 0.368
    assert length_penalty(10) == 1.0 and length_penalty(25) == 1.0
    assert length_penalty(9) < 1.0
    assert length_penalty(3, gamma=0) == 1.0
    with pytest.raises(ValueError):
        length_penalty(0)


def test_abstention_detection():
    assert is_abstention("")
    assert is_abstention("I'm sorry, but I could not find any information about Jo Bloggs.")
    assert is_abstention("Sure. I don\u2019t have reliable information about this person.")
    assert not is_abstention("Ada Lovelace was an English mathematician. She was not sorry about it.")


def test_parsers_and_malformed_output():
    assert parse_facts("- A is B.\n- A is C.") == ["A is B.", "A is C."]
    assert parse_facts("1. A is B.\n2) A is C.") == ["A is B.", "A is C."]
    assert parse_facts("NO FACTS") == []
    assert parse_facts("I would rather not.") is None
    assert parse_support("True.") is True and parse_support("false") is False
    assert parse_support("Not true, the passages say otherwise") is False
    assert parse_support("The answer is unclear") is None
    assert english_sentences("Ada was born in 1815. She died in 1852!\nNew line") == [
        "Ada was born in 1815.", "She died in 1852!", "New line"]


def test_retrieval_on_fixture_db(wiki_db):
    passages = wiki_db.passages("Ada Lovelace")
    assert len(passages) == 3  # FActScore's stored passage split is kept
    best = BM25Retriever().retrieve("Ada Lovelace", "Ada Lovelace Analytical Engine Babbage", passages, k=1)
    assert best == [passages[1]]
    assert wiki_db.passages("Marie Curie")[0] == "Marie Curie was a physicist and chemist."
    with pytest.raises(MissingArticle):
        wiki_db.passages("Nobody")
    assert all(len(p.split()) <= 4 for p in split_passages("one two three four five six seven eight nine", 4))


def test_bad_database_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.db"
    sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(ValueError, match="documents"):
        WikiDB(path)
    with pytest.raises(FileNotFoundError):
        WikiDB(tmp_path / "missing.db")


def items():
    return [
        # 2 facts, both supported -> raw 1.0, penalised exp(1 - 10/2)
        FactItem("a#0", "Ada Lovelace", "Ada Lovelace was born in London. Ada Lovelace died in 1852."),
        # 4 facts, 1 supported (+ one malformed verdict) -> raw 0.25
        FactItem("m#0", "Marie Curie", "Marie Curie was born in Warsaw. Marie Curie was born in Paris. "
                                        "Marie Curie won three Nobel Prizes. Marie Curie was a painter."),
        FactItem("x#0", "Ada Lovelace", "I'm sorry, I don't have information about this person."),
        FactItem("t#0", "Alan Turing", "Thanks for asking!"),  # judged fact-free
        FactItem("n#0", "Nobody Known", "Nobody Known was a sailor."),  # no article
    ]


def make_judge(**kwargs):
    return ScriptedJudgeDouble(
        fact_overrides={"Thanks for asking!": "NO FACTS", "Ada Lovelace died in 1852.": "Sure, here you go:"},
        support_overrides={"Marie Curie was a painter.": "I cannot tell."},
        **kwargs)


def test_factscore_end_to_end_with_scripted_judge(wiki_db, tmp_path):
    double = make_judge()
    judge = CachedJudge(double, batch_size=4, cache_path=tmp_path / "cache.jsonl")
    result = factscore(items(), judge, wiki_db, BM25Retriever(), gamma=10, k=2, progress=False)
    by_key = {r.key: r for r in result.responses}
    # malformed fact split: the sentence adds no fact, counted
    assert by_key["a#0"].facts == ["Ada Lovelace was born in London."] and by_key["a#0"].malformed_split == 1
    assert by_key["a#0"].supported == [True]
    assert by_key["m#0"].supported == [True, False, False, False] and by_key["m#0"].malformed_support == 1
    assert [by_key[k].status for k in ("x#0", "t#0", "n#0")] == ["abstained", "no_facts", "missing_article"]

    s = result.summary()
    a = 1.0 * math.exp(1 - 10 / 1)
    m = 0.25 * math.exp(1 - 10 / 4)
    assert s["score"] == round(100 * (a + m) / 2, 2)
    assert s["score_no_penalty"] == round(100 * (1.0 + 0.25) / 2, 2)
    # the pooled ratio differs from the per-response mean, which is what is reported
    assert s["pooled_support_ratio"] == 40.0 and s["score_no_penalty"] == 62.5
    assert s["respond_ratio"] == pytest.approx(4 / 5)
    assert (s["abstained"], s["no_facts"], s["missing_article"], s["scored"]) == (1, 1, 1, 2)
    assert (s["correct"], s["incorrect"], s["facts_per_response"]) == (1.0, 1.5, 2.5)
    assert (s["malformed_split"], s["malformed_support"]) == (1, 1)
    # abstentions never reach the judge
    assert not any("don't have information" in p for p in double.prompts)
    # batched: 8 sentences in batches of 4, then 5 facts in batches of 4
    assert double.batches == [4, 4, 4, 1]
    judge.close()

    # second run with the same cache: zero judge calls, same numbers
    again_double = make_judge()
    again = CachedJudge(again_double, batch_size=4, cache_path=tmp_path / "cache.jsonl")
    s2 = factscore(items(), again, wiki_db, BM25Retriever(), gamma=10, k=2, progress=False).summary()
    assert again_double.prompts == [] and again.stats.calls == 0 and again.stats.cache_hits == 13
    assert {k: v for k, v in s2.items() if k != "judge"} == {k: v for k, v in s.items() if k != "judge"}


def test_cache_is_keyed_by_judge_model_and_decoding(tmp_path):
    path = tmp_path / "cache.jsonl"
    prompt = [[{"role": "user", "content": "Sentence: hi."}]]
    j1 = CachedJudge(ScriptedJudgeDouble(), cache_path=path)
    j1.ask(prompt)
    j1.close()
    other_model = ScriptedJudgeDouble(model="another-judge")
    j2 = CachedJudge(other_model, cache_path=path)
    j2.ask(prompt)
    assert j2.stats.calls == 1
    j2.close()
    j3 = CachedJudge(ScriptedJudgeDouble(), decoding=Decoding.greedy(max_new_tokens=64), cache_path=path)
    j3.ask(prompt)
    assert j3.stats.calls == 1
    j3.close()
    j4 = CachedJudge(ScriptedJudgeDouble(), cache_path=path)
    j4.ask(prompt * 3)
    assert j4.stats.calls == 0 and j4.stats.cache_hits == 3


def test_interrupted_cache_resumes_without_repaying(tmp_path):
    path = tmp_path / "cache.jsonl"
    prompts = [[{"role": "user", "content": f"Sentence: fact {i}."}] for i in range(6)]
    j = CachedJudge(ScriptedJudgeDouble(), batch_size=2, cache_path=path)
    j.ask(prompts[:4])
    j.close()
    with path.open("a") as handle:  # a kill mid-write leaves a torn last line
        handle.write('{"key": "abc", "ans')
    d = ScriptedJudgeDouble()
    j2 = CachedJudge(d, batch_size=2, cache_path=path)
    answers = j2.ask(prompts)
    assert answers == [f"- fact {i}." for i in range(6)]
    assert j2.stats.calls == 2 and j2.stats.cache_hits == 4
    j2.close()


def test_all_abstained_has_no_score_and_valid_summary(wiki_db):
    judge = CachedJudge(ScriptedJudgeDouble())
    items = [FactItem("x#0", "Ada Lovelace", "I'm sorry, I cannot provide information about that."),
             FactItem("x#1", "Ada Lovelace", "")]
    s = factscore(items, judge, wiki_db, BM25Retriever(), progress=False).summary()
    assert s["score"] is None and s["respond_ratio"] == 0.0 and s["abstained"] == 2
    assert judge.stats.calls == 0


def test_embedding_retriever_with_a_local_encoder(tiny_llama_dir):
    import torch

    from maskdpo.metrics.retrieval import CombinedRetriever, EmbeddingRetriever

    torch.set_num_threads(1)
    passages = ["Ada Lovelace was born in London.", "The Analytical Engine was a machine.",
                "Marie Curie won two Nobel Prizes."]
    emb = EmbeddingRetriever(str(tiny_llama_dir))
    vectors = emb.embed(passages)
    assert vectors.shape[0] == 3 and torch.allclose(vectors.norm(dim=-1), torch.ones(3))
    # a query identical to a passage has cosine 1 with it: it must rank first
    for p in passages:
        assert emb.retrieve("t", p, passages, k=1) == [p]
    both = CombinedRetriever(BM25Retriever(), emb).retrieve("t", passages[2], passages, k=2)
    assert both[0] == passages[2] and len(set(both)) == 2
