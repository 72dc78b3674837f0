import json

import pytest

from maskdpo.jsonl import RecordError
from maskdpo.prompt_sets import load_anah_questions, load_biography_prompts


def test_biography_entity_list(tmp_path):
    path = tmp_path / "prompt_entities.txt"
    path.write_text("Ada Lovelace\n\nMarie Curie\nAlan Turing\n", encoding="utf-8")
    qs = load_biography_prompts(path)
    assert [q.question for q in qs] == ["Tell me a bio of Ada Lovelace.", "Tell me a bio of Marie Curie.",
                                        "Tell me a bio of Alan Turing."]
    assert [q.topic for q in qs] == ["Ada Lovelace", "Marie Curie", "Alan Turing"]
    limited = load_biography_prompts(path, limit=2)
    assert [q.id for q in limited] == [q.id for q in qs[:2]]  # ids do not depend on --limit
    assert len({q.id for q in qs}) == 3


def test_biography_repeated_entity_names_the_line(tmp_path):
    path = tmp_path / "e.txt"
    path.write_text("Ada Lovelace\nAda Lovelace\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"e.txt:2: .*repeats line 1"):
        load_biography_prompts(path)


def write_jsonl(path, objs):
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")


def test_anah_layouts(tmp_path):
    path = tmp_path / "anah.jsonl"
    write_jsonl(path, [
        # ANAH-v2 eval layout (question_document.jsonl)
        {"question": "Who was Ada Lovelace?", "document": "Ada Lovelace was a mathematician.", "language": "en"},
        # opencompass/anah per-topic layout
        {"name": "Marie Curie", "documents": ["Marie Curie was a physicist.", "She was born in Warsaw."],
         "selected_questions": ["Where was Marie Curie born?", "What did Marie Curie study?"], "language": "en"},
        {"name": "长城", "documents": "长城是中国古代的军事防御工程。", "selected_quetsions": "长城有多长？", "language": "zh"},
        # our own question record
        {"format": "maskdpo/question@1", "id": "q7", "question": "Who was Alan Turing?", "topic": "Alan Turing"},
    ])
    qs = load_anah_questions(path)
    assert [q.question for q in qs] == ["Who was Ada Lovelace?", "Where was Marie Curie born?",
                                        "What did Marie Curie study?", "长城有多长？", "Who was Alan Turing?"]
    assert qs[1].topic == "Marie Curie" and qs[1].document == "Marie Curie was a physicist.\n\nShe was born in Warsaw."
    assert qs[3].language == "zh" and qs[3].topic == "长城"
    assert qs[0].document == "Ada Lovelace was a mathematician." and qs[4].id == "q7"
    assert [q.id for q in load_anah_questions(path, limit=2)] == [q.id for q in qs[:2]]

    as_json = tmp_path / "anah.json"
    as_json.write_text(json.dumps([{"question": "Who was Ada Lovelace?", "document": "d", "language": "en"}]))
    assert load_anah_questions(as_json)[0].id == qs[0].id


def test_anah_bad_records_name_file_line_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{"question": "ok?", "language": "en"}, {"question": "x", "language": "fr"}])
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'language'"):
        load_anah_questions(path)
    write_jsonl(path, [{"title": "no question here"}])
    with pytest.raises(RecordError, match=r"bad.jsonl:1: field 'question'"):
        load_anah_questions(path)
    write_jsonl(path, [{"name": "T", "documents": [1, 2], "selected_questions": ["q?"]}])
    with pytest.raises(RecordError, match=r"bad.jsonl:1: field 'documents'"):
        load_anah_questions(path)
    write_jsonl(path, [{"question": "same?"}, {"question": "same?"}])
    with pytest.raises(ValueError, match="repeats"):
        load_anah_questions(path)


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_anah_questions_from_a_dataset_folder_like_the_hub(tmp_path, offline):
    # A folder laid out like a Hub dataset repository (opencompass/anah's per-topic records, a test split).
    folder = tmp_path / "anah"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "test.jsonl", [
        {"name": "Marie Curie", "documents": ["Marie Curie was a physicist."],
         "selected_questions": ["Where was Marie Curie born?", "What did Marie Curie study?"], "language": "en"},
        {"name": "Alan Turing", "documents": ["Alan Turing was a mathematician."],
         "selected_questions": ["Where was Alan Turing born?"], "language": "en"},
    ])
    qs = load_anah_questions(folder)
    assert [q.question for q in qs] == ["Where was Marie Curie born?", "What did Marie Curie study?",
                                        "Where was Alan Turing born?"]
    assert qs[2].topic == "Alan Turing" and qs[0].document == "Marie Curie was a physicist."
    # The same records from a local file read by the project's reader give the same ids.
    write_jsonl(tmp_path / "anah.jsonl", [{"name": "Marie Curie", "documents": ["Marie Curie was a physicist."],
                                           "selected_questions": ["Where was Marie Curie born?"], "language": "en"}])
    assert load_anah_questions(tmp_path / "anah.jsonl")[0].id == qs[0].id
    assert len(load_anah_questions(folder, limit=2)) == 2
    with pytest.raises(ValueError, match=r"anah has splits|no split 'validation'"):
        load_anah_questions(folder, split="validation")


def test_anah_dataset_errors_name_the_row_and_field(tmp_path, offline):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"question": ["Who was Ada?", "Who was Bob?"], "language": ["en", "fr"]}), path)
    with pytest.raises(ValueError, match=r"questions\.parquet\[train\] row 1: field 'language': expected one of"):
        load_anah_questions(path)


def test_biography_entities_from_a_dataset(tmp_path, offline):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "entities.parquet"
    pq.write_table(pa.table({"topic": ["Ada Lovelace", "Marie Curie"], "n": [1, 2]}), path)
    qs = load_biography_prompts(path)
    assert [q.question for q in qs] == ["Tell me a bio of Ada Lovelace.", "Tell me a bio of Marie Curie."]
    text = tmp_path / "prompt_entities.txt"
    text.write_text("Ada Lovelace\nMarie Curie\n", encoding="utf-8")
    assert [q.id for q in load_biography_prompts(text)] == [q.id for q in qs]  # same ids either way
    with pytest.raises(ValueError, match=r"entities\.parquet\[train\] row 0: field 'person': missing"):
        load_biography_prompts(path, entity_field="person")
    pq.write_table(pa.table({"entity": ["Ada Lovelace", "Ada Lovelace"]}), path)
    with pytest.raises(ValueError, match=r"row 1: entity 'Ada Lovelace' repeats .*row 0"):
        load_biography_prompts(path)
    with pytest.raises(FileNotFoundError, match="no such entity list"):
        load_biography_prompts(tmp_path / "missing.txt")


def test_anah_dataset_folder_is_read_line_by_line(tmp_path):
    folder = tmp_path / "anah"
    folder.mkdir()
    good = {"question": "Who was Ada Lovelace?", "document": "d", "language": "en"}
    (folder / "test.jsonl").write_text(json.dumps(good) + "\n\n" + '{"question": "x", "language": "fr"}\n',
                                       encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{folder / 'test.jsonl'}:3: field 'language'"):
        load_anah_questions(folder)
    (folder / "test.jsonl").write_text(json.dumps(good) + "\n\n{oops\n", encoding="utf-8")
    with pytest.raises(RecordError, match=rf"{folder / 'test.jsonl'}:3: invalid JSON"):
        load_anah_questions(folder)
    (folder / "test.jsonl").write_text(json.dumps(good) + "\n\n", encoding="utf-8")
    assert [q.question for q in load_anah_questions(folder)] == ["Who was Ada Lovelace?"]
