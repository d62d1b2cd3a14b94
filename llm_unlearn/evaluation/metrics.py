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
