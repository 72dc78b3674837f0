import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskdpo.sentences import SPLITTER_RULES, SentenceNotFound, locate_sentences, split_sentences

# The rule-by-rule tests below are the "maskdpo" rules; the "anah-v2" rules are tested in test_sentences_anah_v2.py.


def sents(text, language="en"):
    return [text[a:b] for a, b in split_sentences(text, language, rules="maskdpo")]


@pytest.mark.parametrize("text, expected", [
    # ends: . ! ? ; followed by whitespace
    ("It rained. We stayed in! Did you? Yes; we did.", ["It rained.", "We stayed in!", "Did you?", "Yes;", "we did."]),
    # titles and abbreviations
    ("Dr. Smith met Mr. Jones and Mrs. Lee. They talked.", ["Dr. Smith met Mr. Jones and Mrs. Lee.", "They talked."]),
    ("It works, e.g. here, i.e. now. Done.", ["It works, e.g. here, i.e. now.", "Done."]),
    ("He moved to the U.S. in May. Then he left.", ["He moved to the U.S. in May.", "Then he left."]),
    ("Smith et al. showed it. Really.", ["Smith et al. showed it.", "Really."]),
    # initials
    ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
    # decimals and numbers
    ("The tower is 330.5 m tall. It is 3.14 times wider.", ["The tower is 330.5 m tall.", "It is 3.14 times wider."]),
    ("She was born in 1815. She died in 1852.", ["She was born in 1815.", "She died in 1852."]),
    # numbered and lettered list markers, newlines
    ("Steps:\n1. Boil water.\n2. Add tea.\n10. Wait.", ["Steps:", "1. Boil water.", "2. Add tea.", "10. Wait."]),
    ("a. First point\nb. Second point", ["a. First point", "b. Second point"]),
    # blank lines and surrounding whitespace
    ("  First paragraph.\n\n\nSecond one  \n", ["First paragraph.", "Second one"]),
    # closing quotes and repeated marks stay with the sentence
    ('He said "yes." Then he left... Really?! OK', ['He said "yes."', "Then he left...", "Really?!", "OK"]),
    # etc.: an end before a capital, not before a lower-case word
    ("Cats, dogs, etc. are pets. Apples, pears, etc. The end.",
     ["Cats, dogs, etc. are pets.", "Apples, pears, etc.", "The end."]),
    # no whitespace after the mark: not an end
    ("See example.com for more.", ["See example.com for more."]),
    ("", []),
    ("   \n\n ", []),
])
def test_english_rules(text, expected):
    assert sents(text) == expected


def test_chinese_rules():
    text = "北京是中国的首都。上海是最大的城市！你知道吗？是的；我知道。"
    assert sents(text, "zh") == ["北京是中国的首都。", "上海是最大的城市！", "你知道吗？", "是的；", "我知道。"]
    # Chinese marks end a sentence even in English mode; closing quotes stay.
    assert sents("他说：“好。”然后走了。") == ["他说：“好。”", "然后走了。"]
    # zh: ASCII ! ? ; end a sentence without a following space; a decimal point does not.
    assert sents("很好!下一句。圆周率约为3.14。", "zh") == ["很好!", "下一句。", "圆周率约为3.14。"]
    assert sents("很好!下一句。", "en") == ["很好!下一句。"]


def test_spans_index_the_original_text():
    text = "  Mr. Who?\tYes.\n\n2. Item"
    assert split_sentences(text, rules="maskdpo") == [(2, 10), (11, 15), (17, 24)]
    assert split_sentences(text) == [(2, 5), (6, 10), (11, 15), (17, 24)]  # anah-v2: "Mr." ends a sentence


def test_unknown_language_and_rules():
    with pytest.raises(ValueError, match="language"):
        split_sentences("x", "fr")
    with pytest.raises(ValueError, match="splitter rules must be one of anah-v2, maskdpo, got 'nltk'"):
        split_sentences("x", "en", rules="nltk")


def test_default_rules_are_anah_v2():
    assert SPLITTER_RULES == ("anah-v2", "maskdpo")
    text = "Mr. Smith arrived. Facts:\n1. One."
    assert split_sentences(text) == split_sentences(text, rules="anah-v2") != split_sentences(text, rules="maskdpo")


pieces = st.sampled_from(["Dr.", "Mr.", "e.g.", "U.S.", "3.5", "1.", "a.", "J.", "etc.", "word", "The", "是", "。",
                          "！", "？", "；", ".", "!", "?", ";", '"', "”", "(", ")", " ", "  ", "\n", "\n\n", "\t",
                          "1815", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=40).map("".join), st.sampled_from(["en", "zh"]), st.sampled_from(SPLITTER_RULES))
def test_spans_ordered_disjoint_trimmed_and_covering(text, language, rules):
    spans = split_sentences(text, language, rules)
    covered = set()
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        covered.update(range(start, end))
        previous_end = end
    assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


@settings(max_examples=200, deadline=None)
@given(st.lists(pieces, max_size=40).map("".join), st.sampled_from(SPLITTER_RULES))
def test_locate_recovers_split_spans(text, rules):
    spans = split_sentences(text, rules=rules)
    assert locate_sentences(text, [text[a:b] for a, b in spans]) == spans


def test_locate_sequential_and_repeated():
    text = "Yes. No. Yes."
    assert locate_sentences(text, ["Yes.", "No.", "Yes."]) == [(0, 4), (5, 8), (9, 13)]
    assert locate_sentences(text, [" Yes. ", "Yes."]) == [(0, 4), (9, 13)]


def test_locate_errors_name_the_sentence():
    with pytest.raises(SentenceNotFound, match=r"sentence 1 'Maybe\.' is not in the response"):
        locate_sentences("Yes. No.", ["Yes.", "Maybe."])
    with pytest.raises(SentenceNotFound, match="must be in order"):
        locate_sentences("Yes. No.", ["No.", "Yes."])
    with pytest.raises(SentenceNotFound, match="sentence 0 is empty"):
        locate_sentences("Yes.", ["  "])
