"""Student inputs and targets: the source prompt of an example, its label string, and the target files."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd

from . import ablations, io
from .datasets import COMMON_COLUMNS, is_equation
from .prompts import format_choices

log = logging.getLogger(__name__)

LABEL_FORMATS = ("letter", "text")
TARGET_COLUMNS = ["id", "task", "source", "target", "label", "label_start", "label_end"]
EXPLAIN_COLUMNS = ["explain_source", "explanation"]  # multi-task ablations: the explain task of each row


def format_source(row: dict, prefix: str = "", suffix: str = "") -> str:
    """The student's input: the question and its options, ending where the answer begins (before any `suffix`); a
    multi-task student's task tag goes before it (`prefix`, DSS's ``predict: ``) or after it (`suffix`)."""
    if row["task"] == "mcqa":
        body = f"Question: {row['question']}\nChoices: {format_choices(row['choices'], 'semicolon')}\nAnswer:"
    elif row["task"] == "nli":
        body = f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}\nAnswer:"
    else:
        body = f"Problem: {row['body']} {row['question']}\nAnswer:"
    return prefix + body + suffix


def label_string(row: dict, label_format: str) -> str:
    """What goes between the markers: the choice letter (as in the paper) or the answer text."""
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format {label_format!r}; valid choices: {', '.join(LABEL_FORMATS)}")
    if row["task"] == "mcqa" and label_format == "text":
        return str(row["answer_text"])
    return str(row["answer_label"])


def candidate_labels(row: dict, label_format: str) -> list[str]:
    """Every label string the example admits (its choices), for calibration and label distributions."""
    if row["task"] == "math":
        return [str(row["answer_label"])]
    key = "text" if (row["task"] == "mcqa" and label_format == "text") else "label"
    return [str(c[key]) for c in row["choices"]]


def with_teacher_labels(data: pd.DataFrame, rationales: pd.DataFrame) -> pd.DataFrame:
    """`data` relabelled with the teacher's parsed label (MI Table 3): rows whose teacher label names no choice
    (or is no equation with an operation, `datasets.is_equation`) are left out and counted in the log. The test
    split keeps its gold labels."""
    from .evaluation import canonical, normalise

    merged = data.merge(rationales[["id", "label"]].rename(columns={"label": "teacher_label"}), on="id", how="inner")
    rows = []
    for row in merged.to_dict("records"):
        lab = row.pop("teacher_label")
        if lab is None or (isinstance(lab, float) and pd.isna(lab)):
            continue
        if row["task"] == "math":
            if is_equation(str(lab)):
                rows.append({**row, "answer_label": str(lab)})
            continue
        letter = next((c for c in (canonical(str(lab), row, f) for f in LABEL_FORMATS) if c not in (None,
                                                                                                 "<invalid>")), None)
        if letter is None:
            continue
        choice = next(c for c in row["choices"] if normalise(c["label"]) == letter)
        rows.append({**row, "answer_label": choice["label"], "answer_text": choice.get("text", row.get("answer_text"))})
    out = pd.DataFrame(rows, columns=data.columns)
    changed = int((out.set_index("id")["answer_label"] != data.set_index("id").loc[out["id"], "answer_label"]).sum())
    log.info("teacher labels: %d of %d rows kept, %d of them differ from gold", len(out), len(merged), changed)
    return out


def build_targets(data: pd.DataFrame, rationales: pd.DataFrame | None, ablation: str, spec: dict,
                  label_format: str, seed: int, resources: ablations.Resources | None = None) -> pd.DataFrame:
    """One target row per example that has a kept rationale (all examples when the ablation needs none).

    Each example's randomness comes from `ablations.example_rng` (seed, kind and parameters, example id): the same
    example gets the same perturbation whatever the row order, the other rows or the ablation's name. The
    vocabulary of `random_words` is every word type of the rationales file, sorted (drawn uniformly over types):
    the whole file's, so it does not move with a subsample or a training fraction. Examples whose rationale is
    missing or blank (a teacher's unparsed output kept by ``policy: keep``) are left out of every ablation, so
    all ablations train on the same rows; the log counts them. A multi-task ablation's rows put its predict prefix
    before the source (and suffix after it) and carry the explain task (`EXPLAIN_COLUMNS`: the source framed by
    the explain prefix and suffix, and the rationale as its target). A kind with a ``train_fraction`` parameter
    keeps the examples whose draw from (seed, example id) falls under it, so a smaller fraction's examples are a
    subset of a larger one's.
    """
    abl = ablations.get(spec, ablation)
    resolved = ablations.resolve(spec, ablation)
    params = {k: v for k, v in resolved.items() if k != "kind"}
    res = resources or ablations.Resources()
    if rationales is not None:
        blank = rationales["rationale"].isna() | (rationales["rationale"].astype(str).str.strip() == "")
        if blank.any():
            log.warning("%d of %d rationales are missing or blank (e.g. ids %s): their examples are left out",
                        int(blank.sum()), len(rationales), list(rationales.loc[blank, "id"][:5]))
        rationales = rationales[~blank]
        data = data.merge(rationales[["id", "rationale"]], on="id", how="inner")  # same rows for every ablation
        if "vocabulary" in abl.needs and res.vocabulary is None:
            words = {w for r in rationales["rationale"] for w in str(r).split()}
            res = dataclasses.replace(res, vocabulary=sorted(words))
    elif abl.needs_rationale:
        raise ValueError(f"ablation {ablation!r} needs teacher rationales")
    missing = [k for k in abl.needs if getattr(res, k) is None]
    if missing:
        raise ValueError(f"ablation {ablation!r} (kind {spec['kind']!r}) needs {', '.join(missing)}")
    rows = []
    fraction = params.get("train_fraction", 1.0)
    for row in data.to_dict("records"):
        if fraction < 1.0 and ablations.keyed_rng(seed, "train_fraction", str(row["id"])).random() >= fraction:
            continue  # one uniform draw per example: the subsets of a fraction sweep are nested
        label = label_string(row, label_format)
        rng = ablations.example_rng(seed, resolved, row["id"])
        target = abl.build(row, row.get("rationale"), label, params, rng, res)
        marked = ablations.wrap_label(label)  # the label's own markers: first if it leads, last if it ends
        start = (target.find(marked) if abl.label_first(params) else target.rfind(marked)) + len(ablations.MARK) + 1
        if start < len(ablations.MARK) + 1:
            raise ValueError(f"ablation {ablation!r}: target for row id {row['id']!r} lacks {marked!r}")
        out = {"id": row["id"], "task": row["task"], "source": format_source(row), "target": target,
               "label": label, "label_start": start, "label_end": start + len(label)}
        if abl.multitask:
            out.update(source=format_source(row, params["predict_prefix"], params.get("predict_suffix", "")),
                       explain_source=format_source(row, params["explain_prefix"], params.get("explain_suffix", "")),
                       explanation=row["rationale"])
        rows.append(out)
    return pd.DataFrame(rows, columns=TARGET_COLUMNS + (EXPLAIN_COLUMNS if abl.multitask else []))


def load_resources(spec: dict, attribution: str | None = None, human_words: str | list[str] | None = None,
                   vectors: str | None = None) -> ablations.Resources:
    """The resources an ablation kind declares, read from the files the `targets` rule wires in."""
    needs = ablations.ABLATIONS.get(spec["kind"]).needs
    res = ablations.Resources()
    if "attribution" in needs:
        from .attribution import read_scores

        res.attribution = read_scores(attribution)
    if "human_words" in needs:
        from .annotations import read_human_words

        res.human_words = read_human_words(human_words)
    if "vectors" in needs:
        from .wordvectors import load

        res.vectors = load(vectors)
    return res


def build_target_file(data: str, rationales: str | None, ablation: str, spec: dict, label_format: str, seed: int,
                      out: str, attribution: str | None = None, human_words: str | list[str] | None = None,
                      vectors: str | None = None, labels: str = "gold") -> None:
    """`build_targets` from and to Parquet, as the `targets` rule runs it (``labels: teacher``: on the teacher's
    labels, `with_teacher_labels`); fails when an ablation that appends words after the label appended nothing to
    any example."""
    if labels not in ("gold", "teacher"):
        raise ValueError(f"teacher labels setting is {labels!r}; valid choices: gold, teacher")
    df = io.read_parquet(data, required=COMMON_COLUMNS)
    rat = io.read_parquet(rationales, required=["id", "rationale"]) if rationales else None
    for path, frame in ((data, df), (rationales, rat)):
        repeated = frame["id"][frame["id"].duplicated()] if frame is not None else []
        if len(repeated):
            raise ValueError(f"{path}: {len(repeated)} ids repeat (e.g. {list(repeated[:3])}): one row per example "
                             f"expected")
    if rat is not None:
        stray = rat.loc[~rat["id"].isin(df["id"]), "id"]
        if len(stray):
            raise ValueError(f"{rationales}: {len(stray)} rationale ids are not in {data} (e.g. {list(stray[:3])}): "
                             f"files do not align")
    if labels == "teacher":
        if rat is None:
            raise ValueError(f"ablation {ablation!r}: teacher labels need the teacher's rationales file")
        df = with_teacher_labels(df, io.read_parquet(rationales, required=["id", "label"]))
    res = load_resources(spec, attribution, human_words, vectors)
    out_df = build_targets(df, rat, ablation, spec, label_format, seed, res)
    if out_df.empty:
        raise ValueError(f"ablation {ablation!r}: no targets from {data} and {rationales}")
    if ablations.ABLATIONS.get(spec["kind"]).needs:
        bare = out_df["target"] == out_df["label"].map(ablations.wrap_label)
        if bare.all():
            raise ValueError(f"ablation {ablation!r}: nothing appended after the label for any of {len(out_df)} "
                             f"examples; check its resources ({attribution or human_words or vectors})")
        if bare.any():
            log.warning("%s: %d of %d targets have nothing after the label (e.g. ids %s)", ablation, int(bare.sum()),
                        len(out_df), list(out_df.loc[bare, "id"][:5]))
    log.info("%s: %d targets (%s, labels as %s)", ablation, len(out_df), spec, label_format)
    io.write_parquet(out_df, out)
