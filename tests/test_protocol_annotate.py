"""The official ANAH-v2 protocol in ``maskdpo annotate``: conversations, answer matching, chat string, provenance.

The official files cannot be in the repository: the protocol cache holds the
synthetic files of the same shape (``tests/doubles/anah_judge_double.py``),
pinned through ``$MASKDPO_PROTOCOL_PINS``. Expected conversations are built
independently of the annotator: the synthetic prompt functions are run by
Python itself, in the order of ANAH-v2's ``eval.py::process_question``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskdpo import protocol
from maskdpo.annotate.anah_v2 import (AnahV2Annotator, PromptFileError, UnparseableAnswer, official_sentence_text,
                                      parse_official)
from maskdpo.annotate.run import AnnotateSettings, run_annotation
from maskdpo.backends.base import Completion, Decoding
from maskdpo.records import Annotation, Question, Sample
from maskdpo.stage import settings_path
from maskdpo.sentences import split_sentences
from tests.doubles.anah_judge_double import (SYNTHETIC_META, SYNTHETIC_PROMPTS, ScriptedAnahJudgeDouble,
                                             synthetic_pins, synthetic_prompt_functions, synthetic_sentence_tokenize,
                                             write_protocol_files)
from tests.helpers import ADA_ANSWER, CITIES_ANSWER, judged_samples
from tests.helpers import judged_questions as questions

REPO_ROOT = Path(__file__).resolve().parents[1]
# One more sentence each: an abbreviation the official splitter keeps whole, two more official labels.
EN_RESPONSE = ADA_ANSWER + " She read J.K. Rowling."
ZH_RESPONSE = CITIES_ANSWER + "长城在月球上。故宫建于1420年。"
# Answers per turn, and the official label each sentence must get.
SCRIPT = {
    "Hello there!": ["<No Facts>"],
    "Ada Lovelace was born in 1815.": ["<Facts>", "Born 10 December 1815.",
                                       "No hallucination: nothing contradictory."],  # first found wins: ok
    "She lived on Mars.": ["It states where she lived.", "She lived in London.", "<Contradictory>"],
    "She wrote the first program.": ["Facts, so not <No Facts>", "Notes on the Engine.", "Un Verifiable"],
    "Her cat was named Bob.": ["<Facts>", "<No Reference  INFORMATION>"],
    "She liked tea.": ["<Facts>", "Tea is not mentioned, but she drank.", "I cannot tell."],  # no label at turn 3
    "She read J. K. Rowling.": ["<Facts>", "Rowling.", "<No Hallucination>"],  # the official splitter's text
    "北京是中国的首都。": ["<有事实>", "北京是首都。", "<无幻觉>"],
    "上海在火星上。": ["<有事实>", "上海在中国。", "<矛盾>"],
    "你好！": ["<无事实>"],
    "长城在月球上。": ["<有事实>", "<无参考信息>"],
    "故宫建于1420年。": ["<有事实>", "故宫。", "<无法验证>"],
}
EXPECTED_EN = ["nofact", "ok", "contradictory", "unverifiable", "unverifiable", "ok", "ok"]
EXPECTED_ZH = ["ok", "contradictory", "nofact", "unverifiable", "unverifiable"]
QUESTIONS = questions()


def samples() -> list:
    return judged_samples(EN_RESPONSE, ZH_RESPONSE)


def official_conversation(question: Question, sentence: str, answers: list[str]) -> list[list[dict]]:
    """The conversations ANAH-v2's eval.py sends for one sentence (one per turn), with the system turn
    that LMDeploy 0.5.2's internlm2 template inserts, written as an explicit message."""
    fns = synthetic_prompt_functions()
    q, doc, lang = question.question, question.document, question.language
    messages = [{"role": "system", "content": SYNTHETIC_META},
                {"role": "user", "content": fns["fact_check_prompt"](q, sentence, lang)}]
    sent = [list(messages)]
    if answers[0] in ("<No Facts>", "<无事实>"):
        return sent
    messages += [{"role": "assistant", "content": answers[0]},
                 {"role": "user", "content": fns["reference_check_prompt"](q, doc, sentence, lang)}]
    sent.append(list(messages))
    if "noreferenceinformation" in answers[1].strip().replace(" ", "").lower() or "无参考信息" in answers[1]:
        return sent
    messages += [{"role": "assistant", "content": answers[1]},
                 {"role": "user", "content": fns["hallucination_check_prompt"](q, answers[1], sentence, lang)}]
    sent.append(list(messages))
    return sent


