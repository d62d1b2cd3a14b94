"""Calibrated forget quality and utility retention: what a forget-quality number means on this data.

Forget quality (the KS p-value of the forget truth ratios against a retrained reference) has a noise floor and can
fail to see knowledge at all; a harmonic-mean utility can stay flat while one of its parts collapses. This module
turns those caveats into numbers and words that every evaluation carries (``compared["calibration"]``):

- **Noise floor**: the forget quality between retrained references themselves (same retain split; another data
  order or initialisation). With several references it is the lowest forget quality among their pairs: the
  closest that retraining itself gets, measured the same way. With one reference it is unknown, and said so.
- **Resampled floor**: a floor from two references is *one draw* of the forget quality that retrained models get
  against each other, and a high draw rejects retraining itself: on the embedded forget10 the two references score
  0.993 against each other, and 3 of 4 further retrained models (other data orders and initialisations) scored
  0.93–0.96 against them, "distinguishable from retraining" under a bar at the floor
  (``eval/probe_verdict_null.py``). So the verdict's bar is the lower ``FLOOR_QUANTILE`` point of the reference
  pairs' forget quality when the forget items are resampled with replacement (the same items for every model,
  seeded): how low forget quality between retrained models goes on a forget set of this size.
- **Tests**: three two-sample KS tests of the model's forget items against each reference's, on three per-item
  statistics: the truth ratio (TOFU's forget quality), the answer's own loss (the answers' test) and the
  phrasing-matched truth ratio. Each has its bar: with several references ``min(0.05, resampled floor)`` (as low as
  retrained models get against each other on a forget set of this size), with one reference 0.05.
- **Discrimination decides which tests count**, by a rule fixed before the model under test is looked at: a test
  counts when the untouched target lies far (100×) below its bar against every reference. The headline is read
  from those tests alone and names them, so it cannot contradict the discrimination line; when none counts it is
  "undetermined".
- **Verdict of one test**: several references: distinguishable when the model's p-value is below the bar against
  every reference, not distinguishable when against none, undetermined when they disagree (no median of
  p-values). One reference (the noise floor unknown): not distinguishable at p ≥ 0.05; distinguishable only at
  p ≤ √(p_target · 0.05), the geometric midpoint between the untouched target and 0.05 (closer to the target than
  to retraining's usual range); undetermined in between, where the floor is needed and unknown.
- **Headline**: distinguishable when a counting test says so (named, with the direction: answers more or less
  likely than under retraining); not distinguishable when every counting test says so; undetermined otherwise.
- **Utility retention**: each of the nine utility components of the model divided by the target's, the minimum
  of them, and the components below 90 % of the target's.
- **Phrasing-matched truth ratio**: TOFU's truth ratio compares the wrong answers with the paraphrase; where the
  wrong answers are phrased like the trained answer instead, the ratio measures familiarity with a phrasing more
  than knowledge of the fact. The variant compares them with whichever correct answer shares their phrasing, and
  the output says which variant discriminates better (its untouched target lies further below the bar).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from .verdict import (  # noqa: F401 (the tests and the verdict, re-exported with the calibration they feed)
    DISCRIMINATION_FACTOR,
    DISTINGUISHABLE,
    FLOOR_QUANTILE,
    FLOOR_RESAMPLES,
    FQ_THRESHOLD,
    NOT_DISTINGUISHABLE,
    TEST_LABELS,
    UNDETERMINED,
    _bar,
    _p_text,
    discrimination_line,
    forget_losses,
    forget_ratios,
    headline,
    matched_ratios,
    noise_floor,
    phrasing_choice,
    resampled_floor,
    run_tests,
    test_statistics,
    test_verdict,
)

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


def answer_probability(result: Mapping, references: Sequence[Mapping], test: Mapping | None = None) -> dict | None:
    """The answers' test beside forget quality: the same two-sample KS test, on each forget item's own answer loss
    instead of its truth ratio, against every reference. The truth ratio compares wrong answers with a paraphrase: a
    model that makes every answer to a forget question equally unlikely (a regularizer toward the uniform
    distribution does) keeps truth ratios like the retrained model's while the correct answers have become far
    less likely than under retraining. That model is not like retraining either (it is over-unlearned, which a
    membership test can see); this test says so, with the direction. ``test``: its entry of :func:`run_tests`
    (status and bar, the headline's rule), run here without a target when not given. None where losses are not
    recorded."""
    losses = forget_losses(result)
    ref_losses = [forget_losses(r) for r in references]
    if losses is None or any(r is None for r in ref_losses):
        return None
    if test is None:
        test = run_tests(result, references, None, {"answers": forget_losses})["answers"]
    per, bar, status = test["p_per_reference"], test["bar"], test["status"]
    floor, floor_low = test["noise_floor"], test["noise_floor_resampled"]
    prob = statistics.median(math.exp(-x) for x in losses)
    ref_prob = statistics.median(math.exp(-x) for r in ref_losses for x in r)
    if status == NOT_DISTINGUISHABLE:
        reading = "not distinguishable from retraining by this test"
    elif status == UNDETERMINED:
        reading = "undetermined (the references disagree, or one reference leaves the noise floor unknown)"
    elif prob < ref_prob:
        reading = (
            "distinguishable: the model finds the forget answers LESS likely than the retrained model does "
            "(over-unlearned; a membership test can tell)"
        )
    else:
        reading = "distinguishable: the model finds the forget answers MORE likely than the retrained model does"
    text = (
        f"forget answers' own probability (the KS test of forget quality on per-item answer loss): {_p_text(per)} "
        f"against the bar {bar:.3g}"
        + ("" if floor is None else f" (floor {floor:.3g})")
        + f", median probability {prob:.3g} vs {ref_prob:.3g} under retraining: {reading}"
    )
    return {
        "p_per_reference": per,
        "p_median": statistics.median(per),
        "noise_floor": floor,
        "noise_floor_resampled": floor_low,
        "threshold": bar,
        "status": status,
        "distinguishable": {DISTINGUISHABLE: True, NOT_DISTINGUISHABLE: False, UNDETERMINED: None}[status],
        "over_unlearned": status == DISTINGUISHABLE and prob < ref_prob,
        "median_probability": prob,
        "reference_median_probability": ref_prob,
        "text": text,
    }


def discrimination(
    target_fq: float,
    floor: float | None,
    target_summary: Mapping,
    ref_summary: Mapping,
    floor_low: float | None = None,
) -> dict:
    """Whether forget quality can see the forget set on this data: the target must score far below the threshold,
    the lowest of 0.05, the noise floor and its resampled bound (as low as retrained models themselves get)."""
    threshold = min([FQ_THRESHOLD, *(f for f in (floor, floor_low) if f is not None)])
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


def one_item_steps(target: Mapping) -> dict[str, float]:
    """For each utility component, the retention one item can move on its own: its largest per-item value in the
    target over the split's sum (for ROUGE on one-word answers, 1 / number of items). A component's retention is
    only resolved to about this step: with 20 items, one flipped answer costs 5 %."""
    out = {}
    for r in UTILITY_ROLES:
        items = target["splits"][r].get("items") or []
        for m in UTILITY_METRICS:
            values = [it[m] for it in items if isinstance(it.get(m), (int, float))]
            total = sum(values)
            out[f"{r}/{m}"] = max(values) / total if values and total > 0 else float("nan")
    return out


def utility_retention(result: Mapping, target: Mapping) -> dict:
    """Each utility component of ``result`` divided by the target's, the minimum, those below 90 %, and the
    resolution of each (``one_item``: the retention one item moves; the worst component's shortfall is said to lie
    within one item when it is no larger than that step)."""
    mine, theirs = utility_components(result), utility_components(target)
    ratios = {k: (mine[k] / theirs[k] if theirs[k] > 0 else (1.0 if mine[k] == 0 else float("inf"))) for k in mine}
    worst = min(ratios, key=ratios.get)
    below = sorted(k for k, v in ratios.items() if v < RETENTION_WARNING)
    steps = one_item_steps(target)
    within = bool(1.0 - ratios[worst] <= steps[worst] + 1e-9)
    text = f"minimum utility retention {ratios[worst]:.3g} ({worst}, unlearned / target"
    if math.isfinite(steps[worst]):
        n = round(1 / steps[worst]) if steps[worst] > 0 else 0
        text += f"; one item moves it by {steps[worst]:.3g}, about 1/{n}"
        if within and ratios[worst] < 1.0:
            text += ", so the loss is within one item"
    text += ")"
    if below:
        text += "; WARNING: below 90 % of the target's: " + ", ".join(f"{k} {ratios[k]:.3f}" for k in below)
    return {
        "components": ratios,
        "minimum": ratios[worst],
        "worst": worst,
        "below_90": below,
        "one_item": steps,
        "within_one_item": within,
        "text": text,
    }


def _strength(test: Mapping) -> float | None:
    """How far (orders of magnitude) a test puts the untouched target below its bar, against its closest reference:
    higher discriminates better; None without the target."""
    target_p = test.get("target_p_per_reference")
    if not target_p:
        return None
    return math.log10(test["bar"] / max(max(target_p), 1e-300))


def phrasing_matched(tests: Mapping[str, Mapping], choice: Sequence[str]) -> dict:
    """The phrasing-matched test's numbers (from :func:`run_tests`: forget quality, noise floor, status, the
    target's), how many items took each correct answer, and whether it or TOFU's truth ratio discriminates better
    here (the one whose untouched target lies more orders of magnitude below its bar)."""
    pm = tests["phrasing_matched"]
    strengths = {"standard": _strength(tests["forget_quality"]), "phrasing_matched": _strength(pm)}
    if None in strengths.values():
        better = "unknown (the target was not evaluated)"
    elif abs(strengths["standard"] - strengths["phrasing_matched"]) < 0.5:
        better = "neither (within half an order of magnitude)"
    else:
        better = max(strengths, key=strengths.get)
    n_answer = sum(c == "answer" for c in choice)
    target_p = pm["target_p_per_reference"]
    return {
        "correct_variant_counts": {"answer": n_answer, "paraphrase": len(choice) - n_answer},
        "forget_quality_per_reference": pm["p_per_reference"],
        "forget_quality_median": statistics.median(pm["p_per_reference"]),
        "noise_floor": pm["noise_floor"],
        "noise_floor_resampled": pm["noise_floor_resampled"],
        "status": pm["status"],
        "target_forget_quality": None if target_p is None else target_p[0],
        "discrimination_strength": strengths,
        "discriminates_better": better,
    }


def calibrate(
    result: Mapping,
    references: Sequence[Mapping],
    target: Mapping | None,
    target_is_model: bool,
    forget_rows: Sequence[Mapping] | None = None,
) -> dict:
    """Everything this module reports, for one QA evaluation against one or more references (``forget_rows``, the
    forget split's items, add the phrasing-matched test and its section)."""
    tests = run_tests(result, references, target, test_statistics(forget_rows))
    fq = tests["forget_quality"]  # TOFU's forget quality: its numbers are computed once, in run_tests
    fqs, floor_low = fq["p_per_reference"], fq["noise_floor_resampled"]
    floor, pairs = noise_floor(references)
    answers = answer_probability(result, references, tests.get("answers"))
    verdict_ = headline(tests, answers, target_known=target is not None)
    verdict_["threshold"] = tests["forget_quality"]["bar"]  # forget quality's bar (tune scores against it)
    out = {
        "references": [r["model"] for r in references],
        "forget_quality_per_reference": fqs,
        "forget_quality_median": statistics.median(fqs),
        "noise_floor": floor,
        "noise_floor_resampled": floor_low,
        "noise_floor_pairs": pairs,
        "tests": tests,
        "verdict": verdict_,
        "answer_probability": answers,
    }
    if target is not None:
        from .evaluator import compare

        against = compare(target, references[0])  # the target's headline numbers next to the reference's
        target_fq = against["forget_quality"]
        disc = discrimination(target_fq, floor, against["summary"], against["reference_summary"], floor_low)
        disc["informative"] = bool(tests["forget_quality"]["discriminates"])  # forget quality itself counts
        disc["counting_tests"] = [n for n, t in tests.items() if t["discriminates"]]
        disc["text"] = discrimination_line(tests)
        if not disc["counting_tests"] and disc["discriminating_measures"]:
            named = ", ".join(f"{m['label']} ({m['gap']:+.2f})" for m in disc["discriminating_measures"])
            disc["text"] += f"; measures whose target-reference gap is large: {named}"
        out["discrimination"] = disc
        out["target"] = target["model"]
        out["target_is_model"] = target_is_model
        out["utility_retention"] = None if target_is_model else utility_retention(result, target)
    else:
        out["discrimination"] = None
        out["utility_retention"] = None
    if forget_rows is not None:
        out["phrasing_matched"] = phrasing_matched(tests, phrasing_choice(forget_rows))
    return out


def calibration_lines(calibration: Mapping | None) -> list[str]:
    """Plain-language lines for consoles and reports: the verdict first, then what it rests on."""
    if not calibration:
        return []
    lines = [f"Verdict: {calibration['verdict']['text']}."]
    if calibration.get("discrimination"):
        lines.append(f"Discrimination: {calibration['discrimination']['text']}.")
    else:
        lines.append("Discrimination: unknown (the untouched target was not evaluated; pass --target).")
    ap = calibration.get("answer_probability")
    if ap:
        lines.append(f"The answers' test, the {ap['text']}.")
    if len(calibration["references"]) > 1:
        per = ", ".join(f"{q:.3g}" for q in calibration["forget_quality_per_reference"])
        lines.append(f"Forget quality against each of the {len(calibration['references'])} references: {per}.")
    if calibration.get("utility_retention"):
        lines.append(f"Utility: {calibration['utility_retention']['text']}.")
    elif calibration.get("target_is_model"):
        lines.append("Utility retention: 1 by definition (this is the untouched target).")
    else:
        lines.append("Utility retention: unknown (the untouched target was not evaluated; pass --target).")
    pm = calibration.get("phrasing_matched")
    if pm:
        floor = "unknown" if pm["noise_floor"] is None else f"{pm['noise_floor']:.3g}"
        if pm.get("noise_floor_resampled") is not None:
            floor += f" (resampled 5 % bound {pm['noise_floor_resampled']:.3g})"
        target = "" if pm["target_forget_quality"] is None else f", untouched target {pm['target_forget_quality']:.3g}"
        lines.append(
            f"Phrasing-matched truth ratio (wrong answers against the correct answer in their own phrasing): forget "
            f"quality {pm['forget_quality_median']:.3g}, noise floor {floor}{target}."
        )
    return lines
