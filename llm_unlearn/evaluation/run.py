"""The evaluation stage: evaluate a model, compare it with the retrained reference, write the reports.

Called by ``llm-unlearn eval``, by ``unlearn.py --eval_reference`` and by the demo and benchmarks alike. Every input
is checked before any model is loaded: the data, the model folder, the reference (a folder, or the JSON of its
evaluation, which must be of the same data and forget split), the output file's location.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..runs import atomic_write_json, check_output_location, staged_files
from .evaluator import RESULT_KIND, compare, data_fingerprint, evaluate_model, load_eval_data, load_result


def _check_reference_json(ref: dict, path: Path, eval_data: dict, cfg) -> None:
    """A saved reference evaluation must be of the same data and forget split as this evaluation."""
    split = (ref.get("config") or {}).get("forget_split")
    if split != cfg.forget_split:
        raise ValueError(
            f"--reference {path} was evaluated on forget split {split!r}, not {cfg.forget_split!r}: evaluate the "
            "reference on the same split (or pass its model folder)"
        )
    if ref.get("data_fingerprint") != data_fingerprint(eval_data):
        raise ValueError(
            f"--reference {path} was evaluated on other data ({ref.get('data')}) than --data: pass the reference's "
            "model folder to evaluate it on this data"
        )


def check_eval_inputs(model: str, reference: str | None, output: Path) -> None:
    from ..validation import check_model_source

    if reference is None:
        raise ValueError(
            "--reference is required: forget quality is measured against a retrained reference "
            "(a model folder, or the JSON of its evaluation)"
        )
    if not Path(model).is_dir():
        raise FileNotFoundError(f"--model {model}: no such model folder")
    check_model_source(model, "--model")
    ref = Path(reference)
    if not ref.exists():
        raise FileNotFoundError(f"--reference {reference}: neither a model folder nor an evaluation JSON file")
    if ref.is_dir():
        check_model_source(reference, "--reference")


def check_output_file(output: Path, overwrite: bool) -> None:
    """An existing output file is replaced only when it is an earlier evaluation, or with ``--overwrite``."""
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; give the path of the JSON file to write")
    if output.exists() and not overwrite:
        try:
            ours = json.loads(output.read_text()).get("kind") == RESULT_KIND
        except (json.JSONDecodeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise FileExistsError(
                f"{output} exists and is not an llm-unlearn evaluation; pass --overwrite or --output"
            )


def write_report(compared: dict, output: Path, overwrite: bool) -> list[Path]:
    """The JSON result, and beside it a Markdown report (table with bootstrap 95 % CIs, a plain reading) and the
    forget truth-ratio ECDF plot, all moved into place together once written; refuses to replace a JSON file it
    did not write."""
    from .report import write_eval_report

    check_output_file(output, overwrite)
    with staged_files(output.parent) as tmp:
        atomic_write_json(tmp / output.name, compared)
        extra = write_eval_report(compared, tmp / output.name)
    return [output, *(output.parent / p.name for p in extra)]


def run_eval(
    model: str,
    reference: str,
    data: str,
    cfg,
    output: str | None = None,
    use_cache: bool = True,
    overwrite: bool = False,
) -> dict:
    """Evaluate ``model`` and compare it to ``reference``; write the JSON and Markdown reports."""
    out = Path(output) if output else Path(model) / f"eval_{cfg.forget_split.replace('/', '_')}.json"
    check_eval_inputs(model, reference, out)
    check_output_file(out, overwrite)
    # The output sits beside the evaluated model by design; it must not land in the data or in another model's folder.
    guarded = {"data": data}
    if Path(reference).resolve() != Path(model).resolve():
        guarded["reference"] = reference
    check_output_location(out, guarded, flag="output")
    eval_data = load_eval_data(data, cfg)  # validated before any model is loaded
    ref_path = Path(reference)
    if ref_path.is_file():
        ref = load_result(ref_path)
        _check_reference_json(ref, ref_path, eval_data, cfg)
    else:
        ref = evaluate_model(ref_path, data, cfg, use_cache=use_cache, data=eval_data)
    result = evaluate_model(model, data, cfg, use_cache=use_cache, data=eval_data)
    compared = compare(result, ref)
    compared["report_files"] = [str(p) for p in write_report(compared, out, overwrite)]
    return compared
