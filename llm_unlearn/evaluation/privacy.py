"""Membership-inference scores and their summary, shared by the QA and the raw-text evaluations."""

from __future__ import annotations

import numpy as np

from . import metrics as M

HOLDOUT = "holdout"  # the key of the non-member split in the evaluation data
MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm")  # gradnorm only with --gradnorm


def privacy_scores(scores, answer: str) -> dict[str, float]:
    """Membership-inference scores (higher = more member-like) and memorization of one answer."""
    return {
        "mia_loss": -scores.avg_loss,
        "mia_zlib": M.zlib_score(scores.avg_loss, answer),
        "mia_min_k": M.min_k_score(scores.logprobs),
        "mia_min_k_plus_plus": M.min_k_plus_plus_score(scores.logprobs, scores.mu, scores.sigma),
        "extraction_strength": M.extraction_strength(scores.argmax_match),
        "exact_memorization": M.exact_memorization(scores.argmax_match),
    }


def privacy_summary(forget_items: list[dict], holdout_items: list[dict]) -> dict:
    """MIA AUC (forget = members, holdout = non-members) per attack present, and mean memorization on forget."""
    attacks = [a for a in MIA_ATTACKS if f"mia_{a}" in forget_items[0] and f"mia_{a}" in holdout_items[0]]
    return {
        "auc": {
            a: M.roc_auc([it[f"mia_{a}"] for it in forget_items], [it[f"mia_{a}"] for it in holdout_items])
            for a in attacks
        },
        "extraction_strength": float(np.mean([it["extraction_strength"] for it in forget_items])),
        "exact_memorization": float(np.mean([it["exact_memorization"] for it in forget_items])),
    }
