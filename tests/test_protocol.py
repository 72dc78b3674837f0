"""The official-protocol assets: pins, the content-addressed cache, fetch/add/list, and the ``ast`` parsers.

The official files cannot be in the repository: these tests use synthetic
files of the same shape (``tests/doubles/anah_judge_double.py``), pinned
through the ``$MASKDPO_PROTOCOL_PINS`` testing hook, and a local HTTP server
on 127.0.0.1 standing in for raw.githubusercontent.com.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskdpo import protocol
from tests.doubles.anah_judge_double import (SYNTHETIC_META, SYNTHETIC_MODEL, SYNTHETIC_PROMPTS,
                                             SYNTHETIC_SPLITTER, synthetic_pins,
                                             synthetic_prompt_functions, write_protocol_files)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """An empty cache, the synthetic files pinned, and downloads pointed at a closed local port."""
    prompts, model, pins = write_protocol_files(tmp_path / "files")
    monkeypatch.setenv("MASKDPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(protocol.PINS_ENV, str(pins))
    monkeypatch.setenv(protocol.BASE_URL_ENV, "http://127.0.0.1:9")  # the discard port: nothing listens
    return prompts, model, pins


class _Files(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.files.get(self.path)
        self.server.requests.append(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server():
    """A static file server on 127.0.0.1 in the layout of raw.githubusercontent.com (/OWNER/REPO/COMMIT/PATH)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.files, server.requests = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def serve_synthetic(server, prompts=SYNTHETIC_PROMPTS, model=SYNTHETIC_MODEL):
    pins = synthetic_pins()
    server.files[f"/{pins[0]['repo']}/{pins[0]['commit']}/{pins[0]['path']}"] = prompts.encode("utf-8")
    server.files[f"/{pins[1]['repo']}/{pins[1]['commit']}/{pins[1]['path']}"] = model.encode("utf-8")
    server.files[f"/{pins[2]['repo']}/{pins[2]['commit']}/{pins[2]['path']}"] = SYNTHETIC_SPLITTER.encode("utf-8")
    return f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------- pins


def test_official_pins_name_the_commits_and_hashes(monkeypatch):
    monkeypatch.delenv(protocol.PINS_ENV, raising=False)
    monkeypatch.delenv(protocol.BASE_URL_ENV, raising=False)
    prompts, template = protocol.pin_of_kind("prompts"), protocol.pin_of_kind("chat-template")
    assert prompts.url() == ("https://raw.githubusercontent.com/open-compass/ANAH/"
                             "89d24d890f9e0ad6c8dd6236b55fe68e1ff98e62/eval/anah_v2/anahv2_prompt.py")
    assert prompts.sha256 == "d8611d4f006d143bc65b304a5c5980af7acc737ab937403efca49fa78ec5754a"
    assert template.url() == ("https://raw.githubusercontent.com/InternLM/lmdeploy/"
                              "fb6f8ea4526fc40bab757a76d55b2571e9b3f133/lmdeploy/model.py")
    assert template.sha256 == "2fafd98ba9f9572144aac4c8f164eef269c9ed469e87b90d2c111c70d7c8dfff"


def test_pins_hook_is_checked(tmp_path, monkeypatch):
    bad = tmp_path / "pins.json"
    bad.write_text(json.dumps([{"kind": "prompts", "repo": "r"}]))
    monkeypatch.setenv(protocol.PINS_ENV, str(bad))
    with pytest.raises(protocol.ProtocolError, match=r"pin \[0\] needs string fields"):
        protocol.pins()


# ---------------------------------------------------------------- the ast parsers


VALUES = [
    dict(question="Who was Ada {Lovelace}?", annotation="She was born in 1815.", reference="Born 1815.\n  Died 1852."),
    dict(question="北京是哪国的首都？", annotation="北京是中国的首都。", reference="北京：中国首都。"),
    dict(question="", annotation="Quotes ' \" and \\ backslashes {x} %s", reference="{reference}"),
]


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("language", ["en", "zh", "fr"])
def test_rendered_templates_equal_what_the_functions_return(values, language):
    functions = synthetic_prompt_functions()  # Python runs our synthetic file: the independent reference
    parsed = protocol.parse_prompt_functions(SYNTHETIC_PROMPTS, "synthetic.py")
    q, a, r = values["question"], values["annotation"], values["reference"]
    assert parsed.render("facts", language, question=q, annotation=a) == \
        functions["fact_check_prompt"](q, a, language)
    assert parsed.render("reference", language, question=q, reference=r, annotation=a) == \
        functions["reference_check_prompt"](q, r, a, language)
    assert parsed.render("type", language, question=q, reference=r, annotation=a) == \
        functions["hallucination_check_prompt"](q, r, a, language)
    text = parsed.render("facts", language, question=q, annotation=a)
    assert text.startswith("\n    ") and text.endswith("\n    ")  # leading newline and the source's indentation


