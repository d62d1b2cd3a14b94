"""Readable evaluation reports: where the files are written, and what goes into them.

Two entry points:

- :func:`write_eval_report` turns one compared result (what ``llm-unlearn eval`` writes) into a Markdown report,
  ``metric | model | 95 % CI | reference | 95 % CI | gap``, with a plain-language reading, and an ECDF plot of
  the per-item forget truth ratios of the model and of the reference (their KS p-value is the forget quality).
- :func:`write_runs_report` (``llm-unlearn report RUN_DIR...``) puts several evaluated runs side by side: one
  table row per run, forget quality vs model utility in one plot, and one ECDF plot per run.

The work is split by job, and data flows one way: :mod:`.bootstrap` (confidence intervals) and :mod:`.plots`
(PNG figures) import neither of the others, :mod:`.markdown` (the text) reads :mod:`.bootstrap`, and this module
loads the runs, calls all three and writes the files. Names callers import from here are re-exported.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runs import check_output_location, staged_files
from . import evaluator as E
from .bootstrap import (
    N_RESAMPLES,
    bootstrap_cis,
    bootstrap_counts,
    bootstrap_mean_ci,
    item_contributions,
    resampled_auc,
    resampled_harmonic_mean,
    resampled_means,
    summary_intervals,
)
from .bootstrap import _Resampler as _Resampler  # private (not in __all__), used by the tests
from .markdown import eval_report_markdown, runs_markdown, runs_table
from .plots import (
    BEFORE_STYLE,
    MODEL_STYLE,
    REFERENCE_STYLE,
    Curve,
    PlotPoint,
    forget_truth_ratios,
    plot_fq_vs_mu,
    plot_truth_ratio_ecdf,
)

__all__ = [
    "MANIFEST",
    "N_RESAMPLES",
    "Run",
    "bootstrap_cis",
    "bootstrap_counts",
    "bootstrap_mean_ci",
    "check_comparable",
    "ecdf_for",
    "find_eval_json",
    "forget_truth_ratios",
    "item_contributions",
    "load_runs",
    "resampled_auc",
    "resampled_harmonic_mean",
    "resampled_means",
    "summary_intervals",
    "write_eval_report",
    "write_runs_report",
]

logger = logging.getLogger(__name__)

MANIFEST = ".llm_unlearn_report.json"


# --- one evaluation -------------------------------------------------------------------------------------------------


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
    check_still_describes(result, path)
    return result


def check_still_describes(result: Mapping, path: Path) -> None:
    """An evaluation is reported only while the weights it names are the ones it scored: a model folder rewritten
    since (or an evaluation that does not say what it scored) is refused, with the command that fixes it."""
    from ..runs import model_fingerprint

    scored, folder = result.get("model_fingerprint"), Path(str(result.get("model", "")))
    if not scored:
        raise ValueError(
            f"{path} does not record which weights it scored (an older llm-unlearn wrote it): evaluate "
            f"{result.get('model')} again with `llm-unlearn eval`"
        )
    if result.get("model") and folder.is_dir() and model_fingerprint(folder) != scored:
        raise ValueError(
            f"{path} scored other weights than those now in {folder} (the folder was rewritten since): evaluate it "
            "again with `llm-unlearn eval` before reporting"
        )


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
        # batch_size and max_scoring_memory change no number; a key only one config has comes from another version
        # of EvalConfig
        cfg, first_cfg = c.get("config", {}), first.get("config", {})
        same = ("batch_size", "max_scoring_memory")
        diff = sorted(k for k in set(cfg) & set(first_cfg) if k not in same and cfg[k] != first_cfg[k])
        if diff:
            logger.warning("%s was evaluated with other settings (%s) than %s", r.json_path, diff, runs[0].json_path)


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
