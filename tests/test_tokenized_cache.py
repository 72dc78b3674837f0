"""The tokenized cache behind build_maskdpo_dataset: same items as the in-memory path, built once,
shared by mask modes, reopened without tokenizing, small to send to other ranks, errors with file:line."""

import json
import pickle

import pytest

from maskdpo.jsonl import RecordError
from maskdpo.masking import MASK_MODES
from maskdpo.xtuner import dataset as ds_module
from maskdpo.xtuner.dataset import (
    UNUSABLE,
    BuildReport,
    PackedPairDataset,
    TokenizedPairs,
    build_maskdpo_dataset,
    encode_training_items,
    line_index,
    prepare_tokenized,
    read_pairs,
)
from tests.test_xtuner_data import FACTS, pair_records, write_pairs


@pytest.fixture(autouse=True)
def _offline_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MASKDPO_TOKENIZED_CACHE", str(tmp_path / "tokenized"))


@pytest.fixture(scope="module", params=["tiny-llama", "smollm2"])
def tokenizer(request, tiny_llama_dir, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir if request.param == "tiny-llama" else smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def many_facts(n):
    """``n`` distinct pairs of 3-4 sentences with varied labels (some long enough to truncate)."""
    out = []
    for k in range(n):
        question, cs, ct, rs, rt = FACTS[k % len(FACTS)]
        extra = [f"Record {k} was checked in {1900 + k % 97}.", f"It has {k % 7} more notes."][: 1 + k % 2]
        kinds = ["no_hallucination", "hallucination"]
        out.append((f"{question} (case {k})", cs + extra, ct + ["no_hallucination"] * len(extra),
                    rs + extra, rt + [kinds[(k // 3) % 2]] * len(extra)))  # never inverted
    return out


def messy_records(authors_format):
    """A few hundred pairs plus what the builders must reject or count: a malformed line, a pair
    whose sentence is not in its response, a pair with no kept token."""
    records = pair_records(authors_format, facts=many_facts(240))
    records[7]["chosen_item"]["type"] = ["hallucination"] * len(records[7]["chosen_item"]["type"])
    records[7]["rejected_item"]["type"] = ["no_hallucination"] * len(records[7]["rejected_item"]["type"])
    # Not in its response: with spans the record reader refuses it, without, the alignment does.
    records[50]["rejected_item"]["sents"][0] = "A sentence that is not in the response."
    del records[120]["chosen_item"]["type"]
    return records


def write_messy(path, authors_format):
    lines = [json.dumps(r) for r in messy_records(authors_format)]
    lines.insert(30, "")  # a blank line: line numbers still count it
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def in_memory(path, tokenizer, max_length, mask, drop_truncated):
    """The builder as it was before the cache: read every pair, tokenize in one process, keep lists."""
    report = BuildReport()
    pairs = read_pairs(str(path), skip_invalid=True, report=report)
    items = encode_training_items(pairs, tokenizer, max_length, mask=mask, drop_truncated=drop_truncated,
                                  skip_invalid=True, report=report)
    return items, report


@pytest.mark.parametrize("authors_format", [False, True], ids=["ours", "authors"])
def test_same_items_and_counts_as_the_in_memory_builder_in_every_mask_mode(tmp_path, tokenizer, authors_format):
    path = write_messy(tmp_path / "pairs.jsonl", authors_format)
    items, _ = in_memory(path, tokenizer, 10_000, "none", False)
    lengths = sorted(max(len(i["chosen_ids"]), len(i["rejected_ids"])) for i in items)
    max_length = lengths[len(lengths) // 2]  # about half the pairs are truncated
    folders, reports = set(), {}
    for drop_truncated in (False, True):
        for mask in MASK_MODES:  # modes after the first reuse the stored ids
            old, old_report = in_memory(path, tokenizer, max_length, mask, drop_truncated)
            new = build_maskdpo_dataset(str(path), tokenizer, max_length=max_length, mask=mask,
                                        drop_truncated=drop_truncated, skip_invalid=True, num_proc=2)
            assert [new[i] for i in range(len(new))] == old
            assert new.report.summary() == old_report.summary()
            assert all(isinstance(x, int) for x in new[0]["chosen_ids"] + new[0]["rejected_labels"])
            folders.add(new.store.folder)
            reports[drop_truncated, mask] = old_report
    assert len(folders) == 1  # one tokenization: drop_truncated and mask choose rows and labels from it
    kept_all, dropped = reports[False, "both"], reports[True, "both"]
    assert kept_all.truncated > 20 and kept_all.kept > 200
    assert kept_all.rejected["invalid record"] == 1 + (not authors_format)
    assert kept_all.rejected["invalid pair"] == int(authors_format)
    assert kept_all.rejected[UNUSABLE] >= 1 and "no chosen sentence is kept" in kept_all.examples[UNUSABLE]
    assert dropped.rejected[f"longer than max_length {max_length}"] >= kept_all.truncated
    built = sorted(p.name for p in next(iter(folders)).iterdir())
    assert built == ["labels-chosen", "labels-none", "labels-rejected", "manifest.json", "pairs"]


def test_a_second_build_opens_the_cache_without_tokenizing(tmp_path, tiny_tokenizer, monkeypatch):
    path = write_pairs(tmp_path / "p.jsonl")
    first = build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(ds_module, "tokenize_rows", no_tokenizing)
    again = build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)
    assert [again[i] for i in range(4)] == [first[i] for i in range(4)]
    copy = tmp_path / "copy.jsonl"  # same content elsewhere: same cache, errors name the new path
    copy.write_bytes(path.read_bytes())
    assert build_maskdpo_dataset(str(copy), tiny_tokenizer, max_length=512).store.folder == first.store.folder
    with pytest.raises(AssertionError, match="tokenized again"):  # another max_length is another key
        build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=100)
    records = pair_records()
    records[0]["chosen_item"]["type"][1] = "hallucination"
    with pytest.raises(AssertionError, match="tokenized again"):  # other content is another key
        build_maskdpo_dataset(str(write_pairs(tmp_path / "p.jsonl", records=records)), tiny_tokenizer, max_length=512)


def test_another_rank_receives_a_few_hundred_bytes_and_opens_the_same_rows(tmp_path, tiny_tokenizer):
    path = write_pairs(tmp_path / "p.jsonl", records=pair_records(facts=many_facts(200)))
    dataset = build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512, mask="rejected")
    payload = pickle.dumps(dataset)
    assert len(payload) < 2000
    other = pickle.loads(payload)
    assert len(other) == len(dataset) == 200
    assert other[123] == dataset[123]
    packed = PackedPairDataset(dataset, max_packed_length=600, shuffle_before_pack=True)
    payload = pickle.dumps(packed)
    assert len(payload) < 2000
    other = pickle.loads(payload)
    assert len(other) == len(packed) > 1
    assert [other[i] for i in range(len(other))] == [packed[i] for i in range(len(packed))]
    assert sorted(pid for i in range(len(packed)) for pid in packed[i]["pair_ids"]) == \
        sorted(dataset[i]["pair_id"] for i in range(len(dataset)))
    assert max(packed.lengths) <= 600


def test_packing_without_shuffle_matches_xtuner(tmp_path, tiny_tokenizer):
    from xtuner.dataset.preference_dataset import PackedDatasetWrapper

    path = write_pairs(tmp_path / "p.jsonl", records=pair_records(facts=many_facts(40)))
    dataset = build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)
    ours = PackedPairDataset(dataset, max_packed_length=300, shuffle_before_pack=False)
    theirs = PackedDatasetWrapper([dataset[i] for i in range(len(dataset))], max_packed_length=300,
                                  shuffle_before_pack=False)
    assert len(ours) == len(theirs) > 1
    for i in range(len(ours)):
        row = ours[i]
        assert {k: row[k] for k in ("input_ids", "labels", "position_ids", "cumulative_len")} == theirs[i]
        assert row["pair_ids"] == [p["pair_id"] for p in theirs.data[i]]


def test_errors_name_file_line_and_field_from_the_cache_too(tmp_path, tiny_tokenizer, monkeypatch):
    path = write_messy(tmp_path / "bad.jsonl", authors_format=False)
    for attempt in ("built", "cached"):
        with pytest.raises(RecordError, match=r"bad\.jsonl:52: field 'rejected_item\.spans\[0\]': text 'A sentence"):
            build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)
        monkeypatch.setattr(ds_module, "tokenize_rows", None)  # the second attempt must not tokenize
    monkeypatch.undo()
    monkeypatch.setenv("MASKDPO_TOKENIZED_CACHE", str(tmp_path / "tokenized"))
    records = messy_records(authors_format=True)
    del records[120]
    path = write_pairs(tmp_path / "pairs.jsonl", records=records)
    with pytest.raises(ValueError, match=r"pairs\.jsonl:8: pair 'sha1:\w+': no chosen sentence is kept by the loss"):
        build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)  # the first problem in the file
    records[7] = pair_records(True, facts=many_facts(8))[7]
    path = write_pairs(tmp_path / "pairs.jsonl", records=records)
    with pytest.raises(ValueError, match=r"pairs\.jsonl:51: pair 'sha1:\w+': rejected_item\.sents\[0\]"):
        build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512)
    records = pair_records(facts=many_facts(10))
    records[3]["id"] = "pair-1"
    path = write_pairs(tmp_path / "dup.jsonl", records=records)
    with pytest.raises(ValueError, match=r"dup\.jsonl:4: pair id 'pair-1' repeats the pair at .*dup\.jsonl:2"):
        build_maskdpo_dataset(str(path), tiny_tokenizer, max_length=512, skip_invalid=True)


