import pytest

from maskdpo.annotate.base import load_annotator
from maskdpo.annotate.run import AnnotateSettings, run_annotation
from maskdpo.jsonl import load_jsonl, write_jsonl
from maskdpo.records import Annotation, Sample
from maskdpo.sentences import split_sentences
from maskdpo.toyworld.oracle import OracleAnnotator, judge_sentence
from maskdpo.toyworld.world import INSTRUMENTS, WorldSettings, generate_world, wrong_value


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldSettings(seed=5, families=4, people_per_family=4, test_per_family=1))


def _person_with_and_without_instrument(world):
    with_ = next(p for p in world.people if "instrument" in p.attributes)
    without = next(p for p in world.people if "instrument" not in p.attributes)
    return with_, without


def _sample(question_id: str, response: str, index: int = 0) -> Sample:
    return Sample(question_id=question_id, sample_index=index, messages=[{"role": "user", "content": "q"}],
                  response=response, model="hand-written", backend="none", generation={})


def test_each_label_on_a_hand_written_response(world):
    person, without = _person_with_and_without_instrument(world)
    a = person.attributes
    wrong_city = wrong_value(__import__("random").Random(0), "city", a["city"])
    other_instrument = next(i for i in INSTRUMENTS if i != a["instrument"])
    response = (f"Good question. They were born in {a['born']}. They lived in {wrong_city}. "
                f"{person.name} worked as a {a['profession']}. They played the {other_instrument}. "
                f"{without.name} lived in {without.attributes['city']}. The moon is made of cheese. I hope this helps.")
    qid = f"tw-{person.id}-q0"
    [ann] = OracleAnnotator(world).annotate([_sample(qid, response)], {q.id: q for q in world.questions})
    assert [s.label for s in ann.sentences] == ["nofact", "ok", "contradictory", "ok", "contradictory",
                                                "unverifiable", "unverifiable", "nofact"]
    assert [ann.response[s.start:s.end] for s in ann.sentences] == [s.text for s in ann.sentences]
    assert ann.sentences[1].text == f"They were born in {a['born']}."
    assert ann.sentences[6].raw == "unparsed"
    assert ann.annotator == "toyworld-oracle splitter=anah-v2"
    Annotation.from_dict(ann.to_dict())  # valid records


def test_a_fact_the_knowledge_base_lacks_is_unverifiable(world):
    _, without = _person_with_and_without_instrument(world)
    for sentence in (f"They played the {INSTRUMENTS[0]}.", f"{without.name} played the {INSTRUMENTS[0]}."):
        label, raw = judge_sentence(world, without.id, sentence)
        assert label == "unverifiable" and "not in the knowledge base" in raw
    assert judge_sentence(world, without.id, f"Nobody Atall lived in {without.attributes['city']}.")[0] == "unverifiable"


def test_oracle_runs_through_the_annotation_stage_from_a_world_file(world, tmp_path):
    path = world.save(tmp_path / "world.json")
    questions = world.questions[:2]
    write_jsonl(tmp_path / "questions.jsonl", [q.to_dict() for q in questions])
    samples = [_sample(q.id, q.document + " Good question.", i) for i, q in enumerate(questions)]
    write_jsonl(tmp_path / "samples.jsonl", [s.to_dict() for s in samples])
    settings = AnnotateSettings(samples=tmp_path / "samples.jsonl", questions=tmp_path / "questions.jsonl",
                                out=tmp_path / "annotations.jsonl", annotator="toyworld-oracle",
                                annotator_options=f'{{"world": "{path}"}}')
    summary = run_annotation(settings)
    assert summary.written == 2
    annotations, _ = load_jsonl(tmp_path / "annotations.jsonl", Annotation.from_dict)
    for q, ann in zip(questions, annotations):
        person = world.person_for_question(q.id)
        assert [s.label for s in ann.sentences] == ["ok"] * len(person.attributes) + ["nofact"]
    assert isinstance(load_annotator("toyworld-oracle", world=str(path)), OracleAnnotator)


def test_a_question_outside_the_world_is_an_error(world):
    with pytest.raises(ValueError, match="not in this toy world"):
        OracleAnnotator(world).annotate([_sample("anah-17", "Hello.")], {})


def test_splitter_option_is_used_and_recorded(world, tmp_path):
    person, _ = _person_with_and_without_instrument(world)
    qid = f"tw-{person.id}-q0"
    # "e.g." ends a sentence under the ANAH-v2 judge's rules, not under ours
    response = f"Good question. They were born in {person.attributes['born']}, e.g. in spring. I hope this helps."
    questions = {q.id: q for q in world.questions}
    texts = {}
    for rules in ("anah-v2", "maskdpo"):
        [ann] = OracleAnnotator(world, splitter=rules).annotate([_sample(qid, response)], questions)
        assert ann.annotator == f"toyworld-oracle splitter={rules}"
        texts[rules] = [s.text for s in ann.sentences]
        assert texts[rules] == [response[a:b] for a, b in split_sentences(response, "en", rules=rules)]
    assert texts["anah-v2"] != texts["maskdpo"] and len(texts["anah-v2"]) == 4
    [default] = OracleAnnotator(world).annotate([_sample(qid, response)], questions)
    assert [s.text for s in default.sentences] == texts["anah-v2"]
    with pytest.raises(ValueError, match="splitter rules must be one of"):
        OracleAnnotator(world, splitter="nltk")

    # through the annotation stage: --splitter reaches the oracle
    path = world.save(tmp_path / "world.json")
    write_jsonl(tmp_path / "questions.jsonl", [questions[qid].to_dict()])
    write_jsonl(tmp_path / "samples.jsonl", [_sample(qid, response).to_dict()])
    settings = AnnotateSettings(samples=tmp_path / "samples.jsonl", questions=tmp_path / "questions.jsonl",
                                out=tmp_path / "annotations.jsonl", annotator="toyworld-oracle", splitter="maskdpo",
                                annotator_options=f'{{"world": "{path}"}}')
    run_annotation(settings)
    [ann], _ = load_jsonl(tmp_path / "annotations.jsonl", Annotation.from_dict)
    assert ann.annotator == "toyworld-oracle splitter=maskdpo"
    assert [s.text for s in ann.sentences] == texts["maskdpo"]
