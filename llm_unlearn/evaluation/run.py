"""The evaluation stage: evaluate a model, compare it with the retrained reference, write the reports.

Called by ``llm-unlearn eval``, by ``unlearn.py --eval_reference`` and by the demo and benchmarks alike. Every input
is checked before any model is loaded: the data, the model folder, the reference (a folder, or the JSON of its
evaluation, which must be of the same data and forget split), the output file's location.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..modeling import find_gguf, resolve_model_source
from ..runs import atomic_write_json, check_output_location, staged_files
from ..validation import check_model_source
from .evaluator import RESULT_KIND, compare, data_fingerprint, evaluate_model, load_eval_data, load_result
from .sharding import is_main_process

logger = logging.getLogger(__name__)


def _check_reference_json(ref: dict, path: Path, eval_data: dict, cfg, flag: str = "--reference") -> None:
    """A saved evaluation must be of the same data and forget split as this evaluation."""
    split = (ref.get("config") or {}).get("forget_split")
    if split != cfg.forget_split:
        raise ValueError(
            f"{flag} {path} was evaluated on forget split {split!r}, not {cfg.forget_split!r}: evaluate it on the "
            "same split (or pass its model folder)"
        )
    if ref.get("data_fingerprint") != data_fingerprint(eval_data):
        raise ValueError(
            f"{flag} {path} was evaluated on other data ({ref.get('data')}) than --data: pass its model folder to "
            "evaluate it on this data"
        )


def check_eval_inputs(model: str, reference: str | None, output: Path) -> None:
    if reference is None:
        raise ValueError(
            "--reference is required: forget quality is measured against a retrained reference "
            "(a model folder, or the JSON of its evaluation)"
        )
    if not Path(model).is_dir() and find_gguf(model, "--model") is None:
        raise FileNotFoundError(f"--model {model}: no such model folder (nor GGUF file)")
    check_model_source(model, "--model")
    ref = Path(reference)
    if not ref.exists():
        raise FileNotFoundError(f"--reference {reference}: neither a model folder nor an evaluation JSON file")
    if ref.is_dir() or find_gguf(reference, "--reference") is not None:
        check_model_source(reference, "--reference")


def _model_folder(path: str, flag: str) -> str:
    """The folder evaluated for ``path``: a GGUF file's converted folder (converted once, cached; it also holds the
    evaluation cache and, by default, the output), anything else unchanged."""
    return resolve_model_source(path, flag) if find_gguf(path, flag) is not None else path


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


def _target_of(model: str, target: str | None) -> tuple[str | None, bool]:
    """(the untouched target to calibrate against, whether it is the model itself). Default: the base model named
    in the run's ``unlearn_record.json`` when it is a local folder; a model without a record is its own target."""
    if target:
        if not Path(target).exists():
            raise FileNotFoundError(f"--target {target}: neither a model folder nor an evaluation JSON file")
        return target, Path(target).resolve() == Path(model).resolve()
    record = Path(model) / "unlearn_record.json"
    if not record.is_file():
        return model, True
    try:
        base = json.loads(record.read_text()).get("base_model")
    except ValueError:
        base = None
    if base and Path(base).exists():
        base = _model_folder(base, "base_model")  # a GGUF base: its converted folder
    if base and Path(base).is_dir():
        return base, Path(base).resolve() == Path(model).resolve()
    return None, False


def _load_or_evaluate(path: Path, data: str, cfg, eval_data: dict, use_cache: bool, flag: str) -> dict:
    if path.is_file():
        result = load_result(path)
        _check_reference_json(result, path, eval_data, cfg, flag)
        return result
    return evaluate_model(path, data, cfg, use_cache=use_cache, data=eval_data)


def _dosed(model: str) -> bool:
    """Whether the model folder is an unlearning run that stopped by self-dosing (its record says)."""
    try:
        return bool(json.loads((Path(model) / "unlearn_record.json").read_text()).get("dosing"))
    except (OSError, ValueError, AttributeError):
        return False


def run_eval(
    model: str,
    reference: str | list[str],
    data: str,
    cfg,
    output: str | None = None,
    use_cache: bool = True,
    overwrite: bool = False,
    target: str | None = None,
) -> dict:
    """Evaluate ``model`` and compare it to the retrained reference(s); write the JSON and Markdown reports.

    ``reference`` may be several retrained references (the first is the primary one, the others replicas): the
    result then carries the noise floor (forget quality between them) and a verdict in words; the untouched
    ``target`` (default: see :func:`_target_of`) gives the discrimination check and the utility retention. See
    :mod:`llm_unlearn.evaluation.calibration`.
    """
    references = [reference] if reference is None or isinstance(reference, (str, Path)) else list(reference)
    for ref in references:  # the paths as given, before a GGUF file is converted
        check_eval_inputs(model, ref, Path(model))
    model = _model_folder(model, "--model")
    references = [_model_folder(str(r), "--reference") for r in references]
    if target:
        target = _model_folder(target, "--target")
    out = Path(output) if output else Path(model) / f"eval_{cfg.forget_split.replace('/', '_')}.json"
    for ref in references:
        check_eval_inputs(model, ref, out)
    check_output_file(out, overwrite)
    target, target_is_model = _target_of(model, target)
    # The output sits beside the evaluated model by design; it must not land in the data or in another model's folder.
    guarded = {"data": data}
    for i, ref in enumerate(references):
        if Path(ref).resolve() != Path(model).resolve():
            guarded[f"reference {ref}" if i else "reference"] = ref
    check_output_location(out, guarded, flag="output")
    if cfg.data_format == "qa" and cfg.holdout_half == "all" and _dosed(model):
        logger.info(
            "%s was unlearned with self-dosing: membership inference uses the holdout's evaluation half", model
        )
        cfg.holdout_half = "evaluation"  # for the model, the references and the target alike (same items)
    eval_data = load_eval_data(data, cfg)  # validated before any model is loaded
    saved = [(r, "--reference") for r in references] + ([(target, "--target")] if target else [])
    for path, flag in saved:  # saved evaluations are checked before any model is evaluated
        if Path(path).is_file():
            _check_reference_json(load_result(Path(path)), Path(path), eval_data, cfg, flag)
        elif flag == "--target":
            check_model_source(path, flag)
    refs = [_load_or_evaluate(Path(r), data, cfg, eval_data, use_cache, "--reference") for r in references]
    result = evaluate_model(model, data, cfg, use_cache=use_cache, data=eval_data)
    compared = compare(result, refs[0])
    if result.get("benchmark") != "text":
        from .calibration import calibrate

        target_result = None
        if target is not None:
            target_result = (
                result
                if target_is_model
                else _load_or_evaluate(Path(target), data, cfg, eval_data, use_cache, "--target")
            )
        compared["calibration"] = calibrate(result, refs, target_result, target_is_model, eval_data["forget"])
    # With several processes every rank holds the same comparison; the main one writes it.
    written = write_report(compared, out, overwrite) if is_main_process() else []
    compared["report_files"] = [str(p) for p in written]
    return compared