def test_meta_instruction_is_the_default_of_internlmchat7b_init():
    assert protocol.parse_meta_instruction(SYNTHETIC_MODEL, "model.py") == SYNTHETIC_META


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# Lines of the synthetic files that more than one malformed variant changes.
RETURN_BY_LANGUAGE = 'return cn_user_prompt if language == "zh" else en_user_prompt'
CN_TURN_ONE = '    cn_user_prompt = f"""\n    合成的第一轮'
EN_TURN_ONE = '    en_user_prompt = f"""\n    Synthetic turn one'
META_DEFAULT = '            meta_instruction="""'

# (the file a parser reads, how it is broken, the error expected)
MALFORMED = [
    ("prompts", lambda s: s + "\ndef broken(:\n",
     r"synthetic\.py:\d+: not valid Python"),
    ("prompts", lambda s: _replace(s, "def fact_check_prompt(", "def fact_prompt("),
     r"no top-level function fact_check_prompt"),
    ("prompts", lambda s: _replace(s, "def reference_check_prompt(question, reference, annotation, language)",
                                   "def reference_check_prompt(question, annotation, reference, language)"),
     r"synthetic\.py:\d+: reference_check_prompt: expected parameters \(question, reference, annotation, language\)"),
    ("prompts", lambda s: _replace(s, RETURN_BY_LANGUAGE, "return en_user_prompt"),
     r"fact_check_prompt: expected `return ZH if language == \"zh\""),
    ("prompts", lambda s: _replace(s, RETURN_BY_LANGUAGE, RETURN_BY_LANGUAGE.replace('"zh"', '"en"')),
     r"expected `return ZH if"),
    ("prompts", lambda s: _replace(s, "Question: {question}", "Question: {question.upper()}"),
     r"synthetic\.py:\d+: fact_check_prompt\.en_user_prompt: a field must be one of the parameters"),
    ("prompts", lambda s: _replace(s, "Question: {question}", "Question: {language}"),
     r"a field must be one of the parameters"),
    ("prompts", lambda s: _replace(s, "Question: {question}", "Question: {question:>10}"),
     r"format specs are not supported"),
    ("prompts", lambda s: _replace(s, CN_TURN_ONE, "    print(1)\n" + CN_TURN_ONE),
     r"fact_check_prompt: unexpected statement `print\(1\)`"),
    ("prompts", lambda s: _replace(s, EN_TURN_ONE, '    english = f"""\n    Synthetic turn one'),
     r"returns en_user_prompt, which is not assigned"),
    ("prompts", lambda s: _replace(s, EN_TURN_ONE, '    en_user_prompt = 3 + f"""\n    Synthetic turn one'),
     r"fact_check_prompt\.en_user_prompt: expected an f-string, got BinOp"),
    ("model", lambda s: _replace(s, "class InternLMChat7B(", "class InternLM(").replace("(InternLMChat7B)", "(InternLM)"),
     r"model\.py: no top-level class InternLMChat7B"),
    ("model", lambda s: _replace(s, META_DEFAULT, '            meta="""'),
     r"model\.py:\d+: InternLMChat7B\.__init__ has no default for meta_instruction"),
    ("model", lambda s: _replace(s, META_DEFAULT, '            meta_instruction=PREFIX + """'),
     r"model\.py:\d+: InternLMChat7B\.__init__ meta_instruction default: expected a string literal"),
    ("model", lambda s: _replace(s, "    def __init__(\n            self,", "    def setup(\n            self,"),
     r"InternLMChat7B has no __init__"),
]
# Each parser with the synthetic file it reads and the name it reports.
PARSERS = {"prompts": (protocol.parse_prompt_functions, SYNTHETIC_PROMPTS, "synthetic.py"),
           "model": (protocol.parse_meta_instruction, SYNTHETIC_MODEL, "model.py")}


