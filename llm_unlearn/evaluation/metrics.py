"""TOFU metrics as pure functions of per-item numbers (see ``shared/design/METRICS.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def probability(avg_loss: float) -> float:
    """``P(y) = exp(−ℓ(y))`` with ``ℓ`` the average answer-token loss."""
    return float(np.exp(-avg_loss))


def normalized_probability(true_loss: float, perturbed_losses: Sequence[float]) -> float:
    """``P(true) / (P(true) + Σ_k P(perturbed_k))``, the utility sets' probability over options."""
    p_true = np.exp(-true_loss)
    return float(p_true / (p_true + np.exp(-np.asarray(perturbed_losses, dtype=float)).sum()))


def truth_ratio(correct_loss: float, perturbed_losses: Sequence[float]) -> float:
    """``R = exp(−mean_k ℓ(perturbed_k)) / exp(−ℓ(correct))``: geometric-mean probability of the wrong answers over
    the probability of the correct one (the paraphrase on forget/retain, the answer on the utility sets)."""
    return float(np.exp(correct_loss - np.mean(perturbed_losses)))


def forget_truth_ratio(ratios: Sequence[float]) -> float:
    """Forget aggregate ``mean(min(R, 1/R))``: 1 when correct and wrong answers are equally likely."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def retain_truth_ratio(ratios: Sequence[float]) -> float:
    """Retain/utility aggregate ``mean(max(0, 1 − R))``: 1 when the correct answer dominates."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference`` (``rouge_score``, Porter stemmer on)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of ``prediction`` against ``reference`` (MUSE's VerbMem and KnowMem)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def forget_quality(model_ratios: Sequence[float], reference_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the model's and the reference's forget truth ratios."""
    from scipy.stats import ks_2samp

    if len(model_ratios) == 0 or len(reference_ratios) == 0:
        raise ValueError("forget quality needs truth ratios of both the model and the reference")
    return float(ks_2samp(np.asarray(model_ratios, float), np.asarray(reference_ratios, float)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (a model that fails one aspect has no utility)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        raise ValueError("harmonic mean of no values")
    if np.any(v < 0):
        raise ValueError(f"harmonic mean needs non-negative values, got {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


# --- membership inference and memorization (MUSE and the MIA literature) -------------------------------------------
# Every attack score is oriented so that a HIGHER score means "more likely a member (trained on)".


def zlib_score(avg_loss: float, text: str) -> float:
    """ZLib attack: ``−ℓ / len(zlib.compress(text))`` (Carlini et al., 2021), negated so higher = member."""
    import zlib

    return float(-avg_loss / len(zlib.compress(text.encode("utf-8"))))


def min_k_score(logprobs: Sequence[float], k: float = 0.4) -> float:
    """Min-K% (Shi et al., arXiv 2310.16789): mean of the lowest ``k`` fraction of token log-probs."""
    lp = np.sort(np.asarray(logprobs, dtype=float))
    n = max(1, int(np.ceil(k * len(lp))))
    return float(lp[:n].mean())


def min_k_plus_plus_score(logprobs, mu, sigma, k: float = 0.4) -> float:
    """Min-K%++ (Zhang et al., arXiv 2404.02936): Min-K% of ``(log p_t − μ_t) / σ_t``, with ``μ_t``, ``σ_t`` the mean
    and standard deviation of ``log p(z)`` under ``z ~ p_t``."""
    z = (np.asarray(logprobs, float) - np.asarray(mu, float)) / np.maximum(np.asarray(sigma, float), 1e-8)
    return min_k_score(z, k)


def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC-AUC of separating members (label 1) from non-members (label 0) by score (higher = member)."""
    from sklearn.metrics import roc_auc_score

    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("AUC needs both member (forget) and non-member (holdout) scores")
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(y, np.r_[np.asarray(member_scores, float), np.asarray(nonmember_scores, float)]))


def privleak(auc_model, auc_reference):
    """PrivLeak in the convention MUSE publishes (arXiv 2407.06460, and open-unlearning's ``privleak``), so that
    numbers compare with the papers' tables.

    MUSE reports the membership AUC as ``1 − AUC`` of the usual orientation (members score higher here), so
    ``PrivLeak = ((1 − AUC_model) − (1 − AUC_ref)) / (1 − AUC_ref) × 100``. Near 0 is good; an untouched target
    (AUC 1 against a reference's 0.5) reads −100 %: **negative = under-unlearned** (the forget items are still told
    from never-seen ones), **positive = over-unlearned** (they now look less familiar than never-seen items).
    Works on floats and on numpy arrays of resampled AUCs; 0 for equal AUCs, otherwise undefined (inf) when the
    reference's AUC is 1.
    """
    model, ref = 1.0 - np.asarray(auc_model, dtype=float), 1.0 - np.asarray(auc_reference, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(model == ref, 0.0, (model - ref) / ref * 100.0)  # equal AUCs: no leak, even at AUC 1
    return float(value) if np.ndim(value) == 0 else value


def extraction_strength(argmax_match: Sequence[bool]) -> float:
    """``1 − k*/|y|`` with ``k*`` the shortest prefix after which teacher-forced argmax reproduces the rest of the
    answer (Carlini et al., arXiv 2202.07646): 1 when every token is reproduced, 0 when the last one is not."""
    m = np.asarray(argmax_match, dtype=bool)
    if len(m) == 0:
        raise ValueError("extraction strength of an empty answer")
    wrong = np.flatnonzero(~m)
    k_star = 0 if len(wrong) == 0 else int(wrong[-1]) + 1
    return float(1.0 - k_star / len(m))


def exact_memorization(argmax_match: Sequence[bool]) -> float:
    """Fraction of answer tokens whose teacher-forced argmax equals the label (Tirumala et al., 2022)."""
    m = np.asarray(argmax_match, dtype=bool)
    if len(m) == 0:
        raise ValueError("exact memorization of an empty answer")
    return float(m.mean())
