"""The reports of ``maskdpo demo`` and its studies: summaries over seeds, Markdown tables, plots, files.

The demo (:mod:`maskdpo.toyworld.demo`) and the mask study compare models on
every split of the world and share one summary (:func:`summarize`) and one
pair of tables (:func:`comparison_tables`); the topic study
(:mod:`maskdpo.toyworld.study`) compares Mask-DPO runs on pair subsets.
Every number in every table goes through :func:`cell` (mean, or mean ± sample
standard deviation over seeds), every report is written as
``OUT/<stem>.{md,json,png}`` by :func:`write_report_files`.
"""

from __future__ import annotations

import json
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..settings import settings_dict

if TYPE_CHECKING:  # demo.py imports this module; the settings class is only named in annotations here
    from .demo import DemoSettings

MODELS = ("base", "dpo", "maskdpo")  # the demo's comparison, in table order
MODEL_TITLES = {"base": "base policy", "dpo": "DPO (mask none)", "maskdpo": "Mask-DPO",
                "mask-chosen": "mask chosen only", "mask-rejected": "mask rejected only"}
SPLIT_TITLES = {"train": "train", "test": "held-out people", "test_family": "held-out families"}
METRICS = ("anah", "fact_precision", "facts_per_response")
DIFFERENCES = (("maskdpo", "dpo"), ("maskdpo", "base"), ("dpo", "base"))
DEMO_FORMAT = "maskdpo/toyworld-demo@1"

# The topic study (``--study topics``): its file stem (also its folder in OUT/seed-S/), its shares of the families
# (the paper's 894 / 1,788 / 2,682 topics are 1 : 2 : 3), and its groups of questions. test_seen / test_unseen:
# held-out people of families in / not in the subset; test_family: the held-out families (rich world only).
STUDY = "study-topics"
FORMAT = "maskdpo/toyworld-study-topics@1"
FRACTIONS = (1 / 3, 2 / 3, 1.0)
GROUPS = ("train", "test", "test_seen", "test_unseen", "test_family")
GROUP_TITLES = {"train": "train", "test": "held-out", "test_seen": "held-out, seen families",
                "test_unseen": "held-out, unseen families", "test_family": "held-out families"}

# The mask study (``--study mask``): its file stem (and folder), the models it trains and compares.
MASK_STUDY = "study-mask"
MASK_FORMAT = "maskdpo/toyworld-study-mask@1"
MASK_MODELS = ("base", "dpo", "mask-chosen", "mask-rejected", "maskdpo")  # table order: none → one side → both
MASK_DIFFERENCES = (("maskdpo", "dpo"), ("mask-chosen", "dpo"), ("mask-rejected", "dpo"),
                    ("maskdpo", "mask-chosen"), ("maskdpo", "mask-rejected"))


# ---------------------------------------------------------------- numbers over seeds


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def spread_entry(values: list[float]) -> dict:
    """``{"mean", "spread", "per_seed"}`` of one metric over seeds."""
    mean, spread = mean_spread(values)
    return {"mean": mean, "spread": spread, "per_seed": values}


def difference_entry(diffs: list[float]) -> dict:
    """:func:`spread_entry` of within-seed differences, plus ``wins``: the seeds where the first was higher."""
    return {**spread_entry(diffs), "wins": sum(d > 0 for d in diffs)}


def cell(values: list[float], digits: int = 2) -> str:
    """A table cell: the mean of one value, mean ± spread of several."""
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def metric_cell(entry: dict | None, metric: str = "anah") -> str:
    """The cell of one metric of a summary entry; "–" where the entry is missing."""
    return "–" if entry is None else cell(entry[metric]["per_seed"])


def difference_cell(entry: dict, seeds: int) -> str:
    """A within-seed difference: mean ± spread, then (wins/seeds)."""
    return f"{cell(entry['per_seed'])} ({entry['wins']}/{seeds})"


def values_cell(values: list[int]) -> str:
    """One value when every seed has it, else all of them (``4/5``)."""
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def seeds_label(seeds: int, quick: bool) -> str:
    return f"{seeds} seed{'s' if seeds > 1 else ''}{', quick' if quick else ''}"


