"""A generated knowledge world: people in families, questions about them, reference documents.

This is the simple world (``maskdpo demo --world simple``); the default, richer
one is :mod:`maskdpo.toyworld.rich`. :func:`load_world` reads either.

The world models the two properties of real knowledge that Mask-DPO relies on
(the paper's "knowledge topology"):

- **Families share structure.** Every family has typical values (a home city,
  a trade, an instrument, an era); most members follow them. What preference
  training teaches about one member (prefer what is typical and well
  supported) can therefore transfer to members never seen in training.
- **Entities differ in how well they are known.** Each person has a ``fame``
  in [0, 1]: the probability that a sentence about them in the base policy's
  training text is right. The base policy hallucinates more about obscure
  people, as real models do about rare entities.

Questions are split the way the paper splits ANAH: the test people and their
questions never appear in preference training (they do appear, with the same
reliability, in the base policy's own training text: the base model "knows"
them imperfectly, like an instruct model knows the world).

A response is a run of short sentences, each stating one fact about the
question's person ("They lived in Jorvik."), framed by
fact-free sentences (an opener, sometimes a hedge) so that ``nofact`` exists.
Everything is drawn from one ``random.Random(seed)``: the same seed gives the
same world.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..jsonl import read_json_file
from ..records import Question

FORMAT = "maskdpo/toyworld@1"

# Attribute vocabularies (fictional names: the tiny policy knows only what we teach it).
CITIES = ["Brenford", "Calmora", "Dunvale", "Eskholm", "Farrow", "Galdin", "Harrowgate", "Ilvenna",
          "Jorvik", "Kestrel Bay", "Lunmouth", "Marrowdeep", "Northwald", "Orrin", "Pellamy", "Quillon"]
PROFESSIONS = ["baker", "sailor", "weaver", "astronomer", "carpenter", "physician", "painter", "merchant",
               "blacksmith", "cartographer", "gardener", "scribe"]
INSTRUMENTS = ["violin", "flute", "harp", "drum", "lute", "horn", "cello", "organ"]
YEAR_RANGE = (1600, 1950)  # birth years; a family's era is a 30-year window inside it

FIRST_SYLLABLES = ["al", "bri", "cor", "da", "el", "fen", "ga", "hal", "is", "jo", "ka", "lu", "mi", "nor", "o",
                   "pe", "ri", "sa", "tor", "u", "ve", "wyn"]
LAST_SYLLABLES = ["ra", "ven", "lin", "dor", "sa", "mir", "tan", "wen", "rik", "na", "bel", "ton"]
SURNAME_PARTS = ["ash", "brook", "crane", "dun", "ell", "frost", "glen", "hart", "ives", "kell", "lark", "moor",
                 "north", "pike", "quill", "rook", "stone", "thorn", "vale", "wick"]
SURNAME_ENDS = ["ley", "wood", "field", "man", "ford", "by", "ridge", "well"]

# One template per attribute. Answers speak of the person as "They" (the subject is the
# question's person, as for the ANAH judge, which checks against the question's
# document), so the tiny policy needs the knowledge, not a copying skill; reference
# documents name the person. The oracle parses both forms back exactly; sentence
# splitting sees ". " between facts.
TEMPLATES = {
    "born": "They were born in {value}.",
    "city": "They lived in {value}.",
    "profession": "They worked as a {value}.",
    "instrument": "They played the {value}.",
}
DOCUMENT_TEMPLATES = {
    "born": "{name} was born in {value}.",
    "city": "{name} lived in {value}.",
    "profession": "{name} worked as a {value}.",
    "instrument": "{name} played the {value}.",
}
ATTRIBUTES = tuple(TEMPLATES)
OPTIONAL_ATTRIBUTES = ("instrument",)  # not every person has one: a claim about it is unverifiable

OPENERS = ["Here is what I know.", "Good question.", "Let me tell you about this person.", "Sure, I can help."]
HEDGES = ["I am not completely sure about all of this.", "I hope this helps.", "That is all I can recall."]
NOFACT_SENTENCES = tuple(OPENERS + HEDGES)

QUESTION_TEMPLATES = ["Tell me about {name}.", "Who was {name}?", "Write a short biography of {name}.",
                      "What do you know about {name}?"]


@dataclass(frozen=True)
class WorldSettings:
    seed: int = 0
    families: int = 16
    people_per_family: int = 6
    test_per_family: int = 2  # held-out people per family (their questions are the test split)
    questions_per_person: int = 1  # phrasings per person (distinct question templates)
    typical_rate: float = 0.8  # how often a member shares the family's typical value
    instrument_rate: float = 0.6  # how often a person has an instrument at all
    fame_range: tuple[float, float] = (0.25, 0.95)  # P(a sentence about the person is right) in base training text

    def __post_init__(self) -> None:
        if self.families < 1 or self.people_per_family < 2:
            raise ValueError("a world needs at least 1 family of at least 2 people")
        if not 0 <= self.test_per_family < self.people_per_family:
            raise ValueError(f"test_per_family must be in [0, people_per_family), got {self.test_per_family}")
        if not 1 <= self.questions_per_person <= len(QUESTION_TEMPLATES):
            raise ValueError(f"questions_per_person must be in [1, {len(QUESTION_TEMPLATES)}]")
        lo, hi = self.fame_range
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"fame_range must satisfy 0 <= lo <= hi <= 1, got {self.fame_range}")


@dataclass
class Person:
    id: str
    name: str
    family: str
    fame: float
    split: str  # "train" | "test"
    attributes: dict[str, str] = field(default_factory=dict)  # attribute -> value; optional ones may be absent


@dataclass
class Family:
    name: str
    typical: dict[str, str]  # attribute -> the family's typical value ("born": the era's first year)


class WorldBase:
    """What both worlds offer: lookups over their ``people`` and ``questions`` (by id, name, question,
    split), and saving to a world file (``to_dict`` is each world's own)."""

    people: list
    questions: list[Question]

    def index_people(self) -> None:
        self.people_by_id = {p.id: p for p in self.people}
        self.people_by_name = {p.name: p for p in self.people}
        if len(self.people_by_name) != len(self.people):
            raise ValueError("person names must be unique")

    def person(self, person_id: str):
        return self.people_by_id[person_id]

    def person_by_name(self, name: str):
        return self.people_by_name.get(name)

    def person_for_question(self, question_id: str):
        return self.people_by_id[question_person_id(question_id)]

    def questions_for(self, split: str) -> list[Question]:
        return [q for q in self.questions if q.split == split]

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


@dataclass
class World(WorldBase):
    settings: WorldSettings
    families: list[Family]
    people: list[Person]
    questions: list[Question]

    # What the oracle and the demo read from any world (the rich world has its own).
    kind = "simple"
    splits = ("train", "test")
    answer_templates = TEMPLATES
    document_templates = DOCUMENT_TEMPLATES
    nofact_sentences = NOFACT_SENTENCES

    def training_answer(self, person: Person, rng: random.Random) -> str:
        return training_answer(person, rng)

    def __post_init__(self) -> None:
        self.index_people()

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "settings": asdict(self.settings),
                "families": [asdict(f) for f in self.families], "people": [asdict(p) for p in self.people]}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "World":
        """Read a world file written by :meth:`save`; questions are re-rendered from it."""
        path = Path(path)
        d = read_world_file(path)
        if d.get("format") != FORMAT:
            raise ValueError(f"{path}: field 'format': expected {FORMAT!r}, got {d.get('format') if isinstance(d, dict) else d!r}")
        raw = dict(d["settings"])
        raw["fame_range"] = tuple(raw["fame_range"])
        settings = WorldSettings(**raw)
        families = [Family(**f) for f in d["families"]]
        people = [Person(**p) for p in d["people"]]
        return cls(settings, families, people, render_questions(people, settings))


