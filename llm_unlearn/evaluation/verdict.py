"""The forget tests and the one verdict read from them.

Three two-sample KS tests compare the model's forget items with each retrained reference's, on three per-item
statistics: the truth ratio (TOFU's forget quality), the answer's own loss (the answers' test) and the
phrasing-matched truth ratio. :func:`run_tests` gives each its p-values, noise floor, resampled floor, bar and
whether it discriminates on this data (the untouched target far below its bar against every reference);
:func:`headline` reads the verdict from the tests that discriminate alone (see :mod:`.calibration` for the rules in
words).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from . import metrics as M

FQ_THRESHOLD = 0.05  # TOFU's reading: a p-value above it cannot tell the model from the reference
DISCRIMINATION_FACTOR = 100.0  # the target must score this many times below the threshold
FLOOR_QUANTILE = 0.05  # the resampled floor: this quantile of reference-pair forget quality over item resamples
FLOOR_RESAMPLES = 1000


def forget_ratios(result: Mapping) -> list[float]:
    return [it["truth_ratio"] for it in result["splits"]["forget"]["items"]]


def forget_losses(result: Mapping) -> list[float] | None:
    """Each forget item's average answer-token loss (its probability is ``exp(−loss)``); None where not recorded."""
    items = result["splits"]["forget"]["items"]
    if not items or any("answer_loss" not in it for it in items):
        return None
    return [it["answer_loss"] for it in items]


def noise_floor(references: Sequence[Mapping], values=forget_ratios) -> tuple[float | None, list[dict]]:
    """(floor, pairs): forget quality between every pair of references, the lowest of them; None with one.
    ``values``: the per-item statistic the KS test compares (the truth ratio; the answer loss for the second
    opinion)."""
    pairs = [
        {"a": a["model"], "b": b["model"], "forget_quality": M.forget_quality(values(a), values(b))}
        for a, b in itertools.combinations(references, 2)
    ]
    return (min(p["forget_quality"] for p in pairs) if pairs else None), pairs


def resampled_floor(
    ratios: Sequence[Sequence[float]], n_resamples: int = FLOOR_RESAMPLES, seed: int = 0
) -> float | None:
    """The lower ``FLOOR_QUANTILE`` point of forget quality between every pair of references' forget truth ratios
    (``ratios``, one list per reference, the same items in the same order) when the items are resampled with
    replacement, the same resample for every reference; None with fewer than two references."""
    import numpy as np

    if len(ratios) < 2:
        return None
    arrays = [np.asarray(r, dtype=float) for r in ratios]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"the references have forget truth ratios for {sorted({len(a) for a in arrays})} items")
    rng = np.random.default_rng(seed)
    by_statistic: dict[float, float] = {}  # the KS p-value of two n-item samples depends on their statistic only
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        for a, b in itertools.combinations(arrays, 2):
            x, y = np.sort(a[idx]), np.sort(b[idx])
            pooled = np.concatenate([x, y])
            d = float(np.max(np.abs(np.searchsorted(x, pooled, "right") - np.searchsorted(y, pooled, "right"))))
            if d not in by_statistic:
                by_statistic[d] = M.forget_quality(x, y)
            values.append(by_statistic[d])
    return float(np.quantile(values, FLOOR_QUANTILE))


def _words(text: str) -> set[str]:
    import re

    return set(re.findall(r"\w+", text.lower()))


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def phrasing_choice(rows: Sequence[Mapping]) -> list[str]:
    """For each forget item, the correct answer that shares its phrasing with the wrong ones: ``answer`` or
    ``paraphrase``, whichever has the higher mean word overlap (Jaccard) with the perturbed answers (ties: the
    paraphrase, TOFU's choice). Decided from the data alone, so every model is scored with the same choice."""
    out = []
    for row in rows:
        perturbed = row["perturbed_answer"]
        wrong = [_words(p) for p in ([perturbed] if isinstance(perturbed, str) else perturbed)]
        overlap = {k: sum(_jaccard(_words(row[f]), w) for w in wrong) for k, f in _VARIANTS.items()}
        out.append("answer" if overlap["answer"] > overlap["paraphrase"] else "paraphrase")
    return out


_VARIANTS = {"answer": "answer", "paraphrase": "paraphrased_answer"}


def matched_ratios(result: Mapping, choice: Sequence[str]) -> list[float]:
    """Forget truth ratios with the phrasing-matched correct answer: ``exp(ℓ(correct) − mean_k ℓ(perturbed_k))``."""
    items = result["splits"]["forget"]["items"]
    return [
        M.truth_ratio(it["answer_loss"] if c == "answer" else it["paraphrase_loss"], it["perturbed_losses"])
        for it, c in zip(items, choice)
    ]


# --- the headline: tests chosen by discrimination, per-reference agreement -----------------------------------------

TEST_LABELS = {
    "forget_quality": "forget quality",
    "answers": "the answers' test",
    "phrasing_matched": "phrasing-matched forget quality",
}
DISTINGUISHABLE, NOT_DISTINGUISHABLE, UNDETERMINED = "distinguishable", "not distinguishable", "undetermined"


def test_statistics(forget_rows: Sequence[Mapping] | None = None) -> dict:
    """The per-item statistic of each test: name -> function(result) -> list (or None where not recorded)."""
    tests = {"forget_quality": forget_ratios, "answers": forget_losses}
    if forget_rows is not None:
        choice = phrasing_choice(forget_rows)
        tests["phrasing_matched"] = lambda r: matched_ratios(r, choice)
    return tests


