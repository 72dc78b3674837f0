"""build_maskdpo_dataset: pair files → XTuner preference items, counts, errors, collate and packing."""

import json

import pytest

from maskdpo.jsonl import RecordError
from maskdpo.xtuner.dataset import (
    BuildReport,
    build_maskdpo_dataset,
    encode_training_items,
    maskdpo_collate_fn,
    read_pairs,
)

# (question, chosen sentences, chosen types, rejected sentences, rejected types)
FACTS = [
    ("Who was Ada Lovelace?",
     ["Ada Lovelace was born in London in 1815.", "She worked with Charles Babbage on the Analytical Engine."],
     ["no_hallucination", "no_hallucination"],
     ["Ada Lovelace was born in Paris in 1820.", "She worked with Charles Babbage on the Analytical Engine."],
     ["hallucination", "no_hallucination"]),
    ("Who was Marie Curie?",
     ["Marie Curie won two Nobel Prizes.", "She was born in Warsaw in 1900."],
     ["no_hallucination", "hallucination"],
     ["Marie Curie won three Nobel Prizes.", "She was born in Warsaw in 1867."],
     ["hallucination", "no_hallucination"]),
    ("How tall is the Eiffel Tower?",
     ["The Eiffel Tower is 330 m tall!", "It is in Paris."], ["no_hallucination", "no_hallucination"],
     ["The Eiffel Tower is 500 m tall!", "It is in Paris."], ["hallucination", "no_hallucination"]),
    ("Where does Dr. Smith live?",
     ["Dr. Smith lives at 3.5 Baker St.", "He works for the U.S. government."], ["no_hallucination", "hallucination"],
     ["Dr. Smith lives in Rome.", "He works for the U.S. government."], ["hallucination", "no_hallucination"]),
]


def _side(sents, types, with_spans=True):
    text = " ".join(sents)
    spans, pos = [], 0
    for s in sents:
        start = text.index(s, pos)
        spans.append([start, start + len(s)])
        pos = start + len(s)
    item = {"sents": list(sents), "type": list(types)}  # copies: tests edit records, never FACTS
    if with_spans:
        item["spans"] = spans
    return text, item


def pair_records(authors_format=False, facts=FACTS):
    records = []
    for k, (question, cs, ct, rs, rt) in enumerate(facts):
        chosen, chosen_item = _side(cs, ct, not authors_format)
        rejected, rejected_item = _side(rs, rt, not authors_format)
        record = {"prompt": [{"role": "user", "content": question}],
                  "chosen": [{"role": "assistant", "content": chosen}],
                  "rejected": [{"role": "assistant", "content": rejected}],
                  "chosen_item": chosen_item, "rejected_item": rejected_item}
        if not authors_format:
            record = {"id": f"pair-{k}", **record}
        records.append(record)
    return records


def write_pairs(path, authors_format=False, records=None):
    """A small pair file for the tiny Llama (our format, or the authors' without ids and spans)."""
    records = pair_records(authors_format) if records is None else records
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_items_have_xtuner_keys_and_mask_in_the_labels(tmp_path, tokenizer):
    path = write_pairs(tmp_path / "pairs.jsonl")
    both = build_maskdpo_dataset(str(path), tokenizer, max_length=512, mask="both")
    none = build_maskdpo_dataset(str(path), tokenizer, max_length=512, mask="none")
    assert len(both) == len(none) == 4
    item, plain = both[0], none[0]
    assert set(item) == {"chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels", "pair_id", "pair_digest"}
    assert item["pair_id"] == "pair-0"
    assert item["chosen_ids"] == plain["chosen_ids"]
    # Pair 0: chosen all correct → same labels as vanilla DPO; rejected's correct sentence masked.
    assert item["chosen_labels"] == plain["chosen_labels"]
    kept = lambda labels: sum(x != -100 for x in labels)  # noqa: E731
    assert kept(item["rejected_labels"]) < kept(plain["rejected_labels"])
    assert item["pair_digest"] != plain["pair_digest"]  # the digest sees the mask
    masked_text = tokenizer.decode([i for i, l in zip(item["rejected_ids"], item["rejected_labels"]) if l != -100])
    assert "Paris in 1820" in masked_text and "Babbage" not in masked_text


def test_authors_format_without_ids_or_spans(tmp_path, tokenizer):
    ours = build_maskdpo_dataset(str(write_pairs(tmp_path / "ours.jsonl")), tokenizer, max_length=512)
    authors = build_maskdpo_dataset(str(write_pairs(tmp_path / "authors.jsonl", authors_format=True)), tokenizer,
                                    max_length=512)
    assert [a["chosen_labels"] for a in authors] == [o["chosen_labels"] for o in ours]
    assert [a["rejected_labels"] for a in authors] == [o["rejected_labels"] for o in ours]
    assert all(a["pair_id"].startswith("sha1:") for a in authors)
    assert len({a["pair_id"] for a in authors}) == 4


