"""The rich toy world: determinism, splits, shared structure, fame × difficulty, varied answers, the oracle."""

import random
import statistics
from collections import Counter

import pytest

from maskdpo.records import Question
from maskdpo.sentences import split_sentences
from maskdpo.toyworld.oracle import OracleAnnotator, judge_sentence
from maskdpo.toyworld.rich import (ATTRIBUTE, ATTRIBUTES, FILLERS, NOFACT_SENTENCES, RichSettings, RichWorld,
                                   accuracy, generate_rich_world)
from maskdpo.toyworld.world import World, generate_world, load_world, training_corpus
from tests.helpers import world_dump_under_two_hash_seeds


@pytest.fixture(scope="module")
def world():
    return generate_rich_world(RichSettings(seed=0))


def _labels(world, person, answer):
    return [judge_sentence(world, person.id, answer[s:e]) for s, e in split_sentences(answer, language="en")]


def test_same_seed_same_world_across_processes():
    outputs = world_dump_under_two_hash_seeds(
        "from maskdpo.toyworld.rich import *; from maskdpo.toyworld.world import training_corpus",
        "w = generate_rich_world(RichSettings(seed=5))", "[a for _, a in training_corpus(w, 2, seed=5)]")
    assert outputs[0] == outputs[1] and len(outputs[0]) > 10_000
    assert generate_rich_world(RichSettings(seed=6)).to_dict() != generate_rich_world(RichSettings(seed=5)).to_dict()


def test_round_trip_through_load_world(tmp_path, world):
    loaded = load_world(world.save(tmp_path / "world.json"))
    assert isinstance(loaded, RichWorld) and loaded.to_dict() == world.to_dict()
    assert [q.to_dict() for q in loaded.questions] == [q.to_dict() for q in world.questions]
    simple = generate_world()
    assert isinstance(load_world(simple.save(tmp_path / "simple.json")), World)  # the simple world still loads
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "maskdpo/toyworld-rich@1", "settings": {}}')
    with pytest.raises(ValueError, match="broken.json: not a rich toy world"):
        load_world(broken)


def test_splits_hold_out_people_and_whole_families(world):
    s = world.settings
    assert len(world.families) == s.regions * s.families_per_region
    for family in world.families:
        splits = Counter(p.split for p in world.people if p.family == family.name)
        if family.heldout:
            assert splits == {"test_family": s.people_per_family}
        else:
            assert splits == {"train": s.people_per_family - s.test_per_family, "test": s.test_per_family}
    assert sum(f.heldout for f in world.families) == s.regions * s.heldout_families_per_region
    for region in world.regions:  # every region keeps training families and has a held-out one
        mine = [f for f in world.families if f.region == region.name]
        assert sum(f.heldout for f in mine) == s.heldout_families_per_region < len(mine)
    for q in world.questions:
        assert q.split == world.person_for_question(q.id).split
        assert Question.from_dict(q.to_dict()) == q
    assert {s_: len(world.questions_for(s_)) for s_ in world.splits} == {"train": 96, "test": 48, "test_family": 36}


def test_regions_share_values_across_families_and_mark_surnames(world):
    region = {r.name: r for r in world.regions}
    for family in world.families:  # a surname shows its region, as real surnames often do
        assert any(family.name.endswith(end) for end in region[family.region].surname_ends)
    for r in world.regions:
        others = [o for o in world.regions if o is not r]
        assert not set(r.surname_ends) & {e for o in others for e in o.surname_ends}
    typical_home = [p.attributes["home"] in region[p.region].typical["city"] for p in world.people]
    # 3 typical cities of 18: by chance 1/6; region_rate 0.8 through the family and the member: far more
    assert sum(typical_home) / len(typical_home) > 0.6
    years = [int(p.attributes["born"]) - region[p.region].era for p in world.people]
    assert sum(0 <= y < 60 for y in years) / len(years) > 0.7  # most people are born in their region's era
    heldout = [p for p in world.people if p.split == "test_family"]
    assert statistics.mean(p.attributes["home"] in region[p.region].typical["city"] for p in heldout) > 0.5


def test_people_have_about_ten_attributes_of_different_kinds(world):
    counts = [len(p.attributes) for p in world.people]
    assert 8 <= min(counts) and max(counts) == len(ATTRIBUTES) == 11
    assert 9 <= statistics.mean(counts) <= 10.5
    assert {a.vocabulary for a in ATTRIBUTES} >= {"year", "city", "employer", "mother", "work", "award"}
    fames = [p.fame for p in world.people]
    assert min(fames) < 0.4 and max(fames) > 0.85


