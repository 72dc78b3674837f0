#!/usr/bin/env python
"""Sample n responses per question: ``python tools/sample.py --questions Q.jsonl --out S.jsonl --model M``.

The same command as ``maskdpo sample`` (see ``--help`` and docs/sampling.md).
"""

from maskdpo.commands.sample import sample

if __name__ == "__main__":
    sample(prog_name="tools/sample.py")