def _bar(n_refs: int, floor_low: float | None) -> float:
    """A test's bar: 0.05, lowered to the resampled floor where retrained models themselves get lower."""
    return FQ_THRESHOLD if n_refs < 2 or floor_low is None else min(FQ_THRESHOLD, floor_low)


def test_verdict(p: Sequence[float], bar: float, target_p: Sequence[float] | None) -> tuple[str, float | None]:
    """(status, the bar a p-value must pass to be distinguishable) of one test for the model under test.

    Several references: distinguishable when p < bar against every reference, not distinguishable when against
    none, undetermined when they disagree. One reference: the noise floor is unknown, so the bar of a claim of
    difference is the geometric midpoint between the untouched target's p and 0.05 (undetermined between it and
    0.05; without the target, undetermined below 0.05)."""
    if len(p) >= 2:
        below = [x < bar for x in p]
        return (DISTINGUISHABLE if all(below) else NOT_DISTINGUISHABLE if not any(below) else UNDETERMINED), bar
    (x,) = p
    if x >= FQ_THRESHOLD:
        return NOT_DISTINGUISHABLE, None
    if not target_p:
        return UNDETERMINED, None
    mid = math.sqrt(max(target_p[0], 1e-300) * FQ_THRESHOLD)
    return (DISTINGUISHABLE if x <= mid else UNDETERMINED), mid


def run_tests(result: Mapping, references: Sequence[Mapping], target: Mapping | None, tests: Mapping) -> dict:
    """Every test's p-values (against each reference), floors, bar, discrimination and verdict."""
    out = {}
    for name, values in tests.items():
        mine, refs = values(result), [values(r) for r in references]
        if mine is None or any(r is None for r in refs):
            continue
        floor = min((M.forget_quality(a, b) for a, b in itertools.combinations(refs, 2)), default=None)
        floor_low = resampled_floor(refs)
        bar = _bar(len(refs), floor_low)
        target_values = None if target is None else values(target)
        target_p = None if target_values is None else [M.forget_quality(target_values, r) for r in refs]
        counts = None if target_p is None else all(t <= bar / DISCRIMINATION_FACTOR for t in target_p)
        p = [M.forget_quality(mine, r) for r in refs]
        status, claim_bar = test_verdict(p, bar, target_p)
        out[name] = {
            "label": TEST_LABELS[name],
            "p_per_reference": p,
            "noise_floor": floor,
            "noise_floor_resampled": floor_low,
            "bar": bar,
            "claim_bar": claim_bar,
            "target_p_per_reference": target_p,
            "discriminates": counts,
            "status": status,
        }
    return out


def _p_text(ps: Sequence[float]) -> str:
    return "p " + " / ".join(f"{x:.2g}" for x in ps)


def headline(tests: Mapping[str, Mapping], answers: Mapping | None = None, target_known: bool = True) -> dict:
    """The one verdict: read from the tests that discriminate on this data (all tests when the untouched target is
    unknown, said so), naming them; ``distinguishable`` is True, False or None (undetermined)."""
    counting = [n for n, t in tests.items() if t["discriminates"]] if target_known else list(tests)
    if not counting:
        reason = (
            "no test tells the untouched target from retraining on this data"
            if tests
            else "no test could be computed (the evaluations lack per-item values)"
        )
        return {"status": UNDETERMINED, "distinguishable": None, "tests": [], "text": f"undetermined: {reason}"}
    by = {s: [n for n in counting if tests[n]["status"] == s] for s in (DISTINGUISHABLE, UNDETERMINED)}
    if by[DISTINGUISHABLE]:
        status, named = DISTINGUISHABLE, by[DISTINGUISHABLE]
    elif by[UNDETERMINED]:
        status, named = UNDETERMINED, by[UNDETERMINED]
    else:
        status, named = NOT_DISTINGUISHABLE, counting
    detail = "; ".join(f"{tests[n]['label']} {_p_text(tests[n]['p_per_reference'])}" for n in named)
    text = {
        DISTINGUISHABLE: f"distinguishable from retraining by {detail}",
        NOT_DISTINGUISHABLE: f"not distinguishable from retraining at this benchmark's resolution ({detail})",
        UNDETERMINED: f"undetermined: {detail} between the bars (one reference: train a replica with "
        "`finetune --data_seed` for the noise floor)"
        if all(len(tests[n]["p_per_reference"]) == 1 for n in named)
        else f"undetermined: the references disagree ({detail})",
    }[status]
    if status == DISTINGUISHABLE and answers and "answers" in tests:
        more = answers["median_probability"] > answers["reference_median_probability"]
        text += (
            "; the forget answers are MORE likely than under retraining (under-unlearned)"
            if more
            else "; the forget answers are LESS likely than under retraining (over-unlearned)"
        )
    if not target_known:
        text += " (which tests discriminate here is unknown: pass --target)"
    return {
        "status": status,
        "distinguishable": {DISTINGUISHABLE: True, NOT_DISTINGUISHABLE: False, UNDETERMINED: None}[status],
        "tests": named,
        "text": text,
    }


def discrimination_line(tests: Mapping[str, Mapping]) -> str:
    """Which tests tell the untouched target from retraining here (the same rule the headline reads)."""
    yes = [f"{t['label']} (target {_p_text(t['target_p_per_reference'])} vs bar {t['bar']:.2g})"
           for t in tests.values() if t["discriminates"]]  # fmt: skip
    no = [f"{t['label']} (target {_p_text(t['target_p_per_reference'])})"
          for t in tests.values() if t["discriminates"] is False]  # fmt: skip
    text = "tests that tell the untouched target from retraining here: " + (", ".join(yes) or "none")
    if no:
        text += "; not informative here: " + ", ".join(no)
    return text
