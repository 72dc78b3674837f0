"""Sentence splitting with exact character spans (English and Chinese).

Every splitter here returns a list of ``(start, end)`` character offsets into
the original text, never rewritten text, so a sentence can be mapped to tokens
exactly later (``maskdpo.masking``). Two rule sets (``SPLITTER_RULES``):

``"anah-v2"`` (the default) gives the sentences of the ANAH-v2 judge's
official splitter (``eval/anah_v2/utils.py::sentence_tokenize`` of
open-compass/ANAH with ``keep_end=False``) — the sentences the judge was
trained and evaluated on. That function rewrites the text (it deletes some
spaces so that they cannot end a sentence, then re-inserts spacing); this
module reproduces which whitespace it deletes, tracking where each character
came from, and returns the spans of the untouched text. A span's non-whitespace
characters equal the official sentence's (property-tested against a separate
rewrite-then-split construction). The rules, as observed in that splitter:

- English: a sentence ends after ``.`` ``!`` ``?`` ``;`` followed by
  whitespace, and at every newline. Before splitting, the whitespace after
  these does not count: an initial followed by a letter (``J. K. Rowling``,
  ``U.S. Army``, but also ``vitamin C. It``), a number with a dot after a
  newline, after ``". "`` or at the text start (``1. Boil``), a fixed list of
  abbreviations (:data:`ANAH_V2_ABBREVIATIONS`; ``Mr.``, ``Mrs.``, ``Prof.``,
  ``e.g.``, ``i.e.``, ``vs.``, ``Inc.`` are *not* in it, so they end a
  sentence), ``et al.`` before a lower-case letter, two fixed case names, and
  any whitespace after a colon (``facts:\n1. X`` is one sentence). Closing
  quotes are not special (``"yes." Then`` does not split: no space follows the
  dot). Chinese punctuation does not split English text.
- Chinese: a sentence ends after ``。`` ``！`` ``？`` ``；`` (a closing quote
  after them starts the next sentence) and at every newline; whitespace after
  a colon does not count. ASCII punctuation never splits Chinese text.

``"maskdpo"`` is the project's earlier splitter (kept for comparison and for
general-purpose judges):

- a sentence ends at ``.``, ``!``, ``?`` or ``;`` followed by whitespace or the
  end of the text (closing quotes and brackets right after the mark, and runs
  like ``?!`` or ``...``, stay with the sentence);
- a newline always ends a sentence (so list items and paragraphs are sentences);
- Chinese ``。！？；`` end a sentence with or without whitespace after them;
  with ``language="zh"`` the ASCII ``!?;`` do too (Chinese text often uses
  them without a space); ``.`` never does without whitespace (decimals);
- a ``.`` does not end a sentence after a known abbreviation or title
  (``Dr.``, ``Mr.``, ``e.g.``, ``U.S.``, ``et al.``), an initial (``J. R. R.``),
  a numbered or lettered list marker at the start of a line (``1.``, ``a.``),
  or ``etc.`` followed by a lower-case word; decimals (``3.5``) are never
  split because no whitespace follows the dot.

Invariants of both (property-tested): spans are ordered, disjoint, never begin
or end with whitespace, and together cover every non-whitespace character.
"""

from __future__ import annotations

import re

LANGUAGES = ("en", "zh")

ASCII_ENDS = ".!?;"
ZH_ENDS = "。！？；"
# Closing marks that belong to the sentence they follow: `He said "yes."` ends after the quote.
CLOSERS = "\"')]}”’」』）》"
OPENERS = "\"'([{“‘「『（《"

# Lower-case, without the final dot. Titles, Latin abbreviations, common short forms.
ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof sr jr st mt rev hon gov gen col lt sgt capt cmdr adm maj sen rep pres
    vs no nos fig figs vol vols ch sec pp ed eds approx dept est inc ltd co corp bros
    jan feb mar apr jun jul aug sep sept oct nov dec
    al cf ca viz e.g i.e a.m p.m u.s u.k u.n ph.d b.a m.a b.sc m.sc d.c
""".split())

_DOTTED_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # U.S, e.g, a.m
_LIST_MARKER = re.compile(r"^(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})$")  # 1. / a. / iv.


def _word_before(text: str, dot: int) -> tuple[str, int]:
    """The run of non-whitespace characters ending just before ``text[dot]``, without leading openers."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while start < dot and text[start] in OPENERS:
        start += 1
    return text[start:dot], start


