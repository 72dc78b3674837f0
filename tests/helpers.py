"""Pieces several test modules share: JSONL rows on disk, a world dumped under two hash seeds, the judged answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from maskdpo.records import Question, Sample


def write_rows(path: Path, rows: list, blank_after: int | None = None) -> Path:
    """Write ``rows`` as JSON lines (a blank line after the first ``blank_after`` rows, when given)."""
    text = [json.dumps(r, ensure_ascii=False) for r in rows]
    if blank_after is not None:
        text.insert(blank_after, "")
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def world_dump_under_two_hash_seeds(imports: str, build: str, extra: str) -> list[str]:
    """What a fresh Python prints as JSON after ``build`` (statements that set ``w`` to a world): the world, its
    questions and ``extra``; once with PYTHONHASHSEED 1 and once with 2. String hashing is randomised per
    process, so equal outputs show that nothing depends on set or dict-of-str order."""
    code = (f"import json; {imports}; {build}; "
            f"print(json.dumps([w.to_dict(), [q.to_dict() for q in w.questions], {extra}], sort_keys=True))")
    return [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]


# The answers the ANAH-v2 annotation tests judge sentence by sentence: a greeting, a true fact, a false one,
# facts the document does not cover, and a sentence the scripted judge answers badly.
ADA_ANSWER = ("Hello there! Ada Lovelace was born in 1815. She lived on Mars. She wrote the first program. "
              "Her cat was named Bob. She liked tea.")
CITIES_ANSWER = "北京是中国的首都。上海在火星上。你好！"


def judged_questions() -> dict:
    """The questions of ``judged_samples``, by id (new objects on each call: a test may change them)."""
    return {"ada": Question(id="ada", question="Who was Ada Lovelace?", document="Ada Lovelace (1815-1852) ...",
                            language="en"),
            "zh": Question(id="zh", question="介绍中国的城市。", document="北京是中国的首都。上海在中国。", language="zh")}


def judged_samples(ada_answer: str, cities_answer: str) -> list:
    """One sample of each question of ``judged_questions``, answered by the given texts."""
    common = dict(messages=[{"role": "user", "content": "q"}], model="m", backend="hf", generation={})
    return [Sample(question_id="ada", sample_index=0, response=ada_answer, **common),
            Sample(question_id="zh", sample_index=0, response=cities_answer, **common)]
