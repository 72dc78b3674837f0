"""Table-1-style reports: Markdown, JSON with everything, and a PNG bar chart.

The Markdown table has the shape of Mask-DPO's Table 1::

    | Model | ANAH #Cor | ANAH #Inc | ANAH %Score | FactScore #Cor | FactScore #Inc | FactScore %Score |

ANAH ``#Cor``/``#Inc`` are sentence totals over the test set; FactScore
``#Cor``/``#Inc`` are supported/unsupported facts per response. A model with
several runs shows the mean score ± the sample standard deviation of the
per-run scores, and mean counts.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .metrics.anah import AnahRuns, format_count

REPORT_FORMAT = "maskdpo/eval-report@1"


@dataclass
class ModelResult:
    """One model's results: ANAH runs and/or FactScore run summaries (``FactScoreResult.summary()``)."""

    name: str
    anah: AnahRuns | None = None
    factscore: list[dict] = field(default_factory=list)

    def factscore_summary(self) -> dict | None:
        """Mean (and spread, with several runs) of the FactScore run summaries.

        A run without any scored response (all abstained, say) has no score; it is
        counted in ``runs`` and left out of the means (``scored_runs`` says how many count).
        """
        if not self.factscore:
            return None
        runs = self.factscore
        scored = [r for r in runs if r["score"] is not None]

        def mean(key: str, digits: int | None = None) -> float | None:
            values = [r[key] for r in scored if r[key] is not None]
            if not values:
                return None
            m = statistics.fmean(values)
            return round(m, digits) if digits is not None else m

        return {"runs": len(runs), "scored_runs": len(scored), "score": mean("score", 2),
                "score_std": round(statistics.stdev(r["score"] for r in scored), 2) if len(scored) > 1 else 0.0,
                "score_no_penalty": mean("score_no_penalty", 2), "correct": mean("correct"),
                "incorrect": mean("incorrect"),
                "respond_ratio": statistics.fmean(r["respond_ratio"] for r in runs if r["respond_ratio"] is not None)
                if any(r["respond_ratio"] is not None for r in runs) else None,
                "facts_per_response": mean("facts_per_response"), "per_run": runs}

    def to_dict(self) -> dict:
        return {"name": self.name, "anah": self.anah.to_dict() if self.anah else None,
                "factscore": self.factscore_summary()}


def build_report(models: list[ModelResult], settings: dict | None = None) -> dict:
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    return {"format": REPORT_FORMAT, "models": [m.to_dict() for m in models], "settings": settings or {}}


def _score_cell(summary: dict) -> str:
    if summary["score"] is None:
        return "–"
    if summary["runs"] > 1:
        return f"{summary['score']:.2f} ± {summary['score_std']:.2f}"
    return f"{summary['score']:.2f}"


def _fact_count(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _protocol_remark(annotator: str) -> str:
    """What an ANAH-v2 annotator id (``AnahV2Annotator.annotator_id``) says about the measurement."""
    from .protocol import CHAT_TEMPLATE, PROMPTS, SPLITTER, pin_of_kind

    fields = dict(part.split("=", 1) for part in annotator.split() if "=" in part)
    if "protocol" not in fields:
        return ""
    # Everything eval.py fixes: its prompts, LMDeploy 0.5.2's system message, its splitter, an unlabelled
    # answer counted as not hallucinated, and the engine's default answer length.
    official = {"protocol": "official", "splitter": "anah-v2", "prompts_sha256": pin_of_kind(PROMPTS).sha256,
                "system_sha256": pin_of_kind(CHAT_TEMPLATE).sha256,
                "sentence_rewrites_sha256": pin_of_kind(SPLITTER).sha256, "unparseable": "ok", "max_new_tokens": "512"}
    differs = [f"{k} {fields.get(k, 'unrecorded')}" for k, v in official.items() if fields.get(k) != v]
    if not differs:
        return " — the official ANAH-v2 measurement (pinned official prompts and system message, official splitter)"
    return (f" — not the official ANAH-v2 measurement ({', '.join(differs)}): "
            f"not comparable with the paper's numbers")


def table1_markdown(report: dict) -> str:
    """The Markdown table (plus a legend) for a report from :func:`build_report`."""
    lines = ["| Model | ANAH #Cor | ANAH #Inc | ANAH %Score | FactScore #Cor | FactScore #Inc | FactScore %Score |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for m in report["models"]:
        a, f = m["anah"], m["factscore"]
        cells = [m["name"]]
        cells += [format_count(a["correct"]), format_count(a["incorrect"]), _score_cell(a)] if a else ["–"] * 3
        cells += [_fact_count(f["correct"]), _fact_count(f["incorrect"]), _score_cell(f)] if f else ["–"] * 3
        lines.append("| " + " | ".join(cells) + " |")
        if a:
            notes += [f"{m['name']}: ANAH annotations by `{annotator}`{_protocol_remark(annotator)}"
                      for annotator in a.get("annotators", [])]
        if a and a["runs"] == 1:
            rounded = f"{a['per_run'][0]['exact_score']:.2f}"
            if rounded != f"{a['score']:.2f}":
                notes.append(f"{m['name']}: ANAH-v2's eval.py prints {rounded} for the same counts "
                             f"(it rounds; the table truncates, as the paper's tables do).")
        if a and a["unparseable"]:
            notes.append(f"{m['name']}: {format_count(a['unparseable'])} ANAH judge answers were unparseable "
                         f"(mean per run).")
        if f and f["score"] is not None:
            notes.append(f"{m['name']}: FactScore respond ratio {f['respond_ratio']:.2f}, "
                         f"{f['facts_per_response']:.1f} facts per response, "
                         f"{f['score_no_penalty']:.2f} without the length penalty.")
        elif f:
            notes.append(f"{m['name']}: no FactScore: no response was scored (see report.json for abstentions, "
                         f"responses without facts and missing articles).")
    legend = ("ANAH: sentences over all responses, #Inc = contradictory + unverifiable, "
              "%Score = 100 × #Cor / N truncated to two decimals. "
              "FactScore: supported / unsupported facts per response; %Score = mean per-response score "
              "with the exp(1 − γ/|facts|) length penalty, abstentions left out. "
              "With several runs: mean ± sample standard deviation.")
    return "\n".join(lines + ["", legend] + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def plot_scores(report: dict, path: str | Path) -> None:
    """Grouped bars per model: ANAH %Score and FactScore %Score, with run spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot as plt

    models = report["models"]
    metrics = [("anah", "ANAH %Score"), ("factscore", "FactScore %Score")]
    metrics = [(k, label) for k, label in metrics if any(m[k] for m in models)]
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(models) + 2), 3.6), dpi=120)
    for j, (key, label) in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(models))]
        present = [bool(m[key]) and m[key]["score"] is not None for m in models]
        values = [m[key]["score"] if ok else 0.0 for m, ok in zip(models, present)]
        errors = [m[key]["score_std"] if ok else 0.0 for m, ok in zip(models, present)]
        bars = ax.bar(xs, values, width, yerr=errors, capsize=3, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" if ok else "" for v, ok in zip(values, present)], fontsize=7)
    ax.set_xticks(range(len(models)), [m["name"] for m in models])
    ax.set_ylabel("score")
    ax.set_ylim(0, 112)  # room for the value labels
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Factuality (higher is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out_dir: str | Path, models: list[ModelResult], settings: dict | None = None,
                 stem: str = "report") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(models, settings)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    paths["markdown"].write_text(table1_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n", encoding="utf-8")
    plot_scores(report, paths["png"])
    return paths
