"""Calibrated forget quality and utility retention: what a forget-quality number means on this data.

Forget quality (the KS p-value of the forget truth ratios against a retrained reference) has a noise floor and can
fail to see knowledge at all; a harmonic-mean utility can stay flat while one of its parts collapses. This module
turns those caveats into numbers and words that every evaluation carries (``compared["calibration"]``):

- **Noise floor**: the forget quality between retrained references themselves (same retain split; another data
  order or initialisation). With several references it is the lowest forget quality among their pairs: the
  closest that retraining itself gets, measured the same way. With one reference it is unknown, and said so.
- **Verdict**: the model is *not distinguishable from retraining at this benchmark's resolution* when its forget
  quality (the median over the references) is at least 0.05 and at least the noise floor; otherwise it is
  distinguishable.
- **Discrimination**: the untouched target's own forget quality must lie far (100×) below that threshold, else
  forget quality cannot see the knowledge on this data; the measures whose target–reference gap is large are
  named instead.
- **Utility retention**: each of the nine utility components of the model divided by the target's, the minimum
  of them, and the components below 90 % of the target's.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence

from . import metrics as M

FQ_THRESHOLD = 0.05  # TOFU's reading: a p-value above it cannot tell the model from the reference
DISCRIMINATION_FACTOR = 100.0  # the target must score this many times below the threshold
RETENTION_WARNING = 0.9
DISCRIMINATING_GAP = 0.1  # |target − reference| of a [0, 1] measure that counts as seeing the forget set
UTILITY_ROLES = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("probability", "rouge_l_recall", "truth_ratio")
# Measures that can discriminate where forget quality cannot: (summary key, label).
DISCRIMINATING_MEASURES = (
    ("mia_auc/min_k", "membership-inference AUC (Min-K%)"),
    ("forget/probability", "forget probability"),
    ("forget/rouge_l_recall", "forget ROUGE-L"),
    ("forget/extraction_strength", "extraction strength"),
    ("forget/truth_ratio", "forget truth ratio"),
)


def forget_ratios(result: Mapping) -> list[float]:
    return [it["truth_ratio"] for it in result["splits"]["forget"]["items"]]


def noise_floor(references: Sequence[Mapping]) -> tuple[float | None, list[dict]]:
    """(floor, pairs): forget quality between every pair of references, the lowest of them; None with one."""
    pairs = [
        {"a": a["model"], "b": b["model"], "forget_quality": M.forget_quality(forget_ratios(a), forget_ratios(b))}
        for a, b in itertools.combinations(references, 2)
    ]
    return (min(p["forget_quality"] for p in pairs) if pairs else None), pairs


def verdict(forget_quality: float, floor: float | None) -> dict:
    """Whether ``forget_quality`` (the median over references) tells the model from retraining."""
    threshold = FQ_THRESHOLD if floor is None else max(FQ_THRESHOLD, floor)
    close = forget_quality >= threshold
    if floor is None:
        floor_text = "the noise floor is unknown (one reference: train a second with `finetune --data_seed`)"
    else:
        floor_text = f"noise floor {floor:.3g}"
    if close:
        text = (
            f"not distinguishable from retraining at this benchmark's resolution (forget quality {forget_quality:.3g}"
            f" ≥ {threshold:.3g}; {floor_text})"
        )
    else:
        text = f"distinguishable from retraining (forget quality {forget_quality:.3g} < {threshold:.3g}; {floor_text})"
    return {"distinguishable": not close, "threshold": threshold, "text": text}


def discrimination(target_fq: float, floor: float | None, target_summary: Mapping, ref_summary: Mapping) -> dict:
    """Whether forget quality can see the forget set on this data: the target must score far below the threshold."""
    threshold = FQ_THRESHOLD if floor is None else min(FQ_THRESHOLD, floor)
    informative = target_fq <= threshold / DISCRIMINATION_FACTOR
    measures = []
    for key, label in DISCRIMINATING_MEASURES:
        if key in target_summary and key in ref_summary:
            gap = target_summary[key] - ref_summary[key]
            if abs(gap) >= DISCRIMINATING_GAP:
                measures.append({"measure": key, "label": label, "target": target_summary[key], "gap": gap})
    if informative:
        text = (
            f"forget quality discriminates on this data: the untouched target scores {target_fq:.3g}, far below "
            f"{threshold:.3g}"
        )
    else:
        named = ", ".join(f"{m['label']} (target − reference {m['gap']:+.2f})" for m in measures) or "none found"
        text = (
            f"forget quality is NOT informative on this data: the untouched target itself scores {target_fq:.3g}, "
            f"not far below {threshold:.3g}; read the measures that do discriminate: {named}"
        )
    return {
        "target_forget_quality": target_fq,
        "informative": informative,
        "discriminating_measures": measures,
        "text": text,
    }


def utility_components(result: Mapping) -> dict[str, float]:
    return {f"{r}/{m}": result["splits"][r]["aggregate"][m] for r in UTILITY_ROLES for m in UTILITY_METRICS}


def utility_retention(result: Mapping, target: Mapping) -> dict:
    """Each utility component of ``result`` divided by the target's, the minimum, and those below 90 %."""
    mine, theirs = utility_components(result), utility_components(target)
    ratios = {k: (mine[k] / theirs[k] if theirs[k] > 0 else (1.0 if mine[k] == 0 else float("inf"))) for k in mine}
    worst = min(ratios, key=ratios.get)
    below = sorted(k for k, v in ratios.items() if v < RETENTION_WARNING)
    text = f"minimum utility retention {ratios[worst]:.3g} ({worst}, unlearned / target)"
    if below:
        text += "; WARNING: below 90 % of the target's: " + ", ".join(f"{k} {ratios[k]:.3f}" for k in below)
    return {"components": ratios, "minimum": ratios[worst], "worst": worst, "below_90": below, "text": text}


