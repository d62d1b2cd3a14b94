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


def test_min_k_on_hand_values():
    # lowest 40 % of 5 values = 2 values: (-4 + -3) / 2
    assert M.min_k_score([-1.0, -4.0, -2.0, -3.0, -0.5], k=0.4) == pytest.approx(-3.5)


def test_min_k_plus_plus_with_known_distribution():
    # A uniform next-token distribution over 4 tokens: log p = -ln 4 everywhere, so mu = -ln 4 and sigma = 0;
    # take instead p = (1/2, 1/4, 1/4): mu = sum p log p, sigma^2 = sum p (log p)^2 - mu^2.
    p = np.array([0.5, 0.25, 0.25])
    lp = np.log(p)
    mu = float((p * lp).sum())
    sigma = float(np.sqrt((p * lp**2).sum() - mu**2))
    # the observed token is the likely one at t=0 and an unlikely one at t=1; K = 50 % keeps the lower z
    z0, z1 = (lp[0] - mu) / sigma, (lp[1] - mu) / sigma
    assert M.min_k_plus_plus_score([lp[0], lp[1]], [mu, mu], [sigma, sigma], k=0.5) == pytest.approx(min(z0, z1))
    assert z0 == pytest.approx(1.0) and z1 == pytest.approx(-1.0)  # this distribution has z = ±1


def test_auc_on_known_ranking_and_privleak():
    assert M.roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert M.roc_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # one of four member/non-member pairs is mis-ordered: 3/4
    assert M.roc_auc([2.0, 4.0], [1.0, 3.0]) == pytest.approx(0.75)
    # MUSE's published convention (AUC reported as 1 − AUC): an untouched target reads −100 %, over-unlearning > 0
    assert M.privleak(0.75, 0.5) == pytest.approx(-50.0)
    assert M.privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert M.privleak(0.0, 0.5) == pytest.approx(100.0)
    assert M.privleak(0.5, 0.5) == 0.0
    assert M.privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / 0.4 * 100)
    import numpy as np

    assert np.allclose(M.privleak(np.array([1.0, 0.75]), np.array([0.5, 0.5])), [-100.0, -50.0])  # resampled AUCs


def test_extraction_strength_and_exact_memorization_on_crafted_sequences():
    # argmax reproduces everything after the first 2 of 5 tokens: k* = 2 -> 1 - 2/5
    assert M.extraction_strength([False, False, True, True, True]) == pytest.approx(0.6)
    assert M.extraction_strength([True, True, True]) == 1.0
    assert M.extraction_strength([True, True, False]) == 0.0  # the last token is wrong: nothing extracted
    assert M.exact_memorization([True, False, True, True]) == pytest.approx(0.75)


def test_zlib_score_normalizes_by_compressed_length():
    import zlib

    text = "The Amber Lantern."
    assert M.zlib_score(2.0, text) == pytest.approx(-2.0 / len(zlib.compress(text.encode())))


# --- conventions where peers differ (see the README's "Conventions"); each pins this toolkit's choice -------------


def test_min_k_takes_the_ceiling_of_k_times_the_tokens():
    # 3 tokens at K = 40 %: ceil(1.2) = 2 tokens (a floor would take 1, and 0 for answers under 3 tokens)
    assert M.min_k_score([-1.0, -5.0, -3.0], k=0.4) == pytest.approx(-4.0)
    assert M.min_k_score([-2.0, -7.0], k=0.4) == pytest.approx(-7.0)  # never fewer than one token


def test_extraction_strength_is_zero_when_the_last_token_is_not_reproduced():
    # nothing extracted: 0 (not 1/n): k* = n, the whole answer must be given before the rest is reproduced
    assert M.extraction_strength([False, False, False, False]) == 0.0
    assert M.extraction_strength([True, True, True, False]) == 0.0


def test_zlib_compresses_the_raw_answer_text_not_decoded_tokens():
    import zlib

    text = "  In 1962,  in Lisbon. "  # spacing a tokenizer's decode could normalize is kept
    assert M.zlib_score(1.0, text) == pytest.approx(-1.0 / len(zlib.compress(text.encode("utf-8"))))
