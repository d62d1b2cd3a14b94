"""Percentile bootstrap confidence intervals of an evaluation's summary, and the statistical constants the reports
read by.

Confidence intervals are percentile bootstrap intervals over items. Every aggregate of the evaluation is a mean of
per-item values, a harmonic mean of such means (model utility) or a ROC-AUC of per-item scores (membership
inference, PrivLeak), so a resample only needs each item's multiplicity: all statistics of all resamples are a few
matrix products (see :func:`bootstrap_counts`). Everything is driven by the keys present in the result: a summary
key this module cannot recompute from items (or whose recomputation disagrees with the stored value) gets no
interval rather than a wrong one. :func:`bootstrap_cis` gives the intervals of a compared result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from . import evaluator as E
from . import metrics as M
from .calibration import FQ_THRESHOLD, UTILITY_METRICS, UTILITY_ROLES  # noqa: F401 (one definition, shared)

logger = logging.getLogger(__name__)

N_RESAMPLES = 1000
CONFIDENCE = 0.95

Interval = tuple[float, float]


# --- bootstrap: pure functions --------------------------------------------------------------------------------------


def bootstrap_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)`` multiplicities: how often each of ``n`` items is drawn (with replacement) per resample.

    A resampled mean is then ``counts @ values / n`` and a resampled AUC a weighted Mann-Whitney sum, so no
    resampled copy of the data is ever built.
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"bootstrap needs items and resamples, got n={n}, n_resamples={n_resamples}")
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + np.arange(n_resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


def resampled_means(values: Sequence[float], counts: np.ndarray) -> np.ndarray:
    """Mean of ``values`` in each resample described by ``counts`` (rows of multiplicities)."""
    v = np.asarray(values, dtype=float)
    return counts @ v / counts.sum(axis=1)


def resampled_auc(
    members: Sequence[float], nonmembers: Sequence[float], member_counts: np.ndarray, nonmember_counts: np.ndarray
) -> np.ndarray:
    """ROC-AUC (members = positives, higher score = member, ties count ½) of each resample.

    With multiplicities ``w`` the Mann-Whitney AUC is ``w_m · K · w_h / (Σw_m Σw_h)``, ``K_ij = [m_i > h_j] +
    ½[m_i = h_j]``: the same number ``sklearn.metrics.roc_auc_score`` gives on the resampled items.
    """
    m = np.asarray(members, dtype=float)[:, None]
    h = np.asarray(nonmembers, dtype=float)[None, :]
    kernel = (m > h) + 0.5 * (m == h)
    pairs = member_counts.sum(axis=1) * nonmember_counts.sum(axis=1)
    return ((member_counts @ kernel) * nonmember_counts).sum(axis=1) / pairs


def resampled_harmonic_mean(values: np.ndarray) -> np.ndarray:
    """Harmonic mean over axis 0 of a ``(k, n_resamples)`` array; 0 where any value is 0 (as ``harmonic_mean``)."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore"):
        return v.shape[0] / np.sum(1.0 / v, axis=0)  # 1/0 = inf makes the mean 0, the metric's convention


def percentile_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """The central ``confidence`` interval of the bootstrap distribution (percentile method); None if empty."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values``."""
    counts = bootstrap_counts(len(values), n_resamples, np.random.default_rng(seed))
    return percentile_interval(resampled_means(values, counts), confidence)  # type: ignore[return-value]


def item_contributions(items: Sequence[Mapping], role: str, metric: str) -> np.ndarray | None:
    """Per-item values whose mean is the split aggregate of ``metric``; None when an item lacks the metric.

    Truth ratios follow the aggregation rule of the split: ``min(R, 1/R)`` on forget, ``max(0, 1 − R)`` elsewhere.
    """
    if not items or any(
        isinstance(it.get(metric), bool) or not isinstance(it.get(metric), int | float) for it in items
    ):
        return None
    v = np.array([it[metric] for it in items], dtype=float)
    if metric == "truth_ratio":
        return np.minimum(v, 1.0 / v) if role == "forget" else np.maximum(0.0, 1.0 - v)
    return v


# --- bootstrap of a result's summary --------------------------------------------------------------------------------


class _Resampler:
    """Bootstrap multiplicities per split, drawn once and shared by every statistic of that split and by the model
    and the reference: both are evaluated on the same items, so paired statistics (PrivLeak) see the same
    resampled items on both sides."""

    def __init__(self, n_resamples: int, seed: int):
        self.n_resamples = n_resamples
        self.rng = np.random.default_rng(seed)
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def counts(self, split: str, n: int) -> np.ndarray:
        if (split, n) not in self._cache:
            self._cache[(split, n)] = bootstrap_counts(n, self.n_resamples, self.rng)
        return self._cache[(split, n)]