def expected_requests() -> list[list[dict]]:
    out = []
    for sample in samples():
        q = QUESTIONS[sample.question_id]
        for sentence in synthetic_sentence_tokenize(sample.response, q.language):  # the official splitter's texts
            out += official_conversation(q, sentence, SCRIPT[sentence])
    return out


def canonical(conversations) -> list[str]:
    return sorted(json.dumps(c, ensure_ascii=False) for c in conversations)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty protocol cache into which the (synthetic) pinned files are added; downloads go nowhere."""
    prompts, model, pins = write_protocol_files(tmp_path / "files")
    monkeypatch.setenv("MASKDPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(protocol.PINS_ENV, str(pins))
    monkeypatch.setenv(protocol.BASE_URL_ENV, "http://127.0.0.1:9")
    protocol.add(prompts)
    protocol.add(model)
    protocol.add(prompts.parent / "utils.py")
    return prompts, model, pins


# ---------------------------------------------------------------- answer matching


@pytest.mark.parametrize("turn,answer,outcome", [
    (0, "<No Facts>", "nofact"), (0, "<无事实>", "nofact"),
    (0, " <No Facts>", "next"), (0, "<No Facts>\n", "next"), (0, "No facts here. <No Facts>", "next"),
    (0, "<Facts>", "next"), (0, "", "next"),
    (1, "<No Reference Information>", "unverifiable"), (1, "  no reference INFORMATION ", "unverifiable"),
    (1, "参考：<无参考信息>", "unverifiable"), (1, "No\nReference Information", "next"),  # only spaces are removed
    (1, "Born 1815.", "next"),
    (2, "<No Hallucination>", "ok"), (2, "<无幻觉>", "ok"), (2, "no hallucination, nothing contradictory", "ok"),
    (2, "<Contradictory>", "contradictory"), (2, "<矛盾>", "contradictory"),
    (2, "Unverifiable? No: Contradictory.", "contradictory"),  # the official order, not the position in the text
    (2, "<Unverifiable>", "unverifiable"), (2, "UN VERIFIABLE", "unverifiable"), (2, "<无法验证>", "unverifiable"),
    (2, "I cannot tell.", None), (2, "", None), (2, "No\nhallucination", None),
])
def test_official_answer_matching(turn, answer, outcome):
    assert parse_official(turn, answer) == outcome


# ---------------------------------------------------------------- the protocol


def test_every_sentence_gets_exactly_the_official_conversation(cache):
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    annotator = AnahV2Annotator(backend=judge)  # --prompts official is the default
    en, zh = annotator.annotate(samples(), questions())
    assert [s.label for s in en.sentences] == EXPECTED_EN
    assert [s.label for s in zh.sentences] == EXPECTED_ZH
    sent = [r.messages for call in judge.calls for r in call]
    assert canonical(sent) == canonical(expected_requests())
    assert all(d == Decoding.greedy(512, stop=("<|im_end|>", "<|action_end|>")) for d in judge.decodings)
    tea = en.sentences[-2]
    assert tea.raw == {"answers": SCRIPT["She liked tea."], "unparseable": "type"}  # counted, marked, label ok
    assert annotator.stats["unparseable"] == 1 and annotator.stats["sentences"] == 12
    assert en.sentences[-1].text == "She read J.K. Rowling." and en.sentences[-1].raw["judged_text"] == "She read J. K. Rowling."
    for ann in (en, zh):
        Annotation.from_dict(ann.to_dict())
        for s in ann.sentences:
            judged = s.raw.get("judged_text", s.text)
            assert s.raw["answers"] == SCRIPT[judged][:len(s.raw["answers"])]


def test_turn_three_shows_the_turn_two_answer_as_the_reference(cache):
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    AnahV2Annotator(backend=judge).annotate(samples()[:1], questions())
    turn3 = [r.messages for r in judge.calls[2]]
    mars = next(m for m in turn3 if "She lived on Mars." in m[1]["content"])
    assert "She lived in London." in mars[-1]["content"] and "Ada Lovelace (1815-1852)" not in mars[-1]["content"]
    assert "Ada Lovelace (1815-1852)" in mars[3]["content"]  # turn 2 shows the document


def test_turn_batching_and_the_official_order_give_the_same_labels(cache):
    batched, sequential = ScriptedAnahJudgeDouble(SCRIPT), ScriptedAnahJudgeDouble(SCRIPT)
    a = AnahV2Annotator(backend=batched).annotate(samples(), questions())
    b = AnahV2Annotator(backend=sequential, turn_batching=False).annotate(samples(), questions())
    assert [len(c) for c in batched.calls] == [12, 10, 8]  # 2 nofact at turn 1, 2 unverifiable at turn 2
    assert all(len(c) == 1 for c in sequential.calls) and len(sequential.calls) == 12 + 10 + 8
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]


def test_unparseable_rule(cache):
    other = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), unparseable="unverifiable")
    assert other.annotate(samples()[:1], questions())[0].sentences[-2].label == "unverifiable"
    strict = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), unparseable="error")
    with pytest.raises(UnparseableAnswer, match=r"sample \('ada', 0\), sentence at \d+:\d+, turn 'type'"):
        strict.annotate(samples()[:1], questions())


def test_annotator_id_names_protocol_prompts_and_splitter(cache):
    prompts_sha, model_sha, splitter_sha = (p["sha256"] for p in synthetic_pins())
    annotator = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT))
    assert annotator.annotator_id == (
        f"anah-v2 protocol=official prompts=official prompts_sha256={prompts_sha} "
        f"system=lmdeploy-0.5.2:InternLMChat7B.meta_instruction system_sha256={model_sha} "
        f"sentence_rewrites_sha256={splitter_sha} splitter=anah-v2 unparseable=ok max_new_tokens=512 judge=scripted-anah-judge-double")
    other = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), splitter="maskdpo", prompts="maskdpo")
    assert "protocol=maskdpo" in other.annotator_id and "splitter=maskdpo" in other.annotator_id


def test_a_local_prompt_file_is_hash_checked(cache, tmp_path):
    prompts, _, _ = cache
    judge = ScriptedAnahJudgeDouble(SCRIPT)
    en = AnahV2Annotator(backend=judge, prompts=prompts).annotate(samples()[:1], questions())[0]
    assert [s.label for s in en.sentences] == EXPECTED_EN
    assert f"prompts={prompts} " in en.annotator
    edited = tmp_path / "edited.py"
    edited.write_text(SYNTHETIC_PROMPTS.replace("Synthetic turn two", "Edited turn two"))
    with pytest.raises(protocol.ProtocolError, match="--allow-unpinned-prompts"):
        AnahV2Annotator(backend=judge, prompts=edited)
    unpinned = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts=edited, allow_unpinned_prompts=True)
    unpinned.annotate(samples()[:1], questions())
    assert any("Edited turn two" in r.messages[-1]["content"] for r in unpinned.backend.calls[1])


def test_the_splitter_option_chooses_the_spans(cache):
    response = "Mr. Smith arrived. He left."
    spans = {rules: split_sentences(response, "en", rules=rules) for rules in ("anah-v2", "maskdpo")}
    script = {response[a:b]: ["<No Facts>"] for found in spans.values() for a, b in found}
    sample = Sample(question_id="ada", sample_index=0, response=response, messages=[{"role": "user", "content": "q"}],
                    model="m", backend="hf", generation={})
    for rules, expected in spans.items():
        ann = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(script), splitter=rules).annotate([sample], questions())[0]
        assert [(s.start, s.end) for s in ann.sentences] == expected and f"splitter={rules}" in ann.annotator
    with pytest.raises(ValueError, match="splitter"):
        AnahV2Annotator(backend=ScriptedAnahJudgeDouble(script), splitter="nltk")


# ---------------------------------------------------------------- the chat string

INTERNLM2_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def lmdeploy_052_internlm2(messages: list[dict], meta_instruction: str) -> str:
    """The official prompt string, built the way LMDeploy 0.5.2's internlm2 template builds it for the
    official script's conversations (no system message of their own): the meta instruction becomes the
    system turn, each message is wrapped, the assistant's end adds the separator, BOS comes at encoding."""
    system, user, assistant = "<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n"
    ends = {"user": "<|im_end|>\n", "assistant": "<|im_end|>" + "\n", "system": "<|im_end|>\n"}
    boxes = {"user": user, "assistant": assistant, "system": system}
    text = "<s>" + system + meta_instruction + ends["system"]
    for m in messages:
        text += boxes[m["role"]] + m["content"] + ends[m["role"]]
    return text + assistant