def test_accuracy_is_fame_times_difficulty_in_the_training_text(world):
    rng = random.Random(1)
    famous = max(world.people, key=lambda p: p.fame)
    obscure = min(world.people, key=lambda p: p.fame)
    for person in (famous, obscure):
        by_attr: dict[str, Counter] = {}
        for _ in range(600):
            answer = world.training_answer(person, rng)
            for (label, raw), (s, e) in zip(_labels(world, person, answer), split_sentences(answer, language="en")):
                if label in ("ok", "contradictory"):
                    by_attr.setdefault(raw.split("=")[0], Counter())[label] += 1
        for attr in ("home", "mother"):  # the easiest and a hard attribute
            c = by_attr[attr]
            assert abs(c["ok"] / (c["ok"] + c["contradictory"]) - accuracy(person.fame, attr)) < 0.08, (person, attr)
    assert accuracy(0.5, "home") > accuracy(0.5, "born") > accuracy(0.5, "award")  # attributes differ in difficulty
    assert accuracy(0.9, "award") > accuracy(0.4, "award")  # and people in fame


def test_answers_state_varied_subsets_in_varied_order_with_fact_free_sentences(world):
    rng = random.Random(2)
    person = next(p for p in world.people if len(p.attributes) >= 10)
    lo, hi = world.settings.facts_per_answer
    sets, orders, sizes = [], set(), []
    nofact = 0
    for _ in range(200):
        answer = world.training_answer(person, rng)
        labels = _labels(world, person, answer)
        assert all(raw != "unparsed" for _, raw in labels)  # the oracle reads every sentence of the text
        stated = [raw.split("=")[0] for label, raw in labels if label in ("ok", "contradictory")]
        assert len(set(stated)) == len(stated)  # an attribute at most once
        sizes.append(len(stated))
        sets.append(frozenset(stated))
        orders.add(tuple(stated))
        nofact += sum(label == "nofact" for label, _ in labels[1:])  # beyond the opener
    assert min(sizes) == lo and max(sizes) == hi
    assert len(orders) > 150
    overlap = statistics.mean(len(a & b) / len(a | b) for a, b in zip(sets, sets[1:]))
    assert overlap < 0.5  # two answers mostly state different facts
    assert nofact > 100


def test_oracle_labels_the_rich_world(world, tmp_path):
    person = next(p for p in world.people if "award" not in p.attributes)
    doc = next(q for q in world.questions if world.person_for_question(q.id) is person).document
    for s, e in split_sentences(doc, language="en"):
        assert judge_sentence(world, person.id, doc[s:e]) == ("ok", f"{_attr_of(doc[s:e])}={_value_of(person, doc[s:e])}")
    assert judge_sentence(world, person.id, FILLERS[0])[0] == "nofact"
    assert set(NOFACT_SENTENCES) >= set(FILLERS)
    assert judge_sentence(world, person.id, "They received the Crane Prize.")[0] == "unverifiable"
    wrong = next(v for v in ("Brenford", "Calmora") if v != person.attributes["home"])
    assert judge_sentence(world, person.id, f"They lived in {wrong}.") == (
        "contradictory", f"home={wrong}, knowledge base: {person.attributes['home']}")
    assert judge_sentence(world, person.id, "They lived on the moon")[1] == "unparsed"
    annotator = OracleAnnotator(world.save(tmp_path / "world.json"))
    assert isinstance(annotator.world, RichWorld)


def _attr_of(sentence: str) -> str:
    for a in ATTRIBUTES:
        prefix = a.document.split("{name}")[1].split("{value}")[0]
        if prefix in sentence:
            return a.name
    raise AssertionError(sentence)


def _value_of(person, sentence: str) -> str:
    return person.attributes[_attr_of(sentence)]


def test_both_worlds_train_from_the_same_corpus_function(world):
    corpus = training_corpus(world, 3, seed=0)
    assert len(corpus) == 3 * len(world.questions)
    assert all(answer.split(". ")[0] + "." in NOFACT_SENTENCES for _, answer in corpus[:50])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="heldout_families_per_region"):
        RichSettings(families_per_region=2, heldout_families_per_region=2)
    with pytest.raises(ValueError, match="regions"):
        RichSettings(regions=9)
    with pytest.raises(ValueError, match="facts_per_answer"):
        RichSettings(facts_per_answer=(5, 2))
    with pytest.raises(ValueError, match="fame_range"):
        RichSettings(fame_range=(0.0, 0.5))
    assert ATTRIBUTE["award"].optional and not ATTRIBUTE["home"].optional
