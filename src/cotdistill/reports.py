"""Paper tables from per-item predictions: accuracy with an interval that respects the design, paired tests
against the baselines, the paper's claim checked for significance, and a per-item drill-down.

Every accuracy cell is the mean over seeds +- their standard deviation, with a 95% percentile interval from a
bootstrap over test items and seeds (`stats.bootstrap_interval`), beside the majority-class rate. Every ablation is
compared with the experiment's reference ablations (``compare_to``, default the no-CoT and CoT-after ablations) on
the same items: a paired bootstrap of the difference pooled over seeds (Holm-adjusted within each dataset, student
and reference) and an exact McNemar test per seed. Published numbers come from ``resources/published/<paper>.csv``,
the report kind's paper.
What else a report shows (claims, figure, the overlap of human words with attribution tokens) depends on its kind
(`reportkinds.REPORTS`, ``experiments.<name>.report``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .ablations import wrap_label
from .evaluation import load_eval
from .config import transfer_name
from .reportkinds import REPORTS, Claim, ReportKind, matches, published_path
from .stats import bootstrap_interval, holm, mcnemar_exact, paired_bootstrap, paired_ece_bootstrap
from .targets import format_source

log = logging.getLogger(__name__)

ALPHA = 0.05
MARKS = "*†‡§¶"


def mark(i: int) -> str:
    """The mark of the i-th reference: a symbol, then numbers."""
    return MARKS[i] if i < len(MARKS) else f"^{i + 1}"
_PATH = re.compile(r"(?:eval|transfer/(?P<testset>[^/]+))/(?P<dataset>[^/]+)/(?P<teacher>[^/]+)/(?P<student>[^/]+)/"
                   r"(?P<ablation>[^/]+)/seed(?P<seed>\d+)\.json$")





@functools.lru_cache(maxsize=None)
def _published(paper: str) -> pd.DataFrame:
    text = Path(published_path(paper)).read_text()
    return pd.read_csv(StringIO(text), comment="#", dtype={"position": str})


def published(paper: str = "mysteries") -> pd.DataFrame:
    """A paper's published numbers (a CSV under ``resources/published``), read once per process."""
    return _published(paper).copy()


PUBLISHED_KEYS = ("table", "ablation_kind", "student", "dataset", "accuracy", "labels")  # others: ablation parameters


PAPER_SETTINGS = {"k": 15, "method": "integrated_gradients", "max_words": 15,  # what the papers' table rows used
                  "train_fraction": 1.0}


def published_accuracy(pub: pd.DataFrame, spec: dict, student: str | None, dataset: str | None,
                       labels: str = "gold") -> float | None:
    """The published number of an ablation, if any: by kind, by the labels students trained on (a ``labels``
    column, empty for gold) and by each parameter the file has a column for (``position``, ``aux``, ...) where the
    row gives one; none for settings the paper did not use (an ig_topk with k = 5, say)."""
    if any(spec.get(k, v) != v for k, v in PAPER_SETTINGS.items()):
        return None
    hit = pub[(pub.ablation_kind == spec["kind"]) & (pub.student == student) & (pub.dataset == dataset)]
    if "labels" in pub.columns:
        hit = hit[hit["labels"].fillna("gold") == labels]
    for param in (c for c in pub.columns if c not in PUBLISHED_KEYS):
        hit = hit[hit[param].isna() | (hit[param].astype(str) == str(spec.get(param)))]
    return float(hit["accuracy"].iloc[0]) if len(hit) else None


def _seed_of(names: tuple, seed: int) -> int:
    """A bootstrap seed from the report seed and the names compared, so every number is reproducible alone."""
    return int(io.json_digest([seed, *names])[:8], 16)


# --------------------------------------------------------------------------- collecting


CALIBRATION_KEYS = ("ece", "confidence", "brier")  # from each eval JSON's calibration; NaN for older evals


