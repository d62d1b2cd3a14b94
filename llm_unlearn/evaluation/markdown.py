"""The Markdown text of the reports: the metrics table with bootstrap intervals, the plain-language reading and the
calibration section of one evaluation (:func:`eval_report_markdown`), and the runs table (with the calibration
cells), reading and notes of ``llm-unlearn report`` (:func:`runs_markdown`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from . import evaluator as E
from .bootstrap import CONFIDENCE, FQ_THRESHOLD, Interval, _split_items

PRIVLEAK_CLOSE = 5.0  # |PrivLeak| within this many percent reads as "as private as the reference" (MUSE)


class RunLike(Protocol):
    """What the runs Markdown reads of an evaluated run (:class:`llm_unlearn.evaluation.report.Run`): a structural
    type, so this module needs no import of the report that imports it."""

    name: str
    json_path: Path
    compared: dict
    method: str | None


# --- one evaluation -------------------------------------------------------------------------------------------------


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
        parts.append(f"Verdict: the model is {cal['verdict']['text']} (forget quality {fq:.2g}).")
        if cal.get("discrimination"):  # what the verdict rests on: the tests that see the untouched target here
            parts.append(f"The verdict reads only the {cal['discrimination']['text']}.")
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
    if pl < -PRIVLEAK_CLOSE:
        return (
            f"PrivLeak is {pl:+.3g} %{aucs}: a membership-inference attack tells forget items from never-seen "
            "holdout items better than on the reference, so they are still memorized (under-unlearned)."
        )
    if pl > PRIVLEAK_CLOSE:
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


ECDF_EXPLANATION = (
    "Empirical distribution functions (ECDFs) of the per-item truth ratios on the forget split: the further "
    "apart the model's and the reference's curves, the lower the forget quality (the KS p-value of their largest "
    "vertical distance D); left of R = 1 the correct answer is more likely than the wrong ones, so a model that "
    "still knows the forget set sits to the left of the reference."
)


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
            f"noise floor {floor:.3g} (forget quality between the references themselves"
            + (
                f"; {cal['noise_floor_resampled']:.3g} at its resampled 5 % bound (the bar: the lower of it and 0.05)"
                if cal.get("noise_floor_resampled") is not None
                else ""
            )
            + ")"
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


def _share(x) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def robustness_rows(rob: Mapping) -> list[tuple[str, Mapping]]:
    """(attack name, its entry) of ``llm-unlearn attack``'s relearn and quantize results, in table order."""
    rows = [(f"relearn ({source})", e) for source, e in (rob.get("relearn") or {}).items()]
    return rows + [(f"{bits}-bit weights", e) for bits, e in (rob.get("quantize") or {}).items()]


def robustness_section(compared: Mapping) -> list[str]:
    """``llm-unlearn attack``'s results: forget probability before → after for the model and the retrained
    reference, the recoveries, and the rephrase probes."""
    rob = compared.get("robustness")
    if not rob:
        return []
    lines = [
        "## Is it really gone? (`llm-unlearn attack`)",
        "",
        "Recovery: share of the gap between the model and the untouched target that the attack regains (forget "
        "probability); the reference's recovery is what the same attack gives a model that never learned the "
        "forget set. Residual: the model's forget probability above the reference's (each attacked alike), as a "
        "share of the target's above it, before and after the attack.",
        "",
        "| attack | model before → after | reference before → after | target | recovery | reference's recovery |"
        " residual before → after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in robustness_rows(rob):
        m, r = e["model"], e["reference"]
        lines.append(
            f"| {name} | {m['before']['probability']:.3f} → {m['after']['probability']:.3f} | "
            f"{r['before']['probability']:.3f} → {r['after']['probability']:.3f} | {e['target']['probability']:.3f} | "
            f"{_share(e['recovery']['probability'])} | {_share(e['reference_recovery']['probability'])} | "
            f"{_share(e['share_before']['probability'])} → {_share(e['share_after']['probability'])} |"
        )
    probes = (rob.get("rephrase") or {}).get("probes") or {}
    if probes:
        lines += [
            "",
            "| rephrase probe | model prob. / ROUGE-L | target | reference | residual |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, p in probes.items():
            cells = [
                f"{p[k]['probability']:.3f} / {p[k]['rouge_l_recall']:.2f}" for k in ("model", "target", "reference")
            ]
            lines.append(f"| {name} | {' | '.join(cells)} | {_share(p['share']['probability'])} |")
    lines += ["", *(f"- {line}" for line in rob.get("text") or []), ""]
    return lines


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
        *robustness_section(compared),
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


# --- several runs ---------------------------------------------------------------------------------------------------


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


def runs_table(runs: Sequence[RunLike], cis: Mapping[str, Mapping[str, Interval | None]], ref_cis: Mapping) -> str:
    """One row per run and one for the reference; columns are the :data:`RUN_COLUMNS` some run has."""
    keys = [k for k in RUN_COLUMNS if any(k in r.compared["summary"] for r in runs)]
    header = ["run", "method"]
    for k in keys:
        header.append(RUN_COLUMNS[k])
        if k == "model_utility":
            header.append("utility 95 % CI")
    calibrated = any(r.compared.get("calibration") for r in runs)
    if calibrated:
        header += ["noise floor (resampled bound)", "min utility retention"]
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
    if cal.get("noise_floor_resampled") is not None:
        floor += f" ({_num(cal['noise_floor_resampled'], '.3g')})"
    retention = cal.get("utility_retention")
    return [floor, "–" if not retention else _num(retention["minimum"], ".3f")]


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
        "PrivLeak (MUSE's convention) near 0 % is good; negative means the forget items are still recognisable as "
        "training members (under-unlearned; an untouched model reads about −100 %), positive that they now look less "
        "familiar than never-seen items (over-unlearned)."
    ),
}


def runs_reading(runs: Sequence[RunLike], ref_cis: Mapping) -> str:
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


def _passing_reading(passing: Sequence[RunLike], ref_summary: Mapping, ref_cis: Mapping) -> str:
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


def _runs_note(runs: Sequence[RunLike], n_resamples: int) -> str:
    if n_resamples < 1:
        return "No bootstrap resamples were requested: no confidence intervals."
    note = "Per-metric 95 % intervals of each run are in the Markdown report beside its evaluation JSON."
    if any("model_utility" in r.compared["summary"] for r in runs):
        note = f"Utility 95 % CI: percentile bootstrap over items ({n_resamples} resamples). " + note
    if any("forget_quality" in r.compared["summary"] for r in runs):
        note += " Forget quality is a p-value, not an estimate: no interval."
    return note


def runs_markdown(
    runs: Sequence[RunLike],
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
