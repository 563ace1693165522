"""Student inputs and targets: the source prompt of an example, its label string, and the target files."""

from __future__ import annotations

import logging

import pandas as pd

from . import ablations, io
from .datasets import COMMON_COLUMNS
from .prompts import format_choices

log = logging.getLogger(__name__)

LABEL_FORMATS = ("letter", "text")
TARGET_COLUMNS = ["id", "task", "source", "target", "label", "label_start", "label_end"]


def format_source(row: dict) -> str:
    """The student's input: the question and its options, ending where the answer begins."""
    if row["task"] == "mcqa":
        return f"Question: {row['question']}\nChoices: {format_choices(row['choices'], 'semicolon')}\nAnswer:"
    if row["task"] == "nli":
        return f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}\nAnswer:"
    return f"Problem: {row['body']} {row['question']}\nAnswer:"


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


def build_targets(data: pd.DataFrame, rationales: pd.DataFrame | None, ablation: str, spec: dict,
                  label_format: str, seed: int) -> pd.DataFrame:
    """One target row per example that has a kept rationale (all examples when the ablation needs none).

    Each example's randomness comes from `ablations.example_rng` (seed, kind and parameters, example id): the same
    example gets the same perturbation whatever the row order, the other rows or the ablation's name.
    """
    abl = ablations.get(spec, ablation)
    resolved = ablations.resolve(spec, ablation)
    params = {k: v for k, v in resolved.items() if k != "kind"}
    if rationales is not None:
        data = data.merge(rationales[["id", "rationale"]], on="id", how="inner")  # same rows for every ablation
    elif abl.needs_rationale:
        raise ValueError(f"ablation {ablation!r} needs teacher rationales")
    rows = []
    for row in data.to_dict("records"):
        label = label_string(row, label_format)
        rng = ablations.example_rng(seed, resolved, row["id"])
        target = abl.build(row, row.get("rationale"), label, params, rng)
        marked = ablations.wrap_label(label)
        start = target.rfind(marked) + len(ablations.MARK) + 1
        if start < len(ablations.MARK) + 1:
            raise ValueError(f"ablation {ablation!r}: target for row id {row['id']!r} lacks {marked!r}")
        rows.append({"id": row["id"], "task": row["task"], "source": format_source(row), "target": target,
                     "label": label, "label_start": start, "label_end": start + len(label)})
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def build_target_file(data: str, rationales: str | None, ablation: str, spec: dict, label_format: str, seed: int,
                      out: str) -> None:
    """`build_targets` from and to Parquet, as the `targets` rule runs it."""
    df = io.read_parquet(data, required=COMMON_COLUMNS)
    rat = io.read_parquet(rationales, required=["id", "rationale"]) if rationales else None
    if rat is not None:
        stray = rat.loc[~rat["id"].isin(df["id"]), "id"]
        if len(stray):
            raise ValueError(f"{rationales}: {len(stray)} rationale ids are not in {data} (e.g. {list(stray[:3])}): "
                             f"files do not align")
    out_df = build_targets(df, rat, ablation, spec, label_format, seed)
    if out_df.empty:
        raise ValueError(f"ablation {ablation!r}: no targets from {data} and {rationales}")
    log.info("%s: %d targets (%s, labels as %s)", ablation, len(out_df), spec, label_format)
    io.write_parquet(out_df, out)
