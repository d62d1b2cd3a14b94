"""The unlearning entry point behind ``accelerate launch unlearn.py`` and ``llm-unlearn unlearn``.

``--config recipe.yaml`` gives a flat recipe; flags on the command line override it. ``--method NAME`` (or
``method:`` in the recipe) picks the (config, trainer) pair; ``--method hessian`` means ``--selection hessian`` over
``--base_method`` (GradDiff by default). Arguments are parsed with ``HfArgumentParser`` plus a small YAML layer rather
than ``TrlParser``: the same recipe-then-flags behaviour without importing TRL (~6 s) in every process.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import sys
from pathlib import Path

from .trainers import DEFAULT_METHOD, METHODS, SELECTION_ALIASES, get_method
from .trainers.base import DivergenceError

logger = logging.getLogger(__name__)

RECORD = "unlearn_record.json"
RESOLVED_CONFIG = "unlearn_config.yaml"
# Never written to the record or the resolved config: both are uploaded with --push_to_hub.
SECRET_FIELDS = ("hub_token",)


def _pop_flag(argv: list[str], name: str) -> str | None:
    """Remove ``--name value`` or ``--name=value`` from argv and return the value."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def parse_args(argv: list[str] | None = None, recipe_exclude: tuple[str, ...] = ()):
    """Parse a recipe and flags into the method's config; returns ``(config, trainer_class)``. ``recipe_exclude``:
    recipe keys to ignore (the sequential runner has already read them)."""
    from transformers import HfArgumentParser

    from .validation import check_recipe_types, load_yaml_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    recipe: dict = {}
    config_path = _pop_flag(argv, "--config")
    if config_path:
        recipe = load_yaml_recipe(config_path)
    recipe = {k: v for k, v in recipe.items() if k not in recipe_exclude}
    if "device" in recipe:  # the recipe spells the flag: the field is run_device (TrainingArguments.device is taken)
        if "run_device" in recipe:
            raise ValueError(f"{config_path}: give device or run_device, not both")
        recipe["run_device"] = recipe.pop("device")
    recipe_method, recipe_base = recipe.pop("method", None), recipe.pop("base_method", None)
    method = _pop_flag(argv, "--method") or recipe_method or DEFAULT_METHOD
    base_method = _pop_flag(argv, "--base_method") or recipe_base
    if method in SELECTION_ALIASES:
        method = base_method or SELECTION_ALIASES[method]
        recipe.setdefault("selection", "hessian")
    elif base_method:
        raise ValueError("--base_method only goes with --method hessian")
    config_cls, trainer_cls = get_method(method)
    parser = HfArgumentParser(
        config_cls,
        description=f"Unlearn a forget split with method {method!r} ({trainer_cls.paper or 'baseline'}). Methods: "
        f"{', '.join([*METHODS, *SELECTION_ALIASES])}; pick one with --method (its options are listed with "
        "--method NAME --help). --config recipe.yaml sets defaults that flags override.",
    )
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"{config_path}: unknown argument(s) for method {method!r}: {', '.join(unknown)}")
    check_recipe_types(recipe, config_cls, str(config_path))
    parser.set_defaults(**recipe)
    (cfg,) = parser.parse_args_into_dataclasses(args=[*argv, "--method", method])
    return cfg, trainer_cls


