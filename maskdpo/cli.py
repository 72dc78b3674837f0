"""The ``maskdpo`` command. Each command lives in ``maskdpo/commands/<name>.py``
and is imported only when it runs, so ``maskdpo --help`` is instant."""

from __future__ import annotations

import importlib
import importlib.util

import click

from . import __version__

# name -> (module, attribute, one-line help shown by `maskdpo --help`)
COMMANDS = {
    "pairs": ("maskdpo.commands.pairs", "pairs", "Build chosen/rejected pairs with sentence spans from annotated samples."),
    "masks": ("maskdpo.commands.masks", "masks", "Show which response tokens the loss sees for each pair."),
    "sample": ("maskdpo.commands.sample", "sample", "Sample n responses per question (LMDeploy, OpenAI-compatible, transformers)."),
    "annotate": ("maskdpo.commands.annotate", "annotate", "Label every sentence of every sample (ANAH-v2 judge or another annotator)."),
    "protocol": ("maskdpo.commands.protocol", "protocol_command", "Fetch, add and list the official ANAH-v2 judge protocol files (pinned, sha256-checked)."),
    "import-preferences": ("maskdpo.commands.import_preferences", "import_preferences_command", "Turn a preference dataset (TRL, XTuner DPO, Hub) into questions and samples to annotate."),
    "tokenize": ("maskdpo.commands.tokenize", "tokenize", "Tokenize pair files once into the memory-mapped cache training reads."),
    "ref-cache": ("maskdpo.commands.ref_cache", "ref_cache", "Precompute the reference model's masked log-prob sums for a pair file."),
    "eval": ("maskdpo.commands.eval", "eval_command", "Score responses with the ANAH score and FactScore; write Table-1 reports."),
    "demo": ("maskdpo.commands.demo", "demo", "Run the whole method on the CPU toy world: base vs DPO vs Mask-DPO."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(COMMANDS[name][0]) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="maskdpo")
@click.option("--debug", is_flag=True, help="Show an error's traceback instead of the one-line message.")
def main(debug: bool) -> None:
    """maskdpo: Mask-DPO factuality alignment, native to XTuner and LMDeploy.

    The pipeline: sample → annotate → pairs → xtuner train → convert → eval.
    Every stage reads and writes JSONL records (see data/README.md).
    """


if __name__ == "__main__":
    main()
