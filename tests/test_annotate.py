"""ANAH-v2 annotation under our own protocol (``--prompts maskdpo``): every branch, turn batching, strict
parsing, and the resumable stage. The official protocol: ``tests/test_protocol_annotate.py``."""

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskdpo.annotate.anah_v2 import (PROMPTS_PATH, AnahV2Annotator, MissingDocument, PromptFileError,
                                      UnparseableAnswer, load_prompts, parse_answer)
from maskdpo.annotate.run import AnnotateSettings, run_annotation
from maskdpo.records import Annotation
from tests.doubles.anah_judge_double import ScriptedAnahJudgeDouble
from tests.helpers import ADA_ANSWER, CITIES_ANSWER, judged_samples
from tests.helpers import judged_questions as questions

SCRIPT = {
    "Hello there!": ["A greeting. <No Facts>"],
    "Ada Lovelace was born in 1815.": ["<Facts>", "Born 10 December 1815. <Reference Information>",
                                       "Supported. <No Hallucination>"],
    "She lived on Mars.": ["<Facts>", "She lived in London. <Reference Information>", "<Contradictory>"],
    "She wrote the first program.": ["<Facts>", "Notes on the Analytical Engine. <Reference Information>",
                                     "Not stated. <Unverifiable>"],
    "Her cat was named Bob.": ["<Facts>", "Nothing about pets. <No Reference Information>"],
    "She liked tea.": ["I am not sure what to say."],  # unparseable at turn 1
    "北京是中国的首都。": ["<有事实>", "北京是首都。<参考信息>", "<无幻觉>"],
    "上海在火星上。": ["<有事实>", "上海在中国。<参考信息>", "<矛盾>"],
    "你好！": ["问候语。<无事实>"],
}
EXPECTED_EN = ["nofact", "ok", "contradictory", "unverifiable", "unverifiable", "unverifiable"]
EXPECTED_ZH = ["ok", "contradictory", "nofact"]


def samples() -> list:
    return judged_samples(ADA_ANSWER, CITIES_ANSWER)


def test_every_branch_in_english_and_chinese():
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    annotator = AnahV2Annotator(backend=judge, prompts="maskdpo")
    en, zh = annotator.annotate(samples(), questions())
    assert [s.label for s in en.sentences] == EXPECTED_EN
    assert [s.label for s in zh.sentences] == EXPECTED_ZH
    assert [s.text for s in en.sentences] == list(SCRIPT)[:6]
    for ann in (en, zh):
        Annotation.from_dict(ann.to_dict())  # spans match the response
        for s in ann.sentences:
            assert s.raw["answers"] == SCRIPT[s.text][:len(s.raw["answers"])]
    assert en.sentences[-1].raw == {"answers": ["I am not sure what to say."], "unparseable": "facts"}
    assert annotator.stats["unparseable"] == 1 and annotator.stats["sentences"] == 9
    digest = hashlib.sha256(PROMPTS_PATH.read_bytes()).hexdigest()
    assert en.annotator == (f"anah-v2 protocol=maskdpo prompts=maskdpo prompts_version=maskdpo-anah-v2-prompts@2 "
                            f"prompts_sha256={digest} splitter=anah-v2 unparseable=unverifiable max_new_tokens=512 "
                            "judge=scripted-anah-judge-double")
    assert all(not d.do_sample and d.stop == () for d in judge.decodings)  # greedy judge


def test_each_turn_is_one_call_across_all_pending_sentences():
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    AnahV2Annotator(backend=judge, prompts="maskdpo").annotate(samples(), questions())
    # turn 1: all 9 sentences; turn 2: the 6 with facts; turn 3: the 5 with reference information
    assert [len(call) for call in judge.calls] == [9, 6, 5]
    turn3 = judge.calls[2][0].messages
    assert [m["role"] for m in turn3] == ["system", "user", "assistant", "user", "assistant", "user"]

    sequential = ScriptedAnahJudgeDouble(SCRIPT)
    anns = AnahV2Annotator(backend=sequential, turn_batching=False, prompts="maskdpo").annotate(samples(), questions())
    assert len(sequential.calls) == 9 + 6 + 5 and all(len(c) == 1 for c in sequential.calls)
    assert [s.label for s in anns[0].sentences] == EXPECTED_EN


def test_unparseable_rule_error_names_the_sample_and_turn():
    annotator = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="maskdpo", unparseable="error")
    with pytest.raises(UnparseableAnswer, match=r"sample \('ada', 0\).*turn 'facts'"):
        annotator.annotate(samples(), questions())
    other = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="maskdpo", unparseable="contradictory")
    assert other.annotate(samples(), questions())[0].sentences[-1].label == "contradictory"


def test_question_without_document_is_an_error_naming_it():
    qs = questions()
    qs["ada"].document = None
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    with pytest.raises(MissingDocument, match="question 'ada' has no reference document"):
        AnahV2Annotator(backend=judge, prompts="maskdpo").annotate(samples(), qs)
    assert judge.calls == []