def calibrate(
    result: Mapping,
    references: Sequence[Mapping],
    target: Mapping | None,
    target_is_model: bool,
) -> dict:
    """Everything this module reports, for one QA evaluation against one or more references."""
    fqs = [M.forget_quality(forget_ratios(result), forget_ratios(r)) for r in references]
    floor, pairs = noise_floor(references)
    out = {
        "references": [r["model"] for r in references],
        "forget_quality_per_reference": fqs,
        "forget_quality_median": statistics.median(fqs),
        "noise_floor": floor,
        "noise_floor_pairs": pairs,
        "verdict": verdict(statistics.median(fqs), floor),
    }
    if target is not None:
        from .evaluator import compare

        against = compare(target, references[0])  # the target's headline numbers next to the reference's
        target_fq = against["forget_quality"]
        out["discrimination"] = discrimination(target_fq, floor, against["summary"], against["reference_summary"])
        out["target"] = target["model"]
        out["utility_retention"] = None if target_is_model else utility_retention(result, target)
    else:
        out["discrimination"] = None
        out["utility_retention"] = None
    return out


def calibration_lines(calibration: Mapping | None) -> list[str]:
    """Plain-language lines for consoles and reports."""
    if not calibration:
        return []
    lines = [f"Verdict: {calibration['verdict']['text']}."]
    if len(calibration["references"]) > 1:
        per = ", ".join(f"{q:.3g}" for q in calibration["forget_quality_per_reference"])
        lines.append(f"Forget quality against each of the {len(calibration['references'])} references: {per}.")
    if calibration.get("discrimination"):
        lines.append(f"Discrimination: {calibration['discrimination']['text']}.")
    else:
        lines.append("Discrimination: unknown (the untouched target was not evaluated; pass --target).")
    if calibration.get("utility_retention"):
        lines.append(f"Utility: {calibration['utility_retention']['text']}.")
    return lines