def config_to_dict(cfg) -> dict:
    """The init fields of a config as plain YAML-able values (reloadable with ``--config``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if not f.init or f.name.startswith("_") or f.name in SECRET_FIELDS:
            continue
        v = getattr(cfg, f.name)
        if isinstance(v, enum.Enum):
            v = v.value
        if (
            isinstance(v, (str, int, float, bool))
            or v is None
            or (isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v))
        ):
            out[f.name] = v
    return out


def forget_hash(rows: list[dict] | list[str]) -> str:
    """A sha256 of the forget set (its questions and answers, or its documents): names it without its text."""
    if rows and isinstance(rows[0], str):
        from .data.text import documents_hash

        return documents_hash(rows)
    payload = json.dumps([[r["question"], r["answer"]] for r in rows], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _check_publish(cfg) -> None:
    """--push_to_hub and --eval_reference are checked before any training: a run must not fail at its end on them."""
    if cfg.push_to_hub:
        if not cfg.hub_model_id:
            raise ValueError(
                "--push_to_hub true needs --hub_model_id (the Hub repository to push to, e.g. your-name/my-model)"
            )
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(cfg.hub_model_id)
        except HFValidationError as e:
            raise ValueError(f"--hub_model_id {cfg.hub_model_id!r}: {e}") from None
    if cfg.eval_reference and not Path(cfg.eval_reference).exists():
        raise FileNotFoundError(
            f"--eval_reference {cfg.eval_reference}: neither a model folder nor an evaluation JSON file"
        )


# Settings that do not change the trained weights: left out of a run's fingerprint (reuse and resume keys).
NOT_IDENTITY = (
    "run_device",
    "output_dir",
    "overwrite_output",
    "resume_from_checkpoint",
    "logging_dir",
    "logging_steps",
    "logging_strategy",
    "disable_tqdm",
    "report_to",
    "run_name",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "eval_reference",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
    "hub_strategy",
)


def run_fingerprint(cfg) -> str:
    """What decides the unlearned weights: the resolved settings, the data files' content and the input model's
    weights (never their paths)."""
    from .runs import data_fingerprint, fingerprint, model_fingerprint

    ident = {k: v for k, v in config_to_dict(cfg).items() if k not in NOT_IDENTITY}
    if ident.get("torch_dtype") == "auto":
        ident.pop("torch_dtype")  # runs recorded before --torch_dtype existed keep their fingerprint
    if not ident.get("dose_every"):  # no self-dosing: its settings decide nothing (and older runs keep matching)
        for k in [k for k in ident if k.startswith("dose_")]:
            ident.pop(k)
    ident["model_name_or_path"] = model_fingerprint(cfg.model_name_or_path)
    ident["data"] = data_fingerprint(cfg.data)
    return fingerprint(ident)


def _finished_run(out: Path, fp: str) -> bool:
    """True when ``out`` holds the finished run with fingerprint ``fp``."""
    try:
        return json.loads((out / RECORD).read_text()).get("fingerprint") == fp
    except (OSError, ValueError):
        return False


def check_inputs(cfg, trainer_cls) -> None:
    """Everything that can be checked without data or models: settings, paths, the launch, the output folder."""
    from .distributed import check_launch
    from .runs import check_output_location

    if not cfg.model_name_or_path:
        raise ValueError("--model_name_or_path is required (the model to unlearn)")
    if not cfg.data:
        raise ValueError("--data is required (a local folder of TOFU-schema files or a Hub dataset id)")
    if not cfg.output_dir:
        raise ValueError("--output_dir is required (the folder the unlearned model is written to)")
    from .modeling import find_gguf

    find_gguf(cfg.model_name_or_path, "--model_name_or_path")  # a missing .gguf file fails here, before any work
    check_output_location(
        cfg.output_dir,
        {"model": cfg.model_name_or_path, "data": cfg.data, "reference": cfg.eval_reference},
    )
    _check_publish(cfg)
    check_launch(cfg)
    cfg.load_dtype()  # --torch_dtype that cannot run here (half precision on the CPU): refused before any work
    if cfg.data_format == "text" and not trainer_cls.supports_text(cfg):
        raise ValueError(
            f"method {cfg.method!r} (with these options) needs QA items (wrong answers, refusals or QA hybrids) and "
            "cannot run on --data_format text; on raw text use grad_ascent, grad_diff, npo, simnpo or "
            "regularized_ft with --forget_regularizer kl_uniform"
        )


def _resume_request(cfg, stage) -> str | None:
    """The checkpoint to resume from for ``--resume_from_checkpoint``: a path, or ``true`` for the newest checkpoint
    of the interrupted run into ``output_dir``. A checkpoint inside the staging folder makes ``stage`` keep it."""
    from .runs import checkpoints, is_complete_checkpoint

    value = cfg.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if str(value).lower() == "true":
        stage.resume = True
        stage.check()
        found = checkpoints(stage.staging)
        if not found:
            raise FileNotFoundError(
                f"--resume_from_checkpoint true: no checkpoint-N folder in {stage.staging} (an interrupted run saves "
                "them with --save_strategy steps --save_steps N)"
            )
        return str(found[-1])
    path = Path(value)
    if not is_complete_checkpoint(path):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint folder (no readable trainer_state.json, "
            "or weights cut short; a run killed while saving leaves its newest checkpoint half written: pick an older "
            "one, or pass --resume_from_checkpoint true to take the newest complete one)"
        )
    if stage.staging.resolve() in path.resolve().parents:
        stage.resume = True
        stage.check()
    return str(path)


def load_data(cfg):
    """Forget and retain rows, validated (fields, types, no shared items) before any model is loaded."""
    from .data.loading import load_split
    from .data.schema import DataValidationError, check_partition, validate_training_splits

    if not cfg.data:
        raise ValueError("--data is required (a local folder of TOFU-schema files or a Hub dataset id)")
    if cfg.data_format == "text":
        from .data.text import check_disjoint_documents, load_documents

        forget, retain = load_documents(cfg.data, cfg.forget_split), load_documents(cfg.data, cfg.retain_split)
        check_disjoint_documents(forget, retain, cfg.forget_split, cfg.retain_split)
        return forget, retain
    forget = load_split(cfg.data, cfg.forget_split)
    retain = load_split(cfg.data, cfg.retain_split)
    validate_training_splits(forget, retain, cfg.forget_split, cfg.retain_split, str(cfg.data))
    if (Path(cfg.data) / "full.jsonl").is_file():  # a local benchmark: the forget items must be ones the target saw
        check_partition(load_split(cfg.data, "full"), forget, None, ("full", cfg.forget_split, None), str(cfg.data))
    if any(not r.get("perturbed_answer") for r in forget):
        # TOFU on the Hub keeps the wrong answers in `forgetXX_perturbed`: join them in by question.
        try:
            extra = {r["question"]: r for r in load_split(cfg.data, f"{cfg.forget_split}_perturbed")}
        except DataValidationError:
            extra = {}
        forget = [{**extra.get(r["question"], {}), **{k: v for k, v in r.items() if v is not None}} for r in forget]
    return forget, retain


def model_source(cfg) -> str:
    """The folder (or Hub id) to load for ``--model_name_or_path``: a GGUF file's converted folder, converted by the
    main process first while the others wait (see :func:`llm_unlearn.modeling.resolve_model_source`)."""
    from .modeling import find_gguf, resolve_model_source

    if find_gguf(cfg.model_name_or_path, "--model_name_or_path") is None:
        return cfg.model_name_or_path
    with cfg.main_process_first(desc="converting the GGUF base"):
        return resolve_model_source(cfg.model_name_or_path, "--model_name_or_path")


def _base_folder(cfg) -> dict:
    """For the record: the converted folder loaded for a GGUF base (a LoRA adapter names it as its base)."""
    source = model_source(cfg)
    return {"base_model_folder": source} if source != cfg.model_name_or_path else {}


def load_model(cfg):
    """The model to unlearn (and its frozen copy), in the dtype of the one resolver; the Trainer places it."""
    from transformers import AutoModelForCausalLM

    from .modeling import check_finite_weights

    model = AutoModelForCausalLM.from_pretrained(model_source(cfg), dtype=cfg.load_dtype())
    check_finite_weights(model, cfg.model_name_or_path)
    return model


def build_selection(cfg, model, formatter, forget_rows, retain_rows, device=None):
    """Hessian-diagonal scores → masks (or, under LoRA, the modules that get adapters); or retention masks.

    Scores and saliency are computed once, on ``device`` (the run's device from the one resolver), by the main
    process, and cached by content (model weights, data, settings); the other ranks read them."""
    from .data.formatting import QACollator
    from .data.text import encode_chunks
    from .runs import computed_once, model_fingerprint, selection_cache_dir
    from .selection import ParameterSelection, retention_masks, score_parameters_cached, select_masks, top_modules
    from .selection.scoring import cache_path

    exclude = tuple(x.strip() for x in cfg.selection_exclude.split(",") if x.strip())
    collate = QACollator(formatter.tokenizer.pad_token_id)

    def side_sample(side: str, rows) -> tuple[list, list[int]]:
        """A seeded sample of ``hessian_samples`` scoring examples of one side (QA pairs, or text chunks): never the
        first N rows, which in an entity-ordered split cover only the first few entities."""
        import random

        if cfg.data_format == "text":
            enc = encode_chunks(formatter.tokenizer, rows, cfg.max_length)
        else:
            enc = [formatter.encode(r["question"], r["answer"]) for r in rows]
        if len(enc) <= cfg.hessian_samples:
            return enc, list(range(len(enc)))
        picked = sorted(random.Random(f"scoring-{side}:{cfg.seed}").sample(range(len(enc)), cfg.hessian_samples))
        return [enc[i] for i in picked], picked

    def scores_once(what, estimator, sides: dict, size, probes=1, seed=0):
        _check_not_partitioned(cfg, what)
        encoded, key = (
            [],
            {  # content, never paths: replaced weights or edited data give new scores
                "model": model_fingerprint(cfg.model_name_or_path),
                "samples": cfg.hessian_samples,
                "max_length": cfg.max_length,
                "data_format": cfg.data_format,
                "sides": {},
            },
        )
        for side, rows in sides.items():
            enc, picked = side_sample(side, rows)
            encoded += enc
            key["sides"][side] = {"data": forget_hash(rows), "sample": picked, "seed": cfg.seed}
        if estimator == "grad_abs":
            key["batch_size"] = size
        batches = [collate(encoded[i : i + size]) for i in range(0, len(encoded), size)]
        cache_dir = selection_cache_dir(cfg)
        path = cache_path(cache_dir, key, estimator, probes, seed)
        return computed_once(
            cfg,
            what,
            path,
            lambda: score_parameters_cached(
                model, batches, estimator, cache_dir=cache_dir, key_parts=key, probes=probes, seed=seed
            ),
            device,
            model,
        )

    if getattr(cfg, "retention_mask_ratio", 0.0) > 0:
        saliency = scores_once("retention saliency", "grad_abs", {"retain": retain_rows}, 8)
        masks = retention_masks(None, None, cfg.retention_mask_ratio, exclude, saliency=saliency)
        return ParameterSelection(masks), None
    if cfg.selection == "none":
        return None, None
    if cfg.selection == "random":  # the control: as many entries (or modules) as Hessian selection, at random
        from .selection import random_scores

        scores = random_scores(model, cfg.seed)
        if cfg.use_peft:
            return None, top_modules(scores, cfg.lora_top_modules, exclude)
        return ParameterSelection(select_masks(scores, cfg.param_ratio, cfg.granularity, exclude)), None
    sides = {"forget": {"forget": forget_rows}, "retain": {"retain": retain_rows}}
    sides["both"] = {**sides["forget"], **sides["retain"]}  # hessian_samples from each side
    scores = scores_once(
        f"{cfg.hessian_estimator} Hessian scores",
        cfg.hessian_estimator,
        sides[cfg.hessian_data],
        1,
        cfg.hessian_probes,
        cfg.seed,
    )
    if cfg.use_peft:
        return None, top_modules(scores, cfg.lora_top_modules, exclude)
    return ParameterSelection(select_masks(scores, cfg.param_ratio, cfg.granularity, exclude)), None


def _check_not_partitioned(cfg, what: str) -> None:
    """Scores need every rank's whole weights; DeepSpeed ZeRO-3 partitions them as they load."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise ValueError(
            f"{what} need the whole weights on one process, which DeepSpeed ZeRO-3 partitions as they load: launch "
            "with DDP or ZeRO-2 (configs/accelerate/ddp.yaml, zero2.yaml)"
        )