def load_world(path: str | os.PathLike):
    """A :class:`World` or a :class:`maskdpo.toyworld.rich.RichWorld`, by the file's ``format``."""
    from .rich import FORMAT as RICH_FORMAT, RichWorld

    path = Path(path)
    d = read_world_file(path)
    if d.get("format") == RICH_FORMAT:
        return RichWorld.from_dict(d, path)
    return World.load(path)


def read_world_file(path: Path) -> dict:
    """The JSON object of a world file, or an error naming the file."""
    d = read_json_file(path, "world file", " (write one with generate_world(...).save)")
    if not isinstance(d, dict):
        raise ValueError(f"{path}: field 'format': expected a world file, got {d!r:.60}")
    return d


# ---------------------------------------------------------------- generation


def question_person_id(question_id: str) -> str:
    """``tw-p0012-q1`` -> ``p0012``."""
    m = re.fullmatch(r"tw-(p\d+)-q\d+", question_id)
    if not m:
        raise KeyError(f"{question_id!r} is not a toy-world question id (tw-pNNNN-qN)")
    return m.group(1)


def _name(rng: random.Random, parts: list[str], ends: list[str]) -> str:
    return (rng.choice(parts) + rng.choice(ends)).capitalize()


def _other(rng: random.Random, vocabulary: list[str], not_this: str) -> str:
    return rng.choice([v for v in vocabulary if v != not_this])