def collect(evals: list[str], predictions: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per eval JSON, one row per model x item with its prediction and correctness)."""
    rows, items = [], []
    for path, pred_path in zip(evals, predictions, strict=True):
        m = _PATH.search(str(path))
        if not m:
            raise ValueError(f"{path}: not an eval JSON path (eval/<dataset>/<teacher>/<student>/<ablation>/seedN.json "
                             f"or transfer/<testset>/<dataset>/...)")
        parts = m.groupdict()
        testset = parts.pop("testset")
        key = {**parts, "seed": int(m["seed"]), "test_dataset": testset or parts["dataset"]}
        if testset:
            key["dataset"] = transfer_name(parts["dataset"], testset)
        r = load_eval(path)
        rows.append({**key, "path": str(path), "reliability": r.get("calibration", {}).get("reliability"),
                     "accuracy": r["accuracy"], "correct": r["correct"], "n": r["n"],
                     "unparsed": r["unparsed"], "majority_rate": r["majority_rate"], "collapsed": r["collapsed"],
                     "top_prediction": r["top_prediction"], "top_share": r["top_prediction_share"],
                     **{f"cal_{k}": r.get("calibration", {}).get(k, np.nan) for k in CALIBRATION_KEYS}})
        p = io.read_parquet(pred_path, required=["id", "predicted_class", "gold_class", "parsed_label"])
        if "confidence" not in p.columns:  # evaluated before calibration existed
            p = p.assign(confidence=np.nan)
        if len(p) != r["n"]:
            raise ValueError(f"{pred_path}: {len(p)} predictions but {path} counts n = {r['n']}: files do not align")
        correct = p["predicted_class"].notna() & (p["predicted_class"] == p["gold_class"]) & (
            p["gold_class"] != "<invalid>")
        if int(correct.sum()) != r["correct"]:
            raise ValueError(f"{pred_path}: {int(correct.sum())} correct predictions but {path} counts "
                             f"{r['correct']}: files do not align")
        items.append(p.assign(**key, correct=correct.to_numpy())[
            ["dataset", "test_dataset", "student", "ablation", "seed", "id", "parsed_label", "predicted_class",
             "gold_class", "correct", "confidence"]])
    return pd.DataFrame(rows), pd.concat(items, ignore_index=True)


def correctness(items: pd.DataFrame, dataset: str, student: str, ablation: str,
                seeds: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """The (seeds x items) correctness matrix of one cell, items in id order."""
    cell = items[(items.dataset == dataset) & (items.student == student) & (items.ablation == ablation)]
    seeds = sorted(cell["seed"].unique()) if seeds is None else seeds
    wide = cell.pivot(index="seed", columns="id", values="correct").loc[seeds]
    return wide.sort_index(axis=1).to_numpy(dtype=bool), seeds


def check_aligned(items: pd.DataFrame) -> None:
    """Every model of a dataset must have answered the same items: comparisons are paired."""
    for ds, g in items.groupby("dataset"):
        sets = g.groupby(["student", "ablation", "seed"])["id"].apply(frozenset)
        if sets.nunique() > 1:
            first, other = sets.index[0], sets.index[(sets != sets.iloc[0]).to_numpy().argmax()]
            raise ValueError(f"dataset {ds}: {'/'.join(map(str, first))} and {'/'.join(map(str, other))} were "
                             f"evaluated on different test items; paired comparisons need the same items")


# --------------------------------------------------------------------------- summary and tests


def summarise(evals: pd.DataFrame, items: pd.DataFrame, config: dict, paper: str = "mysteries") -> pd.DataFrame:
    """One row per (dataset, student, ablation): mean and std over seeds, bootstrap interval, baselines, flags;
    `paper` names the published numbers (`published`)."""
    pub = published(paper)
    out = []
    for (ds, st, ab), g in evals.groupby(["dataset", "student", "ablation"], sort=False):
        matrix, _ = correctness(items, ds, st, ab)
        lo, hi = bootstrap_interval(matrix, seed=_seed_of((ds, st, ab), config.get("seed", 0)))
        worst = g.loc[g["top_share"].idxmax()]  # the most collapsed seed: its label and share belong together
        majority = float(g["majority_rate"].iloc[0])
        out.append({"dataset": ds, "student": st, "ablation": ab, "seeds": len(g),
                    "accuracy": 100 * g["accuracy"].mean(),
                    "std": 100 * g["accuracy"].std(ddof=1) if len(g) > 1 else 0.0,
                    "ci_low": 100 * lo, "ci_high": 100 * hi, "n": int(g["n"].iloc[0]),
                    "majority_rate": 100 * majority, "above_majority": bool(lo > majority),
                    "unparsed": int(g["unparsed"].sum()), "collapsed": bool(g["collapsed"].any()),
                    "top_prediction": worst["top_prediction"], "top_share": 100 * float(worst["top_share"]),
                    "top_seed": int(worst["seed"]),
                    **{f"cal_{k}": float(g[f"cal_{k}"].mean(skipna=False))  # NaN unless every seed has it
                       for k in CALIBRATION_KEYS},
                    "published": published_accuracy(pub, config["ablations"][ab], config["students"].get(st),
                                                    config["datasets"].get(ds), config.get("labels", "gold"))})
    return pd.DataFrame(out)


def compare(items: pd.DataFrame, dataset: str, student: str, a: str, b: str, seed: int = 0) -> dict:
    """Paired tests of ablation `a` against `b` on the same items, over the seeds both have."""
    seeds_a = set(items[(items.dataset == dataset) & (items.student == student) & (items.ablation == a)]["seed"])
    seeds_b = set(items[(items.dataset == dataset) & (items.student == student) & (items.ablation == b)]["seed"])
    seeds = sorted(seeds_a & seeds_b)
    if not seeds:
        raise ValueError(f"{dataset}/{student}: {a} and {b} share no seed; nothing to pair")
    ma, _ = correctness(items, dataset, student, a, seeds)
    mb, _ = correctness(items, dataset, student, b, seeds)
    boot = paired_bootstrap(ma, mb, seed=_seed_of((dataset, student, *sorted((a, b))), seed))  # same draws either way
    per_seed = [mcnemar_exact(ma[i], mb[i]) for i in range(len(seeds))]
    return {"dataset": dataset, "student": student, "ablation": a, "reference": b, "seeds": len(seeds),
            "n": ma.shape[1], "diff": 100 * boot.diff, "diff_low": 100 * boot.low, "diff_high": 100 * boot.high,
            "p_bootstrap": boot.p,
            "mcnemar": "; ".join(f"seed {s}: +{x}/-{y}, p={p:.3g}" for s, (x, y, p) in zip(seeds, per_seed)),
            "mcnemar_max_p": max(p for _, _, p in per_seed)}


def paired_tests(summary: pd.DataFrame, items: pd.DataFrame, config: dict,
                 sweep: tuple[str, str] | None = None) -> pd.DataFrame:
    """Every ablation against each reference in ``compare_to``, Holm-adjusted within (dataset, student, ref); two
    references are compared once (under the first). With a sweep (a sweep figure's kind and parameter), two
    ablations of that kind are compared only at the same value: a DSS+MI point against the DSS point of its own
    fraction, not against every fraction's, which would only widen each Holm family."""
    specs = config["ablations"]

    def same_point(a: str, b: str) -> bool:
        if sweep is None or not specs[a]["kind"] == specs[b]["kind"] == sweep[0]:
            return True
        return specs[a].get(sweep[1]) == specs[b].get(sweep[1])

    rows = []
    for (ds, st), g in summary.groupby(["dataset", "student"], sort=False):
        present = list(g["ablation"])
        refs = [r for r in config.get("compare_to", []) if r in present]
        for k, ref in enumerate(refs):
            family = [compare(items, ds, st, ab, ref, config.get("seed", 0)) for ab in present
                      if ab != ref and ab not in refs[:k] and same_point(ab, ref)]
            for row, adj in zip(family, holm([r["p_bootstrap"] for r in family]), strict=True):
                rows.append({**row, "p_holm": adj, "significant": adj < ALPHA})
    columns = ["dataset", "student", "ablation", "reference", "seeds", "n", "diff", "diff_low", "diff_high",
               "p_bootstrap", "p_holm", "significant", "mcnemar", "mcnemar_max_p"]
    return pd.DataFrame(rows, columns=columns)


def claims(summary: pd.DataFrame, items: pd.DataFrame, config: dict, kind: ReportKind) -> list[dict]:
    """Each of the report kind's claims per student and dataset: its verdict from every step of its chain (every
    pair of matching ablations), beside what the paper found; skipped where a link of the chain is missing."""
    return _checked(summary, items, config, kind.claims, compare, ece=False, paper=kind.paper)


PUBLISHED_TIE = 1.0  # published gaps (pp or ECE points) under this read as about equal: the papers give no
# intervals, and a paired difference on their test sets of about 1,000 items has one of about ±2 pp
VERDICT_OF = {"holds": "holds", "reversed": "reversed", "about equal": "not significant"}  # paper -> our verdict


def _checked(summary: pd.DataFrame, items: pd.DataFrame, config: dict, chains, test, ece: bool,
             paper: str = "mysteries") -> list[dict]:
    """The verdict of each claimed ordering per (dataset, student) it applies to: by accuracy (`test` =
    `compare`) or, with `ece`, by ECE, lower first (`compare_ece`), where a model without per-item confidences
    makes the claim not checkable; beside what the paper found there (`paper_finding`)."""
    specs = config["ablations"]
    out = []
    for (ds, st), g in summary.groupby(["dataset", "student"], sort=False):
        for c in chains:
            links = [[a for a in g["ablation"] if matches(specs[a], sel)] for sel in c.chain]
            if not all(links) or not applies(c, ds, config):
                continue
            found, basis = paper_finding(c, links, config, ds, paper, ece)
            row = {"dataset": ds, "student": st, "claim": c.text, "paper": found, "paper_basis": basis}
            used = items[(items.dataset == ds) & (items.student == st) & items.ablation.isin(sum(links, []))]
            if ece and used["confidence"].isna().any():
                out.append({**row, "verdict": "not checkable", "agrees": None, "detail": "no per-item confidences "
                            "in the predictions of some of its models (evaluated before calibration existed)"})
                continue
            steps = [test(items, ds, st, x, y, config.get("seed", 0))
                     for left, right in zip(links, links[1:]) for x in left for y in right]
            detail = "; ".join(f"{'ECE ' if ece else ''}{s['ablation']} − {s['reference']} = {s['diff']:+.1f} "
                               f"{'pts' if ece else 'pp'} [{s['diff_low']:+.1f}, {s['diff_high']:+.1f}], "
                               f"p = {s['p_bootstrap']:.3g}" for s in steps)
            v = verdict([(-x["diff"] if ece else x["diff"], x["p_bootstrap"]) for x in steps])  # lower ECE: better
            out.append({**row, "verdict": v, "agrees": agreement(found, v), "detail": detail})
    return out


def agreement(paper: str, verdict: str) -> bool | None:
    """Whether our verdict agrees with what the paper found; None where the paper has no one finding to agree
    with (its students differ, or the claim is beyond it)."""
    return VERDICT_OF[paper] == verdict if paper in VERDICT_OF else None


def paper_finding(claim: Claim, links: list[list[str]], config: dict, dataset: str, paper: str,
                  ece: bool) -> tuple[str, str]:
    """What the paper found for a claimed ordering on a dataset, and the published gaps it rests on. Read from its
    published numbers for each of its students that has every link of the chain there (holds: every step ahead by
    `PUBLISHED_TIE` or more; reversed: some step behind by as much; else about equal; mixed when its students
    differ); where no student has them all, what the paper states (`Claim.paper`), with an empty basis."""
    if claim.paper == "not in paper":
        return claim.paper, ""
    table = published("mi_calibration" if ece else paper)

    def value(ablation: str, student: str) -> float | None:
        if ece:
            hit = published_calibration(config, ablation, student, dataset)
            return hit[0] if hit else None
        return published_accuracy(table, config["ablations"][ablation], student, config["datasets"].get(dataset),
                                  config.get("labels", "gold"))

    gaps = {}
    for student in sorted(set(table["student"])):
        steps = [(value(x, student), value(y, student)) for left, right in zip(links, links[1:])
                 for x in left for y in right]
        if all(a is not None and b is not None for a, b in steps):
            gaps[student] = [round(b - a if ece else a - b, 6) for a, b in steps]  # claimed direction positive
    if not gaps:
        return claim.paper, ""
    each = {"holds" if min(g) >= PUBLISHED_TIE else "reversed" if min(g) <= -PUBLISHED_TIE else "about equal"
            for g in gaps.values()}
    basis = "; ".join(f"{s} {', '.join(f'{x:+.2f}' for x in g)}" for s, g in gaps.items())
    return (each.pop() if len(each) == 1 else "mixed"), f"published {'ECE ' if ece else ''}gaps: {basis}"


def applies(claim, dataset: str, config: dict) -> bool:
    """Whether a claim is checked on a dataset: every dataset, or those of the tasks it names."""
    return not claim.tasks or config.get("tasks", {}).get(dataset) in claim.tasks


def compare_ece(items: pd.DataFrame, dataset: str, student: str, a: str, b: str, seed: int = 0) -> dict:
    """Paired bootstrap of ECE(a) - ECE(b) on the same items and seeds (`stats.paired_ece_bootstrap`), in points."""
    cell = items[(items.dataset == dataset) & (items.student == student)]
    seeds = sorted(set(cell[cell.ablation == a]["seed"]) & set(cell[cell.ablation == b]["seed"]))
    if not seeds:
        raise ValueError(f"{dataset}/{student}: {a} and {b} share no seed; nothing to pair")

    def matrix(ab: str, column: str) -> np.ndarray:
        return cell[cell.ablation == ab].pivot(index="seed", columns="id", values=column).loc[seeds].sort_index(
            axis=1).to_numpy()

    r = paired_ece_bootstrap(matrix(a, "confidence"), matrix(a, "correct").astype(bool), matrix(b, "confidence"),
                             matrix(b, "correct").astype(bool),
                             seed=_seed_of((dataset, student, "ece", *sorted((a, b))), seed))
    return {"ablation": a, "reference": b, "diff": 100 * r.diff, "diff_low": 100 * r.low,
            "diff_high": 100 * r.high, "p_bootstrap": r.p}


def calibration_claims(summary: pd.DataFrame, items: pd.DataFrame, config: dict, kind: ReportKind) -> list[dict]:
    """The kind's orderings by ECE (lower first), as `claims` checks accuracy: holds when every step's ECE gap is
    significantly negative. A claim whose models lack per-item confidences (evaluated before calibration existed)
    is listed as not checkable."""
    return _checked(summary, items, config, kind.calibration_claims, compare_ece, ece=True, paper=kind.paper)


def verdict(steps: list[tuple[float, float]], alpha: float = ALPHA) -> str:
    """A claimed ordering from its steps' (difference, p): holds if every step is significantly in the claimed
    direction at `alpha` (an intersection-union test needs no correction); reversed if any step is significantly
    the other way at `alpha` / steps (Bonferroni over the union); else not significant."""
    if all(d > 0 and p < alpha for d, p in steps):
        return "holds"
    if any(d < 0 and p < alpha / len(steps) for d, p in steps):
        return "reversed"
    return "not significant"


# --------------------------------------------------------------------------- drill-down


def flips(items: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Per comparison and item: ``gained`` (the ablation right, its reference wrong, in every seed both have),
    ``lost`` (the reverse), ``mixed`` (a flip in some seeds only, or each way in different seeds) or empty (the
    two agree in every seed); one column per comparison."""
    columns = {}
    for t in tests.itertuples():
        cell = items[(items.dataset == t.dataset) & (items.student == t.student)]
        a = cell[cell.ablation == t.ablation].pivot(index="id", columns="seed", values="correct")
        b = cell[cell.ablation == t.reference].pivot(index="id", columns="seed", values="correct")
        seeds = sorted(set(a.columns) & set(b.columns))
        a, b = a[seeds].astype(bool), b[seeds].astype(bool)
        gained, lost = (a & ~b).any(axis=1), (~a & b).any(axis=1)
        state = pd.Series("", index=a.index)
        state[(a & ~b).all(axis=1)] = "gained"
        state[(~a & b).all(axis=1)] = "lost"
        state[(state == "") & (gained | lost)] = "mixed"
        columns[(t.dataset, f"flip:{t.student}/{t.ablation}-vs-{t.reference}")] = state
    frames = [pd.DataFrame({name: col for (d, name), col in columns.items() if d == ds}).assign(dataset=ds)
              for ds in dict.fromkeys(d for d, _ in columns)]
    return pd.concat(frames).rename_axis("id").reset_index() if frames else pd.DataFrame(columns=["id", "dataset"])


def drilldown(items: pd.DataFrame, flip_table: pd.DataFrame, data: list[str]) -> pd.DataFrame:
    """Per test item, every model's prediction and correctness side by side (one column pair per model), then
    the item's flip state in every comparison."""
    frames = []
    sources = {Path(d).parent.name: io.read_parquet(d) for d in data}
    for ds, g in items.groupby("dataset", sort=False):
        g = g.assign(model=g["student"] + "/" + g["ablation"] + "/seed" + g["seed"].astype(str))
        pred = g.pivot(index="id", columns="model", values="parsed_label").add_prefix("pred:")
        corr = g.pivot(index="id", columns="model", values="correct").add_prefix("correct:")
        models = list(dict.fromkeys(g["model"]))
        wide = pd.concat([pred, corr], axis=1)[[c for m in models for c in (f"pred:{m}", f"correct:{m}")]]
        gold = g.drop_duplicates("id").set_index("id")["gold_class"]
        src = sources.get(g["test_dataset"].iloc[0])
        inputs = src.set_index("id").apply(lambda r: format_source(r.to_dict()), axis=1) if src is not None \
            else pd.Series(dtype=str)
        frames.append(wide.assign(dataset=ds, gold=gold, input=inputs.reindex(wide.index)).reset_index())
    df = pd.concat(frames, ignore_index=True).merge(flip_table, on=["dataset", "id"], how="left")
    lead = ["dataset", "id", "input", "gold"]
    return df[lead + [c for c in df.columns if c not in lead]]


def flips_markdown(tests: pd.DataFrame, wide: pd.DataFrame, title: str, shown: int = 5) -> str:
    """Items that flip between each ablation and its reference, with a few examples each way."""
    lines = [f"# {title}: items that flip", "",
             "Per comparison: items the ablation gets right and its reference gets wrong in every seed both have "
             "(gained), the reverse (lost), and items that flip in some seeds only (mixed); the column "
             "`flip:<student>/<ablation>-vs-<reference>` of the items Parquet holds the same per item.", ""]
    for t in tests.itertuples():
        view = wide[wide.dataset == t.dataset].set_index("id")
        state = view[f"flip:{t.student}/{t.ablation}-vs-{t.reference}"]
        seed = min(int(c.rsplit("seed", 1)[1]) for c in view.columns if c.startswith(f"pred:{t.student}/{t.ablation}/seed")
                   and f"pred:{t.student}/{t.reference}/seed{c.rsplit('seed', 1)[1]}" in view.columns)
        counts = {k: int((state == k).sum()) for k in ("gained", "lost", "mixed")}
        lines += [f"## {t.dataset} / {t.student}: {t.ablation} vs {t.reference}", "",
                  f"Δ = {t.diff:+.1f} pp, paired bootstrap p = {t.p_bootstrap:.3g} (Holm {t.p_holm:.3g}); "
                  f"McNemar {t.mcnemar}. Gained in every seed: {counts['gained']}; lost in every seed: "
                  f"{counts['lost']}; mixed: {counts['mixed']}.", ""]
        for what in ("gained", "lost"):
            for rid in list(state.index[state == what])[:shown]:
                r = view.loc[rid]
                question = " ".join(str(r["input"]).split())[:140]
                lines.append(f"- {what} `{rid}`: {question} — gold {r['gold']}; {t.ablation} "
                             f"{r[f'pred:{t.student}/{t.ablation}/seed{seed}']!r}, {t.reference} "
                             f"{r[f'pred:{t.student}/{t.reference}/seed{seed}']!r} (seed {seed})")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- writing


def _cell(r: pd.Series, marks: str) -> str:
    text = f"{r.accuracy:.1f} ± {r['std']:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]{marks}"
    if r.collapsed:
        text += f" ⚠ collapsed ({r.top_share:.0f}% '{r.top_prediction}', seed {r.top_seed})"
    if r.unparsed:
        text += f" ({r.unparsed} unparsed)"
    return text


def published_calibration(config: dict, ablation: str, paper_student: str | None,
                          dataset: str) -> tuple[float, float] | None:
    """(ECE %, confidence %) the MI paper published for a model (Table 6, ``mi_calibration.csv``): by ablation
    kind and aux, the paper's student (``paper_name``) and test set, in or out of domain (a `transfer_name`
    dataset)."""
    spec = config["ablations"][ablation]
    if spec.get("reduction", "max") != "max" or spec.get("train_fraction", 1.0) != 1.0 \
            or config.get("labels", "gold") != "gold":
        return None  # Table 6 is for max pooling on all training data with gold labels
    transfer = config.get("transfer", {}).get(dataset)
    test = config["datasets"].get(transfer["test"] if transfer else dataset)
    pub = published("mi_calibration")
    hit = pub[(pub.ablation_kind == spec["kind"]) & (pub.aux.fillna("") == str(spec.get("aux", "")))
              & (pub.student == paper_student) & (pub.dataset == test)
              & (pub.domain == ("out" if transfer else "in"))]
    return (float(hit.ece.iloc[0]), float(hit.confidence.iloc[0])) if len(hit) else None


def calibration_lines(summary: pd.DataFrame, config: dict, paper: str) -> list[str]:
    """The calibration section, for models whose eval JSONs have one (mean over seeds); beside the MI paper's
    Table 6 where the report's paper is ``mi``."""
    cal = summary[summary["cal_ece"].notna()]
    if cal.empty:
        return []
    lines = ["", "## Calibration", "",
             "Confidence = the probability of the predicted label normalised over the item's candidate labels, each "
             "scored in the target format after what the model wrote before its label (multiple choice: the "
             "choices; SVAMP: one-operation equations over the problem's numbers, gold and predicted); ECE over 10 "
             "equal-width bins, in points; Brier over the candidates. Mean over seeds; `<a>-><b>`: trained on a, "
             "tested on b. 'paper': the MI paper's Table 6 (ECE / confidence) where kind, student and test set "
             "match. The reliability diagrams are in the report's `.reliability.png`.", "",
             "| dataset | student | ablation | accuracy % | confidence % | ECE % | Brier | paper ECE / conf. |",
             "|---|---|---|---|---|---|---|---|"]
    for r in cal.itertuples():
        pub = published_calibration(config, r.ablation, config["students"].get(r.student), r.dataset) \
            if paper == "mi" else None
        lines.append(f"| {r.dataset} | {r.student} | {r.ablation} | {r.accuracy:.1f} | {100 * r.cal_confidence:.1f} | "
                     f"{100 * r.cal_ece:.1f} | {r.cal_brier:.3f} | "
                     f"{f'{pub[0]:.2f} / {pub[1]:.2f}' if pub else '–'} |")
    return lines


def write_table(summary: pd.DataFrame, tests: pd.DataFrame, claim_rows: list[dict], config: dict,
                sources: list[str], title: str, out_prefix: str, kind: ReportKind | None = None,
                extra: list[str] | None = None) -> None:
    """`<out_prefix>.md`, `.csv`, `.tex` and `.tests.csv`."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    refs = [r for r in config.get("compare_to", []) if r in set(summary["ablation"])]
    legend = "; ".join(f"{mark(i)} differs from {r}" for i, r in enumerate(refs))
    seeds = sorted(set(summary["seeds"]))
    lines = [f"# {title}", "",
             f"Accuracy % as mean ± std over seeds ({'/'.join(map(str, seeds))} per cell) [95% interval from a "
             "bootstrap over test items and seeds, 10,000 replicates]. 'paper' is the published number where "
             "student and dataset match. Unparsed outputs count as wrong.",
             f"Marks: {legend or 'no reference ablation in this experiment'} (paired bootstrap over items and seeds, "
             f"Holm-adjusted within each dataset, student and reference, p < {ALPHA}).", ""]
    if config.get("scratch"):
        lines[-1:-1] = ["(from scratch): a student built from its config with random initial weights (no pretrained "
                        "weights exist offline), not the paper's pretrained model of that architecture."]
    if config.get("vectors"):
        lines[-1:-1] = ["Word vectors: " + "; ".join(
            f"{a}: {v['name'] or v['entry']} (`word_vectors.{v['entry']}`)" for a, v in config["vectors"].items()) +
            " (the paper's: word2vec GoogleNews 300-d)."]
    header = ["student", "ablation"] + [c for ds in datasets for c in (ds, f"{ds} paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sig = {key for t in tests.itertuples() if t.significant
           for key in ((t.dataset, t.student, t.ablation, t.reference), (t.dataset, t.student, t.reference, t.ablation))}
    for (st, ab), g in summary.groupby(["student", "ablation"], sort=False):
        cells = [f"{st} (from scratch)" if st in config.get("scratch", []) else st, ab]
        for ds in datasets:
            r = g[g["dataset"] == ds]
            marks = "".join(mark(i) for i, ref in enumerate(refs) if (ds, st, ab, ref) in sig)
            cells.append(_cell(r.iloc[0], marks) if len(r) else "")
            cells.append(f"{r.iloc[0].published:.2f}" if len(r) and pd.notna(r.iloc[0].published) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    majority = summary.groupby("dataset", sort=False)[["majority_rate", "n"]].first()
    lines += ["", "Majority-class rate of the test labels (what always giving the most frequent answer scores): " +
              "; ".join(f"{ds} {r.majority_rate:.1f}% (n = {int(r.n)})" for ds, r in majority.iterrows()), ""]
    below = summary[~summary["above_majority"]]
    lines.append("Interval above the majority rate: " + (
        "all rows." if below.empty else "not for " + ", ".join(f"{r.student}/{r.ablation}/{r.dataset}"
                                                              for r in below.itertuples()) + "."))
    collapsed = summary[summary["collapsed"]]
    if len(collapsed):
        lines.append("⚠ Collapsed models (one answer for ≥ 80% of items in some seed; they learned nothing): " +
                     ", ".join(f"{r.student}/{r.ablation}/{r.dataset}" for r in collapsed.itertuples()) + ".")
    lines += calibration_lines(summary, config, kind.paper if kind else "mysteries")
    lines += ["", "## Paired tests on the same test items", "",
              "Δ = ablation − reference in accuracy points, with its 95% paired-bootstrap interval; p from the "
              "paired bootstrap (items and seeds resampled together), Holm-adjusted; exact McNemar per seed "
              "(+items only the ablation got right / −items only the reference got right).", "",
              "| dataset | student | ablation | vs | Δ pp [95% CI] | p | p (Holm) | McNemar per seed |",
              "|---|---|---|---|---|---|---|---|"]
    for t in tests.itertuples():
        lines.append(f"| {t.dataset} | {t.student} | {t.ablation} | {t.reference} | {t.diff:+.1f} "
                     f"[{t.diff_low:+.1f}, {t.diff_high:+.1f}] | {t.p_bootstrap:.3g} | {t.p_holm:.3g}"
                     f"{' *' if t.significant else ''} | {t.mcnemar} |")
    if tests.empty:
        lines.append("| – | – | – | – | no reference ablation to compare with | | | |")
    kind = kind or REPORTS.get("table1")
    lines += ["", "## The paper's claims, checked here", "",
              "holds: every step of the ordering significantly in the claimed direction (paired bootstrap, p < 0.05 "
              "each); reversed: a step significantly the other way (p < 0.05 / steps); otherwise not significant. "
              f"'paper' is what the paper found on that dataset: from its published numbers where they cover the "
              f"claim (each step's gap per student of the paper, in the claimed direction; a gap under "
              f"{PUBLISHED_TIE:g} pp, or ECE point, reads as about equal, which 'not significant' here agrees with; "
              "mixed where its students differ), else what it states.", ""]
    lines += [f"- {c['student']} on {c['dataset']}: {c['claim']}: **{c['verdict']}** (paper: {c['paper']}"
              f"{' [' + c['paper_basis'] + ']' if c.get('paper_basis') else ''}"
              f"{'; differs' if c['agrees'] is False else ''}) ({c['detail']})" for c in claim_rows] or [
        f"- not checkable: no claim of this report ({'; '.join(c.text for c in every)}) applies to its ablations "
        f"and datasets" if (every := kind.claims + kind.calibration_claims)
        else "- this report kind checks no claim itself (see the note and the paired tests)"]
    if kind.note:
        lines += ["", f"Note: {kind.note}"]
    lines += extra or []
    lines += ["", "Eval files used:", ""] + [f"- `{s}`" for s in sources]
    with io.atomic_path(f"{out_prefix}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with io.atomic_path(f"{out_prefix}.csv") as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    with io.atomic_path(f"{out_prefix}.tests.csv") as tmp:
        tests.to_csv(tmp, index=False, float_format="%.6g")
    tex = summary.assign(cell=[f"{a:.1f} $\\pm$ {s:.1f}" for a, s in zip(summary["accuracy"], summary["std"])]).pivot(
        index=["student", "ablation"], columns="dataset", values="cell")[datasets]
    with io.atomic_path(f"{out_prefix}.tex") as tmp:
        tmp.write_text(tex.to_latex(caption=title, label=f"tab:{Path(out_prefix).name}"))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_prefix: str) -> None:
    for ext in ("png", "pdf"):
        with io.atomic_path(f"{out_prefix}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
    pyplot().close(fig)


LEVEL_COLOURS = {"none": "C7", "cot_before": "C9", "cot_after": "C8"}  # the same in every figure
FREE_COLOURS = [c for c in (f"C{i}" for i in range(10)) if c not in LEVEL_COLOURS.values()]  # sweeps and the rest


def write_sweep_figure(summary: pd.DataFrame, config: dict, kind: ReportKind, title: str, out_prefix: str) -> None:
    """Accuracy against the swept parameter (Figures 3 and 4): one panel per dataset x student, one line per
    series of the sweep (e.g. mask before / after), interval bands, and the levels of the other ablations
    (no CoT, CoT before, CoT after, ...) as horizontal lines."""
    plt = pyplot()
    specs = config["ablations"]
    groups = list(dict.fromkeys(zip(summary["dataset"], summary["student"])))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.8), squeeze=False)
    for ax, (ds, st) in zip(axes[0], groups, strict=True):
        cell = summary[(summary.dataset == ds) & (summary.student == st)]
        swept = cell[[specs[a]["kind"] == kind.sweep_kind for a in cell["ablation"]]]
        series: dict[str, list] = {}
        for r in swept.itertuples():  # one line per setting of every parameter but the swept one
            spec = specs[r.ablation]
            label = " ".join(f"{v}" if k == "position" else f"{k}={v}" for k, v in sorted(spec.items())
                             if k not in ("kind", kind.sweep) and _varies(swept, specs, k))
            series.setdefault(label, []).append((spec[kind.sweep], r.accuracy, r.ci_low, r.ci_high))
        for i, (label, pts) in enumerate(series.items()):
            x, y, lo, hi = map(np.array, zip(*sorted(pts), strict=True))
            colour = FREE_COLOURS[i % len(FREE_COLOURS)]
            ax.plot(x, y, marker="o", color=colour, label=f"{kind.sweep_kind} {label}".strip())
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2)
        for j, r in enumerate(cell[[specs[a]["kind"] != kind.sweep_kind for a in cell["ablation"]]].itertuples()):
            colour = LEVEL_COLOURS.get(specs[r.ablation]["kind"], FREE_COLOURS[(len(series) + j) % len(FREE_COLOURS)])
            ax.axhline(r.accuracy, color=colour, linestyle="--", label=r.ablation)
        ax.axhline(cell["majority_rate"].iloc[0], color="k", linestyle=":", label="majority")
        ax.set_xlabel(kind.sweep)
        ax.set_ylabel("accuracy % (95% CI, items x seeds)")
        ax.set_title(f"{ds} / {st}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_prefix)


def _varies(rows: pd.DataFrame, specs: dict, key: str) -> bool:
    return len({json.dumps(specs[a].get(key)) for a in rows["ablation"]}) > 1


def write_reliability(evals: pd.DataFrame, summary: pd.DataFrame, title: str, out_prefix: str) -> None:
    """`<out_prefix>.reliability.png`: one reliability diagram per model (dataset x student x ablation), each bin's
    accuracy against its mean confidence pooled over seeds (count-weighted), bar widths the bins, the diagonal
    perfect calibration, ECE in the title; a model whose eval JSONs hold no calibration gets an empty panel."""
    plt = pyplot()
    models = list(summary[["dataset", "student", "ablation"]].itertuples(index=False, name=None))
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax, (ds, st, ab) in zip(axes.flat, models):
        g = evals[(evals.dataset == ds) & (evals.student == st) & (evals.ablation == ab)]
        rels = list(g["reliability"])
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
        if rels and all(rel is not None for rel in rels):  # every seed's bins, or none of them
            df = pd.DataFrame([b for rel in rels for b in rel])
            pooled = df.groupby(["low", "high"]).apply(lambda b: pd.Series({
                "count": b["count"].sum(), "confidence": np.average(b["confidence"], weights=b["count"]),
                "accuracy": np.average(b["accuracy"], weights=b["count"])}), include_groups=False).reset_index()
            ax.bar(pooled["low"], pooled["accuracy"], width=pooled["high"] - pooled["low"], align="edge",
                   edgecolor="k", alpha=0.7, label="accuracy")
            ax.plot(pooled["confidence"], pooled["accuracy"], "o", color="C3", markersize=3,
                    label="mean confidence")
            ece = summary[(summary.dataset == ds) & (summary.student == st) & (summary.ablation == ab)]["cal_ece"]
            ax.set_title(f"{ds} / {st}\n{ab}: ECE {100 * float(ece.iloc[0]):.1f}%", fontsize=8)
        else:
            ax.set_title(f"{ds} / {st}\n{ab}: no calibration in its eval JSONs", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle(f"{title}: reliability (10 bins, pooled over seeds)", fontsize=9)
    with io.atomic_path(f"{out_prefix}.reliability.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_figure(summary: pd.DataFrame, title: str, out_prefix: str) -> None:
    """Grouped bars (one group per dataset x student, one bar per ablation) with interval error bars."""
    plt = pyplot()
    groups = list(dict.fromkeys(zip(summary["dataset"], summary["student"])))
    abls = list(dict.fromkeys(summary["ablation"]))
    width = 0.8 / len(abls)
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(groups)) + 1.6, 3.8), layout="constrained")
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
    ax.set_ylabel("accuracy % (95% CI, items x seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    save_figure(fig, out_prefix)


def appended_words(targets: str) -> dict[str, list[str]]:
    """id -> the words a target file appends after the label (ig_topk, human_words, ... targets)."""
    df = io.read_parquet(targets, required=["id", "target", "label"])
    return {str(i): t[len(wrap_label(lab)):].split() for i, t, lab in zip(df["id"], df["target"], df["label"],
                                                                           strict=True)}


def overlap_section(targets: list[str], config: dict) -> list[str]:
    """Precision and recall of human-picked words against the IG tokens (the paper: 0.73 / 0.59 on QuaRel), from
    the training targets of the experiment's human_words and ig_topk ablations on each dataset."""
    from .annotations import overlap

    by_kind: dict[tuple[str, str], dict[str, str]] = {}
    for path in targets:
        ds, ab = Path(path).parts[-4], Path(path).parts[-2]
        by_kind.setdefault((ds, config["ablations"][ab]["kind"]), {})[ab] = path
    lines = ["", "## Human words against IG tokens", "",
             "Precision = shared word types / human word types, recall = shared / IG token types, pooled over the "
             "training examples both have (lower-cased). The paper (QuaRel, its own annotators): precision 0.73, "
             "recall 0.59.", ""]
    rows = 0
    for ds in dict.fromkeys(d for d, _ in by_kind):
        for hw, hpath in by_kind.get((ds, "human_words"), {}).items():
            for ig, ipath in by_kind.get((ds, "ig_topk"), {}).items():
                o = overlap(appended_words(hpath), appended_words(ipath))
                if o["precision"] is None or o["recall"] is None:
                    lines.append(f"- {ds}: {hw} vs {ig}: no example has words in both ({o['examples']} shared ids)")
                else:
                    lines.append(f"- {ds}: {hw} vs {ig}: precision {o['precision']:.2f}, recall {o['recall']:.2f} "
                                 f"({o['examples']} examples, {o['shared_words']} shared words)")
                rows += 1
    return lines if rows else lines + ["- not computable: the experiment needs a human_words and an ig_topk "
                                       "ablation on the same dataset"]


_JUDGE_PATH = re.compile(r"judge/[^/]+/(?P<dataset>[^/]+)/[^/]+/(?:teacher|(?P<student>[^/]+)/(?P<ablation>[^/]+)/"
                         r"seed(?P<seed>\d+))\.parquet$")


def judge_section(paths: list[str], seed: int = 0) -> list[str]:
    """Rationale quality (MI Tables 7-8): per dataset and source (the teacher, each judged model over its seeds),
    the mean grade with a 95% bootstrap interval over items, replies left unparsed, and the Pearson correlation
    (with its p) between an item's mean grade and whether the source's label was right."""
    from scipy.stats import pearsonr

    from .judge import JUDGE_COLUMNS

    if not paths:
        return []
    frames = []
    for path in paths:
        m = _JUDGE_PATH.search(str(path))
        if not m:
            raise ValueError(f"{path}: not a judge file path (judge/<judge>/<dataset>/<teacher>/...)")
        source = "teacher" if m["student"] is None else f"{m['student']}/{m['ablation']}"
        frames.append(io.read_parquet(path, required=JUDGE_COLUMNS).assign(
            dataset=m["dataset"], model=source, seed=int(m["seed"] or 0)))
    df = pd.concat(frames, ignore_index=True)
    lines = ["", "## Rationale quality", "",
             "Grades 1-5 from the experiment's judge (its samples per rationale averaged per item) on the same seeded "
             "test items for every source; mean over items and seeds [95% bootstrap interval over items]; r = "
             "Pearson correlation of an item's grade with the source's label being right (the teacher: its label "
             "agreeing with gold), p its two-sided p-value (n/a where correctness or grades do not vary).", "",
             "| dataset | source | items | grade [95% CI] | unparsed replies | label right % | r (p) |",
             "|---|---|---|---|---|---|---|"]
    for (ds, source), g in df.groupby(["dataset", "model"], sort=False):
        per_item = g.groupby("id")["score"].mean().dropna()
        rng = np.random.default_rng(_seed_of((ds, source, "judge"), seed))
        values = per_item.to_numpy()
        boot = values[rng.integers(0, len(values), (2000, len(values)))].mean(1) if len(values) else np.array([np.nan])
        graded = g.dropna(subset=["score"]).groupby("id")[["score", "correct"]].mean()  # one point per item
        if graded["correct"].nunique() > 1 and graded["score"].nunique() > 1:
            r, p = pearsonr(graded["score"], graded["correct"].astype(float))
            corr = f"{r:+.2f} (p = {p:.3g})"
        else:
            corr = "n/a"
        lines.append(f"| {ds} | {source} | {g['id'].nunique()} | {values.mean():.2f} [{np.quantile(boot, 0.025):.2f}, "
                     f"{np.quantile(boot, 0.975):.2f}] | {int(g['unparsed'].sum())} | "
                     f"{100 * g['correct'].mean():.0f} | {corr} |")
    return lines


def report(evals: list[str], predictions: list[str], data: list[str], config: dict, experiment: str,
           out_prefix: str, targets: list[str] | None = None, judge: list[str] | None = None) -> pd.DataFrame:
    """Tables (md, csv, tex), paired tests (tests.csv), drill-down (items.parquet, flips.md) and figure, as the
    experiment's report kind has them."""
    kind = REPORTS.get(config.get("report", "table1"), f"experiments.{experiment}.report")
    evals_df, items = collect(evals, predictions)
    check_aligned(items)
    summary = summarise(evals_df, items, config, kind.paper)
    tests = paired_tests(summary, items, config, (kind.sweep_kind, kind.sweep) if kind.figure == "sweep" else None)
    claim_rows = claims(summary, items, config, kind) + calibration_claims(summary, items, config, kind)
    title = f"{experiment}: {kind.title}"
    extra = (overlap_section(targets or [], config) if kind.overlap else []) + judge_section(judge or [],
                                                                                             config.get("seed", 0))
    write_table(summary, tests, claim_rows, config, sorted(evals), title, out_prefix, kind, extra)
    wide = drilldown(items, flips(items, tests), data)
    io.write_parquet(wide, f"{out_prefix}.items.parquet")
    with io.atomic_path(f"{out_prefix}.flips.md") as tmp:
        tmp.write_text(flips_markdown(tests, wide, experiment))
    if kind.figure == "sweep":
        write_sweep_figure(summary, config, kind, title, out_prefix)
    else:
        write_figure(summary, title, out_prefix)
    write_reliability(evals_df, summary, title, out_prefix)
    log.info("report %s (%s) from %d eval files: %d paired tests; claims: %s", out_prefix,
             config.get("report", "table1"), len(evals), len(tests), [c["verdict"] for c in claim_rows])
    return summary
