#!/usr/bin/env python
"""Label every sentence of every sample: ``python tools/annotate.py --samples S.jsonl --questions Q.jsonl --out A.jsonl``.

The same command as ``maskdpo annotate`` (see ``--help`` and docs/sampling.md).
"""

from maskdpo.commands.annotate import annotate

if __name__ == "__main__":
    annotate(prog_name="tools/annotate.py")
