"""Readable evaluation reports: bootstrap confidence intervals, Markdown reports and PNG plots.

Two entry points:

- :func:`write_eval_report` turns one compared result (what ``llm-unlearn eval`` writes) into a Markdown report,
  ``metric | model | 95 % CI | reference | 95 % CI | gap``, with a plain-language reading, and an ECDF plot of
  the per-item forget truth ratios of the model and of the reference (their KS p-value is the forget quality).
- :func:`write_runs_report` (``llm-unlearn report RUN_DIR...``) puts several evaluated runs side by side: one
  table row per run, forget quality vs model utility in one plot, and one ECDF plot per run.

Confidence intervals are percentile bootstrap intervals over items. Every aggregate of the evaluation is a mean of
per-item values, a harmonic mean of such means (model utility) or a ROC-AUC of per-item scores (membership
inference, PrivLeak), so a resample only needs each item's multiplicity: all statistics of all resamples are a few
matrix products (see :func:`bootstrap_counts`). Everything is driven by the keys present in the result: a summary
key this module cannot recompute from items (or whose recomputation disagrees with the stored value) gets no
interval rather than a wrong one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runs import check_output_location, staged_files
from . import evaluator as E

logger = logging.getLogger(__name__)

N_RESAMPLES = 1000
CONFIDENCE = 0.95
FQ_THRESHOLD = 0.05  # forget quality above this: indistinguishable from the reference at the 5 % level
PRIVLEAK_CLOSE = 5.0  # |PrivLeak| within this many percent reads as "as private as the reference" (MUSE)
MANIFEST = ".llm_unlearn_report.json"
UTILITY_ROLES = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("probability", "rouge_l_recall", "truth_ratio")
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


# --- bootstrap of a result's summary ---------------------------------------------------------------------------------


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
        with np.errstate(divide="ignore", invalid="ignore"):
            return (model - ref) / ref * 100.0
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


# --- Markdown -------------------------------------------------------------------------------------------------------


def _label(key: str) -> str:
    try:
        return E._label(key)
    except (KeyError, ValueError):
        return key  # a metric of another benchmark kind: its key is the best name we have


def _num(x: float | None, spec: str = ".4g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def _ci(ci: Interval | None) -> str:
    return "–" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def metrics_table(compared: Mapping, cis: Mapping[str, Mapping[str, Interval | None]]) -> str:
    """``metric | model | 95 % CI | reference | 95 % CI | gap``, one row per summary key of the model."""
    pct = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = [f"| metric | model | {pct} CI | reference | {pct} CI | gap |", "|---|---:|:---:|---:|:---:|---:|"]
    ref_summary = compared.get("reference_summary", {})
    for key, value in compared["summary"].items():
        ref = ref_summary.get(key)
        gap = "–" if ref is None else f"{value - ref:+.4g}"
        row = [_label(key), _num(value), _ci(cis["model"].get(key)), _num(ref), _ci(cis["reference"].get(key)), gap]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _overlap(a: Interval | None, b: Interval | None) -> bool | None:
    return None if a is None or b is None else a[0] <= b[1] and b[0] <= a[1]


def plain_reading(compared: Mapping, cis: Mapping[str, Mapping[str, Interval | None]]) -> str:
    """One paragraph saying what the headline numbers mean, for a reader who does not know the metrics."""
    s, r = compared.get("summary", {}), compared.get("reference_summary", {})
    parts = []
    fq = s.get("forget_quality")
    cal = compared.get("calibration")
    if fq is not None and cal:  # the calibrated reading: against the noise floor, and only where FQ can see anything
        parts.append(f"Forget quality is {fq:.2g}: the model is {cal['verdict']['text']}.")
        if cal.get("discrimination") and not cal["discrimination"]["informative"]:
            parts.append(f"But {cal['discrimination']['text']}.")
    elif fq is not None:
        n = len(_split_items(compared, "forget") or [])
        if fq > FQ_THRESHOLD:
            parts.append(
                f"Forget quality is {fq:.2g} (> {FQ_THRESHOLD}): the KS test cannot tell the model's forget truth "
                f"ratios from the retrained reference's, which is what successful unlearning looks like (with "
                f"{n} items per side the test has limited power: absence of evidence, not proof)."
            )
        else:
            parts.append(
                f"Forget quality is {fq:.2g} (≤ {FQ_THRESHOLD}): the KS test tells the model's forget truth ratios "
                "from the retrained reference's at the 5 % level, so on the forget set it does not (yet) behave "
                "like a model that never saw it."
            )
    if "model_utility" in s and "model_utility" in r:
        overlap = _overlap(cis["model"].get("model_utility"), cis["reference"].get("model_utility"))
        note = {
            True: "; their 95 % intervals overlap, so the difference is within resampling noise",
            False: "; their 95 % intervals do not overlap",
            None: "",
        }[overlap]
        parts.append(
            f"Model utility (what the model still knows and answers well outside the forget set) is "
            f"{s['model_utility']:.3f} against {r['model_utility']:.3f} for the reference{note}."
        )
    parts.append(_privleak_reading(s, r))
    if "forget/rouge_l_recall" in s and "forget/rouge_l_recall" in r:
        parts.append(
            f"Answering the forget questions, the model reproduces {s['forget/rouge_l_recall']:.0%} of the words of "
            f"the correct answers (ROUGE-L recall), the retrained reference {r['forget/rouge_l_recall']:.0%}."
        )
    return " ".join(p for p in parts if p)


def _privleak_reading(s: Mapping, r: Mapping) -> str:
    pl = s.get("privleak")
    if pl is None:
        return ""
    aucs = ""
    if "mia_auc/min_k" in s and "mia_auc/min_k" in r:
        aucs = f" (Min-K% AUC forget vs holdout {s['mia_auc/min_k']:.2f}, reference {r['mia_auc/min_k']:.2f})"
    if pl > PRIVLEAK_CLOSE:
        return (
            f"PrivLeak is {pl:+.3g} %{aucs}: a membership-inference attack tells forget items from never-seen "
            "holdout items better than on the reference, so they are still memorized (under-unlearned)."
        )
    if pl < -PRIVLEAK_CLOSE:
        return (
            f"PrivLeak is {pl:+.3g} %{aucs}: the forget items now look *less* familiar than never-seen holdout "
            "items, more than on the reference (over-unlearned), which itself reveals what was forgotten."
        )
    return f"PrivLeak is {pl:+.3g} %{aucs}: membership inference sees the forget items as it does on the reference."


def _resample_note(n_resamples: int, seed: int, keys: Sequence[str]) -> str:
    """How the intervals were made, naming only the statistics present in ``keys``."""
    if n_resamples < 1:
        return "Confidence intervals were not computed (no bootstrap resamples requested)."
    parts = [
        f"95 % CI: percentile bootstrap over items ({n_resamples} resamples, seed {seed}); means resample their split"
    ]
    if "model_utility" in keys:
        parts.append("model utility resamples each of its three splits independently and recomputes the harmonic mean")
    if "privleak" in keys or "mia_auc/min_k" in keys:
        parts.append("MIA AUC and PrivLeak resample forget and holdout items (the same items for model and reference)")
    text = "; ".join(parts) + "."
    if "forget_quality" in keys:
        text += (
            " Forget quality is a p-value, not an estimate, so it has no interval; the reference's forget quality (1)"
        )
        text += " and PrivLeak (0) hold by definition."
    return text + ' "–": not derivable from the per-item values in this file.'


# --- plots ----------------------------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.6):
    # Figure + Agg canvas, not pyplot: no global backend or state, safe in library code and without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _readable_log_axis(axis, lo: float, hi: float) -> None:
    """Ticks at 1, 2, 5 × 10^k written as plain numbers: "0.2" reads at a glance, a bare 10^-1 with unlabelled
    minor ticks does not. Wide ranges (more than ~4 decades) keep only the decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1e-300) < 1e4 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def ks_distance(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The two-sample KS statistic ``D = max_x |F_a(x) − F_b(x)|`` and an ``x`` where it is reached."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    gaps = np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))
    i = int(np.argmax(gaps))
    return float(gaps[i]), float(grid[i])


@dataclass
class Curve:
    """One ECDF of a truth-ratio plot."""

    label: str
    ratios: Sequence[float]
    style: dict = field(default_factory=dict)


def plot_truth_ratio_ecdf(
    curves: Sequence[Curve], path: str | Path, title: str, forget_quality: float | None = None
) -> Path:
    """Step ECDFs of per-item forget truth ratios (log x axis); the KS distance between the first two curves
    (model, reference) is drawn where it is largest, with the KS p-value (forget quality) in the title."""
    fig = _figure(7.0, 5.4)
    ax = fig.add_subplot()
    for c in curves:
        r = np.sort(np.asarray([x for x in c.ratios if x > 0 and np.isfinite(x)], dtype=float))
        y = np.arange(1, len(r) + 1) / len(r)
        ax.step(np.r_[r[0], r], np.r_[0.0, y], where="post", label=f"{c.label} (n = {len(r)})", **c.style)
    ax.set_xscale("log")
    _readable_log_axis(ax.xaxis, *ax.get_xlim())
    ax.axvline(1.0, color="0.45", lw=0.9, ls=":", label="R = 1: wrong and right answers equally likely")
    if len(curves) >= 2:
        d, x = ks_distance(curves[0].ratios, curves[1].ratios)
        fa = np.searchsorted(np.sort(curves[0].ratios), x, "right") / len(curves[0].ratios)
        fb = np.searchsorted(np.sort(curves[1].ratios), x, "right") / len(curves[1].ratios)
        ax.plot([x, x], [fa, fb], color="crimson", lw=2.2, alpha=0.7, label=f"KS distance D = {d:.2f}")
    sub = "" if forget_quality is None else f"\nforget quality = KS p-value = {forget_quality:.2g}"
    ax.set_title(title + sub, fontsize=10)
    ax.set_xlabel("truth ratio R = P(perturbed answers) / P(paraphrased answer), per forget item (log scale)")
    ax.set_ylabel("fraction of forget items with ratio ≤ R")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    # below the axes: no corner of an ECDF plot is reliably empty (curves span the whole range in some runs)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    path = Path(path)
    fig.savefig(path)
    return path


def forget_truth_ratios(result: Mapping | None) -> list[float] | None:
    """Per-item forget truth ratios, or None when the result has none (e.g. a raw-text evaluation)."""
    items = _split_items(result or {}, "forget")
    if not items or any(not isinstance(it.get("truth_ratio"), int | float) for it in items):
        return None
    return [float(it["truth_ratio"]) for it in items]


MODEL_STYLE = {"color": "tab:blue", "lw": 1.8}
REFERENCE_STYLE = {"color": "tab:orange", "lw": 1.8, "ls": "--"}
BEFORE_STYLE = {"color": "0.6", "lw": 1.2, "ls": "-."}


ECDF_EXPLANATION = (
    "Empirical distribution functions (ECDFs) of the per-item truth ratios on the forget split: the further "
    "apart the model's and the reference's curves, the lower the forget quality (the KS p-value of their largest "
    "vertical distance D); left of R = 1 the correct answer is more likely than the wrong ones, so a model that "
    "still knows the forget set sits to the left of the reference."
)


def ecdf_for(compared: Mapping, path: Path, name: str, before: Mapping | None = None) -> tuple[Path | None, str]:
    """The ECDF plot of one compared result (``before``: the model before unlearning, drawn in grey) and a note
    on what is missing ("" when nothing is); no plot when the evaluation has no truth ratios."""
    ratios = forget_truth_ratios(compared)
    if ratios is None:
        return None, "No per-item truth ratios in this evaluation (e.g. a raw-text benchmark): no ECDF plot."
    curves = [Curve(f"model: {name}", ratios, MODEL_STYLE)]
    ref = forget_truth_ratios(compared.get("reference_result"))
    note = ""
    if ref is not None:
        curves.append(
            Curve(
                f"retrained reference: {Path(str(compared.get('reference', 'reference'))).name}", ref, REFERENCE_STYLE
            )
        )
    else:
        note = " The reference's per-item values are not in this file (re-run `llm-unlearn eval`): model only."
    before_ratios = forget_truth_ratios(before)
    if before_ratios is not None:
        curves.append(Curve(f"before unlearning: {Path(str(before.get('model'))).name}", before_ratios, BEFORE_STYLE))
    title = f"Forget truth ratios: {name} vs the retrained reference"
    plot_truth_ratio_ecdf(curves, path, title, compared.get("summary", {}).get("forget_quality"))
    return path, note.strip()


# --- one evaluation -------------------------------------------------------------------------------------------------


def _calibration_section(compared: Mapping) -> list[str]:
    """What the forget-quality number means here: verdict, noise floor, discrimination, utility retention."""
    from .calibration import calibration_lines

    cal = compared.get("calibration")
    if not cal:
        return []
    lines = ["## Calibration", ""]
    floor = cal.get("noise_floor")
    lines.append(
        f"- Forget quality {cal['forget_quality_median']:.3g} (median over {len(cal['references'])} reference(s)); "
        + (
            f"noise floor {floor:.3g} (forget quality between the references themselves)"
            if floor is not None
            else "noise floor unknown: only one reference (train a replica with `finetune --data_seed`)"
        )
    )
    lines += [f"- {line}" for line in calibration_lines(cal)]
    retention = cal.get("utility_retention")
    if retention:
        lines += ["", "| utility component | unlearned / target |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in retention["components"].items()]
    return [*lines, ""]


def eval_report_markdown(
    compared: Mapping, cis: Mapping, png_name: str | None, ecdf_note: str, n_resamples: int, seed: int
) -> str:
    """The Markdown report of one compared result."""
    cfg = compared.get("config", {})
    n = {role: len(_split_items(compared, role) or []) for role in (compared.get("splits") or {})}
    holdout = len((compared.get("privacy") or {}).get("holdout_items") or [])
    sizes = ", ".join(f"{role} {k}" for role, k in n.items()) + (f", holdout {holdout}" if holdout else "")
    lines = [
        f"# Evaluation of `{compared['model']}`",
        "",
        f"- Model: `{compared['model']}`",
        f"- Reference (retrained without the forget set): `{compared.get('reference', '–')}`",
        f"- Data: `{compared.get('data', '–')}`, forget split `{cfg.get('forget_split', '–')}` (items: {sizes})",
        "",
        "## Reading",
        "",
        plain_reading(compared, cis),
        "",
        *_calibration_section(compared),
        "## Metrics",
        "",
        metrics_table(compared, cis),
        "",
        _resample_note(n_resamples, seed, list(compared.get("summary", {}))),
        "",
        "## Forget truth ratios",
        "",
    ]
    if png_name:
        lines += [f"![forget truth-ratio ECDFs]({png_name})", "", ECDF_EXPLANATION, ""]
    lines += [ecdf_note, ""] if ecdf_note else []
    return "\n".join(lines)


def write_eval_report(
    compared: Mapping, json_path: str | Path, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> list[Path]:
    """Write ``<json>.md`` (table with bootstrap CIs and a plain reading) and ``<json stem>_truth_ratio_ecdf.png``
    beside the evaluation JSON; returns the paths written."""
    json_path = Path(json_path)
    md = json_path.with_suffix(".md")
    cis = bootstrap_cis(compared, n_resamples, seed)
    png, note = ecdf_for(
        compared, json_path.with_name(f"{json_path.stem}_truth_ratio_ecdf.png"), Path(str(compared["model"])).name
    )
    md.write_text(eval_report_markdown(compared, cis, png.name if png else None, note, n_resamples, seed))
    return [md] + ([png] if png else [])


# --- several runs ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One evaluated run of ``llm-unlearn report``."""

    name: str
    json_path: Path
    compared: dict
    method: str | None = None
    before: bool = False  # another reported run was unlearned from this one (e.g. the target)


def find_eval_json(path: str | Path) -> Path:
    """The compared evaluation of a run folder (its ``eval_*.json``), or ``path`` itself when it is that file."""
    path = Path(path)
    if path.is_file():
        _load_compared(path)
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder or evaluation file")
    found = []
    for p in sorted(path.glob("eval_*.json")):
        try:
            _load_compared(p)
            found.append(p)
        except ValueError:
            continue
    if not found:
        raise FileNotFoundError(
            f"{path} holds no evaluation (no eval_*.json written by `llm-unlearn eval`): run "
            f"`llm-unlearn eval --model {path} --reference REF --data DATA` first"
        )
    if len(found) > 1:
        raise ValueError(
            f"{path} holds several evaluations ({', '.join(p.name for p in found)}): pass the JSON file to report"
        )
    return found[0]


def _load_compared(path: Path) -> dict:
    result = E.load_result(path)
    if "summary" not in result or "reference_summary" not in result:
        raise ValueError(f"{path} is an evaluation without a reference comparison (not written by `llm-unlearn eval`)")
    return result


def _method(json_path: Path, compared: Mapping) -> str | None:
    """The unlearning method from ``unlearn_record.json`` beside the evaluation or in the evaluated model folder."""
    for folder in (json_path.parent, Path(str(compared.get("model", "")))):
        record = folder / "unlearn_record.json"
        if record.is_file():
            try:
                rec = json.loads(record.read_text())
            except json.JSONDecodeError:
                return None
            hp = rec.get("hyperparameters") or {}
            selection = hp.get("selection")
            extra = f" + {selection} selection" if selection and selection != "none" else ""
            if hp.get("forget_regularizer") == "none":  # regularized_ft reduced to plain fine-tuning on retain
                extra += " (no regularizer)"
            return f"{rec.get('method', '?')}{extra}"
    return None


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Each run's evaluation, named after its folder (made unique), checked to be comparable."""
    runs = []
    for p in paths:
        jp = find_eval_json(p)
        compared = _load_compared(jp)
        name = jp.parent.name if jp.stem.startswith("eval_") or Path(p).is_dir() else jp.stem
        runs.append(Run(name or str(jp), jp, compared, _method(jp, compared)))
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:  # same folder name under different parents: add the parent
            r.name = f"{r.json_path.parent.parent.name}/{r.json_path.parent.name}"
    check_comparable(runs)
    return runs


def _fingerprint(summary: Mapping[str, float]) -> tuple:
    return tuple((k, round(float(v), 9)) for k, v in summary.items())


def check_comparable(runs: Sequence[Run]) -> None:
    """Refuse runs evaluated on other data or against another reference than the first run: forget quality and
    every gap are relative to the reference, so one table and one plot with one reference would mislead. Other
    evaluation settings (e.g. the generation budget) only warn."""
    first = runs[0].compared
    for r in runs[1:]:
        c = r.compared
        if c.get("data_fingerprint") != first.get("data_fingerprint") or c.get("config", {}).get(
            "forget_split"
        ) != first.get("config", {}).get("forget_split"):
            raise ValueError(
                f"{r.json_path} was evaluated on other data ({c.get('data')}, forget split "
                f"{c.get('config', {}).get('forget_split')}) than {runs[0].json_path} ({first.get('data')}, "
                f"forget split {first.get('config', {}).get('forget_split')}): report runs of one benchmark together"
            )
        if _fingerprint(c["reference_summary"]) != _fingerprint(first["reference_summary"]):
            raise ValueError(
                f"{r.json_path} was compared to another reference ({c.get('reference')}) than {runs[0].json_path} "
                f"({first.get('reference')}): its forget quality is not comparable; re-evaluate it with the same "
                "--reference"
            )
        # batch_size changes no number; a key only one config has comes from another version of EvalConfig
        cfg, first_cfg = c.get("config", {}), first.get("config", {})
        diff = sorted(k for k in set(cfg) & set(first_cfg) if k != "batch_size" and cfg[k] != first_cfg[k])
        if diff:
            logger.warning("%s was evaluated with other settings (%s) than %s", r.json_path, diff, runs[0].json_path)


RUN_COLUMNS = {  # summary key -> column header of the runs table, in column order
    "forget_quality": "forget quality",
    "model_utility": "model utility",
    "privleak": "PrivLeak %",
    "forget/rouge_l_recall": "forget ROUGE-L",
    "retain/rouge_l_recall": "retain ROUGE-L",
    "forget/truth_ratio": "forget truth ratio",
    "forget/probability": "forget prob.",
    "mia_auc/min_k": "MIA AUC (Min-K%)",
    "forget/extraction_strength": "extraction str.",
    "verbmem/rouge_l_f1": "VerbMem",
    "knowmem_forget/rouge_l_f1": "KnowMem forget",
    "knowmem_retain/rouge_l_f1": "KnowMem retain",
}


def runs_table(runs: Sequence[Run], cis: Mapping[str, Mapping[str, Interval | None]], ref_cis: Mapping) -> str:
    """One row per run and one for the reference; columns are the :data:`RUN_COLUMNS` some run has."""
    keys = [k for k in RUN_COLUMNS if any(k in r.compared["summary"] for r in runs)]
    header = ["run", "method"]
    for k in keys:
        header.append(RUN_COLUMNS[k])
        if k == "model_utility":
            header.append("utility 95 % CI")
    calibrated = any(r.compared.get("calibration") for r in runs)
    if calibrated:
        header += ["noise floor", "min utility retention"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    ref_summary = runs[0].compared["reference_summary"]
    ref_row = {k: ref_summary.get(k) for k in keys}
    rows = [("**retrained reference**", "–", ref_row, ref_cis, None)]
    rows += [
        (r.name, r.method or "–", r.compared["summary"], cis[r.name], r.compared.get("calibration")) for r in runs
    ]
    for name, method, summary, ci, cal in rows:
        cells = [name, method]
        for k in keys:
            cells.append(_num(summary.get(k), ".3g"))
            if k == "model_utility":
                cells.append(_ci(ci.get(k)))
        if calibrated:
            cells += _calibration_cells(cal)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _calibration_cells(cal: Mapping | None) -> list[str]:
    """The noise floor ("unknown" with one reference) and the minimum utility retention of one run."""
    if not cal:
        return ["–", "–"]
    floor = "unknown" if cal.get("noise_floor") is None else _num(cal["noise_floor"], ".3g")
    retention = cal.get("utility_retention")
    return [floor, "–" if not retention else _num(retention["minimum"], ".3f")]


@dataclass
class PlotPoint:
    """One run in the forget quality vs model utility plot (``before``: a model before unlearning, e.g. the
    target, drawn apart from the unlearning runs)."""

    label: str
    utility: float
    forget_quality: float
    utility_ci: Interval | None = None
    before: bool = False


def _xerr(p: PlotPoint):
    return None if p.utility_ci is None else [[p.utility - p.utility_ci[0]], [p.utility_ci[1] - p.utility]]


def plot_fq_vs_mu(
    points: Sequence[PlotPoint],
    reference: PlotPoint | None,
    path: str | Path,
    noise_floor: float | None = None,
    xlabel: str | None = None,
) -> Path:
    """Forget quality (log y) against model utility (x), one labelled point per run with its utility interval, the
    reference as a star, a dashed line at ``FQ = 0.05`` and a dotted one at the noise floor (forget quality between
    retrained references) when it is known. Forget quality 0 (underflow) is drawn at the bottom. ``xlabel`` names
    another x quantity (e.g. the minimum utility retention)."""
    fig = _figure(7.6, 5.6)
    ax = fig.add_subplot()
    positive = [p.forget_quality for p in points if p.forget_quality > 0]
    floor = min(positive + [FQ_THRESHOLD]) / 10.0
    for p in points:
        marker = "v" if p.forget_quality <= 0 else ("s" if p.before else "o")
        color = "0.45" if p.before else "tab:blue"
        y = max(p.forget_quality, floor)
        ax.errorbar(p.utility, y, xerr=_xerr(p), fmt=marker, ms=6, capsize=3, color=color, ecolor="0.65", lw=1)
    if reference is not None:
        ax.errorbar(reference.utility, 1.0, xerr=_xerr(reference), fmt="*", ms=16, color="tab:orange", capsize=3)
    ax.axhline(FQ_THRESHOLD, color="crimson", ls="--", lw=1)
    if noise_floor is not None and noise_floor > 0:
        ax.axhline(noise_floor, color="tab:green", ls=":", lw=1.4)
        floor = min(floor, noise_floor / 10.0)
    ax.set_yscale("log")
    ax.set_ylim(floor / 5.0, 4.0)
    xs = [p.utility for p in points] + ([reference.utility] if reference else [])
    lo = min(0.0, min(xs) - 0.02)
    ax.set_xlim(lo, max(xs) + 0.22 * (max(xs) - lo) + 0.05)  # room on the right for the labels
    _annotate_points(fig, ax, points, reference, floor)
    ax.set_xlabel(xlabel or "model utility: harmonic mean of 9 retain / utility numbers (bars: 95 % CI)  →  better")
    ax.set_ylabel("forget quality: KS p-value vs reference (log scale)  →  better")
    what = "model utility" if xlabel is None else "minimum utility retention"
    ax.set_title(f"Forget quality vs {what}: the aim is the top right", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _fq_legend(ax, points, reference, noise_floor)
    path = Path(path)
    fig.savefig(path)
    return path


def _fq_legend(ax, points: Sequence[PlotPoint], reference: PlotPoint | None, noise_floor: float | None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="tab:blue", label="unlearning run")]
    if any(p.before for p in points):
        handles.append(Line2D([], [], marker="s", ls="", color="0.45", label="model before unlearning"))
    if any(p.forget_quality <= 0 for p in points):
        handles.append(Line2D([], [], marker="v", ls="", color="tab:blue", label="forget quality 0 (underflow)"))
    if reference is not None:
        handles.append(Line2D([], [], marker="*", ms=11, ls="", color="tab:orange", label=reference.label))
    handles.append(Line2D([], [], ls="--", color="crimson", lw=1, label=f"forget quality = {FQ_THRESHOLD}"))
    if noise_floor is not None and noise_floor > 0:
        handles.append(
            Line2D(
                [],
                [],
                ls=":",
                color="tab:green",
                lw=1.4,
                label=f"noise floor {noise_floor:.2g} (reference vs reference)",
            )
        )
    ax.figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)


def _annotate_points(fig, ax, points: Sequence[PlotPoint], reference: PlotPoint | None, floor: float) -> None:
    """Label each point above and to the right of its marker (clear of its horizontal error bar), moving a label
    up until it overlaps no other label or marker: runs of equal forget quality are common (the KS p-value takes
    few values), and overlapping names would be unreadable. A moved label gets a leader line."""
    fig.canvas.draw()  # fixes the transforms so label extents are known in pixels
    renderer = fig.canvas.get_renderer()
    xys = [(p.utility, max(p.forget_quality, floor)) for p in points]
    if reference is not None:
        xys.append((reference.utility, 1.0))
    marker_boxes = []
    for xy in xys:
        x, y = ax.transData.transform(xy)
        marker_boxes.append(_Box(x - 6, y - 6, x + 6, y + 6))
    placed: list[_Box] = []
    for i in sorted(range(len(points)), key=lambda i: xys[i][1]):
        p, rise = points[i], 4.0
        while True:
            ann = ax.annotate(p.label, xys[i], xytext=(6, rise), textcoords="offset points", **_LABEL_STYLE)
            bb = ann.get_window_extent(renderer)
            box = _Box(bb.x0 - 2, bb.y0 - 1, bb.x1 + 2, bb.y1 + 1)
            clash = any(box.overlaps(o) for o in placed + [m for j, m in enumerate(marker_boxes) if j != i])
            if not clash or rise > 120:
                break
            ann.remove()
            rise += 6.0
        if rise > 4.0:  # moved: connect it to its point
            ann.remove()
            ann = ax.annotate(
                p.label,
                xys[i],
                xytext=(6, rise),
                textcoords="offset points",
                **_LABEL_STYLE,
                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 0, "shrinkB": 4},
            )
        placed.append(box)


# a light backdrop keeps a label readable where it crosses the threshold line or an error bar
_LABEL_STYLE = {
    "fontsize": 8,
    "va": "bottom",
    "bbox": {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
}


@dataclass
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, o: _Box) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1


# --- several runs: writing ------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder this report did not write (no manifest) unless ``overwrite``; remove the files an
    earlier report listed in its manifest so no stale plot survives."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text()).get("files", [])
        except json.JSONDecodeError:
            old = []
        for name in old:
            p = out / name
            if "/" not in name and p.is_file():  # only plain names in out: never follow a path out of it
                p.unlink()
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty and holds no report written by `llm-unlearn report`: choose another --out or pass "
            "--overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)


def _before_unlearning(run: Run, runs: Sequence[Run]) -> dict | None:
    """The run (if reported too) of the model this run was unlearned from, per its ``unlearn_record.json``."""
    for folder in (run.json_path.parent, Path(str(run.compared.get("model", "")))):
        record = folder / "unlearn_record.json"
        if record.is_file():
            try:
                base = json.loads(record.read_text()).get("base_model")
            except json.JSONDecodeError:
                return None
            if not base:
                return None
            base_path = Path(base).resolve()
            for other in runs:
                if other is not run and base_path in (
                    Path(str(other.compared.get("model"))).resolve(),
                    other.json_path.parent.resolve(),
                ):
                    return other.compared
            return None
    return None


_RUNS_EXPLAINED = {  # summary key -> how to read it, for the runs that have it
    "forget_quality": (
        "Forget quality is the KS p-value between a run's per-item forget truth ratios and the retrained "
        f"reference's: above {FQ_THRESHOLD} the two are indistinguishable at the 5 % level (what perfect unlearning "
        "gives), far below it the run still differs from a model that never saw the forget set."
    ),
    "model_utility": (
        "Model utility is the harmonic mean of probability, truth ratio and ROUGE-L recall on retain and the two "
        "utility sets: unlearning should keep it near the reference's."
    ),
    "verbmem/rouge_l_f1": (
        "VerbMem and KnowMem forget (ROUGE-L F1 of continuations of forget text and of answers about it) should drop "
        "to the reference's level, KnowMem retain (the utility) should not."
    ),
    "privleak": (
        "PrivLeak near 0 % is good; positive means the forget items are still recognisable as training members "
        "(under-unlearned), negative that they now look less familiar than never-seen items (over-unlearned)."
    ),
}


def runs_reading(runs: Sequence[Run], ref_cis: Mapping) -> str:
    """How to read the metrics the runs have, and which runs pass the forget-quality threshold."""
    keys = {k for r in runs for k in r.compared["summary"]}
    text = " ".join(v for k, v in _RUNS_EXPLAINED.items() if k in keys)
    scored = [r for r in runs if "forget_quality" in r.compared["summary"]]
    passing = [r for r in scored if r.compared["summary"]["forget_quality"] > FQ_THRESHOLD]
    if scored and not passing:
        return text + f" No run reaches forget quality {FQ_THRESHOLD}."
    if passing:
        text += " " + _passing_reading(passing, runs[0].compared["reference_summary"], ref_cis)
    return text


def _passing_reading(passing: Sequence[Run], ref_summary: Mapping, ref_cis: Mapping) -> str:
    """Which runs pass the forget-quality threshold, and whether they kept the reference's utility: a run that
    "forgets" by destroying the model (gradient ascent) also passes, and must not read as a success."""
    ref_mu = ref_summary.get("model_utility")
    if ref_mu is None:
        return f"Above {FQ_THRESHOLD}: " + ", ".join(f"`{r.name}`" for r in passing) + "."
    # "kept" = at least the lower end of the reference's interval (or 95 % of it without an interval)
    bar = (ref_cis.get("model_utility") or (0.95 * ref_mu, None))[0]
    listed = ", ".join(f"`{r.name}` ({r.compared['summary'].get('model_utility', float('nan')):.3f})" for r in passing)
    kept = [r for r in passing if r.compared["summary"].get("model_utility", -1.0) >= bar]
    verdict = (
        f"of these, {', '.join(f'`{r.name}`' for r in kept)} also kept the reference's utility: the best trade-off."
        if kept
        else f"none kept the reference's utility ({ref_mu:.3f}, lower 95 % bound {bar:.3f}): they forget by "
        "damaging the model, not as retraining would."
    )
    return f"Above {FQ_THRESHOLD} (with their model utility): {listed}; {verdict}"


def _runs_note(runs: Sequence[Run], n_resamples: int) -> str:
    if n_resamples < 1:
        return "No bootstrap resamples were requested: no confidence intervals."
    note = "Per-metric 95 % intervals of each run are in the Markdown report beside its evaluation JSON."
    if any("model_utility" in r.compared["summary"] for r in runs):
        note = f"Utility 95 % CI: percentile bootstrap over items ({n_resamples} resamples). " + note
    if any("forget_quality" in r.compared["summary"] for r in runs):
        note += " Forget quality is a p-value, not an estimate: no interval."
    return note


def runs_markdown(
    runs: Sequence[Run],
    table: str,
    plot: str | None,
    ecdfs: dict[str, tuple],
    n_resamples: int,
    ref_cis: Mapping,
    retention_plot: str | None = None,
) -> str:
    """The Markdown of ``llm-unlearn report``."""
    first = runs[0].compared
    lines = [
        "# Unlearning runs against the retrained reference",
        "",
        f"- Data: `{first.get('data')}`, forget split `{first.get('config', {}).get('forget_split')}`",
        f"- Reference (retrained without the forget set): `{first.get('reference')}`",
        "- Evaluations: " + ", ".join(f"`{r.json_path}`" for r in runs),
        "",
        "## Reading",
        "",
        runs_reading(runs, ref_cis),
        "",
        "## Runs",
        "",
        table,
        "",
        _runs_note(runs, n_resamples),
        "",
        "## Forget quality vs model utility",
        "",
    ]
    lines += [
        f"![forget quality vs model utility]({plot})"
        if plot
        else "No run has both forget quality and model utility (e.g. raw-text evaluations): no plot.",
        "",
    ]
    if retention_plot:
        lines += [
            "## Forget quality vs minimum utility retention",
            "",
            "Model utility is a harmonic mean: it can stay flat while one of its nine parts collapses. The minimum "
            "retention (the lowest part of the unlearned model divided by the target's) cannot hide that.",
            "",
            f"![forget quality vs minimum utility retention]({retention_plot})",
            "",
        ]
    lines += ["## Forget truth ratios per run", ""]
    if not any(png for png, _ in ecdfs.values()):
        return "\n".join(lines + ["No run has per-item truth ratios (e.g. raw-text evaluations): no ECDF plots.", ""])
    lines += [ECDF_EXPLANATION, ""]
    for name, (png, note) in ecdfs.items():
        lines += [f"### {name}", ""]
        lines += [f"![forget truth-ratio ECDFs of {name}]({png.name})", ""] if png else []
        lines += [note, ""] if note else []
    return "\n".join(lines)


def _noise_floor(runs: Sequence[Run]) -> float | None:
    floors = [(r.compared.get("calibration") or {}).get("noise_floor") for r in runs]
    return next((f for f in floors if f is not None), None)


def _runs_plot(
    runs: Sequence[Run], cis: Mapping, ref_cis: Mapping, path: Path, x: str = "model_utility"
) -> Path | None:
    """Forget quality against model utility (``x="model_utility"``) or against the minimum utility retention
    (``x="min_retention"``, unlearned / target) of the runs that have both numbers (None if none has)."""

    def x_of(r: Run):
        if x == "model_utility":
            return r.compared["summary"].get("model_utility"), cis[r.name].get("model_utility")
        cal = r.compared.get("calibration") or {}
        if cal.get("utility_retention"):
            return cal["utility_retention"]["minimum"], None
        return (1.0 if cal and r.before else None), None  # the target retains all of its own utility

    points = []
    for r in runs:
        value, ci = x_of(r)
        if value is not None and "forget_quality" in r.compared["summary"]:
            points.append(PlotPoint(r.name, value, r.compared["summary"]["forget_quality"], ci, before=r.before))
    if not points:
        return None
    if x != "model_utility":  # the reference has no retention of its own: no star
        label = "minimum utility retention: lowest of the 9 components, unlearned / target  →  better"
        return plot_fq_vs_mu(points, None, path, _noise_floor(runs), xlabel=label)
    ref_mu = runs[0].compared["reference_summary"].get("model_utility")
    ref_point = None if ref_mu is None else PlotPoint("retrained reference", ref_mu, 1.0, ref_cis.get("model_utility"))
    return plot_fq_vs_mu(points, ref_point, path, _noise_floor(runs))


def _write_runs_files(runs: Sequence[Run], out: Path, n_resamples: int, seed: int) -> list:
    """The report's files, written into ``out``; returns their paths followed by the table text."""
    befores = {r.name: _before_unlearning(r, runs) for r in runs}
    bases = {id(b) for b in befores.values() if b is not None}
    for r in runs:
        r.before = id(r.compared) in bases
        r.method = r.method or ("(before unlearning)" if r.before else None)
    cis = {r.name: bootstrap_cis(r.compared, n_resamples, seed)["model"] for r in runs}
    ref_cis = bootstrap_cis(runs[0].compared, n_resamples, seed)["reference"]
    table = runs_table(runs, cis, ref_cis)
    plot = _runs_plot(runs, cis, ref_cis, out / "fq_vs_mu.png")
    retention_plot = _runs_plot(runs, cis, ref_cis, out / "fq_vs_min_retention.png", x="min_retention")
    written = [p for p in (plot, retention_plot) if p]
    ecdfs = {}
    for r in runs:
        png, note = ecdf_for(r.compared, out / f"truth_ratio_ecdf_{_safe(r.name)}.png", r.name, befores[r.name])
        ecdfs[r.name] = (png, note)
        written += [png] if png else []
    md = out / "report.md"
    md.write_text(
        runs_markdown(
            runs,
            table,
            plot.name if plot else None,
            ecdfs,
            n_resamples,
            ref_cis,
            retention_plot and retention_plot.name,
        )
    )
    written.append(md)
    manifest = {
        "kind": "llm_unlearn.report",
        "runs": [str(r.json_path) for r in runs],
        "files": [p.name for p in written],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return [*written, table]


def write_runs_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    overwrite: bool = False,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict:
    """``llm-unlearn report``: ``out_dir/report.md`` (one row per run, the reference row, a reading),
    ``out_dir/fq_vs_mu.png`` and one truth-ratio ECDF plot per run.

    ``run_dirs`` are run folders holding one ``eval_*.json`` of ``llm-unlearn eval`` (or such files). Runs must
    share data and reference (else ValueError); ``out_dir`` must be new, empty, or an earlier report (else
    FileExistsError unless ``overwrite``). Returns ``{"files": [...], "table": str, "runs": [names]}``.
    """
    if not run_dirs:
        raise ValueError("name at least one run folder (or evaluation JSON) to report")
    runs = load_runs(run_dirs)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    check_output_location(out, {f"run {r.name}": r.json_path.parent for r in runs}, flag="out")
    with staged_files(out, last=(MANIFEST,)) as tmp:
        written = _write_runs_files(runs, tmp, n_resamples, seed)
    table = written.pop()
    written = [out / p.name for p in written]
    return {"files": [str(p) for p in written], "table": table, "runs": [r.name for r in runs]}
