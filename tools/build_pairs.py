"""Build chosen/rejected pairs from annotated samples (same as ``maskdpo pairs``).

    python tools/build_pairs.py --annotations data/annotations.jsonl --out pairs.jsonl
"""

from maskdpo.commands.pairs import pairs

if __name__ == "__main__":
    pairs(prog_name="build_pairs.py")