class _Identity(_Resampler):
    """One "resample" holding every item once: the statistic functions then give the point estimate, which is
    checked against the stored summary before any interval is trusted."""

    def __init__(self):
        super().__init__(1, 0)

    def counts(self, split: str, n: int) -> np.ndarray:
        return np.ones((1, n))


def _split_items(result: Mapping, role: str) -> list | None:
    split = (result.get("splits") or {}).get(role)
    return split.get("items") if isinstance(split, Mapping) else None


def _split_mean(result: Mapping, role: str, metric: str, rs: _Resampler) -> np.ndarray | None:
    items = _split_items(result, role)
    values = item_contributions(items or [], role, metric)
    return None if values is None else resampled_means(values, rs.counts(role, len(values)))


def _member_items(result: Mapping) -> tuple[str, list | None]:
    """The membership-inference members: the forget documents of a text evaluation, else the forget split's items
    (with the name their resampling is shared under)."""
    documents = (result.get("privacy") or {}).get("forget_items")
    return ("forget_documents", documents) if documents else ("forget", _split_items(result, "forget"))


def _attack_auc(result: Mapping, attack: str, rs: _Resampler) -> np.ndarray | None:
    split, forget = _member_items(result)
    holdout = (result.get("privacy") or {}).get("holdout_items")
    if not forget or not holdout:
        return None
    key = f"mia_{attack}"
    if any(key not in it for it in forget) or any(key not in it for it in holdout):
        return None
    members, nonmembers = [it[key] for it in forget], [it[key] for it in holdout]
    return resampled_auc(members, nonmembers, rs.counts(split, len(members)), rs.counts(E.HOLDOUT, len(nonmembers)))


def _utility(result: Mapping, rs: _Resampler) -> np.ndarray | None:
    parts = [_split_mean(result, role, m, rs) for role in UTILITY_ROLES for m in UTILITY_METRICS]
    if any(p is None for p in parts):
        return None
    return resampled_harmonic_mean(np.stack(parts))  # each utility split resampled on its own


def statistic_samples(key: str, result: Mapping, other: Mapping | None, rs: _Resampler) -> np.ndarray | None:
    """The summary statistic ``key`` of ``result`` in each resample, or None when it is not derivable from items.

    ``other`` is the reference's result for statistics relative to it (PrivLeak), None for the reference itself.
    Forget quality is a p-value, not an estimate: it gets no interval.
    """
    if key == "model_utility":
        return _utility(result, rs)
    if key == "privleak":
        if other is None:
            return None  # the reference's PrivLeak is 0 by definition
        model, ref = _attack_auc(result, "min_k", rs), _attack_auc(other, "min_k", rs)
        if model is None or ref is None:
            return None
        return M.privleak(model, ref)
    if key.startswith("mia_auc/"):
        return _attack_auc(result, key.split("/", 1)[1], rs)
    if key in ("forget/extraction_strength", "forget/exact_memorization"):
        split, items = _member_items(result)  # memorization is measured on the membership-inference members
        values = item_contributions(items or [], "forget", key.split("/")[1])
        return None if values is None else resampled_means(values, rs.counts(split, len(values)))
    if key.count("/") == 1:
        role, metric = key.split("/")
        return _split_mean(result, role, metric, rs)
    return None  # forget_quality, and keys this module does not know


def summary_intervals(
    result: Mapping,
    summary: Mapping[str, float],
    other: Mapping | None,
    rs: _Resampler,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval | None]:
    """An interval per summary key; None where the key is not derivable from items or the recomputed point
    estimate disagrees with the stored value (a changed aggregation rule must not yield a wrong interval)."""
    out: dict[str, Interval | None] = {}
    for key, value in summary.items():
        point = statistic_samples(key, result, other, _Identity())
        if point is None or not np.isclose(point[0], value, rtol=1e-6, atol=1e-9):
            if point is not None:
                logger.warning("no interval for %s: recomputed %.6g from items, stored %.6g", key, point[0], value)
            out[key] = None
            continue
        out[key] = percentile_interval(statistic_samples(key, result, other, rs), confidence)  # type: ignore[arg-type]
    return out


def bootstrap_cis(
    compared: Mapping, n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
) -> dict[str, dict[str, Interval | None]]:
    """``{"model": {key: (low, high) | None}, "reference": {...}}`` for the summaries of a compared result.

    Reference intervals need the reference's per-item values (``compared["reference_result"]``); results written
    before it was stored get none.
    """
    summary, ref_summary = compared.get("summary", {}), compared.get("reference_summary", {})
    if n_resamples < 1:
        return {"model": dict.fromkeys(summary), "reference": dict.fromkeys(ref_summary)}
    rs = _Resampler(n_resamples, seed)
    ref = compared.get("reference_result")
    model_cis = summary_intervals(compared, summary, ref, rs, confidence)
    ref_cis = summary_intervals(ref, ref_summary, None, rs, confidence) if ref else dict.fromkeys(ref_summary)
    return {"model": model_cis, "reference": ref_cis}
