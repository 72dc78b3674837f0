"""The rich toy world: long answers about many attributes, knowledge shared by families and regions.

The simple world (:mod:`maskdpo.toyworld.world`) has every answer state the
same four facts, so the correct sentences of a rejected answer mostly also
appear in the chosen one, and plain DPO's push-down on them cancels. Real long
answers differ in *which* facts they state. This world models that, and adds
structure shared across families (the paper's "knowledge topology" across
topics):

- **About ten attributes of different kinds** per person: years (born, died),
  places (birthplace, home), trade, employer, school, a relative (the mother),
  and three optional ones (instrument, a written work, an award). Each
  attribute has a ``difficulty``: in the base policy's training text a fact is
  right with probability ``fame ** difficulty`` (per-person fame ×
  per-attribute difficulty), so the policy knows a famous person's home far
  better than an obscure person's award.
- **Answers of varied length**: each states a random subset (3–7) of the
  person's attributes in random order, with fact-free sentences (an opener,
  fillers between facts, sometimes a closing hedge). The chosen and rejected
  answers of a pair therefore mostly state different facts.
- **Two levels of shared structure.** A *region* has an era, typical places,
  employers and schools, and its own surname endings (as real surnames mark a
  region); its *families* draw their typical values mostly from the region's;
  members share their family's values. Wrong values in the training text are
  drawn from the whole vocabulary, so "what is typical of the region" is
  evidence of being right, and can reach families that never had a training
  pair.
- **Three splits**: ``train`` (questions that may enter preference training),
  ``test`` (held-out people of the training families) and ``test_family``
  (every person of held-out families: topics never seen in preference
  training). All people are in the base policy's training text.

Deterministic per seed; the world file has its own format
(``maskdpo/toyworld-rich@1``), read back with
:func:`maskdpo.toyworld.world.load_world`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..records import Question
from .world import FIRST_SYLLABLES, HEDGES, LAST_SYLLABLES, QUESTION_TEMPLATES, SURNAME_ENDS as WORLD_SURNAME_ENDS, \
    SURNAME_PARTS, WorldBase, person_questions

FORMAT = "maskdpo/toyworld-rich@1"
SPLITS = ("train", "test", "test_family")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how answers and documents state it, and how hard it is to know."""

    name: str
    template: str  # an answer's sentence, about the question's person ("They ...")
    document: str  # the reference document's sentence ("{name} ...")
    vocabulary: str  # key of VOCABULARIES ("year" for years)
    difficulty: float  # exponent on fame: P(right in the training text) = fame ** difficulty
    level: str  # where the typical value lives: "region", "family" or "person"
    optional: bool = False  # some people lack it; a claim about it is then unverifiable


ATTRIBUTES = (
    Attribute("born", "They were born in {value}.", "{name} was born in {value}.", "year", 1.0, "region"),
    Attribute("died", "They died in {value}.", "{name} died in {value}.", "year", 1.6, "person"),
    Attribute("birthplace", "Their birthplace was {value}.", "{name}'s birthplace was {value}.", "city", 0.8, "region"),
    Attribute("home", "They lived in {value}.", "{name} lived in {value}.", "city", 0.5, "region"),
    Attribute("profession", "They worked as a {value}.", "{name} worked as a {value}.", "profession", 0.5, "family"),
    Attribute("employer", "They were employed by {value}.", "{name} was employed by {value}.", "employer", 1.3,
              "region"),
    Attribute("school", "They studied at {value}.", "{name} studied at {value}.", "school", 1.5, "region"),
    Attribute("mother", "Their mother was {value}.", "{name}'s mother was {value}.", "mother", 2.0, "family"),
    Attribute("instrument", "They played the {value}.", "{name} played the {value}.", "instrument", 1.0, "family",
              optional=True),
    Attribute("work", "They wrote {value}.", "{name} wrote {value}.", "work", 1.8, "person", optional=True),
    Attribute("award", "They received the {value}.", "{name} received the {value}.", "award", 2.5, "person",
              optional=True),
)
ATTRIBUTE = {a.name: a for a in ATTRIBUTES}
TEMPLATES = {a.name: a.template for a in ATTRIBUTES}
DOCUMENT_TEMPLATES = {a.name: a.document for a in ATTRIBUTES}