def test_an_internlm2_chat_template_renders_the_official_string(cache):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    judge = ScriptedAnahJudgeDouble(SCRIPT)
    AnahV2Annotator(backend=judge).annotate(samples(), questions())
    for turn3 in (r.messages for r in judge.calls[2]):  # three user turns, two answers, English and Chinese
        assert [m["role"] for m in turn3] == ["system", "user", "assistant", "user", "assistant", "user"]
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "<s>": 1}, "<unk>")),
                                            bos_token="<s>", unk_token="<unk>")
        tokenizer.chat_template = INTERNLM2_STYLE_TEMPLATE
        rendered = tokenizer.apply_chat_template(turn3, tokenize=False, add_generation_prompt=True)
        assert rendered == lmdeploy_052_internlm2(turn3[1:], SYNTHETIC_META)


# ---------------------------------------------------------------- the command, end to end


def write_inputs(folder: Path) -> tuple[Path, Path]:
    qpath, spath = folder / "q.jsonl", folder / "s.jsonl"
    qpath.write_text("".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in QUESTIONS.values()))
    spath.write_text("".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples()))
    return qpath, spath


def test_cli_official_protocol_against_a_served_judge(tmp_path, monkeypatch):
    """Done-when: an empty cache filled with `maskdpo protocol add`, then `maskdpo annotate --backend openai`
    against a real local OpenAI-compatible server; then `maskdpo eval score --anah`."""
    from maskdpo.backends.serve import start_server
    from maskdpo.cli import main

    prompts, model, pins = write_protocol_files(tmp_path / "files")
    env = {"MASKDPO_CACHE": str(tmp_path / "cache"), protocol.PINS_ENV: str(pins),
           protocol.BASE_URL_ENV: "http://127.0.0.1:9"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    added = subprocess.run([sys.executable, "-m", "maskdpo.cli", "protocol", "add", str(prompts), str(model),
                            str(prompts.parent / "utils.py")],
                           capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT, timeout=120)
    assert added.returncode == 0, added.stderr
    qpath, spath = write_inputs(tmp_path)
    judge = ScriptedAnahJudgeDouble(SCRIPT, model="opencompass/anah-v2")
    server = start_server(judge, port=0)
    try:
        for name, extra in (("default", []), ("file", ["--prompts", str(prompts)])):
            judge.calls.clear()
            out = tmp_path / f"{name}.jsonl"
            result = CliRunner().invoke(main, ["annotate", "--annotator", "anah-v2", "--backend", "openai",
                                               "--base-url", server.base_url, "--model", "opencompass/anah-v2",
                                               "--samples", str(spath), "--questions", str(qpath),
                                               "--out", str(out), *extra])
            assert result.exit_code == 0, result.output
            assert canonical(r.messages for call in judge.calls for r in call) == canonical(expected_requests())
            records = [Annotation.from_dict(json.loads(x)) for x in out.read_text(encoding="utf-8").splitlines()]
            assert [s.label for s in records[0].sentences] == EXPECTED_EN
            assert [s.label for s in records[1].sentences] == EXPECTED_ZH
            assert f"prompts_sha256={synthetic_pins()[0]['sha256']}" in records[0].annotator
            assert all(not d.do_sample and d.max_new_tokens == 512 for d in judge.decodings)
    finally:
        server.shutdown()
        server.server_close()

    labels = [s.label for r in records for s in r.sentences]
    n, inc = len(labels), labels.count("contradictory") + labels.count("unverifiable")
    official = f"{(1 - inc / n) * 100:.2f}"  # eval.py's evaluate_output
    scored = CliRunner().invoke(main, ["eval", "score", "--metric", "anah", "--anah",
                                       f"judged={tmp_path / 'file.jsonl'}", "--out", str(tmp_path / "report")])
    assert scored.exit_code == 0, scored.output
    row = next(line for line in scored.output.splitlines() if line.startswith("| judged |"))
    assert row.startswith(f"| judged | {n - inc} | {inc} | {official} |"), row
    assert "the official ANAH-v2 measurement" in scored.output


def test_offline_with_an_empty_cache_the_command_says_what_to_do(tmp_path, monkeypatch):
    from maskdpo.cli import main

    _, _, pins = write_protocol_files(tmp_path / "files")
    monkeypatch.setenv("MASKDPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(protocol.PINS_ENV, str(pins))
    monkeypatch.setenv(protocol.BASE_URL_ENV, "http://127.0.0.1:9")
    qpath, spath = write_inputs(tmp_path)
    result = CliRunner().invoke(main, ["annotate", "--samples", str(spath), "--questions", str(qpath),
                                       "--out", str(tmp_path / "a.jsonl"), "--model", "/no/such/judge"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "http://127.0.0.1:9/synthetic/anah/" in result.output and "maskdpo protocol add FILE" in result.output


def test_stage_records_the_effective_unparseable_rule(cache, tmp_path):
    qpath, spath = write_inputs(tmp_path)
    settings = AnnotateSettings(samples=spath, questions=qpath, out=tmp_path / "a.jsonl")
    run_annotation(settings, AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT)))
    recorded = json.loads(Path(settings_path(tmp_path / "a.jsonl")).read_text())
    assert recorded["prompts"] == "official" and recorded["unparseable"] == "ok" and recorded["splitter"] == "anah-v2"
    assert "protocol=official" in recorded["annotator_id"]
    with pytest.raises(ValueError, match="other settings.*splitter"):
        run_annotation(AnnotateSettings(samples=spath, questions=qpath, out=tmp_path / "a.jsonl", splitter="maskdpo"),
                       AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT)))


