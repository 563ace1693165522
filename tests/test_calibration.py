"""Calibration measures on hand-built probabilities."""

import pytest

from cotdistill.calibration import brier, ece, reliability


def test_ece_of_hand_built_bins():
    # bin (0.2, 0.3]: confidence 0.25, 1 of 2 right; bin (0.9, 1]: confidence 0.95, 2 of 2 right
    conf, hit = [0.25, 0.25, 0.95, 0.95], [True, False, True, True]
    table = reliability(conf, hit)
    assert table[["count", "accuracy"]].values.tolist() == [[2, 0.5], [2, 1.0]]
    assert table["low"].tolist() == pytest.approx([0.2, 0.9])
    assert ece(conf, hit) == pytest.approx((2 * 0.25 + 2 * 0.05) / 4)


def test_perfect_calibration_and_bin_edges():
    assert ece([0.5] * 4, [True, False, True, False]) == pytest.approx(0.0)
    assert reliability([0.1, 0.0, 1.0], [True, True, True])["count"].tolist() == [2, 1]  # 0.1 closes bin 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ece([1.2], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ece([0.5, float("nan")], [True, False])  # an uncalibrated item
    with pytest.raises(ValueError, match="equal-length"):
        ece([0.5, 0.5], [True])


def test_brier_over_candidate_sets_of_different_sizes():
    assert brier([[1.0, 0.0], [0.5, 0.25, 0.25]], [0, 1]) == pytest.approx((0.0 + (0.25 + 0.5625 + 0.0625)) / 2)
    with pytest.raises(ValueError, match="outside the 2 candidates"):
        brier([[0.5, 0.5]], [2])


def test_svamp_candidates_are_one_operation_equations_plus_gold_and_prediction():
    from cotdistill.calibration import candidates

    row = {"task": "math", "body": "Luke scored 84 points in 2 rounds.", "question": "How many per round?",
           "answer_label": "( 84.0 / 2.0 )"}
    got = candidates(row, "text", "( ( 84.0 - 2.0 ) + 1.0 )")
    assert got[:6] == ["( 84.0 + 2.0 )", "( 84.0 * 2.0 )", "( 84.0 - 2.0 )", "( 84.0 / 2.0 )", "( 2.0 - 84.0 )",
                       "( 2.0 / 84.0 )"]
    assert got[-1] == "( ( 84.0 - 2.0 ) + 1.0 )" and len(got) == len(set(got)) == 7  # gold is already there
    assert candidates(row, "text", "not an equation") == got[:6]


def test_item_sums_candidates_of_one_class_and_scores_unparsed_by_its_top_class():
    import math

    from cotdistill.calibration import item

    # two equations of value 12 are one answer: 0.25 + 0.25 against 0.5
    conf, correct, dist, gold = item([math.log(0.25), math.log(0.25), math.log(0.5)], ["12", "12", "7"], "12", "7")
    assert conf == pytest.approx(0.5) and not correct and dist == pytest.approx([0.5, 0.5]) and gold == 1
    conf, correct, _, _ = item([0.0, math.log(3)], ["a", "b"], None, "b")
    assert conf == pytest.approx(0.75) and not correct
    conf, correct, _, _ = item([0.0, math.log(3)], ["a", "b"], "b", "b")
    assert conf == pytest.approx(0.75) and correct