VOCABULARIES = {
    "city": ["Brenford", "Calmora", "Dunvale", "Eskholm", "Farrow", "Galdin", "Harrowgate", "Ilvenna", "Jorvik",
             "Kestrel Bay", "Lunmouth", "Marrowdeep", "Northwald", "Orrin", "Pellamy", "Quillon", "Rendale",
             "Saltmere"],
    "profession": ["baker", "sailor", "weaver", "astronomer", "carpenter", "physician", "painter", "merchant",
                   "blacksmith", "cartographer", "gardener", "scribe"],
    "employer": ["the Harbour Office", "the Royal Mint", "the Weavers Guild", "the Northern Railway",
                 "the City Library", "the Observatory", "the Salt Company", "the Naval Yard", "the Printing House",
                 "the Grand Theatre", "the Assay Office", "the River Trust"],
    "school": ["Calder College", "the Abbey School", "Marlow Academy", "the Free School", "Saint Edda's",
               "the Mining School", "Vesper Hall", "the Academy of Arts", "Lowmere College", "the Naval School"],
    "mother": ["Ada", "Beatrix", "Clara", "Dora", "Edith", "Flora", "Greta", "Hilda", "Ines", "Jana", "Katrin",
               "Lena", "Mira", "Nora", "Olga", "Petra"],
    "instrument": ["violin", "flute", "harp", "drum", "lute", "horn", "cello", "organ"],
    "work": ["The Silver Lantern", "A Winter Voyage", "The Glass Orchard", "Notes on Tides", "The Quiet Harbour",
             "A History of Salt", "The Red Ledger", "Songs of the Fen", "The Iron Bridge", "On Small Stars"],
    "award": ["Halden Medal", "Order of the Lamp", "Crane Prize", "Orrin Cross", "Tallis Award", "Wren Medal",
              "Gilded Quill", "Marsh Prize"],
}
YEAR_RANGE = (1600, 1950)  # birth years; a region's era is a 60-year window inside it
# Names are built from the first world's syllables; two endings per region: four more endings.
SURNAME_ENDS = WORLD_SURNAME_ENDS + ["ton", "holm", "sen", "more"]
REGION_NAMES = ["the North", "the Coast", "the Fens", "the Hills", "the Valley", "the Islands"]

OPENERS = ["Here is what I know.", "Good question.", "Let me tell you about this person.", "Sure, I can help."]
FILLERS = ["That is worth knowing.", "People still talk about that.", "This part is well remembered.",
           "There is more to say."]
NOFACT_SENTENCES = tuple(OPENERS + FILLERS + HEDGES)



@dataclass(frozen=True)
class RichSettings:
    seed: int = 0
    regions: int = 3
    families_per_region: int = 5
    heldout_families_per_region: int = 1  # whole families never in preference training (split test_family)
    people_per_family: int = 6
    test_per_family: int = 2  # held-out people of each training family (split test)
    questions_per_person: int = 2
    region_rate: float = 0.8  # a family's typical place/employer/school/era is the region's
    typical_rate: float = 0.75  # a member shares the family's typical value
    optional_rate: float = 0.55  # a person has an optional attribute (instrument, work, award)
    fame_range: tuple[float, float] = (0.3, 0.95)
    facts_per_answer: tuple[int, int] = (3, 7)  # how many of the person's attributes an answer states
    filler_rate: float = 0.3  # a fact-free sentence after a fact
    invent_rate: float = 0.5  # × (1 - fame): an answer claims an optional attribute the person lacks

    def __post_init__(self) -> None:
        if self.regions < 1 or self.regions > len(REGION_NAMES):
            raise ValueError(f"regions must be in [1, {len(REGION_NAMES)}], got {self.regions}")
        if not 0 <= self.heldout_families_per_region < self.families_per_region:
            raise ValueError("heldout_families_per_region must be in [0, families_per_region), got "
                             f"{self.heldout_families_per_region}")
        if self.people_per_family < 2 or not 0 <= self.test_per_family < self.people_per_family:
            raise ValueError(f"need people_per_family >= 2 and 0 <= test_per_family < people_per_family, got "
                             f"{self.people_per_family} / {self.test_per_family}")
        if not 1 <= self.questions_per_person <= len(QUESTION_TEMPLATES):
            raise ValueError(f"questions_per_person must be in [1, {len(QUESTION_TEMPLATES)}]")
        lo, hi = self.fame_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"fame_range must satisfy 0 < lo <= hi <= 1, got {self.fame_range}")
        a, b = self.facts_per_answer
        if not 1 <= a <= b:
            raise ValueError(f"facts_per_answer must satisfy 1 <= lo <= hi, got {self.facts_per_answer}")
        if len(SURNAME_ENDS) < 2 * self.regions:
            raise ValueError("not enough surname endings for the regions")