def test_eval_run_passes_the_annotator_options():
    from maskdpo.evaluate import EndToEndSettings, annotate_settings

    settings = EndToEndSettings(out=Path("o"), annotator_prompts="maskdpo", annotator_splitter="maskdpo",
                                annotator_unparseable="error")
    a = annotate_settings(settings, Path("s"), Path("q"), Path("a"))
    assert (a.prompts, a.splitter, a.unparseable) == ("maskdpo", "maskdpo", "error")
    assert (AnnotateSettings().prompts, AnnotateSettings().splitter) == ("official", "anah-v2")


# ---------------------------------------------------------------- the sentence text the judge sees

def test_official_sentence_text_examples(cache):
    # The rules come from the (synthetic) pinned splitter file: list numbers and "Mt." joined before the
    # split and spaced after it, initials spaced, "D. C." closed up; a colon keeps one space.
    rules = protocol.load_rewrite_rules()
    text = "Here are the facts:\n1. Ada Lovelace was born in 1815.\n2. She met J.K. Rowling."
    spans = split_sentences(text, "en", rules="anah-v2")
    assert [official_sentence_text(text[a:b], "en", rules) for a, b in spans] == [
        "Here are the facts: 1.Ada Lovelace was born in 1815.", "2. She met J. K. Rowling."]
    assert official_sentence_text("He lived in Washington, D. C. for years.", "en", rules) == \
        "He lived in Washington, D.C. for years."
    assert official_sentence_text("要点如下：\n1. 北京是首都。", "zh", rules) == "要点如下：1. 北京是首都。"
    assert official_sentence_text("Ada Lovelace was born in 1815.", "en", rules) == "Ada Lovelace was born in 1815."


