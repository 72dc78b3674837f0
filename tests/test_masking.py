import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskdpo.masking import (IGNORE, AlignmentError, MaskedSequence, encode_pair, encode_pairs,
                             kept_and_masked_text, render_response, token_labels)
from maskdpo.records import Pair, PairItem

PROMPT = [{"role": "user", "content": "Tell me about Ada Lovelace."}]


@pytest.fixture(scope="module", params=["smollm2", "tiny"])
def tokenizer(request, smollm2_tokenizer_dir, tiny_llama_dir):
    from transformers import AutoTokenizer

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
    owner = {}  # rendered char -> sentence index
    spans = [(r.start + a - r.shift, r.start + b - r.shift) for a, b in item.spans]
    for c in range(r.start, r.end):
        i = 0
        while i < len(spans) - 1 and spans[i][1] <= c:
            i += 1
        owner[c] = i
    labels, prompt = [], 0
    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        chars = range(s, max(e, s + 1))
        if s < r.start:
            labels.append(IGNORE)
            prompt += 1
        elif any(c in owner and not keep[owner[c]] for c in chars):
            labels.append(IGNORE)
        else:
            labels.append(tid)
    return enc["input_ids"], labels, prompt, r, spans, keep


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
            if label == IGNORE or s >= r.end:
                continue
            # A kept token: each of its content characters is inside a kept sentence, or in the
            # whitespace before a kept sentence, or after the last (kept) sentence.
            for c in range(s, e):
                nxt = next((i for i, (a, b) in enumerate(spans) if c < b), len(spans) - 1)
                assert keep[nxt], (side, r.text[s:e])
        for (a, b), k in zip(spans, keep):
            if not k:  # no token touching a masked sentence is kept
                for label, (s, e) in zip(seq.labels, enc["offset_mapping"]):
                    if s < b and max(e, s + 1) > a:
                        assert label == IGNORE
        assert all(label == IGNORE for label in seq.labels[:seq.prompt_tokens])
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
        assert seq.labels[dot] == IGNORE


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
    # rendered "PPPP" + "Ab.Cd." ; sentences [4, 7) kept and [7, 10) masked; token (6, 8) straddles both
    ids = [1, 2, 3, 4, 5]
    offsets = [(0, 4), (4, 6), (6, 8), (8, 10), (10, 14)]
    labels, prompt = token_labels(ids, offsets, 4, 10, [7, 10], [True, False])
    assert labels == [IGNORE, 2, IGNORE, IGNORE, 5] and prompt == 1
    labels, _ = token_labels(ids, offsets, 4, 10, [7, 10], [False, True])
    assert labels == [IGNORE, IGNORE, IGNORE, 4, 5]


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