@dataclass
class Region:
    name: str
    surname_ends: list[str]
    era: int  # first birth year of the region's 60-year era
    typical: dict[str, list[str]]  # vocabulary -> the region's typical values


@dataclass
class RichFamily:
    name: str
    region: str
    heldout: bool  # True: no member's question enters preference training
    typical: dict[str, str]  # attribute -> the family's typical value ("born": the family's first year)


@dataclass
class RichPerson:
    id: str
    name: str
    family: str
    region: str
    fame: float
    split: str  # "train" | "test" | "test_family"
    attributes: dict[str, str] = field(default_factory=dict)


def accuracy(fame: float, attribute: str) -> float:
    """P(a training-text sentence about ``attribute`` of a person with ``fame`` is right)."""
    return fame ** ATTRIBUTE[attribute].difficulty


class RichWorld(WorldBase):
    """Regions, families, people, questions; the same lookups as :class:`maskdpo.toyworld.world.World`."""

    kind = "rich"
    splits = SPLITS
    attribute_names = tuple(a.name for a in ATTRIBUTES)
    answer_templates = TEMPLATES
    document_templates = DOCUMENT_TEMPLATES
    nofact_sentences = NOFACT_SENTENCES

    def __init__(self, settings: RichSettings, regions: list[Region], families: list[RichFamily],
                 people: list[RichPerson]):
        self.settings, self.regions, self.families, self.people = settings, regions, families, people
        self.questions = render_questions(people, settings)
        self.index_people()

    def training_answer(self, person: RichPerson, rng: random.Random) -> str:
        return training_answer(person, rng, self.settings)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "settings": asdict(self.settings), "regions": [asdict(r) for r in self.regions],
                "families": [asdict(f) for f in self.families], "people": [asdict(p) for p in self.people]}

    @classmethod
    def from_dict(cls, d: dict, path: Path) -> "RichWorld":
        try:
            raw = dict(d["settings"])
            raw["fame_range"] = tuple(raw["fame_range"])
            raw["facts_per_answer"] = tuple(raw["facts_per_answer"])
            return cls(RichSettings(**raw), [Region(**r) for r in d["regions"]],
                       [RichFamily(**f) for f in d["families"]], [RichPerson(**p) for p in d["people"]])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a rich toy world ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------- generation


def _name(rng: random.Random, parts: list[str], ends: list[str]) -> str:
    return (rng.choice(parts) + rng.choice(ends)).capitalize()


def _pick(rng: random.Random, vocabulary: str, typical: list[str] | None, rate: float) -> str:
    """A region-typical value with probability ``rate`` (when the region has some), else any value."""
    if typical and rng.random() < rate:
        return rng.choice(typical)
    return rng.choice(VOCABULARIES[vocabulary])


def generate_rich_world(settings: RichSettings = RichSettings()) -> RichWorld:
    """Draw regions, families, people and questions from ``settings.seed`` (deterministic)."""
    rng = random.Random(f"rich-{settings.seed}")
    ends = list(SURNAME_ENDS)
    rng.shuffle(ends)
    regions = []
    for r in range(settings.regions):
        era = rng.randrange(YEAR_RANGE[0], YEAR_RANGE[1] - 60)
        typical = {"city": rng.sample(VOCABULARIES["city"], 3), "employer": rng.sample(VOCABULARIES["employer"], 2),
                   "school": rng.sample(VOCABULARIES["school"], 2)}
        regions.append(Region(REGION_NAMES[r], sorted(ends[2 * r:2 * r + 2]), era, typical))
    families, people = [], []
    used_surnames: set[str] = set()
    for region in regions:
        for f in range(settings.families_per_region):
            while True:
                surname = _name(rng, SURNAME_PARTS, region.surname_ends)
                if surname not in used_surnames:
                    used_surnames.add(surname)
                    break
            first_year = region.era + rng.randrange(0, 30) if rng.random() < settings.region_rate else \
                rng.randrange(YEAR_RANGE[0], YEAR_RANGE[1] - 30)
            typical = {"born": str(first_year)}
            for attr in ATTRIBUTES:
                if attr.level == "region":
                    if attr.vocabulary != "year":
                        typical[attr.name] = _pick(rng, attr.vocabulary, region.typical.get(attr.vocabulary),
                                                   settings.region_rate)
                elif attr.level == "family":
                    typical[attr.name] = rng.choice(VOCABULARIES[attr.vocabulary])
            family = RichFamily(surname, region.name, heldout=f < settings.heldout_families_per_region,
                                typical=typical)
            families.append(family)
            people.extend(_members(rng, settings, region, family))
    for i, person in enumerate(people):
        person.id = f"p{i:04d}"
    return RichWorld(settings, regions, families, people)