def test_counts_kept_truncated_rejected(tmp_path, tokenizer):
    records = pair_records()
    # A pair whose chosen is all hallucinated and rejected all correct: nothing left to learn from.
    records[3]["chosen_item"]["type"] = ["hallucination", "hallucination"]
    records[3]["rejected_item"]["type"] = ["no_hallucination", "no_hallucination"]
    pairs = read_pairs(str(write_pairs(tmp_path / "p.jsonl", records=records)))
    with pytest.raises(ValueError, match=r"p\.jsonl:4: pair 'pair-3': no chosen sentence is kept by the loss"):
        encode_training_items(pairs, tokenizer, max_length=40, mask="both")
    report = BuildReport()
    items = encode_training_items(pairs, tokenizer, max_length=40, mask="both", skip_invalid=True, report=report)
    assert report.read == 4 and report.kept == 3 and len(items) == 3
    assert report.truncated == 3  # every pair is longer than 40 tokens
    assert report.rejected == {"unusable pair": 1}
    assert "p.jsonl:4" in report.summary() and "carries no signal" in report.summary()
    dropped = BuildReport()
    assert encode_training_items(pairs, tokenizer, max_length=40, drop_truncated=True, report=dropped) == []
    assert dropped.rejected == {"longer than max_length 40": 4}  # checked before the signal rule


def test_bad_records_name_file_line_and_field(tmp_path, tokenizer):
    records = pair_records()
    del records[1]["chosen_item"]["type"]
    path = write_pairs(tmp_path / "bad.jsonl", records=records)
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'chosen_item\.type': missing"):
        build_maskdpo_dataset(str(path), tokenizer, max_length=512)
    report = BuildReport()
    pairs = read_pairs(str(path), skip_invalid=True, report=report)
    assert len(pairs) == 3 and report.rejected["invalid record"] == 1


def test_unlocatable_sentence_is_an_error_naming_the_pair(tmp_path, tokenizer):
    records = pair_records(authors_format=True)
    records[2]["rejected_item"]["sents"][0] = "A sentence that is not in the response."
    path = write_pairs(tmp_path / "authors.jsonl", records=records)
    with pytest.raises(ValueError, match=r"authors\.jsonl:3: pair 'sha1:"):
        build_maskdpo_dataset(str(path), tokenizer, max_length=512)
    report = BuildReport()
    items = encode_training_items(read_pairs(str(path)), tokenizer, max_length=512, skip_invalid=True,
                                  report=report)
    assert len(items) == 3 and report.rejected["invalid pair"] == 1


def test_duplicate_ids_and_bad_mask_mode_are_errors(tmp_path, tokenizer):
    records = pair_records()
    records[2]["id"] = "pair-0"
    with pytest.raises(ValueError, match="pair id 'pair-0' repeats"):
        build_maskdpo_dataset(str(write_pairs(tmp_path / "dup.jsonl", records=records)), tokenizer, max_length=512)
    with pytest.raises(ValueError, match="mask must be one of"):
        build_maskdpo_dataset(str(write_pairs(tmp_path / "ok.jsonl")), tokenizer, max_length=512, mask="sentences")


def test_collate_carries_pair_ids_in_row_order(tmp_path, tokenizer):
    ds = build_maskdpo_dataset(str(write_pairs(tmp_path / "p.jsonl")), tokenizer, max_length=512)
    batch = maskdpo_collate_fn([ds[2], ds[0]])
    data, samples = batch["data"], batch["data_samples"]
    assert data["input_ids"].shape[0] == 4  # [chosen2, rejected2, chosen0, rejected0]
    assert data["labels"][0, : len(ds[2]["chosen_labels"])].tolist() == ds[2]["chosen_labels"]
    assert samples["pair_ids"] == ["pair-2", "pair-0"]
    assert samples["pair_digests"] == [ds[2]["pair_digest"], ds[0]["pair_digest"]]


def test_packed_rows_keep_xtuner_layout_and_carry_pair_ids(tmp_path, tokenizer):
    ds = build_maskdpo_dataset(str(write_pairs(tmp_path / "p.jsonl")), tokenizer, max_length=512,
                               use_varlen_attn=True, max_packed_length=10_000, shuffle_before_pack=False)
    assert len(ds) == 1
    row = ds[0]
    assert row["pair_ids"] == ["pair-0", "pair-1", "pair-2", "pair-3"]
    assert len(row["cumulative_len"]) == 9 and row["cumulative_len"][-1] == len(row["input_ids"])
    batch = maskdpo_collate_fn([row], use_varlen_attn=True)
    assert batch["data_samples"]["pair_ids"] == row["pair_ids"]
    assert batch["data"]["labels"].shape == (1, len(row["input_ids"]))


def test_all_correct_chosen_and_all_hallucinated_rejected_is_plain_dpo(tmp_path, tokenizer):
    records = pair_records()
    for r in records:
        r["chosen_item"]["type"] = ["no_hallucination"] * len(r["chosen_item"]["type"])
        r["rejected_item"]["type"] = ["hallucination"] * len(r["rejected_item"]["type"])
    path = str(write_pairs(tmp_path / "p.jsonl", records=records))
    both = build_maskdpo_dataset(path, tokenizer, max_length=512, mask="both")
    none = build_maskdpo_dataset(path, tokenizer, max_length=512, mask="none")
    assert [b["chosen_labels"] for b in both] == [n["chosen_labels"] for n in none]
    assert [b["rejected_labels"] for b in both] == [n["rejected_labels"] for n in none]