def score_sentence(seeds: int) -> str:
    """What the tables' ANAH score is, and what ± means."""
    return ("ANAH score (% correct sentences, nofact counted correct) of sampled answers (top-k 40, T 0.8)"
            + (", mean ± sample standard deviation over seeds." if seeds > 1 else "."))


# ---------------------------------------------------------------- models compared per split (demo, mask study)


def splits_of(per_seed: list[dict]) -> tuple[str, ...]:
    """The splits every seed evaluated, in report order (train, held-out people, held-out families)."""
    present = [set(s["models"]["base"]) for s in per_seed]
    return tuple(split for split in SPLIT_TITLES if all(split in p for p in present))


def summarize(per_seed: list[dict], models: tuple[str, ...] = MODELS,
              differences: tuple[tuple[str, str], ...] = DIFFERENCES) -> dict:
    """Mean and spread over seeds of every metric, and of the within-seed differences of the ANAH score."""
    splits = splits_of(per_seed)
    summary: dict = {"seeds": [s["seed"] for s in per_seed], "splits": list(splits), "models": {},
                     "differences": {}}
    for name in models:
        summary["models"][name] = {
            split: {metric: spread_entry([s["models"][name][split][metric] for s in per_seed]) for metric in METRICS}
            for split in splits}
    for a, b in differences:
        summary["differences"][f"{a}-{b}"] = {
            split: difference_entry([s["models"][a][split]["anah"] - s["models"][b][split]["anah"] for s in per_seed])
            for split in splits}
    return summary


def split_pair_key(key: str) -> tuple[str, str]:
    """``mask-chosen-dpo`` -> (mask-chosen, dpo): model names may contain one hyphen."""
    for name in MODEL_TITLES:
        if key.startswith(name + "-") and key[len(name) + 1:] in MODEL_TITLES:
            return name, key[len(name) + 1:]
    raise KeyError(f"not a difference key: {key!r}")


