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
    """A saved evaluation is used only when it is provably this evaluation's: same forget split and data, its
    forget items the forget split's items (same questions and answers, in order), every truth ratio finite, the
    fingerprint of the weights it scored recorded, its numbers matching its integrity hash, and, where the model
    folder it names is present, those weights still the ones it scored."""
    import math

    from ..runs import model_fingerprint
    from .evaluator import result_integrity

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
    if not ref.get("model_fingerprint"):
        raise ValueError(
            f"{flag} {path} does not record the fingerprint of the weights it scored (an older llm-unlearn wrote it): "
            "pass the model folder instead, to evaluate it again"
        )
    if ref.get("benchmark") != "text":
        items = ((ref.get("splits") or {}).get("forget") or {}).get("items") or []
        rows = eval_data.get("forget") or []
        if len(items) != len(rows):
            raise ValueError(
                f"{flag} {path} holds {len(items)} forget items, the forget split {cfg.forget_split!r} has "
                f"{len(rows)}: it is not an evaluation of this split; pass the model folder instead"
            )
        for i, (item, row) in enumerate(zip(items, rows)):
            if (item.get("question"), item.get("answer")) != (row.get("question"), row.get("answer")):
                raise ValueError(
                    f"{flag} {path}: forget item {i} is {item.get('question')!r}, the forget split's row {i} is "
                    f"{row.get('question')!r}: it is not an evaluation of this split; pass the model folder instead"
                )
            tr = item.get("truth_ratio")
            if not isinstance(tr, (int, float)) or not math.isfinite(tr):
                raise ValueError(
                    f"{flag} {path}: forget item {i} has truth ratio {tr!r} (not a finite number): the file is "
                    "damaged; pass the model folder instead"
                )
    if ref.get("integrity") != result_integrity(ref):
        raise ValueError(
            f"{flag} {path}: its numbers do not match its integrity hash (the file was edited after it was written): "
            "pass the model folder instead, to evaluate it again"
        )
    folder = Path(str(ref.get("model", "")))
    if ref.get("model") and folder.is_dir() and model_fingerprint(folder) != ref["model_fingerprint"]:
        raise ValueError(
            f"{flag} {path} scored other weights than those now in {folder} (the folder was rewritten since): "
            f"pass {folder} itself to evaluate the weights it holds"
        )


def check_distinct_references(references: list[str]) -> None:
    """Each reference must be another model: the same folder (or the same weights under another name) twice would
    fake a noise floor of 1."""
    from ..runs import model_fingerprint

    seen: dict[str, str] = {}
    for ref in references:
        path = Path(ref)
        if path.is_file():
            try:
                fp = json.loads(path.read_text()).get("model_fingerprint") or f"file:{path.resolve()}"
            except (OSError, ValueError):
                fp = f"file:{path.resolve()}"
        else:
            fp = model_fingerprint(path)
        if fp in seen:
            same = "is" if Path(seen[fp]).resolve() == path.resolve() else "holds the same weights as"
            raise ValueError(
                f"--reference {ref} {same} --reference {seen[fp]}: each reference must be a separately retrained "
                "model (the same one twice fakes a noise floor of 1); drop the duplicate"
            )
        seen[fp] = ref


def check_reference_provenance(references: list[str], forget_split: str) -> None:
    """A reference folder that records the split it was trained on must have been trained on this forget split's
    retain split (a forget10 run judged against retain95 references is judged against the wrong retraining); a
    reference without that record is named in a warning."""
    from ..data.schema import BenchmarkSplits

    retain = BenchmarkSplits.from_forget(forget_split).retain
    for ref in references:
        path = Path(ref)
        if not path.is_dir():
            continue
        try:
            split = json.loads((path / "finetune_config.json").read_text())["config"]["split"]
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning(
                "--reference %s: no record of the split it was trained on (finetune_config.json): make sure it was "
                "retrained on %s, the retain split of %s",
                ref,
                retain,
                forget_split,
            )
            continue
        if split != retain:
            raise ValueError(
                f"--reference {ref} was trained on {split!r} (its finetune_config.json), but --forget_split "
                f"{forget_split} needs a reference retrained on {retain!r}: pass that split's references"
            )


def check_same_tokenizer(roles: list[tuple[str, str]]) -> None:
    """Model, target and references must share one tokenizer (vocabulary and special tokens): per-token losses of
    models with different tokenizers are not comparable. ``roles``: (flag, model folder or saved evaluation)."""
    from ..modeling import load_tokenizer, tokenizer_fingerprint
    from ..validation import check_tokenizer

    first: tuple[str, str, str] | None = None
    for flag, path in roles:
        p = Path(path)
        if p.is_file():
            try:
                fp = json.loads(p.read_text()).get("tokenizer_fingerprint")
            except (OSError, ValueError):
                fp = None
        else:
            tok = load_tokenizer(p)
            check_tokenizer(tok, str(p))  # a tokenizer that does not fit the model beside it
            fp = tokenizer_fingerprint(tok)
        if fp is None:
            continue
        if first is None:
            first = (flag, path, fp)
        elif fp != first[2]:
            raise ValueError(
                f"{flag} {path} has another tokenizer (vocabulary or special tokens) than {first[0]} {first[1]}: "
                "their losses are not comparable; evaluate models that share one tokenizer"
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


def check_not_an_input_file(output: Path, folders: dict[str, str | None]) -> None:
    """Inside an input folder (model, target, reference) the output may only be new or replace an earlier
    evaluation: a model's own files (``config.json``, weights, tokenizer, its card) are never overwritten, whatever
    ``--overwrite`` says. The Markdown report and the plot written beside the JSON count too."""
    companions = [output, output.with_suffix(".md"), output.with_name(f"{output.stem}_truth_ratio_ecdf.png")]
    try:
        ours = output.is_file() and json.loads(output.read_text()).get("kind") == RESULT_KIND
    except (OSError, ValueError, AttributeError):
        ours = False
    if ours:  # an earlier evaluation and its report: replacing them is what --overwrite is for
        return
    for flag, folder in folders.items():
        if not folder or not Path(folder).is_dir():
            continue
        root = Path(folder).resolve()
        for path in companions:
            if root not in path.resolve().parents or not path.exists():
                continue
            raise ValueError(
                f"--output {output} would overwrite {path}, a file of the {flag.lstrip('-')} {folder} (not an earlier "
                "evaluation): an evaluation never writes over its inputs, even with --overwrite; choose another "
                "--output"
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
    roles = {"--model": model, "--target": target if target and Path(target).is_dir() else None}
    check_not_an_input_file(out, {**roles, **{f"reference {r}": r for r in references}})
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
    check_distinct_references(references)
    if cfg.data_format == "qa":
        check_reference_provenance(references, cfg.forget_split)
    check_same_tokenizer([("--model", model), *((f, p) for p, f in saved)])
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