def test_a_killed_build_leaves_no_cache_and_the_next_one_completes(tmp_path, tiny_tokenizer, monkeypatch):
    path = write_pairs(tmp_path / "p.jsonl")
    real = ds_module.tokenize_rows

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ds_module, "tokenize_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_tokenized(str(path), tiny_tokenizer, 512)
    root = tmp_path / "tokenized"
    assert list(root.iterdir()) == []  # nothing that looks like a cache, not even the building folder
    monkeypatch.setattr(ds_module, "tokenize_rows", real)
    store = prepare_tokenized(str(path), tiny_tokenizer, 512)
    assert store.rows == 4 and [p.name for p in root.iterdir()] == [store.folder.name]  # the torn build is gone


def test_training_from_a_cache_folder_checks_tokenizer_and_max_length(tmp_path, tiny_tokenizer, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    path = write_pairs(tmp_path / "p.jsonl")
    store = prepare_tokenized(str(path), tiny_tokenizer, 512, "both")
    from_folder = build_maskdpo_dataset(str(store.folder), tiny_tokenizer, max_length=512, mask="none")
    assert len(from_folder) == 4 and "labels-none" in {p.name for p in store.folder.iterdir()}
    with pytest.raises(ValueError, match="tokenized with max_length 512, but the config says 256"):
        build_maskdpo_dataset(str(store.folder), tiny_tokenizer, max_length=256)
    with pytest.raises(ValueError, match="tokenized with tokenizer"):
        build_maskdpo_dataset(str(store.folder), AutoTokenizer.from_pretrained(smollm2_tokenizer_dir), max_length=512)
    assert TokenizedPairs.open(store.folder).modes() == ["both", "none"]


def test_line_index_counts_blank_lines_and_a_last_line_without_newline(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"b": 2}\r\n{"c": 3}')
    lines, offsets, lengths = line_index(path, block=5)  # blocks smaller than a line
    assert lines.tolist() == [1, 4, 5]
    data = path.read_bytes()
    assert [data[o:o + n] for o, n in zip(offsets, lengths)] == [b'{"a": 1}', b'{"b": 2}\r', b'{"c": 3}']


def test_tokenize_command_builds_ahead_and_says_what_it_holds(tmp_path, tiny_llama_dir, monkeypatch):
    from click.testing import CliRunner

    from maskdpo.cli import main

    path = write_pairs(tmp_path / "p.jsonl")
    args = ["tokenize", "--pairs", str(path), "--tokenizer", str(tiny_llama_dir), "--max-length", "512",
            "--mask", "both", "--mask", "none", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    folder = next((tmp_path / "cache").iterdir())
    assert f"tokenized cache: {folder}" in result.output
    assert "mask=both: 4 pairs read: 4 kept (0 of them truncated), 0 rejected" in result.output
    assert "mask=none: 4 pairs read: 4 kept" in result.output and f"MASKDPO_PAIRS={folder}" in result.output
    assert TokenizedPairs.open(folder).modes() == ["both", "none"]
    bad = write_pairs(tmp_path / "bad.jsonl", records=[{"prompt": "not a chat"}])
    result = CliRunner().invoke(main, args[:2] + [str(bad)] + args[3:])
    assert result.exit_code == 2 and "bad.jsonl:1: field" in result.output
    # Training with the config's settings opens it without tokenizing.
    monkeypatch.setattr(ds_module, "tokenize_rows", None)
    monkeypatch.setenv("MASKDPO_MODEL", str(tiny_llama_dir))
    monkeypatch.setenv("MASKDPO_PAIRS", str(path))
    monkeypatch.setenv("MASKDPO_TOKENIZED_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["tokenize", "--config", "xtuner_configs/maskdpo_tiny_cpu.py"])
    assert result.exit_code == 0, result.output
    assert f"tokenized cache: {folder}" in result.output and "max_length: 512" in result.output


def test_tokenize_command_refuses_a_slow_tokenizer_and_a_bad_config_in_one_line(tmp_path, tiny_llama_dir,
                                                                              monkeypatch):
    from click.testing import CliRunner
    from transformers import AutoTokenizer

    from maskdpo.cli import main

    path = write_pairs(tmp_path / "p.jsonl")
    class SlowTokenizer:  # what a tokenizer without an offset mapping looks like to the checks
        is_fast = False

    slow = SlowTokenizer()
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *args, **kwargs: slow)
    result = CliRunner().invoke(main, ["tokenize", "--pairs", str(path), "--tokenizer", str(tiny_llama_dir),
                                       "--max-length", "512", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert f"Error: {type(slow).__name__} is not a fast tokenizer" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "cache").exists()
    config = tmp_path / "not_maskdpo.py"
    config.write_text("train_dataloader = dict(dataset=dict(tokenizer=None, max_length=8))\n")
    result = CliRunner().invoke(main, ["tokenize", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"Error: {config}: train_dataloader.dataset has no 'data_files': is it build_maskdpo_dataset?" \
        in result.output


def _rank(rank, world, port, pairs, tokenizer_dir, cache, out):
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from maskdpo.xtuner import dataset as module

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if rank:
            module.tokenize_rows = None  # only rank 0 may tokenize
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        ds = module.build_maskdpo_dataset(pairs, tok, max_length=512, mask="chosen", cache_dir=cache,
                                          use_varlen_attn=True, max_packed_length=300)
        rows = [ds[i] for i in range(len(ds))]
        with open(f"{out}.{rank}", "w") as handle:
            json.dump({"rows": rows, "type": type(ds).__name__}, handle)
    finally:
        dist.destroy_process_group()


def test_other_ranks_open_rank_0s_cache_through_xtuners_broadcast(tmp_path, tiny_llama_dir):
    import socket

    import torch.multiprocessing as mp

    path = write_pairs(tmp_path / "p.jsonl", records=pair_records(facts=many_facts(30)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "rows"
    mp.spawn(_rank, args=(2, port, str(path), str(tiny_llama_dir), str(tmp_path / "cache"), str(out)), nprocs=2)
    rank0, rank1 = (json.loads(open(f"{out}.{r}").read()) for r in (0, 1))
    assert rank0["type"] == rank1["type"] == "PackedPairDataset"
    assert rank0["rows"] == rank1["rows"] and len(rank0["rows"]) > 1  # same packing, same items
    assert sorted(p for row in rank1["rows"] for p in row["pair_ids"]) == sorted(f"pair-{k}" for k in range(30))


def test_the_masking_codes_environment_switch_is_part_of_the_key(tmp_path, tiny_tokenizer, monkeypatch):
    from maskdpo.masking import FLIP_MASK_FOR_TESTS

    path = str(write_pairs(tmp_path / "p.jsonl"))
    plain = build_maskdpo_dataset(path, tiny_tokenizer, max_length=512)
    monkeypatch.setenv(FLIP_MASK_FOR_TESTS, "1")
    flipped = build_maskdpo_dataset(path, tiny_tokenizer, max_length=512, skip_invalid=True)
    assert flipped.store.folder != plain.store.folder  # never served the other's labels
    monkeypatch.delenv(FLIP_MASK_FOR_TESTS)
    assert build_maskdpo_dataset(path, tiny_tokenizer, max_length=512)[0] == plain[0]


def test_tokenize_refuses_an_empty_pair_file_before_tokenizing(tmp_path, tiny_llama_dir, monkeypatch):
    from click.testing import CliRunner

    from maskdpo.cli import main

    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    good = write_pairs(tmp_path / "p.jsonl")
    base = ["tokenize", "--tokenizer", str(tiny_llama_dir), "--max-length", "512", "--cache-dir", "cache"]
    result = CliRunner().invoke(main, base + ["--pairs", str(empty)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"Error: {empty}: no pair to read; pass --allow-empty to accept an empty input" in result.output
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # no folder that looks like a cache
    # One empty file among others is refused too, naming it, unless allowed.
    result = CliRunner().invoke(main, base + ["--pairs", str(good), "--pairs", str(empty)])
    assert result.exit_code == 2 and f"{empty}: no pair to read" in result.output, result.output
    allowed = CliRunner().invoke(main, base + ["--pairs", str(empty), "--allow-empty"])
    assert allowed.exit_code == 0 and "no cache written" in allowed.output, allowed.output
    assert not cache.exists() or list(cache.iterdir()) == []
    built = CliRunner().invoke(main, base + ["--pairs", str(good), "--pairs", str(empty), "--allow-empty"])
    assert built.exit_code == 0, built.output
    folder, = cache.iterdir()
    # The path printed is absolute although --cache-dir was relative: a cluster job can paste it anywhere.
    assert f"tokenized cache: {folder.absolute()}\n" in built.output and folder.absolute().is_absolute()
    assert f"MASKDPO_PAIRS={folder.absolute()} " in built.output
    assert "4 pairs read: 4 kept" in built.output
