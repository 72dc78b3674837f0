"""``ScriptedAnahJudgeDouble``: a test double of the ANAH-v2 judge behind the ChatBackend interface,
and synthetic protocol files of the official files' shape.

The real judge (an InternLM2-7B) cannot run here. The double honours the
backend contract (``generate(requests, decoding) -> list[list[str]]``, one
answer per request with ``n=1``, order kept) and answers the three-turn
protocol from a script: ``script[sentence]`` is the list of answers for turns
1, 2, 3 of that sentence's conversation. The turn is the number of assistant
messages already in the conversation; the sentence is read from the first
user message: after ``Sentence to check: `` / ``待检查的句子：`` (our packaged
prompts, where it comes last) or between ``【`` and ``】`` (the synthetic
official-shaped prompt file below). Like the real judge behind an InternLM2
chat template, it refuses a conversation that does not end with a user turn
or whose roles do not alternate. Every call is recorded, so tests can count
judge calls per turn.

The official protocol files cannot be in the repository. ``SYNTHETIC_PROMPTS``
has the shape of ANAH's ``anahv2_prompt.py`` (three functions, an English and
a Chinese f-string each, chosen by ``language == "zh"``, with the leading
newline and four-space indentation of triple-quoted strings in a function)
and ``SYNTHETIC_MODEL`` the shape of LMDeploy's ``model.py`` around
``InternLMChat7B.__init__``'s default ``meta_instruction``; their wording is
our own. :func:`write_protocol_files` writes them with a pins file for
``$MASKDPO_PROTOCOL_PINS``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from maskdpo.backends.base import Decoding, GenerationRequest

SENTENCE_MARKERS = (re.compile(r"Sentence to check: (.*)\Z", re.S), re.compile(r"待检查的句子：(.*)\Z", re.S),
                    re.compile(r"【(.*?)】", re.S))

SYNTHETIC_PROMPTS = '''\
def fact_check_prompt(question, annotation, language):
    cn_user_prompt = f"""
    合成的第一轮：判断回答片段是否含有事实。

    问题：{question}

    片段：【{annotation}】

    若没有事实，只输出<无事实>；否则输出<有事实>。
    """

    en_user_prompt = f"""
    Synthetic turn one: does the partial answer state facts?

    Question: {question}

    Partial answer: 【{annotation}】

    If it states none, output only <No Facts>; otherwise output <Facts>.
    """
    return cn_user_prompt if language == "zh" else en_user_prompt


def reference_check_prompt(question, reference, annotation, language):
    cn_user_prompt = f"""
    合成的第二轮：从参考中摘出要点。

    问题：{question}

    片段：【{annotation}】

    参考：{reference}

    若无关，输出<无参考信息>。
    """

    en_user_prompt = f"""
    Synthetic turn two: list the reference points.

    Question: {question}

    Partial answer: 【{annotation}】

    Reference: {reference}

    If nothing is relevant, output <No Reference Information>.
    """
    return cn_user_prompt if language == "zh" else en_user_prompt


def hallucination_check_prompt(question, reference, annotation, language):
    cn_user_prompt = f"""
    合成的第三轮：判断幻觉类型。

    问题：{question}

    要点：{reference}

    片段：【{annotation}】

    输出<无幻觉>、<矛盾>或<无法验证>。
    """

    en_user_prompt = f"""
    Synthetic turn three: the hallucination type.

    Question: {question}

    Reference points: {reference}

    Partial answer: 【{annotation}】

    Output <No Hallucination>, <Contradictory> or <Unverifiable>.
    """
    return cn_user_prompt if language == "zh" else en_user_prompt
'''

SYNTHETIC_MODEL = '''\
class BaseChatTemplate:
    """A synthetic stand-in of the shape of LMDeploy's model.py."""

    def __init__(self, system='', meta_instruction='', eosys='', **kwargs):
        self.system = system
        self.meta_instruction = meta_instruction
        self.eosys = eosys


class InternLMChat7B(BaseChatTemplate):
    """Synthetic chat template."""

    def __init__(
            self,
            system='<|System|>:',
            meta_instruction="""You are a synthetic judge (合成的裁判).
- It checks sentences against references.
""",  # noqa: E501
            eosys='\\n',
            **kwargs):
        super().__init__(system=system, meta_instruction=meta_instruction, eosys=eosys, **kwargs)


class InternLM2Chat7B(InternLMChat7B):

    def __init__(self, system='<|im_start|>system\\n', eosys='<|im_end|>\\n', **kwargs):
        super().__init__(system=system, eosys=eosys, **kwargs)
'''

SYNTHETIC_META = "You are a synthetic judge (合成的裁判).\n- It checks sentences against references.\n"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# The shape of ANAH's utils.py around its splitter's rewrite rules (`re.sub` before the split, and
# back after it); the rules are our own: list numbers and "Mt." joined to the next word before the
# split, spaced again after it, and initials joined to the name they precede, then spaced.
SYNTHETIC_SPLITTER = '''\
import re


