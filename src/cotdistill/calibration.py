"""Calibration of a classifier's confidence: expected calibration error, Brier score, reliability bins.

Confidence is the probability of the predicted label normalised over the candidate labels (MI paper, Table 6; its
authors' ECE script scored one decoder step per vocabulary entry and is not followed). Bins are equal-width over
[0, 1], closed on the right, the first also on the left, as in Guo et al. (2017).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .datasets import eval_equation
from .stats import bin_index, confidences
from .targets import candidate_labels, label_string

MAX_NUMBERS = 6  # SVAMP candidates: numbers of a problem taken into the one-operation equations
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _arrays(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = confidences(confidence)
    hit = np.asarray(correct, dtype=bool)
    if conf.shape != hit.shape or conf.ndim != 1 or not len(conf):
        raise ValueError(f"expected two equal-length non-empty vectors, got shapes {conf.shape} and {hit.shape}")
    return conf, hit


def reliability(confidence, correct, bins: int = 10) -> pd.DataFrame:
    """One row per non-empty bin: its range, count, mean confidence and accuracy (the reliability diagram)."""
    conf, hit = _arrays(confidence, correct)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = bin_index(conf, bins)
    rows = [{"low": edges[b], "high": edges[b + 1], "count": int((index == b).sum()),
             "confidence": float(conf[index == b].mean()), "accuracy": float(hit[index == b].mean())}
            for b in range(bins) if (index == b).any()]
    return pd.DataFrame(rows, columns=["low", "high", "count", "confidence", "accuracy"])


def ece(confidence, correct, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
    table = reliability(confidence, correct, bins)
    return float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / table["count"].sum())


def brier(probabilities, gold) -> float:
    """Mean squared distance between each item's distribution over its candidates and the one-hot gold: rows of
    `probabilities` may have different lengths (items with different candidate sets)."""
    total = 0.0
    for p, g in zip(probabilities, gold, strict=True):
        p = np.asarray(p, dtype=float)
        if not 0 <= g < len(p):
            raise ValueError(f"gold index {g} outside the {len(p)} candidates")
        target = np.zeros_like(p)
        target[g] = 1.0
        total += float(((p - target) ** 2).sum())
    return total / len(gold)


def candidates(row: dict, label_format: str, predicted: str | None = None) -> list[str]:
    """The labels an item's confidence is normalised over. Multiple choice and NLI: its choices. SVAMP, whose
    answers are open equations: every one-operation equation over two numbers of the problem (``a + b``,
    ``a * b``, and ``a - b``, ``a / b`` in both orders; its first `MAX_NUMBERS` distinct numbers), the gold
    equation and the predicted one when it is an equation."""
    if row["task"] != "math":
        return candidate_labels(row, label_format)
    numbers = list(dict.fromkeys(f"{float(x)}" for x in _NUMBER.findall(f"{row['body']} {row['question']}")))
    numbers = numbers[:MAX_NUMBERS]
    out = [f"( {a} {op} {b} )" for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j
           for op in (("+", "*", "-", "/") if i < j else ("-", "/"))]
    out.append(label_string(row, label_format))
    if predicted is not None:
        try:
            eval_equation(predicted)
            out.append(predicted)
        except ValueError:
            pass
    return list(dict.fromkeys(out))


def item(log_probs, classes: list[str], predicted: str | None, gold: str) -> tuple[float, bool, list[float], int]:
    """One item's (confidence, correct, distribution over its candidate classes, gold's index in it).

    Candidates are normalised by softmax and summed per class (equations of equal value are one answer). The
    confidence is the predicted class's probability; an unparsed or invalid prediction, which counts as wrong,
    is given its model's top class probability."""
    lp = np.asarray(log_probs, dtype=float)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    keys = list(dict.fromkeys(classes))
    dist = [float(p[[c == k for c in classes]].sum()) for k in keys]
    conf = dist[keys.index(predicted)] if predicted in keys and predicted != "<invalid>" else max(dist)
    conf = min(1.0, conf)  # a class summing several candidates may exceed 1 by rounding
    correct = predicted is not None and predicted == gold != "<invalid>"
    return conf, correct, dist, keys.index(gold)


def summary(confidence, correct, distributions, gold_index, bins: int = 10) -> dict:
    """ECE, mean confidence, accuracy, Brier score and the reliability bins of one model's items."""
    table = reliability(confidence, correct, bins)
    return {"ece": ece(confidence, correct, bins), "confidence": float(np.mean(confidence)),
            "accuracy": float(np.mean(correct)), "brier": brier(distributions, gold_index), "bins": bins,
            "reliability": table.to_dict("records")}