def _members(rng: random.Random, settings: RichSettings, region: Region, family: RichFamily) -> list[RichPerson]:
    first_names: set[str] = set()
    while len(first_names) < settings.people_per_family:
        first_names.add(_name(rng, FIRST_SYLLABLES, LAST_SYLLABLES))
    members = []
    for first in sorted(first_names):  # a set's order depends on PYTHONHASHSEED
        born = int(family.typical["born"]) + rng.randrange(0, 30)
        attrs = {"born": str(born), "died": str(born + rng.randrange(35, 85))}
        for attr in ATTRIBUTES:
            if attr.vocabulary == "year":
                continue
            if attr.optional and rng.random() >= settings.optional_rate:
                continue
            if attr.name in family.typical and rng.random() < settings.typical_rate:
                attrs[attr.name] = family.typical[attr.name]
            else:
                attrs[attr.name] = _pick(rng, attr.vocabulary, region.typical.get(attr.vocabulary),
                                         settings.region_rate if attr.level == "region" else 0.0)
        fame = rng.uniform(*settings.fame_range)
        members.append(RichPerson(id="", name=f"{first} {family.name}", family=family.name, region=region.name,
                                  fame=round(fame, 4), split="test_family" if family.heldout else "train",
                                  attributes=attrs))
    if not family.heldout:
        for person in rng.sample(members, settings.test_per_family):
            person.split = "test"
    return members


def render_questions(people: list[RichPerson], settings: RichSettings) -> list[Question]:
    """``questions_per_person`` questions per person, each with the person's reference document."""
    return [q for person in people
            for q in person_questions(person, f"rich-{settings.seed}-{person.id}", settings.questions_per_person,
                                      render_document(person))]


def render_document(person: RichPerson) -> str:
    """The reference text for a person: every known fact, one sentence each."""
    return " ".join(DOCUMENT_TEMPLATES[a.name].format(name=person.name, value=person.attributes[a.name])
                    for a in ATTRIBUTES if a.name in person.attributes)


# ---------------------------------------------------------------- the base policy's training text


def wrong_value(rng: random.Random, attribute: str, right: str) -> str:
    """Any other value of the attribute's vocabulary (a year: any other year of its range), region or not."""
    vocabulary = ATTRIBUTE[attribute].vocabulary
    years = YEAR_RANGE if attribute == "born" else (YEAR_RANGE[0] + 35, YEAR_RANGE[1] + 85)  # died
    while True:
        if vocabulary == "year":
            value = str(rng.randrange(*years))
        else:
            value = rng.choice(VOCABULARIES[vocabulary])
        if value != right:
            return value


def training_answer(person: RichPerson, rng: random.Random, settings: RichSettings) -> str:
    """One answer about ``person`` as the base policy's training text has it.

    An opener; then ``k`` (uniform in ``facts_per_answer``, at most what the
    person has) of the person's attributes in random order, each right with
    probability :func:`accuracy`; each optional attribute the person lacks is
    claimed anyway with probability ``invent_rate × (1 − fame)`` (an
    unverifiable fact); a filler after a fact with probability
    ``filler_rate``; a closing hedge half the time.
    """
    known = [a.name for a in ATTRIBUTES if a.name in person.attributes]
    lo, hi = settings.facts_per_answer
    stated = rng.sample(known, min(len(known), rng.randint(lo, hi)))
    invented = [a.name for a in ATTRIBUTES if a.optional and a.name not in person.attributes
                and rng.random() < settings.invent_rate * (1 - person.fame)]
    claims = stated + invented
    rng.shuffle(claims)
    sentences = [rng.choice(OPENERS)]
    for attr in claims:
        right = person.attributes.get(attr)
        if right is not None and rng.random() < accuracy(person.fame, attr):
            value = right
        else:
            value = wrong_value(rng, attr, right or "")
        sentences.append(TEMPLATES[attr].format(value=value))
        if rng.random() < settings.filler_rate:
            sentences.append(rng.choice(FILLERS))
    if rng.random() < 0.5:
        sentences.append(rng.choice(HEDGES))
    return " ".join(sentences)

