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
