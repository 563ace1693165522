"""Statistics for accuracies measured on the same test items by several models and seeds.

The unit of the design is the test item: every model answers the same items, and seeds repeat training, not
sampling of items. So an accuracy's interval comes from a bootstrap that resamples items *and* seeds (pooling
3 seeds x n items into one binomial would be about sqrt(3) too narrow), and two models are compared on the same
items: an exact McNemar test per seed (discordant pairs only) and a paired bootstrap of the accuracy difference
that resamples items and seeds together for both models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

REPLICATES = 10_000
CHUNK = 500


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n independent trials (one model, one seed)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _check(correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or 0 in correct.shape:
        raise ValueError(f"expected a (seeds x items) matrix of correctness, got shape {correct.shape}")
    return correct


def _replicates(matrices: list[np.ndarray], replicates: int, seed: int) -> np.ndarray:
    """Accuracy of each matrix (seeds x items) under the same bootstrap draws of items and seeds: (len, B)."""
    s, n = matrices[0].shape
    rng = np.random.default_rng(seed)
    out = np.empty((len(matrices), replicates))
    for start in range(0, replicates, CHUNK):
        b = min(CHUNK, replicates - start)
        items = rng.integers(0, n, (b, n))
        seeds = rng.integers(0, s, (b, s))
        for k, m in enumerate(matrices):
            per_seed = m[:, items].mean(axis=2)  # (s, b): each seed's accuracy on the resampled items
            out[k, start:start + b] = per_seed[seeds, np.arange(b)[:, None]].mean(axis=1)
    return out


def bootstrap_interval(correct: np.ndarray, level: float = 0.95, replicates: int = REPLICATES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean accuracy over seeds, resampling items and seeds."""
    draws = _replicates([_check(correct)], replicates, seed)[0]
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


@dataclass(frozen=True)
class PairedResult:
    """Accuracy difference a - b on the same items, its percentile interval and a two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float
    seeds: int
    n: int


def paired_bootstrap(a: np.ndarray, b: np.ndarray, level: float = 0.95, replicates: int = REPLICATES,
                     seed: int = 0) -> PairedResult:
    """Paired bootstrap of mean accuracy a - b: items and seeds are resampled together for both models.

    The p-value is twice the smaller share of replicates on either side of zero (with the +1 correction), so
    the interval excludes 0 exactly when p is below 1 - level (up to resolution).
    """
    a, b = _check(a), _check(b)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same seeds and items: shapes {a.shape} and {b.shape}")
    draws = _replicates([a, b], replicates, seed)
    d = draws[0] - draws[1]
    alpha = (1 - level) / 2
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    p = min(1.0, 2 * min(below + 1, above + 1) / (replicates + 1))
    return PairedResult(float(a.mean() - b.mean()), float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha)),
                        p, a.shape[0], a.shape[1])


def confidences(confidence) -> np.ndarray:
    """`confidence` as floats, refused unless every value lies in [0, 1]: NaN is a model without calibration, and
    a NaN bootstrap replicate would drop out of the quantiles unseen."""
    conf = np.asarray(confidence, dtype=float)
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError("confidences must lie in [0, 1] (NaN: a model without calibration)")
    return conf


def bin_index(confidence: np.ndarray, bins: int = 10) -> np.ndarray:
    """Each confidence's equal-width bin over [0, 1], closed on the right, the first also on the left (Guo et al.,
    2017): the binning of every ECE here."""
    return np.clip(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), confidence, side="left") - 1, 0, bins - 1)


def _ece_rows(confidence: np.ndarray, correct: np.ndarray, items: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each seed (row) on the items `items` (a resample, repeats allowed)."""
    conf, hit = confidence[:, items], correct[:, items].astype(float)
    index = bin_index(conf, bins)
    gap = np.stack([np.bincount(index[s], weights=hit[s] - conf[s], minlength=bins) for s in range(len(conf))])
    return np.abs(gap).sum(1) / conf.shape[1]


def paired_ece_bootstrap(conf_a: np.ndarray, hit_a: np.ndarray, conf_b: np.ndarray, hit_b: np.ndarray,
                         bins: int = 10, level: float = 0.95, replicates: int = REPLICATES,
                         seed: int = 0) -> PairedResult:
    """Paired bootstrap of the ECE difference a - b (mean over seeds), items and seeds resampled together for both
    models, as `paired_bootstrap` does for accuracy; matrices are (seeds x items) of confidence and correctness."""
    conf_a, conf_b = confidences(conf_a), confidences(conf_b)
    hit_a, hit_b = _check(hit_a), _check(hit_b)
    if not conf_a.shape == hit_a.shape == conf_b.shape == hit_b.shape:
        raise ValueError(f"paired ECE test needs the same seeds and items: shapes {conf_a.shape}, {conf_b.shape}")
    s, n = conf_a.shape
    everything = np.arange(n)
    observed = _ece_rows(conf_a, hit_a, everything, bins).mean() - _ece_rows(conf_b, hit_b, everything, bins).mean()
    rng = np.random.default_rng(seed)
    d = np.empty(replicates)
    for r in range(replicates):
        items, seeds = rng.integers(0, n, n), rng.integers(0, s, s)
        d[r] = _ece_rows(conf_a, hit_a, items, bins)[seeds].mean() - _ece_rows(conf_b, hit_b, items, bins)[seeds].mean()
    alpha = (1 - level) / 2
    p = min(1.0, 2 * min(int((d <= 0).sum()) + 1, int((d >= 0).sum()) + 1) / (replicates + 1))
    return PairedResult(float(observed), float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha)), p, s, n)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(items only a got right, items only b got right, exact two-sided p) for one seed's paired answers."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return only_a, only_b, p


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: controls the family-wise error rate of the whole family."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