def wrap_lora(cfg, model, target_modules=None):
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    # LoRA's A matrices are drawn from the global RNG, before the Trainer seeds it: seed here so that --seed
    # decides the adapters' initialisation (same seed, same run).
    set_seed(cfg.seed)
    targets = target_modules or (
        cfg.lora_target_modules
        if cfg.lora_target_modules == "all-linear"
        else [t.strip() for t in cfg.lora_target_modules.split(",")]
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        ),
    )
    if cfg.activation_checkpointing:
        model.enable_input_require_grads()  # so the adapters receive gradients through checkpointed blocks
    return model


def _check_finite_weights(model, step: int) -> None:
    import torch

    for name, p in model.named_parameters():
        if p.requires_grad and not torch.isfinite(p).all():
            raise DivergenceError(f"non-finite weights in {name} after step {step}")


def load_inputs(cfg, trainer_cls):
    """Data, tokenizer and the truncation report: validated before any model is loaded."""
    from .data.formatting import QAFormatter
    from .modeling import load_tokenizer
    from .validation import check_model_source, check_tokenizer

    forget_rows, retain_rows = load_data(cfg)
    check_model_source(cfg.model_name_or_path, "--model_name_or_path")
    tokenizer = load_tokenizer(model_source(cfg))
    check_tokenizer(tokenizer, cfg.model_name_or_path)
    formatter = QAFormatter(tokenizer, cfg.max_length, chat_date=cfg.chat_date, system_prompt=cfg.system_prompt)
    if cfg.data_format == "qa":
        warn_truncation(formatter, {cfg.forget_split: forget_rows, cfg.retain_split: retain_rows})
    return forget_rows, retain_rows, tokenizer, formatter