@pytest.mark.parametrize("kind,mutate,message", MALFORMED)
def test_a_file_of_another_shape_is_a_clear_error(kind, mutate, message):
    parse, source, name = PARSERS[kind]
    with pytest.raises(protocol.ProtocolError, match=message):
        parse(mutate(source), name)


def test_parsing_never_runs_the_file(tmp_path):
    marker = tmp_path / "ran"
    hostile = f"open({str(marker)!r}, 'w').write('x')\n" + SYNTHETIC_PROMPTS
    protocol.parse_prompt_functions(hostile, "hostile.py")
    protocol.parse_meta_instruction(f"open({str(marker)!r}, 'w').write('x')\n" + SYNTHETIC_MODEL, "m.py")
    assert not marker.exists()


# ---------------------------------------------------------------- add, list, load


def test_add_checks_the_hash_and_stores_by_it(synthetic, tmp_path):
    prompts, model, _ = synthetic
    assert [r["status"] for r in protocol.listing()] == ["missing", "missing", "missing"]
    pin, path = protocol.add(prompts)
    assert pin.kind == "prompts" and path == tmp_path / "cache" / "protocol" / hashlib.sha256(prompts.read_bytes()).hexdigest()
    assert path.read_bytes() == prompts.read_bytes()
    protocol.add(model)
    assert [r["status"] for r in protocol.listing()] == ["cached", "cached", "missing"]

    other = tmp_path / "other.py"
    other.write_text(SYNTHETIC_PROMPTS + "# edited\n")
    with pytest.raises(protocol.ProtocolError, match=r"other\.py: sha256 [0-9a-f]{64} is not a pinned protocol file"):
        protocol.add(other)
    with pytest.raises(protocol.ProtocolError, match=r"nope\.py: cannot read"):
        protocol.add(tmp_path / "nope.py")


def test_a_corrupted_cache_entry_is_detected(synthetic):
    prompts, _, _ = synthetic
    _, path = protocol.add(prompts)
    path.write_text(SYNTHETIC_PROMPTS + "tampered")
    assert protocol.listing()[0]["status"] == "corrupt"
    with pytest.raises(protocol.ProtocolError, match="no longer has the sha256 it is named by"):
        protocol.load_prompt_functions()


def test_unknown_files_in_the_cache_are_listed(synthetic, tmp_path):
    folder = protocol.cache_dir()
    folder.mkdir(parents=True)
    (folder / ("ab" * 32)).write_text("x")
    assert protocol.listing()[-1]["status"] == "unknown"


def test_load_from_the_cache_or_a_local_file(synthetic, tmp_path):
    prompts, model, _ = synthetic
    protocol.add(prompts)
    protocol.add(model)
    assert protocol.load_prompt_functions().render("facts", "en", question="Q", annotation="S") == \
        synthetic_prompt_functions()["fact_check_prompt"]("Q", "S", "en")
    assert protocol.load_meta_instruction()[0] == SYNTHETIC_META
    assert protocol.load_prompt_functions(prompts).sha256 == synthetic_pins()[0]["sha256"]

    edited = tmp_path / "edited.py"
    edited.write_text(SYNTHETIC_PROMPTS.replace("Synthetic turn one", "Edited turn one"))
    with pytest.raises(protocol.ProtocolError, match=r"edited\.py: sha256 .* is not the pinned prompt file's.*"
                                                     r"--allow-unpinned-prompts"):
        protocol.load_prompt_functions(edited)
    unpinned = protocol.load_prompt_functions(edited, allow_unpinned=True)
    assert "Edited turn one" in unpinned.render("facts", "en", question="Q", annotation="S")


# ---------------------------------------------------------------- fetch


def test_fetch_downloads_checks_and_caches(synthetic, file_server):
    base = serve_synthetic(file_server)
    rows = protocol.fetch(base)
    assert [(pin.kind, downloaded) for pin, _, downloaded in rows] == [
        ("prompts", True), ("chat-template", True), ("splitter", True)]
    assert file_server.requests == ["/synthetic/anah/" + "0" * 40 + "/eval/anah_v2/anahv2_prompt.py",
                                    "/synthetic/lmdeploy/" + "1" * 40 + "/lmdeploy/model.py",
                                    "/synthetic/anah/" + "0" * 40 + "/eval/anah_v2/utils.py"]
    assert [r["status"] for r in protocol.listing()] == ["cached", "cached", "cached"]
    again = protocol.fetch(base)
    assert [d for _, _, d in again] == [False, False, False] and len(file_server.requests) == 3  # no second download