def generate_world(settings: WorldSettings = WorldSettings()) -> World:
    """Draw families, people and questions from ``settings.seed`` (deterministic)."""
    rng = random.Random(settings.seed)
    surnames: set[str] = set()
    while len(surnames) < settings.families:
        surnames.add(_name(rng, SURNAME_PARTS, SURNAME_ENDS))
    families, people = [], []
    order = sorted(surnames)  # a set's order depends on PYTHONHASHSEED: sort before shuffling
    rng.shuffle(order)
    for surname in order:
        era = rng.randrange(YEAR_RANGE[0], YEAR_RANGE[1] - 30)
        typical = {"born": str(era), "city": rng.choice(CITIES), "profession": rng.choice(PROFESSIONS),
                   "instrument": rng.choice(INSTRUMENTS)}
        families.append(Family(surname, typical))
        first_names: set[str] = set()
        while len(first_names) < settings.people_per_family:
            first_names.add(_name(rng, FIRST_SYLLABLES, LAST_SYLLABLES))
        members = []
        for first in sorted(first_names):
            attrs = {"born": str(era + rng.randrange(0, 30))}  # the era is shared, the year is personal
            for attr, vocab in (("city", CITIES), ("profession", PROFESSIONS), ("instrument", INSTRUMENTS)):
                if attr == "instrument" and rng.random() >= settings.instrument_rate:
                    continue
                attrs[attr] = typical[attr] if rng.random() < settings.typical_rate else _other(rng, vocab, typical[attr])
            fame = rng.uniform(*settings.fame_range)
            members.append(Person(id="", name=f"{first} {surname}", family=surname, fame=round(fame, 4),
                                  split="train", attributes=attrs))
        for person in rng.sample(members, settings.test_per_family):
            person.split = "test"
        people.extend(members)
    for i, person in enumerate(people):
        person.id = f"p{i:04d}"
    return World(settings, families, people, render_questions(people, settings))


def render_questions(people: list[Person], settings: WorldSettings) -> list[Question]:
    """``questions_per_person`` questions per person, each with the person's reference document."""
    return [q for person in people
            for q in person_questions(person, f"{settings.seed}-{person.id}", settings.questions_per_person,
                                      render_document(person))]


def person_questions(person, rng_key: str, count: int, document: str) -> list[Question]:
    """``count`` phrasings of a question about ``person``, each with its reference document (both worlds).

    Which phrasings are drawn from ``rng_key`` alone: they depend on the seed and the person, not on order.
    """
    templates = random.Random(rng_key).sample(range(len(QUESTION_TEMPLATES)), count)
    return [Question(id=f"tw-{person.id}-q{k}", question=QUESTION_TEMPLATES[t].format(name=person.name),
                     topic=person.family, language="en", document=document, split=person.split)
            for k, t in enumerate(templates)]


def render_document(person: Person) -> str:
    """The reference text for a person: every known fact, one sentence each."""
    return " ".join(DOCUMENT_TEMPLATES[attr].format(name=person.name, value=person.attributes[attr])
                    for attr in ATTRIBUTES if attr in person.attributes)


def fact_sentence(attribute: str, value: str) -> str:
    """A fact as an answer states it (about the question's person)."""
    return TEMPLATES[attribute].format(value=value)


# ---------------------------------------------------------------- the base policy's training text


def wrong_value(rng: random.Random, attribute: str, right: str) -> str:
    """A plausible wrong value: any other value of the attribute (a year: any other year in range)."""
    if attribute == "born":
        while True:
            year = str(rng.randrange(*YEAR_RANGE))
            if year != right:
                return year
    vocab = {"city": CITIES, "profession": PROFESSIONS, "instrument": INSTRUMENTS}[attribute]
    return _other(rng, vocab, right)


def training_answer(person: Person, rng: random.Random) -> str:
    """One answer about ``person`` as the base policy's training text has it.

    Each fact sentence is right with probability ``person.fame`` and wrong
    otherwise; an attribute the person lacks is claimed anyway with probability
    ``1 - fame`` (an unverifiable fact). An opener always, a hedge sometimes.
    """
    sentences = [rng.choice(OPENERS)]
    for attr in ATTRIBUTES:
        right = person.attributes.get(attr)
        if right is None:
            if rng.random() < 1 - person.fame:
                sentences.append(fact_sentence(attr, wrong_value(rng, attr, "")))
            continue
        value = right if rng.random() < person.fame else wrong_value(rng, attr, right)
        sentences.append(fact_sentence(attr, value))
    if rng.random() < 0.5:
        sentences.append(rng.choice(HEDGES))
    return " ".join(sentences)


def training_corpus(world, answers_per_question: int, seed: int) -> list[tuple[Question, str]]:
    """(question, answer) pairs for every question of every split: the base policy's "pretraining".

    ``world``: a :class:`World` or a :class:`maskdpo.toyworld.rich.RichWorld` (each draws its own answers).
    """
    rng = random.Random(f"corpus-{seed}")
    corpus = []
    for q in world.questions:
        person = world.person_for_question(q.id)
        corpus.extend((q, world.training_answer(person, rng)) for _ in range(answers_per_question))
    rng.shuffle(corpus)
    return corpus


def expected_precision(world: World, split: str) -> float:
    """Sentence precision (nofact counted correct) a policy that matched its training text exactly would have.

    Per answer: 1 opener (+0.5 hedges), one fact per known attribute right with
    probability fame, and (1 - fame) unverifiable claims for a missing instrument.
    """
    correct = total = 0.0
    for q in world.questions_for(split):
        p = world.person_for_question(q.id)
        known = len(p.attributes)
        missing = len(ATTRIBUTES) - known
        correct += 1.5 + known * p.fame
        total += 1.5 + known + missing * (1 - p.fame)
    return 100 * correct / total if total else math.nan