def warn_truncation(formatter, splits: dict[str, list[dict]]) -> None:
    """One warning per split whose items exceed ``max_length`` (how many, which part is cut, which rows)."""
    from .data.formatting import truncation_report

    for name, rows in splits.items():
        message = truncation_report(formatter, rows, name).warning()
        if message:
            logger.warning(message)


def run(cfg, trainer_cls) -> Path:
    """Unlearn ``cfg.forget_split`` from ``cfg.model_name_or_path`` and save the result in ``cfg.output_dir``.

    The output is staged (:class:`llm_unlearn.runs.StagedOutput`): training writes into ``.NAME.partial`` beside
    ``output_dir`` (checkpoints included), and only a finished, finite run replaces ``output_dir``. A finished run
    with the same fingerprint (settings, data content, input weights) is reused. The evaluation against
    ``--eval_reference`` and the push of ``--push_to_hub`` come after, in :func:`publish`; their settings are
    checked here, before any work.
    """
    from .runs import StagedOutput, is_nonempty_dir

    check_inputs(cfg, trainer_cls)
    final = Path(cfg.output_dir)
    fp = run_fingerprint(cfg)
    if _finished_run(final, fp) and not cfg.resume_from_checkpoint:
        print(f"reusing the finished run in {final} (same settings, data and model)")
        return final
    if is_nonempty_dir(final) and not cfg.overwrite_output:
        raise FileExistsError(
            f"output_dir {final} is not empty and holds another run; pass --overwrite_output true to replace it "
            "(it is replaced only once the new run has finished) or choose another one"
        )
    stage = StagedOutput(final, fp, discard=cfg.overwrite_output)
    checkpoint = _resume_request(cfg, stage)
    stage.check()
    forget_rows, retain_rows, tokenizer, formatter = load_inputs(cfg, trainer_cls)
    dose_rows = load_dose_holdout(cfg)  # validated before any model is loaded
    with cfg.main_process_first(desc="staging the output folder"):
        if cfg.process_index == 0:
            stage.begin()
    # The Trainer writes checkpoints and the model into the staging folder; the record keeps the user's output_dir.
    # The token never reaches the pickled TrainingArguments (training_args.bin) nor the record: held here only.
    hub_token, cfg.hub_token = cfg.hub_token, None
    cfg.output_dir = str(stage.staging)
    try:
        record = _train(cfg, trainer_cls, forget_rows, retain_rows, tokenizer, formatter, checkpoint, dose_rows)
    except BaseException as e:
        cfg.output_dir, cfg.hub_token = str(final), hub_token
        if cfg.process_index == 0:
            kept = stage.abort()
            where = (
                f"the last good checkpoint is {kept} (continue with --resume_from_checkpoint true)"
                if kept
                else "no checkpoint was kept (--save_strategy steps --save_steps N saves some)"
            )
            msg = f"{final} is unchanged; {where}"
            if isinstance(e, DivergenceError):
                raise DivergenceError(f"training diverged: {e}; nothing was saved as unlearned: {msg}") from None
            if isinstance(e, KeyboardInterrupt):  # main() prints this one line
                raise KeyboardInterrupt(msg) from None
            if isinstance(e, OSError):  # disk full, read-only place: main() prints one line with what is unchanged
                e.unchanged = msg
                raise
            logger.error("unlearning stopped (%s): %s", type(e).__name__, msg)
        raise
    cfg.output_dir = str(final)
    if cfg.process_index == 0:
        record["hyperparameters"] = config_to_dict(cfg)
        record["fingerprint"] = fp
        _write_outputs(stage.staging, record, cfg)
        stage.commit()
    _wait_for_everyone()
    cfg.hub_token = hub_token
    return final


