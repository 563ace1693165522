"""Calibration of a classifier's confidence: expected calibration error, Brier score, reliability bins.

Confidence is the probability of the predicted label normalised over the candidate labels (MI paper, Table 6; its
authors' ECE script scored one decoder step per vocabulary entry and is not followed). Bins are equal-width over
[0, 1], closed on the right, the first also on the left, as in Guo et al. (2017).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arrays(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=bool)
    if conf.shape != hit.shape or conf.ndim != 1 or not len(conf):
        raise ValueError(f"expected two equal-length non-empty vectors, got shapes {conf.shape} and {hit.shape}")
    if np.isnan(conf).any() or (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidences must lie in [0, 1]")
    return conf, hit


def reliability(confidence, correct, bins: int = 10) -> pd.DataFrame:
    """One row per non-empty bin: its range, count, mean confidence and accuracy (the reliability diagram)."""
    conf, hit = _arrays(confidence, correct)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
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