def test_the_judge_sees_the_official_sentence_text_and_the_record_keeps_the_span(cache):
    response = "Here are the facts:\n1. Ada Lovelace was born in 1815."
    judged = "Here are the facts: 1.Ada Lovelace was born in 1815."
    judge = ScriptedAnahJudgeDouble({judged: ["<No Facts>"]})
    sample = Sample(question_id="ada", sample_index=0, response=response, messages=[{"role": "user", "content": "q"}],
                    model="m", backend="hf", generation={})
    ann = AnahV2Annotator(backend=judge).annotate([sample], questions())[0]
    assert [s.text for s in ann.sentences] == [response] and ann.sentences[0].raw["judged_text"] == judged
    lines = {line: ["<No Facts>"] for line in response.split("\n")}
    ours = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(lines), splitter="maskdpo")
    assert len(ours.annotate([sample], questions())[0].sentences) == 2  # our rules: the list item is a sentence


def test_an_unknown_prompts_value_is_a_clear_error(cache, tmp_path):
    with pytest.raises(PromptFileError, match=r"--prompts 'prompts\.txt': expected official, maskdpo, .*FILE\.py"):
        AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), prompts="prompts.txt")


def test_the_report_says_which_measurement_each_annotator_made(cache):
    from maskdpo.metrics.anah import anah_runs
    from maskdpo.report import ModelResult, build_report, table1_markdown

    official = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT)).annotate(samples(), questions())
    ours = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), splitter="maskdpo",
                           prompts="maskdpo").annotator_id
    relabelled = [Annotation.from_dict({**a.to_dict(), "annotator": ours}) for a in official]
    md = table1_markdown(build_report([ModelResult("a", anah=anah_runs([official])),
                                       ModelResult("b", anah=anah_runs([relabelled]))]))
    assert f"- a: ANAH annotations by `{official[0].annotator}` — the official ANAH-v2 measurement" in md
    assert f"- b: ANAH annotations by `{ours}` — not the official ANAH-v2 measurement (protocol maskdpo, " \
           "splitter maskdpo, prompts_sha256 " in md