def _wait_for_everyone() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _write_outputs(folder: Path, record: dict, cfg) -> None:
    import yaml

    from .runs import atomic_write_json, atomic_write_text

    atomic_write_json(folder / RECORD, record)
    atomic_write_text(folder / RESOLVED_CONFIG, yaml.safe_dump(config_to_dict(cfg), sort_keys=True))


def load_dose_holdout(cfg) -> list[dict] | None:
    """The dosing half of the never-seen split that self-dosing compares the forget items with (None when off)."""
    if not cfg.dose_every:
        return None
    from .data.loading import load_split
    from .data.schema import BenchmarkSplits, holdout_halves

    split = cfg.dose_holdout_split or BenchmarkSplits.from_forget(cfg.forget_split).holdout
    dosing, _ = holdout_halves(load_split(cfg.data, split))
    if len(dosing) < 2:
        raise ValueError(
            f"self-dosing compares the forget items with never-seen ones: the dosing half of {split} has "
            f"{len(dosing)} item(s), at least 2 are needed; give a larger --dose_holdout_split or --dose_every 0"
        )
    return dosing


def _train(cfg, trainer_cls, forget_rows, retain_rows, tokenizer, formatter, checkpoint, dose_rows=None) -> dict:
    """Build the model, dataset and trainer, train (from ``checkpoint`` when resuming), save into
    ``cfg.output_dir`` (the staging folder); returns the record."""
    import time

    from .data.pairing import NestedCollator
    from .devices import resolve_device, runtime_record
    from .distributed import launch_record

    device = resolve_device(cfg.run_device)  # the one resolver; the Trainer's own device (cfg.device) is the same
    model = load_model(cfg)
    selection, lora_targets = build_selection(cfg, model, formatter, forget_rows, retain_rows, device)
    if cfg.use_peft:
        model = wrap_lora(cfg, model, lora_targets)
    ref_model = load_model(cfg) if cfg.needs_reference and not cfg.use_peft else None
    if cfg.data_format == "text":
        from .data.text import text_dataset

        dataset = text_dataset(tokenizer, forget_rows, retain_rows, cfg.max_length)
    else:
        dataset = trainer_cls.build_dataset(cfg, formatter, forget_rows, retain_rows, model, device=device)
    # With push_to_hub the HF Trainer creates the repo in __init__ and pushes on every save with its own generic card.
    # We push once, after the record is saved, with our card (publish()): hide the request from the Trainer while it
    # runs and restore it afterwards, so that the record and unlearn_config.yaml keep what the user asked for.
    push_to_hub, cfg.push_to_hub = cfg.push_to_hub, False
    try:
        trainer = trainer_cls(
            model=model,
            args=cfg,
            train_dataset=dataset,
            data_collator=NestedCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            ref_model=ref_model,
            selection=selection,
        )
        dose = None
        if dose_rows is not None:
            from .trainers.dosing import DoseCallback

            dose = DoseCallback(cfg, formatter, forget_rows, retain_rows, dose_rows)
            trainer.add_callback(dose)
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - start
        if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):  # sharded weights: the loss and gradient
            _check_finite_weights(trainer.model, result.global_step)  # norm guards of the trainer cover those runs
        out = Path(cfg.output_dir)
        if cfg.use_peft and cfg.merge_adapter:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            if trainer.is_world_process_zero():
                merged.save_pretrained(out)
                tokenizer.save_pretrained(out)
        else:
            trainer.save_model(str(out))
    finally:
        cfg.push_to_hub = push_to_hub
    return {
        "method": cfg.method,
        "paper": trainer_cls.paper,
        "base_model": cfg.model_name_or_path,
        **_base_folder(cfg),
        "data_format": cfg.data_format,
        "forget_split": cfg.forget_split,
        "forget_sha256": forget_hash(forget_rows),
        "n_forget": len(forget_rows),
        "n_forget_side_items": len(dataset),
        "n_retain": len(retain_rows),
        "world_size": cfg.world_size,
        "launch": launch_record(trainer),
        "runtime": runtime_record(trainer.args.device, cfg.load_dtype()),
        "effective_batch": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size,
        "global_steps": result.global_step,
        "train_loss": trainer.whole_run_loss(result),  # across a resume: the whole run's, not the resumed steps'
        "train_seconds": seconds,
        "step_seconds": [round(t, 6) for t in trainer.step_seconds],
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "dosing": None if dose is None else dose.record(),
        "selection": None if selection is None else {"selected_fraction": selection.selected_fraction},
        "lora_target_modules": lora_targets,
        "adapter": bool(cfg.use_peft and not cfg.merge_adapter),
        "log_history": trainer.state.log_history,
    }


