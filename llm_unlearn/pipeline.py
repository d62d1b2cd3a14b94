"""The embedded pipeline (``llm-unlearn demo``): benchmark, target, retrained reference, unlearning, evaluation.

Every stage reuses what a previous run with the same settings left in ``workdir``, so running it twice is cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def _timed(timings: dict[str, float], name: str, fn: Callable):
    start = time.perf_counter()
    value = fn()
    timings[name] = time.perf_counter() - start
    print(f"[{name}] done in {timings[name]:.1f} s", flush=True)
    return value


# The embedded unlearning budget (the configs/embedded_*.yaml recipes carry the same values).
EMBEDDED_BUDGET = {
    "max_steps": 60,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "logging_steps": 10,
}


def _per_split(name: str, forget_split: str) -> str:
    """Folders of the default forget split keep their plain names; other splits get their own (``reference_forget05``):
    the references of forget05 train on retain95, not on retain90."""
    return name if forget_split == "forget10" else f"{name}_{forget_split}"


def reference_folders(workdir: str | Path, forget_split: str = "forget10") -> list[Path]:
    """The retrained reference and its data-order replica of ``forget_split`` in a pipeline folder."""
    return [Path(workdir) / _per_split(n, forget_split) for n in ("reference", "reference_2")]


# The repository's recipes (configs/): the hand-set embedded_*.yaml and those ``llm-unlearn tune`` chose, tuned_*.yaml.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# The header line of a recipe whose search found no trial meeting the retention constraint (the demo skips it).
NOT_RECOMMENDED = "WARNING: no trial met minimum utility retention"
NOT_FORGETTING = "WARNING: no feasible trial forgets"


def is_recommended(recipe_text: str) -> bool:
    """Whether a recipe file written by ``tune`` is a recommendation (its header carries neither warning)."""
    return NOT_RECOMMENDED not in recipe_text and NOT_FORGETTING not in recipe_text


def tuned_recipe(method: str) -> Path | None:
    """``configs/tuned_<method>.yaml`` of this checkout, the recommended recipe for ``method`` (chosen on the
    development family, never on the embedded benchmark); ``None`` where there is none (an installed wheel, or a
    method that was not tuned) or where the search found no trial that kept the utility, or none that kept it and
    forgot (its header says so, see :func:`.tune.is_recommended`: the file is then not a recommendation)."""
    path = CONFIGS / f"tuned_{method}.yaml"
    if not path.is_file() or not is_recommended(path.read_text()):
        return None
    return path


def unlearn_embedded(work: Path, method: str, forget_split: str, seed: int, recipe: str = "tuned") -> Path:
    """Run ``method`` on the embedded target (a finished identical run is reused).

    ``recipe="tuned"`` uses :func:`tuned_recipe` where it exists and the embedded budget otherwise;
    ``recipe="embedded"`` always uses the embedded budget (the hand-set ``configs/embedded_*.yaml`` values). The
    recipe's paths, split and seed are overridden by this pipeline's."""
    from .stages import unlearn

    out = work / _per_split("unlearned", forget_split) / method
    if recipe not in ("tuned", "embedded"):
        raise ValueError(f"recipe must be 'tuned' or 'embedded', got {recipe!r}")
    config = tuned_recipe(method) if recipe == "tuned" else None
    if config is not None:
        print(f"[unlearning] {method} with the tuned recipe {config}", flush=True)
        flags = ["--config", str(config)]
    else:
        print(f"[unlearning] {method} with the embedded budget (no tuned recipe used)", flush=True)
        flags = [f"--{k}={v}" for k, v in EMBEDDED_BUDGET.items()]
    return unlearn(
        [
            "--method",
            method,
            "--model_name_or_path",
            str(work / "target"),
            "--data",
            str(work / "data"),
            "--forget_split",
            forget_split,
            "--output_dir",
            str(out),
            "--seed",
            str(seed),
            "--overwrite_output",
            "true",
            "--disable_tqdm",
            "true",
            *flags,
        ]
    )


def run_embedded_pipeline(
    workdir: str | Path,
    forget_split: str = "forget10",
    seed: int = 0,
    reference_seed: int | None = None,
    method: str | None = None,
    family: str = "authors",
    recipe: str = "tuned",
) -> dict:
    """Run every stage and print the comparison tables; returns the compared evaluations and stage timings.

    ``method`` (an unlearning method name) adds an unlearning stage on the target; ``None`` stops after the
    evaluation of the target against the reference. ``family`` picks the synthetic generator: ``authors`` (the
    embedded benchmark, what results are reported on) or ``inventors`` (the development benchmark of
    ``llm-unlearn tune``). ``recipe`` picks the unlearning recipe (see :func:`unlearn_embedded`).
    """
    from .data.schema import BenchmarkSplits
    from .data.synth import SynthConfig
    from .evaluation.calibration import calibration_lines
    from .evaluation.evaluator import EvalConfig, markdown_table
    from .finetune import FinetuneConfig
    from .stages import evaluate as run_eval
    from .stages import finetune
    from .stages import synth as write_benchmark

    work = Path(workdir)
    splits = BenchmarkSplits.from_forget(forget_split)
    data = str(work / "data")
    timings: dict[str, float] = {}
    _timed(timings, "data", lambda: write_benchmark(SynthConfig(seed=seed, family=family), data))
    target = _timed(
        timings,
        "target",
        lambda: finetune(FinetuneConfig(data=data, split="full", output_dir=str(work / "target"), seed=seed)),
    )
    ref_seed = seed if reference_seed is None else reference_seed

    def reference_stage(name: str, data_seed: int | None):
        out = str(work / _per_split(name, forget_split))
        cfg = FinetuneConfig(data=data, split=splits.retain, output_dir=out, seed=ref_seed, data_seed=data_seed)
        return _timed(timings, name, lambda: finetune(cfg))

    reference = reference_stage("reference", None)
    # A replica of the reference that differs only in data order (same initialisation): forget quality between the
    # two is the noise floor that every forget-quality number of this benchmark is read against.
    replica = reference_stage("reference_2", ref_seed + 1)
    unlearned = None
    if method:
        unlearned = _timed(timings, "unlearning", lambda: unlearn_embedded(work, method, forget_split, seed, recipe))

    def evaluate():
        cfg = EvalConfig(forget_split=forget_split)
        refs = [str(reference), str(replica)]
        target_eval = run_eval(str(target), refs, data, cfg)
        return target_eval, (run_eval(str(unlearned), refs, data, cfg) if unlearned else None)

    compared, unlearned_eval = _timed(timings, "evaluation", evaluate)
    print(
        f"\nTarget (trained on full) vs retrained reference (trained on {splits.retain}), "
        f"forget split {forget_split}:\n"
    )
    print(markdown_table(compared))
    print("\n" + "\n".join(calibration_lines(compared.get("calibration"))))
    if unlearned_eval is not None:
        print(f"\nAfter unlearning with {method} ({unlearned}) vs the retrained reference:\n")
        print(markdown_table(unlearned_eval))
        print("\n" + "\n".join(calibration_lines(unlearned_eval.get("calibration"))))
    print(
        "\nstage seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        + f", total {sum(timings.values()):.1f}"
    )
    reports = compared["report_files"] + (unlearned_eval["report_files"] if unlearned_eval else [])
    if unlearned is not None:
        from .stages import report as write_runs_report

        # The side-by-side report of the runs (what `llm-unlearn report` writes): table, FQ-vs-utility plot, ECDFs.
        jsons = [compared["report_files"][0], unlearned_eval["report_files"][0]]  # the target may hold other splits
        runs_report = write_runs_report(jsons, work / _per_split("report", forget_split), overwrite=True)
        reports += [str(p) for p in runs_report["files"]]
    print("reports: " + ", ".join(reports))
    return {"compared": compared, "unlearned": unlearned_eval, "timings": timings}