def test_strict_parsing():
    facts = load_prompts().languages["en"].turns[0]
    assert parse_answer("blah <Facts>", facts) == "next"
    assert parse_answer("blah <No Facts>", facts) == "nofact"
    assert parse_answer("<No Facts> ... <No Facts>", facts) == "nofact"  # the same tag twice is one answer
    assert parse_answer("<Facts> or maybe <No Facts>", facts) is None
    assert parse_answer("facts: yes", facts) is None


def test_packaged_prompts_tell_the_judge_every_tag():
    prompts = load_prompts()
    assert set(prompts.languages) == {"en", "zh"}
    for lang in prompts.languages.values():
        assert [t.name for t in lang.turns] == ["facts", "reference", "type"]
        for turn in lang.turns:
            for tag, _ in turn.answers:
                assert tag in turn.template
        assert "{document}" in lang.turns[1].template


def test_prompt_override_file(tmp_path):
    data = json.loads(PROMPTS_PATH.read_text(encoding="utf-8"))
    data["version"] = "custom@2"
    data["languages"]["en"]["turns"][0]["answers"] = {"[NONE]": "nofact", "[SOME]": "next"}
    data["languages"]["en"]["turns"][0]["template"] = "Say [NONE] or [SOME].\n\nSentence to check: {sentence}"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    script = dict(SCRIPT, **{"Hello there!": ["[NONE]"],
                             "Ada Lovelace was born in 1815.": ["[SOME]", "<Reference Information>", "<No Hallucination>"]})
    annotator = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(script), prompts=path)
    en = annotator.annotate(samples()[:1], questions())[0]
    assert [s.label for s in en.sentences[:2]] == ["nofact", "ok"]
    assert "custom@2" in en.annotator

    data["languages"]["en"]["turns"][2]["answers"]["<Maybe>"] = "next"
    path.write_text(json.dumps(data))
    with pytest.raises(PromptFileError, match=r"p\.json: languages\.en\.turns\[2\]\.answers\['<Maybe>'\]"):
        load_prompts(path)
    data["languages"]["en"]["turns"][1]["template"] = "{documnet}"
    path.write_text(json.dumps(data))
    with pytest.raises(PromptFileError, match="unknown placeholder"):
        load_prompts(path)


# ---------------------------------------------------------------- the stage


def write_inputs(tmp_path: Path, count: int = 5):
    qpath, spath = tmp_path / "q.jsonl", tmp_path / "s.jsonl"
    qpath.write_text("\n".join(json.dumps(q.to_dict()) for q in questions().values()) + "\n")
    rows = []
    for i in range(count):
        s = samples()[i % 2]
        s.sample_index = i
        rows.append(json.dumps(s.to_dict()))
    spath.write_text("\n".join(rows) + "\n")
    return qpath, spath


def stage_settings(tmp_path, out="a.jsonl", **kw):
    kw.setdefault("prompts", "maskdpo")
    return AnnotateSettings(samples=tmp_path / "s.jsonl", questions=tmp_path / "q.jsonl", out=tmp_path / out, **kw)


def test_stage_writes_resumes_and_counts(tmp_path):
    write_inputs(tmp_path)
    first = run_annotation(stage_settings(tmp_path, limit=2, batch_size=2),
                           AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="maskdpo"))
    assert first.written == 2 and first.unparseable == 1
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    second = run_annotation(stage_settings(tmp_path, batch_size=2), AnahV2Annotator(backend=judge, prompts="maskdpo"))
    assert second.written == 3 and second.already_done == 2
    assert len(judge.calls) == 2 * 3  # two batches, three turns each
    records = [Annotation.from_dict(json.loads(x)) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r.sample_index for r in records] == [0, 1, 2, 3, 4]
    assert [s.label for s in records[2].sentences] == EXPECTED_EN
    assert "unparseable judge answers: 2" in second.line()  # samples 2 and 4 are English


def test_stage_shards_concatenate(tmp_path):
    write_inputs(tmp_path)
    run_annotation(stage_settings(tmp_path, out="full.jsonl"),
                   AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="maskdpo"))
    parts = ""
    for k in range(2):
        run_annotation(stage_settings(tmp_path, out=f"p{k}.jsonl", shard=f"{k}/2"),
                       AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="maskdpo"))
        parts += (tmp_path / f"p{k}.jsonl").read_text()
    assert parts == (tmp_path / "full.jsonl").read_text()


def test_missing_document_fails_before_the_judge_loads(tmp_path):
    write_inputs(tmp_path)
    q = questions()["ada"]
    q.document = None
    (tmp_path / "q.jsonl").write_text(json.dumps(q.to_dict()) + "\n" + json.dumps(questions()["zh"].to_dict()) + "\n")
    # The judge model does not exist: the error must come from the document check, not from loading it.
    with pytest.raises(MissingDocument, match="'ada'"):
        run_annotation(stage_settings(tmp_path, model="/no/such/judge"))


def test_cli_help_and_clear_errors(tmp_path):
    from maskdpo.commands.annotate import annotate

    assert "unparseable" in CliRunner().invoke(annotate, ["--help"]).output
    write_inputs(tmp_path)
    result = CliRunner().invoke(annotate, ["--samples", str(tmp_path / "s.jsonl"), "--questions",
                                           str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "a.jsonl"),
                                           "--annotator", "nope"])
    assert result.exit_code != 0 and "unknown annotator 'nope'" in result.output and "Traceback" not in result.output