@pytest.mark.parametrize("options,differs", [
    (dict(unparseable="unverifiable"), "unparseable unverifiable"),  # eval.py counts an unlabelled answer as ok
    (dict(max_new_tokens=256), "max_new_tokens 256"),
])
def test_the_report_names_what_makes_a_run_unofficial(cache, options, differs):
    from maskdpo.metrics.anah import anah_runs
    from maskdpo.report import build_report, table1_markdown, ModelResult

    run = AnahV2Annotator(backend=ScriptedAnahJudgeDouble(SCRIPT), **options).annotate(samples(), questions())
    md = table1_markdown(build_report([ModelResult("m", anah=anah_runs([run]))]))
    assert f"not the official ANAH-v2 measurement ({differs}): not comparable" in md


def test_the_report_gives_eval_pys_rounding_where_it_differs_from_the_paper_truncation(cache):
    from maskdpo.metrics.anah import anah_runs
    from maskdpo.report import build_report, table1_markdown, ModelResult

    def run(labels):  # one response whose sentences carry ``labels``
        text = " ".join(f"Fact number {i}." for i in range(len(labels)))
        spans = split_sentences(text, "en")
        sample = samples()[0]
        sents = [{"text": text[a:b], "start": a, "end": b, "label": lab, "raw": {}} for (a, b), lab in zip(spans, labels)]
        return [Annotation.from_dict({**sample.to_dict(), "response": text, "sentences": sents,
                                      "format": "maskdpo/annotation@1", "annotator": "anah-v2 protocol=official"})]

    six_of_fourteen = run(["ok"] * 6 + ["contradictory"] * 8)  # 42.857…: eval.py 42.86, truncated 42.85
    md = table1_markdown(build_report([ModelResult("m", anah=anah_runs([six_of_fourteen]))]))
    assert "| m | 6 | 8 | 42.85 |" in md and "eval.py prints 42.86 for the same counts" in md
    half = run(["ok", "contradictory"])
    assert "eval.py prints" not in table1_markdown(build_report([ModelResult("m", anah=anah_runs([half]))]))


class StrippingJudgeDouble(ScriptedAnahJudgeDouble):
    """The scripted judge behind a backend's return convention: stripped text, unstripped ``raw``,
    and finish_reason "length" for answers the script marks with a trailing "…" (cut off)."""

    def generate(self, requests, decoding):
        return [[Completion(a.strip(), "length" if a.endswith("…") else "stop", raw=a) for a in row]
                for row in super().generate(requests, decoding)]


def test_the_official_protocol_reads_the_judges_answer_unstripped(cache):
    # eval.py compares `response == "<No Facts>"` and sends the answer back as the engine gave it.
    script = dict(SCRIPT, **{"Hello there!": [" <No Facts>", "Nothing.\n", "<No Hallucination>"]})
    judge = StrippingJudgeDouble(script)
    annotator = AnahV2Annotator(backend=judge)
    hello = annotator.annotate(samples()[:1], questions())[0].sentences[0]
    assert hello.label == "ok" and hello.raw["answers"] == script["Hello there!"]
    turn3 = next(r.messages for r in judge.calls[2] if "Hello there!" in r.messages[1]["content"])
    assert turn3[2]["content"] == " <No Facts>" and turn3[4]["content"] == "Nothing.\n"


def test_truncated_judge_answers_are_counted(cache, tmp_path):
    script = dict(SCRIPT, **{"She lived on Mars.": ["<Facts>", "She lived in London and then…", "<Contradictory>"]})
    annotator = AnahV2Annotator(backend=StrippingJudgeDouble(script))
    annotator.annotate(samples()[:1], questions())
    assert annotator.stats["judge_truncated"] == 1
