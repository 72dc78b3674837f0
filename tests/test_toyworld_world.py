import random

import pytest

from maskdpo.records import Question
from maskdpo.toyworld.oracle import judge_sentence
from maskdpo.toyworld.world import (ATTRIBUTES, NOFACT_SENTENCES, World, WorldSettings, generate_world,
                                    training_answer, training_corpus)
from tests.helpers import world_dump_under_two_hash_seeds


def test_same_seed_same_world_and_different_seed_different_world():
    a, b = generate_world(WorldSettings(seed=3)), generate_world(WorldSettings(seed=3))
    assert a.to_dict() == b.to_dict()
    assert [q.to_dict() for q in a.questions] == [q.to_dict() for q in b.questions]
    assert generate_world(WorldSettings(seed=4)).to_dict() != a.to_dict()
    corpus_a = [(q.id, text) for q, text in training_corpus(a, 2, seed=1)]
    assert corpus_a == [(q.id, text) for q, text in training_corpus(b, 2, seed=1)]


def test_same_seed_same_world_across_processes():
    outputs = world_dump_under_two_hash_seeds(
        "from maskdpo.toyworld.world import *; from maskdpo.tiny import train_tokenizer",
        "w = generate_world(WorldSettings(seed=7)); "
        "tok = train_tokenizer([a for _, a in training_corpus(w, 2, seed=7)], vocab_size=400)", "tok.get_vocab()")
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1000


def test_save_and_load_round_trip(tmp_path):
    world = generate_world(WorldSettings(seed=1, questions_per_person=2))
    loaded = World.load(world.save(tmp_path / "world.json"))
    assert loaded.to_dict() == world.to_dict()
    assert [q.to_dict() for q in loaded.questions] == [q.to_dict() for q in world.questions]


def test_load_rejects_a_file_that_is_not_a_world(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"format": "maskdpo/pair@1"}')
    with pytest.raises(ValueError, match="other.json: field 'format'"):
        World.load(path)


def test_split_holds_out_people_and_their_questions_within_every_family():
    s = WorldSettings(seed=2, families=5, people_per_family=4, test_per_family=1, questions_per_person=3)
    world = generate_world(s)
    assert len(world.people) == 20 and len(world.questions) == 60
    for family in world.families:
        splits = sorted(p.split for p in world.people if p.family == family.name)
        assert splits == ["test", "train", "train", "train"]
    test_people = {p.id for p in world.people if p.split == "test"}
    for q in world.questions:
        assert (world.person_for_question(q.id).id in test_people) == (q.split == "test")
        assert Question.from_dict(q.to_dict()) == q  # valid question records
        assert world.person_for_question(q.id).name in q.question
    assert len({q.question for q in world.questions}) == 60  # phrasings differ per person


def test_families_share_structure_and_people_differ_in_fame():
    world = generate_world(WorldSettings(seed=0))
    typical = {f.name: f.typical for f in world.families}
    shared = [p.attributes[a] == typical[p.family][a] for p in world.people for a in ("city", "profession")]
    assert 0.65 < sum(shared) / len(shared) < 0.95
    fames = [p.fame for p in world.people]
    assert min(fames) < 0.4 and max(fames) > 0.8
    assert any("instrument" not in p.attributes for p in world.people)  # unverifiable claims are possible


def test_document_states_exactly_the_knowledge_base():
    world = generate_world(WorldSettings(seed=0))
    person = world.people[0]
    q = next(q for q in world.questions if world.person_for_question(q.id) is person)
    sentences = [s + "." for s in q.document.rstrip(".").split(". ")]
    assert len(sentences) == len(person.attributes)
    assert all(judge_sentence(world, person.id, s)[0] == "ok" for s in sentences)


def test_training_answers_are_right_about_as_often_as_the_person_is_famous():
    world = generate_world(WorldSettings(seed=0))
    rng = random.Random(0)
    famous = max(world.people, key=lambda p: p.fame)
    obscure = min(world.people, key=lambda p: p.fame)
    for person in (famous, obscure):
        labels = []
        for _ in range(300):
            answer = training_answer(person, rng)
            sentences = [s if s.endswith(".") else s + "." for s in answer.split(". ")]
            assert sentences[0] in NOFACT_SENTENCES
            labels += [judge_sentence(world, person.id, s)[0] for s in sentences]
        facts = [lab for lab in labels if lab != "nofact"]
        assert set(facts) <= {"ok", "contradictory", "unverifiable"}
        known = [lab for lab in facts if lab != "unverifiable"]
        assert len(known) == 300 * len(person.attributes)  # one sentence per known attribute
        assert abs(known.count("ok") / len(known) - person.fame) < 0.06
    assert len(ATTRIBUTES) == 4


def test_settings_are_validated():
    with pytest.raises(ValueError, match="test_per_family"):
        WorldSettings(people_per_family=3, test_per_family=3)
    with pytest.raises(ValueError, match="fame_range"):
        WorldSettings(fame_range=(0.9, 0.1))


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "expected a world file"), ("{bad", "invalid JSON at line 1"), ('{"format": "x"}', "got 'x'"),
])
def test_load_world_names_the_file_of_a_bad_world(tmp_path, text, message):
    from maskdpo.toyworld.world import load_world

    path = tmp_path / "w.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_world(path)
    assert str(path) in str(info.value)