def test_first_use_fetches_through_the_base_url_environment(synthetic, file_server, monkeypatch):
    monkeypatch.setenv(protocol.BASE_URL_ENV, serve_synthetic(file_server))
    assert protocol.load_meta_instruction()[0] == SYNTHETIC_META
    assert len(file_server.requests) == 1 and protocol.listing()[1]["status"] == "cached"


def test_fetch_refuses_a_file_with_another_hash(synthetic, file_server):
    base = serve_synthetic(file_server, prompts=SYNTHETIC_PROMPTS.replace("turn one", "turn 1"))
    with pytest.raises(protocol.ProtocolError, match=r"anahv2_prompt\.py: downloaded file has sha256 [0-9a-f]+, "
                                                     r"expected [0-9a-f]+ .*nothing was stored"):
        protocol.fetch(base)
    assert not protocol.cache_dir().exists() or not list(protocol.cache_dir().iterdir())


def test_offline_with_an_empty_cache_names_the_url_and_the_add_command(synthetic):
    with pytest.raises(protocol.ProtocolAssetMissing) as info:
        protocol.load_prompt_functions()
    message = str(info.value)
    assert "http://127.0.0.1:9/synthetic/anah/" + "0" * 40 + "/eval/anah_v2/anahv2_prompt.py" in message
    assert "maskdpo protocol add FILE" in message and "ConnectError" in message


def test_a_missing_file_on_the_server_is_reported(synthetic, file_server):
    base = f"http://127.0.0.1:{file_server.server_address[1]}"
    with pytest.raises(protocol.ProtocolAssetMissing, match="HTTP 404"):
        protocol.fetch(base)


# ---------------------------------------------------------------- the command


def test_cli_add_and_list_in_a_fresh_process(synthetic, tmp_path):
    prompts, model, pins = synthetic
    env = {**os.environ, "MASKDPO_CACHE": str(tmp_path / "cache"), protocol.PINS_ENV: str(pins)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "maskdpo.cli", "protocol", *args], capture_output=True, text=True,
                              env=env, cwd=REPO_ROOT, timeout=120)

    added = cli("add", str(prompts), str(model))
    assert added.returncode == 0, added.stderr
    assert "as the prompts file" in added.stdout and "as the chat-template file" in added.stdout
    listed = cli("list")
    assert listed.stdout.count("cached ") == 2 and str(tmp_path / "cache" / "protocol") in listed.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    refused = cli("add", str(bad))
    assert refused.returncode != 0 and "is not a pinned protocol file" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_cli_fetch(synthetic, file_server):
    from maskdpo.cli import main

    base = serve_synthetic(file_server)
    result = CliRunner().invoke(main, ["protocol", "fetch", "--base-url", base])
    assert result.exit_code == 0, result.output
    assert result.output.count("downloaded") == 3
    offline = CliRunner().invoke(main, ["protocol", "fetch", "--base-url", "http://127.0.0.1:9"])
    assert offline.exit_code == 0 and offline.output.count("cached") == 3  # already there: no download needed


def test_the_splitter_rewrite_rules_are_read_without_running_the_file(tmp_path):
    rules = protocol.parse_rewrite_rules(SYNTHETIC_SPLITTER)
    assert rules.before[0][1] == r"\1\2." and len(rules.before) == 3 and len(rules.after) == 5
    assert rules.after[-1] == (r"D\.\s+C\.", "D.C.")
    swapped = SYNTHETIC_SPLITTER.replace("if not recover:", "if recover:")
    assert protocol.parse_rewrite_rules(swapped).before == rules.after  # the branch that recovers comes after


@pytest.mark.parametrize("source,message", [
    ("import re\n", "no top-level function sentence_tokenize_process_dot"),
    ("def sentence_tokenize_process_dot(text, recover=False):\n    return text\n", "expected `if not recover"),
    (SYNTHETIC_SPLITTER.replace('"D.C.", text)', 'REPLACEMENT, text)'), "literal strings"),
    (SYNTHETIC_SPLITTER.replace("text = re.sub(r\"^(", "print(__import__('os')) or re.sub(r\"^("), "literal strings"),
])
def test_a_splitter_file_of_another_shape_is_a_clear_error(source, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.parse_rewrite_rules(source, "utils.py")