def sentence_tokenize_process_dot(text, recover=False):
    """A synthetic stand-in of the shape of a splitter's rewrite helper."""
    if not recover:
        text = re.sub(r"(^|\\n\\s*)(\\d+)\\.\\s+", r"\\1\\2.", text)  # 1. Item
        text = re.sub(r"\\bMt\\.\\s+", "Mt.", text)
        text = re.sub(r"\\b([A-Z])\\.([A-Z])\\.\\s+([A-Z])", r"\\1.\\2.\\3", text)  # J.K. Rowling
    else:
        text = re.sub(r"^(\\d+)\\.", r"\\1. ", text)
        text = re.sub(r"\\bMt\\.", "Mt. ", text)
        text = re.sub(r"\\b([A-Z])\\.([A-Z])\\.([A-Z])", r"\\1. \\2. \\3", text)
        text = re.sub(r"\\b([A-Z])\\.([A-Z])\\.", r"\\1. \\2.", text)  # J.K. -> J. K.
        text = re.sub(r"D\\.\\s+C\\.", "D.C.", text)
    return text
'''


def synthetic_pins(prompts: str = SYNTHETIC_PROMPTS, model: str = SYNTHETIC_MODEL,
                   splitter: str = SYNTHETIC_SPLITTER) -> list[dict]:
    """Pins for the synthetic files, in the official pins' layout (repo, commit, path)."""
    return [{"kind": "prompts", "repo": "synthetic/anah", "commit": "0" * 40, "path": "eval/anah_v2/anahv2_prompt.py",
             "sha256": sha256_text(prompts)},
            {"kind": "chat-template", "repo": "synthetic/lmdeploy", "commit": "1" * 40, "path": "lmdeploy/model.py",
             "sha256": sha256_text(model)},
            {"kind": "splitter", "repo": "synthetic/anah", "commit": "0" * 40, "path": "eval/anah_v2/utils.py",
             "sha256": sha256_text(splitter)}]


def write_protocol_files(folder: Path) -> tuple[Path, Path, Path]:
    """Write the synthetic prompt file, model file, splitter file (``folder/utils.py``) and a pins JSON;
    returns the paths of the first two and of the pins."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts, model, pins = folder / "anahv2_prompt.py", folder / "model.py", folder / "pins.json"
    prompts.write_text(SYNTHETIC_PROMPTS, encoding="utf-8")
    model.write_text(SYNTHETIC_MODEL, encoding="utf-8")
    (folder / "utils.py").write_text(SYNTHETIC_SPLITTER, encoding="utf-8")
    pins.write_text(json.dumps(synthetic_pins()), encoding="utf-8")
    return prompts, model, pins


def synthetic_sentence_tokenize(text: str, language: str) -> list[str]:
    """The whole-text procedure of a rewrite-then-split splitter, run with the synthetic rules (Python
    runs our own test file): rewrite, close up colons, split, strip, rewrite each sentence back."""
    namespace: dict = {}
    exec(compile(SYNTHETIC_SPLITTER, "synthetic_utils.py", "exec"), namespace)  # our own test text
    rewrite = namespace["sentence_tokenize_process_dot"]
    if language == "zh":
        parts = re.split("(。|！|？|；|\n+)", re.sub(r"([:：])(\s+)", r"\1", text))
        return [s for s in ("".join(parts[i:i + 2]).strip() for i in range(0, len(parts), 2)) if s]
    parts = re.split(r"((?:[.!?;]\s+)|(?:\n+))", re.sub(r"([:：])(\s+)", r"\1 ", rewrite(text)))
    sentences = ("".join(parts[i:i + 2]).strip() for i in range(0, len(parts), 2))
    return [rewrite(s, recover=True) for s in sentences if s]


def synthetic_prompt_functions() -> dict:
    """The synthetic prompt functions, run by Python itself: the reference the ``ast`` renderer must match."""
    namespace: dict = {}
    exec(compile(SYNTHETIC_PROMPTS, "synthetic_anahv2_prompt.py", "exec"), namespace)  # our own test text
    return namespace


def sentence_of(messages: list[dict]) -> str:
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    for marker in SENTENCE_MARKERS:
        found = marker.search(first_user)
        if found:
            return found.group(1)
    raise AssertionError(f"no sentence marker in the judge prompt: {first_user[:200]!r}")


def check_conversation(messages: list[dict]) -> None:
    """What an InternLM2 chat model accepts: [system], user, assistant, user, ..., user."""
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if not roles or roles[-1] != "user" or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)):
        raise ValueError(f"roles must alternate user/assistant after an optional system message and end with "
                         f"user, got {[m['role'] for m in messages]}")


@dataclass
class ScriptedAnahJudgeDouble:
    script: dict[str, list[str]]
    name: str = "scripted-anah-judge-double"
    model: str = "scripted-anah-judge-double"
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    decodings: list[Decoding] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[list[str]]:
        self.calls.append(list(requests))
        self.decodings.append(decoding)
        out = []
        for r in requests:
            if r.n != 1:
                raise ValueError("the judge is asked for one answer per turn")
            check_conversation(r.messages)
            turn = sum(1 for m in r.messages if m["role"] == "assistant")
            out.append([self.script[sentence_of(r.messages)][turn]])
        return out