def _at_line_start(text: str, pos: int) -> bool:
    i = pos - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] == "\n"


def _next_visible(text: str, pos: int) -> str:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return text[pos] if pos < len(text) else ""


def _dot_is_not_an_end(text: str, dot: int, after: int) -> bool:
    """True when the ``.`` at ``dot`` belongs to an abbreviation, initial or list marker."""
    word, start = _word_before(text, dot)
    if not word:
        return False
    low = word.lower()
    if low in ABBREVIATIONS or _DOTTED_ACRONYM.match(word):
        return True
    if len(word) == 1 and word.isupper():  # an initial: J. R. R. Tolkien
        return True
    if _LIST_MARKER.match(word) and _at_line_start(text, start):
        return True
    if low == "etc":  # "etc." ends a sentence unless the text carries on in lower case
        nxt = _next_visible(text, after)
        return bool(nxt) and nxt.islower()
    return False


def _segments(text: str, language: str) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` pieces that partition ``text``, cut at sentence ends."""
    cuts: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "\n":
            cuts.append(i + 1)
            i += 1
            continue
        if ch in ZH_ENDS or ch in ASCII_ENDS:
            j = i + 1
            while j < n and (text[j] in ASCII_ENDS or text[j] in ZH_ENDS):  # ?!  ...  。。
                j += 1
            while j < n and text[j] in CLOSERS:
                j += 1
            if ch in ZH_ENDS or text[j - 1] in ZH_ENDS:
                ends = True
            elif j == n or text[j].isspace():
                ends = not (ch == "." and j == i + 1 and _dot_is_not_an_end(text, i, j))
            else:
                ends = language == "zh" and ch in "!?;"
            if ends:
                cuts.append(j)
            i = j
            continue
        i += 1
    bounds = [0] + [c for c in cuts if c < n] + [n]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _split_maskdpo(text: str, language: str) -> list[tuple[int, int]]:
    """The project's earlier rules (module docstring)."""
    spans = []
    for a, b in _segments(text, language):
        s, e = _strip_span(text, a, b)
        if s < e:
            spans.append((s, e))
    return spans


# ---------------------------------------------------------------- the ANAH-v2 rules

# Abbreviations after which "." + whitespace does not end a sentence in the official ANAH-v2 splitter
# (case-sensitive, preceded by a non-word character or the text start). This is the splitter's behaviour,
# written down as data: other common ones (Mr., Mrs., Prof., e.g., i.e., vs., Inc.) do end a sentence there.
ANAH_V2_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec",
                         "No", "Op", "D", "Dr", "St")
# "<first> v. <second>": two court cases whose single space the official splitter protects.
ANAH_V2_CASE_NAMES = (("Alexander", "Holmes"), ("Brown", "Board"))


def _abbreviation_rule() -> str:
    names = "|".join(re.escape(a) for a in sorted(ANAH_V2_ABBREVIATIONS, key=len, reverse=True))
    return rf"(?:\W|^)(?:{names})\.(?P<gap>\s+)"


# The official English pass, in order. Each rule is a regular expression run over the text as the previous
# rules left it, matches taken left to right without overlap (as a substitution does). In a match, the
# whitespace of a group named ``gap*`` is deleted (so it can no longer end a sentence), a group ``mark``
# becomes "." and a group ``run`` becomes a single space.
_ANAH_V2_EN_RULES = [re.compile(p) for p in (
    r"O\.S\.B\.M(?P<mark>.)(?P<gap> )",                               # a religious order's initials
    r"(?:\W|^)[A-Z]\.(?P<gap1> ?)[A-Z]\.(?P<gap2> ?)[A-Za-z]",         # two initials then a letter: J. K. Rowling
    r"(?:\W|^)[A-Z]\.(?P<gap> ?)[A-Za-z]",                            # an initial then a letter: J. Campbell
    r"(?:\n\s*|\. )\d+\.(?P<gap>\s+)",                                # a list number after a line break or ". "
    r"^\d+\.(?P<gap>\s+)",                                            # a list number opening the text
    _abbreviation_rule(),
    r"(?:\W|^)et al\.(?P<gap>\s+)[a-z]",
    *(rf"{first} v\.(?P<gap> ){second}" for first, second in ANAH_V2_CASE_NAMES),
    r"[:：](?P<run>\s+)",                                               # whitespace after a colon: one space
)]
_ANAH_V2_ZH_RULES = [re.compile(r"[:：](?P<gap>\s+)")]                 # whitespace after a colon: removed
_ANAH_V2_EN_ENDS = ".!?;"  # followed by whitespace
_ANAH_V2_ZH_ENDS = "。！？；"  # followed by anything


def _rewrite(text: str, rules: list[re.Pattern]) -> tuple[str, list[int]]:
    """Apply ``rules`` in order; the rewritten text and, per character, its index in ``text``."""
    chars, origin = list(text), list(range(len(text)))
    for rule in rules:
        matches = list(rule.finditer("".join(chars)))
        if not matches:
            continue
        drop: set[int] = set()
        for m in matches:
            for name, value in m.groupdict().items():
                if not value:
                    continue
                start, end = m.span(name)
                if name == "mark":
                    chars[start] = "."
                elif name == "run":
                    chars[start] = " "
                    drop.update(range(start + 1, end))
                else:
                    drop.update(range(start, end))
        keep = [i for i in range(len(chars)) if i not in drop]
        chars, origin = [chars[i] for i in keep], [origin[i] for i in keep]
    return "".join(chars), origin


def _split_anah_v2(text: str, language: str) -> list[tuple[int, int]]:
    """Rewrite as the official splitter does, cut the rewritten text, and map each sentence back to ``text``."""
    rewritten, origin = _rewrite(text, _ANAH_V2_ZH_RULES if language == "zh" else _ANAH_V2_EN_RULES)
    cuts = []  # a sentence ends just before each cut (in rewritten coordinates)
    n = len(rewritten)
    for i, ch in enumerate(rewritten):
        if ch == "\n":
            cuts.append(i)
        elif language == "zh":
            if ch in _ANAH_V2_ZH_ENDS:
                cuts.append(i + 1)
        elif ch in _ANAH_V2_EN_ENDS and i + 1 < n and rewritten[i + 1].isspace():
            cuts.append(i + 1)
    spans = []
    bounds = [0, *cuts, n]
    for a, b in zip(bounds, bounds[1:]):
        if a < b:
            # Back to the original text; deleted whitespace inside the sentence comes back with it.
            s, e = _strip_span(text, origin[a], origin[b - 1] + 1)
            if s < e:
                spans.append((s, e))
    return spans


SPLITTER_RULES = ("anah-v2", "maskdpo")
_SPLITTERS = {"anah-v2": _split_anah_v2, "maskdpo": _split_maskdpo}


def check_splitter_rules(rules: str) -> str:
    """``rules`` if it names a rule set of :data:`SPLITTER_RULES`, else a ValueError listing them."""
    if rules not in SPLITTER_RULES:
        raise ValueError(f"splitter rules must be one of {', '.join(SPLITTER_RULES)}, got {rules!r}")
    return rules


def split_sentences(text: str, language: str = "en", rules: str = "anah-v2") -> list[tuple[int, int]]:
    """Sentence spans of ``text``: a list of ``(start, end)`` with ``text[start:end]`` one sentence.

    ``language`` is ``"en"`` or ``"zh"``; ``rules`` is one of
    :data:`SPLITTER_RULES` (see the module docstring for both).
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    return _SPLITTERS[check_splitter_rules(rules)](text, language)


def sentence_texts(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


class SentenceNotFound(ValueError):
    """A sentence of the authors' format does not occur (in order) in its response."""

    def __init__(self, index: int, sentence: str, message: str):
        super().__init__(message)
        self.index = index
        self.sentence = sentence


def locate_sentences(response: str, sents: list[str]) -> list[tuple[int, int]]:
    """Spans of ``sents`` in ``response``, searched in order (the authors' format has no offsets).

    Each sentence is searched from the end of the previous one, so repeated
    sentences map to successive occurrences. Surrounding whitespace of a
    sentence is ignored; a sentence that is empty or cannot be found raises
    :class:`SentenceNotFound` naming it.
    """
    spans = []
    pos = 0
    for i, sent in enumerate(sents):
        needle = sent.strip()
        if not needle:
            raise SentenceNotFound(i, sent, f"sentence {i} is empty")
        found = response.find(needle, pos)
        if found < 0:
            earlier = response.find(needle)
            where = (f"; it occurs only before the end of sentence {i - 1} (sentences must be in order)"
                     if earlier >= 0 else "")
            raise SentenceNotFound(i, sent, f"sentence {i} {_quote(sent)} is not in the response{where}")
        spans.append((found, found + len(needle)))
        pos = found + len(needle)
    return spans


def _quote(text: str, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
