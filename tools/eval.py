#!/usr/bin/env python
"""Evaluate factuality: ANAH score and Biography FactScore, Table-1 reports.

    python tools/eval.py score --anah NAME=ANNOTATIONS.jsonl --factscore NAME=RESPONSES.jsonl \
        --wiki-db enwiki-20230401.db --judge-model MODEL --out reports/
    python tools/eval.py run --model NAME=PATH --anah-questions question_document.jsonl \
        --bio-entities prompt_entities.txt --wiki-db enwiki-20230401.db ... --out reports/

The same as ``maskdpo eval``; see ``--help`` and docs/evaluation.md.
"""

from maskdpo.commands.eval import eval_command

if __name__ == "__main__":
    eval_command(prog_name="tools/eval.py")
