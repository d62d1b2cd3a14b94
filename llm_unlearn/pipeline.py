"""The embedded pipeline (``llm-unlearn demo``): benchmark, target, retrained reference, evaluation.

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


def run_embedded_pipeline(
    workdir: str | Path, forget_split: str = "forget10", seed: int = 0, reference_seed: int | None = None
) -> dict:
    """Run every stage and print the comparison table; returns the compared evaluation and stage timings."""
    from .cli import run_eval
    from .data.schema import BenchmarkSplits
    from .data.synth import SynthConfig, write_benchmark
    from .evaluation.evaluator import EvalConfig, markdown_table
    from .finetune import FinetuneConfig, finetune

    work = Path(workdir)
    splits = BenchmarkSplits.from_forget(forget_split)
    data = str(work / "data")
    timings: dict[str, float] = {}
    _timed(timings, "data", lambda: write_benchmark(SynthConfig(seed=seed), data))
    target = _timed(
        timings,
        "target",
        lambda: finetune(FinetuneConfig(data=data, split="full", output_dir=str(work / "target"), seed=seed)),
    )
    ref_seed = seed if reference_seed is None else reference_seed
    reference = _timed(
        timings,
        "reference",
        lambda: finetune(
            FinetuneConfig(data=data, split=splits.retain, output_dir=str(work / "reference"), seed=ref_seed)
        ),
    )
    compared = _timed(
        timings,
        "evaluation",
        lambda: run_eval(str(target), str(reference), data, EvalConfig(forget_split=forget_split)),
    )
    print(
        f"\nTarget (trained on full) vs retrained reference (trained on {splits.retain}), "
        f"forget split {forget_split}:\n"
    )
    print(markdown_table(compared))
    print(
        "\nstage seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        + f", total {sum(timings.values()):.1f}"
    )
    print("reports: " + ", ".join(compared["report_files"]))
    return {"compared": compared, "timings": timings}