def _end_process_group() -> None:
    """Close the process group of a multi-process launch (an open group can abort the interpreter at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def publish(cfg, out: Path) -> str | None:
    """After training, on the main process: evaluate ``out`` against ``--eval_reference``, then push it with its card
    to ``--hub_model_id`` (``--push_to_hub true``). Returns the repository URL when pushed.

    Raises :class:`llm_unlearn.hub.HubPushError` when the push fails; ``out`` is left as saved either way.
    """
    eval_json = None
    if cfg.eval_reference:
        from .evaluation.evaluator import EvalConfig, markdown_table
        from .evaluation.run import run_eval

        try:
            compared = run_eval(
                str(out),
                cfg.eval_reference,
                cfg.data,
                EvalConfig(
                    forget_split=cfg.forget_split,
                    data_format=cfg.data_format,
                    device=cfg.run_device,
                    chat_date=cfg.chat_date,
                    system_prompt=cfg.system_prompt,
                ),
            )
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            hint = f"; the unlearned model is saved in {out}: evaluate it with `llm-unlearn eval --model {out} ...`"
            kind = next(c for c in (FileExistsError, FileNotFoundError, ValueError) if isinstance(e, c))
            raise kind(f"evaluation against --eval_reference {cfg.eval_reference} failed: {e}{hint}") from e
        eval_json = compared["report_files"][0]  # the comparison JSON, written into `out`
        print(markdown_table(compared))
    if not cfg.push_to_hub:
        return None
    from .hub import push_run

    url = push_run(out, cfg.hub_model_id, token=cfg.hub_token, private=cfg.hub_private_repo, eval_json=eval_json)
    print(f"pushed {out} to {url}")
    return url


# What the sequential runner reads from the command line itself; a recipe (--config) may set them too.
SEQUENTIAL_KEYS = ("forget_split", "eval_reference", "output_dir", "model_name_or_path", "data", "push_to_hub")


def _with_recipe_requests(argv: list[str]) -> list[str]:
    """``argv`` with the sequential runner's settings lifted from the ``--config`` recipe, when the recipe names
    several forget splits (``forget_split: forget01,forget05``) and the command line does not override it: a chain
    of requests written in a YAML runs as the same chain given with flags. Other argv are returned unchanged."""
    config = _pop_flag(list(argv), "--config")
    if not config or _pop_flag(list(argv), "--forget_split") is not None:
        return argv
    from .validation import load_yaml_recipe

    recipe = load_yaml_recipe(config)
    if "," not in str(recipe.get("forget_split") or ""):
        return argv
    argv = list(argv)
    for key in SEQUENTIAL_KEYS:
        if key in recipe and recipe[key] is not None and _pop_flag(list(argv), f"--{key}") is None:
            argv += [f"--{key}", str(recipe[key])]
    return argv


def _is_sequential(argv: list[str]) -> bool:
    """Whether ``--forget_split`` names several splits (sequential requests: see robustness.sequential)."""
    value = _pop_flag(list(argv), "--forget_split")
    return value is not None and "," in value


def main(argv: list[str] | None = None) -> int:
    from .hub import HubPushError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _with_recipe_requests(argv)
        if _is_sequential(argv):  # --forget_split forget01,forget05,...: requests one after another
            from .robustness.sequential import run_sequential

            run_sequential(argv)
            return 0
        cfg, trainer_cls = parse_args(argv)
        out = run(cfg, trainer_cls)
        main_process = cfg.process_index == 0
        # Evaluation and the push run on the main process alone, after the process group is closed: the other
        # processes must not wait for them at a barrier (a slow upload would hit the collective timeout).
        _end_process_group()
        print(f"unlearned model saved in {out}")
        if main_process:
            publish(cfg, out)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"unlearn: error: {e}", file=sys.stderr)
        return 2
    except (HubPushError, DivergenceError) as e:  # the message says what is saved and how to go on
        print(f"unlearn: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only place: one line (run() already said what is unchanged)
        from .validation import describe_os_error

        unchanged = getattr(e, "unchanged", None)
        print(f"unlearn: error: {describe_os_error(e)}{f'; {unchanged}' if unchanged else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # run() says what is unchanged and what was kept
        print(f"unlearn: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    return 0