def metrics_table(summary: dict, models: tuple[str, ...]) -> list[str]:
    """Markdown rows: per model, ANAH %, fact precision % and facts per answer on every split."""
    splits = summary["splits"]
    header = "| Model | " + " | ".join(f"{SPLIT_TITLES[s]}: {col}" for s in splits
                                      for col in ("ANAH %", "fact precision %", "facts/answer")) + " |"
    lines = [header, "|---|" + "---:|" * (3 * len(splits))]
    for name in models:
        cells = [MODEL_TITLES[name]]
        for split in splits:
            cells += [metric_cell(summary["models"][name][split], metric) for metric in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def differences_table(summary: dict) -> list[str]:
    """Markdown rows: within-seed differences of the ANAH score with wins per seed."""
    splits = summary["splits"]
    k = len(summary["seeds"])
    lines = ["| Difference | " + " | ".join(SPLIT_TITLES[s] for s in splits) + " |",
             "|---|" + "---:|" * len(splits)]
    for key, d in summary["differences"].items():
        a, b = split_pair_key(key)
        cells = [f"{MODEL_TITLES[a]} − {MODEL_TITLES[b]}"] + [difference_cell(d[split], k) for split in splits]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_tables(summary: dict, models: tuple[str, ...]) -> list[str]:
    """The metrics table of ``models``, then the table of within-seed differences."""
    return (metrics_table(summary, models)
            + ["", "Within-seed differences of the ANAH score (points; wins = seeds where the first is higher):", ""]
            + differences_table(summary))


def report_markdown(summary: dict, settings: DemoSettings) -> str:
    k = len(summary["seeds"])
    lines = [f"# Toy-world demo: base vs DPO vs Mask-DPO ({settings.world} world, {seeds_label(k, settings.quick)})",
             "", score_sentence(k), ""]
    lines += comparison_tables(summary, MODELS)
    lines += ["", "train = fresh samples of the training questions; held-out people = people whose questions were "
                  "never in preference training"
              + ("; held-out families = families none of whose members was in preference training"
                 if "test_family" in summary["splits"] else "")
              + ". Per-seed details: seed-*/scores.json."]
    return "\n".join(lines) + "\n"


def mask_study_markdown(summary: dict, settings: DemoSettings) -> str:
    k = len(summary["seeds"])
    lines = [f"# Toy-world study: which side to mask ({settings.world} world, {seeds_label(k, settings.quick)})", "",
             "The same pairs and base policy, preference-trained with the mask on neither side (DPO), the chosen "
             "side only (its hallucinated sentences left out), the rejected side only (its correct sentences left "
             "out) and both (Mask-DPO). " + score_sentence(k), ""]
    lines += comparison_tables(summary, MASK_MODELS)
    lines += ["", "The paper trains only both and none. Per-seed details: seed-*/study-mask/scores.json."]
    return "\n".join(lines) + "\n"


@contextmanager
def _figure(path: Path, size: tuple[float, float]) -> Iterator:
    """The axes of a new figure with the ANAH score on the y axis; saved to ``path`` on leaving."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the demo runs on servers and in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=120)
    try:
        yield ax
        ax.set_ylabel("ANAH score (sampled answers)")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_models(summary: dict, models: tuple[str, ...], path: Path, title: str) -> None:
    """Bars of the sampled ANAH score (mean ± spread) per split and model."""
    splits = summary["splits"]
    with _figure(path, (2.2 + 2.0 * len(splits), 3.8)) as ax:
        width = 0.8 / len(models)
        for j, name in enumerate(models):
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(splits))]
            entries = [summary["models"][name][split]["anah"] for split in splits]
            bars = ax.bar(xs, [e["mean"] for e in entries], width, yerr=[e["spread"] for e in entries], capsize=3,
                          label=MODEL_TITLES[name])
            ax.bar_label(bars, labels=[f"{e['mean']:.1f}" for e in entries], fontsize=6)
        ax.set_xticks(range(len(splits)), [SPLIT_TITLES[s] for s in splits])
        low = min(summary["models"][n][s]["anah"]["mean"] for n in models for s in splits)
        ax.set_ylim(max(0.0, low - 15), 100)
        ax.legend(fontsize=7, loc="upper left", ncol=2)  # bars stay below ~90: the top left is free
        ax.set_title(title, fontsize=10)


def plot_summary(summary: dict, path: Path) -> None:
    plot_models(summary, MODELS, path, "Toy world: factuality after preference training")


def write_report_files(out: Path, stem: str, markdown: str, record: dict,
                       plot: Callable[[Path], None]) -> dict[str, Path]:
    """``out/<stem>.md``, ``.json`` (``record``) and ``.png`` (drawn by ``plot``); returns their paths."""
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    paths["markdown"].write_text(markdown, encoding="utf-8")
    paths["json"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    plot(paths["png"])
    return paths


def write_reports(settings: DemoSettings, per_seed: list[dict]) -> dict[str, Path]:
    """The demo's ``OUT/report.{md,json,png}`` and the evaluation stage's Table-1 files per split."""
    from ..jsonl import load_jsonl
    from ..metrics.anah import anah_runs
    from ..records import Annotation
    from ..report import ModelResult, write_report

    out = Path(settings.out)
    summary = summarize(per_seed)
    paths = write_report_files(out, "report", report_markdown(summary, settings),
                               {"format": DEMO_FORMAT, "settings": settings_dict(settings), "summary": summary,
                                "per_seed": per_seed},
                               lambda png: plot_summary(summary, png))
    for split in summary["splits"]:  # the evaluation stage's own Table-1 files, one run per seed
        models = []
        for name in MODELS:
            runs = [load_jsonl(s["models"][name][split]["annotations"], Annotation.from_dict)[0] for s in per_seed]
            models.append(ModelResult(MODEL_TITLES[name], anah=anah_runs(runs)))
        for kind, p in write_report(out, models, settings={"split": split}, stem=f"table1-{split}").items():
            paths[f"table1-{split}-{kind}"] = p
    return paths


def write_mask_study_reports(settings: DemoSettings, per_seed: list[dict]) -> dict[str, Path]:
    """``OUT/study-mask.{md,json,png}``; returns their paths."""
    summary = summarize(per_seed, MASK_MODELS, MASK_DIFFERENCES)
    return write_report_files(Path(settings.out), MASK_STUDY, mask_study_markdown(summary, settings),
                              {"format": MASK_FORMAT, "settings": settings_dict(settings), "summary": summary,
                               "per_seed": per_seed},
                              lambda png: plot_models(summary, MASK_MODELS, png,
                                                      "Toy world: which side of the pair to mask"))


# ---------------------------------------------------------------- the topic study


def summarize_study(per_seed: list[dict]) -> dict:
    """Per setting (in topic order) and for the base policy: mean and spread over seeds of each group's metrics.

    A group missing in a seed (no held-out person of an unseen family when all families are trained on) is left
    out of that seed's values; with no values at all its entry is None.
    """
    def entry(group_dicts: list) -> dict | None:
        present = [g for g in group_dicts if g is not None]
        if not present:
            return None
        return {metric: spread_entry([g[metric] for g in present]) for metric in METRICS}

    n_settings = {len(s["settings"]) for s in per_seed}
    if len(n_settings) != 1:
        raise ValueError(f"seeds differ in their number of study settings: {sorted(n_settings)}")
    summary: dict = {"seeds": [s["seed"] for s in per_seed],
                     "base": {g: entry([s["base"].get(g) for s in per_seed]) for g in ("train", "test", "test_family")},
                     "settings": []}
    for i in range(n_settings.pop()):
        rows = [s["settings"][i] for s in per_seed]
        differences = {}
        for g in [g for g in ("train", "test", "test_family")
                  if all(g in r["groups"] for r in rows)]:  # against the fewest-topics setting, within each seed
            differences[g] = difference_entry([r["groups"][g]["anah"] - s["settings"][0]["groups"][g]["anah"]
                                               for r, s in zip(rows, per_seed)])
        summary["settings"].append({
            "topics": [r["topics"] for r in rows], "pairs": [r["pairs"] for r in rows],
            "families": [s["families"] for s in per_seed],
            "groups": {g: entry([r["groups"].get(g) for r in rows]) for g in GROUPS},
            "minus_fewest_topics": differences})
    return summary


def study_markdown(summary: dict, settings: DemoSettings) -> str:
    k = len(summary["seeds"])
    lines = [f"# Toy-world study: more topics vs more questions per topic ({seeds_label(k, settings.quick)})", "",
             "Mask-DPO trained from the same base policy on equal-size pair subsets drawn from more or fewer "
             "families (topic = family). " + score_sentence(k), "",
             "| Training pairs from | topics | pairs | pairs/topic | train: ANAH % | held-out: ANAH % "
             "| held-out, seen families | held-out, unseen families | held-out: fact precision % "
             "| held-out: facts/answer | held-out families: ANAH % | held-out families: facts/answer |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = summary["base"]
    lines.append(f"| base policy (no preference training) | – | – | – | {metric_cell(base['train'])} "
                 f"| {metric_cell(base['test'])} | – | – | {metric_cell(base['test'], 'fact_precision')} "
                 f"| {metric_cell(base['test'], 'facts_per_response')} | {metric_cell(base.get('test_family'))} "
                 f"| {metric_cell(base.get('test_family'), 'facts_per_response')} |")
    for row in summary["settings"]:
        g = row["groups"]
        per_topic = sum(row["pairs"]) / sum(row["topics"])
        lines.append(f"| Mask-DPO, {values_cell(row['topics'])} families | {values_cell(row['topics'])} "
                     f"| {values_cell(row['pairs'])} | {per_topic:.1f} | {metric_cell(g['train'])} "
                     f"| {metric_cell(g['test'])} | {metric_cell(g['test_seen'])} | {metric_cell(g['test_unseen'])} "
                     f"| {metric_cell(g['test'], 'fact_precision')} | {metric_cell(g['test'], 'facts_per_response')} "
                     f"| {metric_cell(g.get('test_family'))} "
                     f"| {metric_cell(g.get('test_family'), 'facts_per_response')} |")
    first = summary["settings"][0]
    lines += ["", f"Within-seed differences of the ANAH score from the {values_cell(first['topics'])}-family "
                  "setting (points; wins = seeds where more topics scored higher):", "",
              "| Setting | " + " | ".join(GROUP_TITLES[g] for g in first["minus_fewest_topics"]) + " |",
              "|---|" + "---:|" * len(first["minus_fewest_topics"])]
    for row in summary["settings"][1:]:
        d = row["minus_fewest_topics"]
        lines.append(f"| {values_cell(row['topics'])} − {values_cell(first['topics'])} families "
                     + "".join(f"| {difference_cell(d[g], k)} " for g in d) + "|")
    lines += ["", "train = fresh samples of all training questions (of every family); held-out = people never in "
                  "preference training, split into those whose family the subset covered and the others; "
                  "held-out families (rich world) = families none of whose members was in preference training. "
                  "Paper, Table 4 (894 / 1,788 / 2,682 topics): ANAH 65.04 / 71.56 / 77.53. "
                  f"Per-seed details: seed-*/{STUDY}/scores.json."]
    return "\n".join(lines) + "\n"


def plot_study(summary: dict, path: Path) -> None:
    """The ANAH score (mean ± spread) of each group against the number of training topics, base policy dotted."""
    with _figure(path, (6.0, 3.6)) as ax:
        xs = [sum(r["topics"]) / len(r["topics"]) for r in summary["settings"]]
        for group, style in (("train", "o-"), ("test", "s-"), ("test_unseen", "^--"), ("test_family", "d-.")):
            points = [(x, r["groups"][group]["anah"]) for x, r in zip(xs, summary["settings"])
                      if r["groups"][group] is not None]
            if not points:
                continue
            line = ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                               yerr=[p[1]["spread"] for p in points], fmt=style, capsize=3,
                               label=f"Mask-DPO, {GROUP_TITLES[group]}")
            if group in summary["base"] and summary["base"][group] is not None:
                ax.axhline(summary["base"][group]["anah"]["mean"], color=line[0].get_color(), linestyle=":",
                           linewidth=1, label=f"base policy, {GROUP_TITLES[group]}")
        pairs = sorted({p for r in summary["settings"] for p in r["pairs"]})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(f"training topics (families); pairs per setting: {'/'.join(map(str, pairs))}")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title("Toy world: more topics vs more questions per topic")


def write_study_reports(settings: DemoSettings, per_seed: list[dict]) -> dict[str, Path]:
    """``OUT/study-topics.{md,json,png}``; returns their paths."""
    summary = summarize_study(per_seed)
    return write_report_files(Path(settings.out), STUDY, study_markdown(summary, settings),
                              {"format": FORMAT, "settings": settings_dict(settings), "fractions": list(FRACTIONS),
                               "summary": summary, "per_seed": per_seed},
                              lambda png: plot_study(summary, png))


# ---------------------------------------------------------------- what the command prints


def printed_summary(settings: DemoSettings, paths: dict[str, Path]) -> list[str]:
    """The lines ``maskdpo demo`` prints at the end: the report's table, then where the outputs are."""
    out = paths["markdown"].parent
    lines = ["", paths["markdown"].read_text(encoding="utf-8"), "Outputs:"]
    lines += [f"  {paths[name]}" for name in ("markdown", "json", "png")]
    if settings.study == "topics":
        lines.append(f"  {out}/seed-*/{STUDY}/ (subsets, models, evaluation)")
    elif settings.study == "mask":
        lines.append(f"  {out}/seed-*/train/ (one model per mask), seed-*/eval/")
    else:
        lines.append(f"  {out}/table1-train.*, table1-test.* (Table-1 files), seed-*/ (every stage)")
    return lines
