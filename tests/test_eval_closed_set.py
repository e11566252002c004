"""Closed-set scoring from P(yes): hand-checked accuracy, AUROC (with ties), ECE and calibration curve."""

from __future__ import annotations

import pytest

from sepit.eval.closed_set import accuracy, auroc, calibration_curve, closed_set_scores, ece


def test_accuracy_threshold_at_half():
    # predicted yes iff p >= 0.5: [yes, no, yes, no] vs labels [1, 0, 0, 0] → 3/4
    assert accuracy([0.9, 0.1, 0.5, 0.49], [1, 0, 0, 0]) == pytest.approx(0.75)
    assert accuracy([], []) is None


def test_auroc_hand_checked():
    # positives {0.9, 0.7}, negatives {0.8, 0.6}: pairs 0.9>0.8, 0.9>0.6, 0.7<0.8, 0.7>0.6 → 3/4
    assert auroc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert auroc([0.1, 0.2], [0, 1]) == pytest.approx(1.0)
    assert auroc([0.1, 0.2], [1, 0]) == pytest.approx(0.0)


def test_auroc_ties_count_half():
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # positive 0.6 vs negatives 0.6 (tie → ½) and 0.2 (win → 1): (0.5 + 1) / 2 = 0.75
    assert auroc([0.6, 0.6, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    # a constant predictor is uninformative whatever the class balance
    assert auroc([0.3] * 5, [1, 1, 0, 0, 0]) == pytest.approx(0.5)


def test_auroc_one_class_is_undefined():
    assert auroc([0.2, 0.9], [1, 1]) is None


def test_ece_hand_checked():
    # p_yes [.95, .95, .25, .65], labels [1, 0, 0, 0]
    # predictions yes, yes, no, yes; confidence .95, .95, .75, .65; correct 1, 0, 1, 0
    # bins of width .1: [.9,1]: conf .95, acc .5 (2 items); [.7,.8): conf .75, acc 1; [.6,.7): conf .65, acc 0
    # ECE = (2·.45 + .25 + .65) / 4 = 0.45
    assert ece([0.95, 0.95, 0.25, 0.65], [1, 0, 0, 0], n_bins=10) == pytest.approx(0.45)
    # perfectly calibrated: confidence 1.0 and always right
    assert ece([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    # one bin: mean confidence (.9 + .6 + .8)/3 = .7667 vs accuracy 2/3 → 0.1
    assert ece([0.9, 0.4, 0.8], [1, 0, 0], n_bins=1) == pytest.approx(0.1)


def test_calibration_curve_bins():
    # bins of width .5: [0, .5) holds .1, .2, .3 (labels 0, 0, 1); [.5, 1] holds .8, 1.0 (labels 1, 1)
    c = calibration_curve([0.1, 0.2, 0.3, 0.8, 1.0], [0, 0, 1, 1, 1], n_bins=2)
    assert c.counts == [3, 2]
    assert c.mean_predicted == pytest.approx([0.2, 0.9])
    assert c.fraction_yes == pytest.approx([1 / 3, 1.0])
    assert calibration_curve([], [], n_bins=10).counts == []


def test_closed_set_scores_and_bad_input():
    s = closed_set_scores([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert s["n"] == 4 and s["accuracy"] == pytest.approx(0.5) and s["auroc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        auroc([1.2, 0.1], [1, 0])
    with pytest.raises(ValueError, match="labels"):
        ece([0.2], [2])
    with pytest.raises(ValueError, match="2 probabilities for 1 labels"):
        accuracy([0.2, 0.3], [1])
