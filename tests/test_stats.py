"""Statistics on known cases: values computed by hand, and the design property (seeds are not extra items)."""

import math

import numpy as np
import pytest

from cotdistill.stats import bootstrap_interval, holm, mcnemar_exact, paired_bootstrap, wilson


def test_wilson_interval():
    lo, hi = wilson(30, 100)
    assert math.isclose(lo, 0.2189, abs_tol=1e-3) and math.isclose(hi, 0.3958, abs_tol=1e-3)
    assert wilson(0, 10)[0] == 0.0


def test_mcnemar_exact_by_hand():
    # 10 items only a got right, 2 only b: p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    a = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (10, 2)
    assert math.isclose(p, 158 / 4096, rel_tol=1e-9)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _model(n: int, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) < round(accuracy * n))


def test_bootstrap_interval_near_wilson_for_one_seed():
    correct = _model(300, 0.35, 0)[None, :]
    lo, hi = bootstrap_interval(correct, seed=1)
    wlo, whi = wilson(105, 300)
    assert abs(lo - wlo) < 0.015 and abs(hi - whi) < 0.015


def test_repeated_seeds_are_not_extra_items():
    """Three seeds that answer identically carry no more information about the items than one: the interval
    must not shrink (pooling them as 900 independent trials would shrink it by about sqrt(3))."""
    one = _model(300, 0.35, 0)
    lo1, hi1 = bootstrap_interval(one[None, :], seed=1)
    lo3, hi3 = bootstrap_interval(np.stack([one, one, one]), seed=1)
    assert hi3 - lo3 == pytest.approx(hi1 - lo1, abs=0.01)
    pooled = wilson(3 * 105, 900)
    assert (hi3 - lo3) > 1.5 * (pooled[1] - pooled[0])


def test_seed_variation_widens_the_interval():
    same = np.stack([_model(300, 0.35, 0)] * 3)
    varied = np.stack([_model(300, acc, s) for s, acc in ((0, 0.25), (1, 0.35), (2, 0.45))])
    lo_s, hi_s = bootstrap_interval(same, seed=1)
    lo_v, hi_v = bootstrap_interval(varied, seed=1)
    assert hi_v - lo_v > 1.3 * (hi_s - lo_s)


def test_paired_bootstrap_detects_a_consistent_gain_and_not_noise():
    base = _model(300, 0.4, 0)
    better = base.copy()
    better[np.flatnonzero(~base)[:30]] = True  # right on every item base gets, plus 30 more
    res = paired_bootstrap(better[None, :], base[None, :], seed=1)
    assert res.diff == pytest.approx(0.1) and res.low > 0 and res.p < 0.001
    flipped = paired_bootstrap(base[None, :], better[None, :], seed=1)
    assert flipped.diff == pytest.approx(-0.1) and flipped.high < 0 and flipped.p < 0.001
    same = paired_bootstrap(base[None, :], base[None, :], seed=1)
    assert same.diff == 0 and same.p == 1.0
    # two unrelated models of equal accuracy: no significant difference
    noise = paired_bootstrap(_model(300, 0.4, 1)[None, :], _model(300, 0.4, 2)[None, :], seed=1)
    assert noise.p > 0.05 and noise.low < 0 < noise.high


def test_paired_bootstrap_needs_matching_shapes():
    with pytest.raises(ValueError, match="same seeds and items"):
        paired_bootstrap(np.ones((2, 10)), np.ones((1, 10)))


def test_paired_ece_gap_is_the_difference_of_the_two_eces():
    from cotdistill.calibration import ece
    from cotdistill.stats import paired_ece_bootstrap

    rng = np.random.default_rng(0)
    hit = rng.random((1, 300)) < 0.6
    sharp = np.where(hit, 0.8, 0.35)  # tracks correctness: low ECE
    flat = np.full((1, 300), 0.95)  # overconfident: high ECE
    r = paired_ece_bootstrap(sharp, hit, flat, hit, replicates=500)
    assert r.diff == pytest.approx(ece(sharp[0], hit[0]) - ece(flat[0], hit[0]))
    assert r.diff < 0 and r.high < 0 and r.p < 0.01
    same = paired_ece_bootstrap(flat, hit, flat, hit, replicates=200)
    assert same.diff == 0 and same.p == 1.0
    missing = flat.copy()
    missing[0, 7] = np.nan  # an item without a confidence would drop out of the replicates unseen
    with pytest.raises(ValueError, match=r"confidences must lie in \[0, 1\]"):
        paired_ece_bootstrap(sharp, hit, missing, hit, replicates=10)
