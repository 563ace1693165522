"""Paper tables from eval JSONs: mean +- std over seeds, the 95% interval and majority rate beside every
accuracy, collapse flags, the published number where student and dataset match, and the paper's claim checked."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .evaluation import load_eval, wilson

log = logging.getLogger(__name__)

# Mysteries paper, Table 1 (accuracy %): placement x student x dataset.
PUBLISHED_TABLE1 = {
    "none": {"GPT-2": {"CSQA": 63.11, "OBQA": 60.20, "QuaRel": 59.05},
             "Phi-1.5": {"CSQA": 67.77, "OBQA": 56.81, "QuaRel": 76.82},
             "Gemma-2B": {"CSQA": 68.53, "OBQA": 58.15, "QuaRel": 73.39}},
    "cot_before": {"GPT-2": {"CSQA": 67.20, "OBQA": 69.71, "QuaRel": 66.27},
                   "Phi-1.5": {"CSQA": 70.83, "OBQA": 63.49, "QuaRel": 79.99},
                   "Gemma-2B": {"CSQA": 70.61, "OBQA": 65.85, "QuaRel": 74.90}},
    "cot_after": {"GPT-2": {"CSQA": 70.92, "OBQA": 70.26, "QuaRel": 71.04},
                  "Phi-1.5": {"CSQA": 72.56, "OBQA": 72.49, "QuaRel": 81.36},
                  "Gemma-2B": {"CSQA": 72.64, "OBQA": 68.93, "QuaRel": 78.16}},
}
_PATH = re.compile(r"eval/(?P<dataset>[^/]+)/(?P<teacher>[^/]+)/(?P<student>[^/]+)/(?P<ablation>[^/]+)/"
                   r"seed(?P<seed>\d+)\.json$")


def collect(paths: list[str]) -> pd.DataFrame:
    rows = []
    for p in paths:
        m = _PATH.search(str(p))
        if not m:
            raise ValueError(f"{p}: not an eval JSON path (eval/<dataset>/<teacher>/<student>/<ablation>/seedN.json)")
        r = load_eval(p)
        rows.append({**m.groupdict(), "seed": int(m["seed"]), "path": str(p), "accuracy": r["accuracy"],
                     "correct": r["correct"], "n": r["n"], "unparsed": r["unparsed"],
                     "majority_rate": r["majority_rate"], "collapsed": r["collapsed"],
                     "top_prediction": r["top_prediction"], "top_share": r["top_prediction_share"]})
    return pd.DataFrame(rows)


def summarise(evals: pd.DataFrame, config: dict, kinds: dict[str, str]) -> pd.DataFrame:
    """One row per (dataset, student, ablation): seeds pooled for the interval, mean and std for the table."""
    out = []
    for (ds, st, ab), g in evals.groupby(["dataset", "student", "ablation"], sort=False):
        lo, hi = wilson(int(g["correct"].sum()), int(g["n"].sum()))
        paper_st = config["students"].get(st, {}).get("paper_name")
        paper_ds = config["datasets"].get(ds, {}).get("paper_name")
        published = PUBLISHED_TABLE1.get(kinds.get(ab, ab), {}).get(paper_st, {}).get(paper_ds)
        out.append({"dataset": ds, "student": st, "ablation": ab, "seeds": len(g),
                    "accuracy": 100 * g["accuracy"].mean(), "std": 100 * g["accuracy"].std(ddof=1) if len(g) > 1
                    else 0.0, "ci_low": 100 * lo, "ci_high": 100 * hi, "n": int(g["n"].iloc[0]),
                    "majority_rate": 100 * g["majority_rate"].iloc[0], "above_majority": bool(lo > g["majority_rate"]
                                                                                              .iloc[0]),
                    "unparsed": int(g["unparsed"].sum()), "collapsed": bool(g["collapsed"].any()),
                    "top_prediction": g["top_prediction"].iloc[0], "top_share": 100 * g["top_share"].max(),
                    "published": published})
    return pd.DataFrame(out)


def claim(summary: pd.DataFrame, order: tuple[str, ...] = ("cot_after", "cot_before", "none")) -> list[str]:
    """The Mysteries claim "after > before > none", checked per student over the datasets that have all three."""
    lines = []
    for st, g in summary.groupby("student", sort=False):
        held, total, details = 0, 0, []
        for ds, d in g.groupby("dataset", sort=False):
            acc = dict(zip(d["ablation"], d["accuracy"]))
            if not all(a in acc for a in order):
                continue
            total += 1
            ok = all(acc[a] > acc[b] for a, b in zip(order, order[1:]))
            held += ok
            details.append(f"{ds}: " + " > ".join(f"{a} {acc[a]:.1f}" for a in order) if ok else
                           f"{ds}: " + ", ".join(f"{a} {acc[a]:.1f}" for a in order))
        if total:
            lines.append(f"{st}: {' > '.join(o.replace('cot_', '') for o in order)} holds on {held} of {total} "
                         f"dataset{'s' if total != 1 else ''} ({'; '.join(details)})")
    return lines


def _cell(r: pd.Series) -> str:
    text = f"{r.accuracy:.1f} ± {r['std']:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]"
    if r.collapsed:
        text += f" ⚠ collapsed ({r.top_share:.0f}% '{r.top_prediction}')"
    if r.unparsed:
        text += f" ({r.unparsed} unparsed)"
    return text


def write_table(summary: pd.DataFrame, sources: list[str], title: str, out_prefix: str) -> None:
    """`<out_prefix>.md`, `.csv` and `.tex`."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    lines = [f"# {title}", "", "Accuracy % as mean ± std over seeds [95% Wilson interval, seeds pooled]; "
             "'paper' is the published Table 1 number where student and dataset match. "
             "Unparsed outputs count as wrong.", ""]
    header = ["student", "ablation"] + [c for ds in datasets for c in (ds, f"{ds} paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (st, ab), g in summary.groupby(["student", "ablation"], sort=False):
        cells = [st, ab]
        for ds in datasets:
            r = g[g["dataset"] == ds]
            cells.append(_cell(r.iloc[0]) if len(r) else "")
            cells.append(f"{r.iloc[0].published:.2f}" if len(r) and pd.notna(r.iloc[0].published) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    majority = summary.groupby("dataset", sort=False)[["majority_rate", "n"]].first()
    lines += ["", "Majority-class rate of the test labels (what predicting the most frequent label scores): " +
              "; ".join(f"{ds} {r.majority_rate:.1f}% (n = {int(r.n)})" for ds, r in majority.iterrows()), ""]
    below = summary[~summary["above_majority"]]
    lines.append("Interval above the majority rate: " + (
        "all rows." if below.empty else "not for " + ", ".join(f"{r.student}/{r.ablation}/{r.dataset}"
                                                              for r in below.itertuples()) + "."))
    collapsed = summary[summary["collapsed"]]
    if len(collapsed):
        lines.append("⚠ Collapsed models (one answer for ≥ 80% of items; they learned nothing): " + ", ".join(
            f"{r.student}/{r.ablation}/{r.dataset}" for r in collapsed.itertuples()) + ".")
    lines += ["", "Claim (Mysteries paper): CoT after > CoT before > no CoT.", ""]
    lines += [f"- {c}" for c in claim(summary)] or ["- not checkable: a placement is missing"]
    lines += ["", "Eval files used:", ""] + [f"- `{s}`" for s in sources]
    with io.atomic_path(f"{out_prefix}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with io.atomic_path(f"{out_prefix}.csv") as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    tex = summary.assign(cell=[f"{a:.1f} $\\pm$ {s:.1f}" for a, s in zip(summary["accuracy"], summary["std"])]).pivot(
        index=["student", "ablation"], columns="dataset", values="cell")[datasets]
    with io.atomic_path(f"{out_prefix}.tex") as tmp:
        tmp.write_text(tex.to_latex(caption=title, label=f"tab:{Path(out_prefix).name}"))


def write_figure(summary: pd.DataFrame, title: str, out_prefix: str) -> None:
    """Grouped bars (one group per dataset x student, one bar per ablation) with interval error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(zip(summary["dataset"], summary["student"])))
    abls = list(dict.fromkeys(summary["ablation"]))
    width = 0.8 / len(abls)
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(groups)), 3.8))
    for j, ab in enumerate(abls):
        xs, ys, err = [], [], [[], []]
        for i, (ds, st) in enumerate(groups):
            r = summary[(summary.dataset == ds) & (summary.student == st) & (summary.ablation == ab)]
            if r.empty:
                continue
            r = r.iloc[0]
            xs.append(i + (j - (len(abls) - 1) / 2) * width)
            ys.append(r.accuracy)
            err[0].append(r.accuracy - r.ci_low)
            err[1].append(r.ci_high - r.accuracy)
        ax.bar(xs, ys, width, yerr=np.array(err), capsize=3, label=ab)
    for i, (ds, _) in enumerate(groups):
        m = summary[summary.dataset == ds]["majority_rate"].iloc[0]
        ax.hlines(m, i - 0.45, i + 0.45, colors="k", linestyles="dashed", label="majority" if i == 0 else None)
    ax.set_xticks(range(len(groups)), [f"{ds}\n{st}" for ds, st in groups])
    ax.set_ylabel("accuracy % (95% CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        with io.atomic_path(f"{out_prefix}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
    plt.close(fig)


def report(evals: list[str], config: dict, experiment: str, out_prefix: str) -> pd.DataFrame:
    """Table (md, csv, tex) and figure (png, pdf) for one experiment."""
    kinds = {name: spec["kind"] for name, spec in config["ablations"].items()}
    summary = summarise(collect(evals), config, kinds)
    title = f"{experiment}: accuracy by student and CoT placement"
    write_table(summary, sorted(evals), title, out_prefix)
    write_figure(summary, title, out_prefix)
    log.info("report %s from %d eval files", out_prefix, len(evals))
    return summary
