"""Metric functions against numbers computed by hand."""

import math

import numpy as np
import pytest

from llm_unlearn.evaluation import metrics as M


def test_probability_is_exp_of_negative_average_loss():
    assert M.probability(0.0) == 1.0
    assert M.probability(math.log(4)) == pytest.approx(0.25)


def test_truth_ratio_uses_geometric_mean_of_perturbed_probabilities():
    # P(para) = 0.5 (loss ln 2); perturbed probabilities 0.25 and 0.0625 -> geometric mean 0.125 -> R = 0.25.
    r = M.truth_ratio(math.log(2), [math.log(4), math.log(16)])
    assert r == pytest.approx(0.25)


def test_forget_and_retain_aggregates():
    ratios = [0.25, 4.0, 1.0]
    # min(R, 1/R) = 0.25, 0.25, 1 -> mean 0.5
    assert M.forget_truth_ratio(ratios) == pytest.approx(0.5)
    # max(0, 1 - R) = 0.75, 0, 0 -> mean 0.25
    assert M.retain_truth_ratio(ratios) == pytest.approx(0.25)


def test_normalized_probability_over_options():
    # P(true) = 0.5, perturbed 0.25 and 0.25 -> 0.5 / 1.0
    assert M.normalized_probability(math.log(2), [math.log(4), math.log(4)]) == pytest.approx(0.5)


def test_ks_p_value_on_known_samples():
    # Completely separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1.
    assert M.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    # Identical samples: D = 0, p = 1.
    assert M.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_forget_quality_refuses_empty_reference():
    with pytest.raises(ValueError, match="reference"):
        M.forget_quality([0.5], [])


def test_harmonic_mean_by_hand():
    assert M.harmonic_mean([1.0, 2.0, 4.0]) == pytest.approx(3 / (1 + 0.5 + 0.25))
    assert M.harmonic_mean([0.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        M.harmonic_mean([])


def test_rouge_l_recall_on_fixed_pair():
    # LCS of "the cat sat on the mat" and "the cat lay on a mat" is "the cat on mat": 4 of 6 reference words.
    assert M.rouge_l_recall("the cat lay on a mat", "the cat sat on the mat") == pytest.approx(4 / 6)
    # Stemming: "sitting" and "sit" share a stem.
    assert M.rouge_l_recall("cats sitting", "cat sit") == pytest.approx(1.0)
    assert M.rouge_l_recall("", "anything here") == 0.0


def test_aggregates_accept_numpy_arrays():
    assert M.forget_truth_ratio(np.array([2.0])) == pytest.approx(0.5)
