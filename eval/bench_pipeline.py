"""Benchmark of the embedded pipeline: seconds per stage, and the checks that the benchmark discriminates.

    python eval/bench_pipeline.py [--workdir DIR]

Stages: synthetic data, target (trained on full), reference (trained on retain90), evaluation of the target
against the reference. Then, outside the timed pipeline, a second reference with another seed is trained and
compared to the first: a benchmark that discriminates gives the target a forget quality far below 0.01 and the
second reference one above 0.05. A fresh temporary workdir is used unless --workdir is given (a reused workdir
reuses finished stages and times nothing but the reuse).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="Folder for the run (default: a fresh temporary folder).")
    parser.add_argument("--forget_split", default="forget10")
    args = parser.parse_args()

    from llm_unlearn.data.schema import BenchmarkSplits
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig
    from llm_unlearn.pipeline import run_embedded_pipeline
    from llm_unlearn.stages import evaluate as run_eval
    from llm_unlearn.stages import finetune

    work = Path(args.workdir or tempfile.mkdtemp(prefix="llm_unlearn_bench_"))
    start = time.perf_counter()
    run = run_embedded_pipeline(work, forget_split=args.forget_split)
    wall = time.perf_counter() - start
    target = run["compared"]

    splits = BenchmarkSplits.from_forget(args.forget_split)
    t = time.perf_counter()
    ref2 = finetune(
        FinetuneConfig(data=str(work / "data"), split=splits.retain, seed=1, output_dir=str(work / "reference_seed1"))
    )
    second = run_eval(
        str(ref2), str(work / "reference"), str(work / "data"), EvalConfig(forget_split=args.forget_split)
    )
    ref2_seconds = time.perf_counter() - t

    s, r = target["summary"], target["reference_summary"]
    checks = [
        (
            "forget quality, target vs reference",
            f"{target['forget_quality']:.3g}",
            "< 0.01",
            target["forget_quality"] < 0.01,
        ),
        (
            "forget quality, reference seed 1 vs reference seed 0",
            f"{second['forget_quality']:.3g}",
            "> 0.05",
            second["forget_quality"] > 0.05,
        ),
        (
            "forget ROUGE-L recall, target",
            f"{s['forget/rouge_l_recall']:.3f}",
            ">= 0.9",
            s["forget/rouge_l_recall"] >= 0.9,
        ),
        (
            "forget ROUGE-L recall, reference",
            f"{r['forget/rouge_l_recall']:.3f}",
            "far lower (<= 0.5)",
            r["forget/rouge_l_recall"] <= 0.5,
        ),
        (
            "retain ROUGE-L recall, target",
            f"{s['retain/rouge_l_recall']:.3f}",
            ">= 0.9",
            s["retain/rouge_l_recall"] >= 0.9,
        ),
        (
            "retain ROUGE-L recall, reference",
            f"{r['retain/rouge_l_recall']:.3f}",
            ">= 0.9",
            r["retain/rouge_l_recall"] >= 0.9,
        ),
        ("pipeline seconds (data, target, reference, evaluation)", f"{wall:.1f}", "<= 180", wall <= 180),
    ]
    print("\n| check | measured | target | ok |\n|---|---:|---|---|")
    for name, value, goal, ok in checks:
        print(f"| {name} | {value} | {goal} | {'yes' if ok else 'NO'} |")
    print("\n| stage | seconds |\n|---|---:|")
    for name, sec in run["timings"].items():
        print(f"| {name} | {sec:.1f} |")
    print(f"| total (wall, incl. imports) | {wall:.1f} |")
    print(f"| second reference + its evaluation (not part of the pipeline) | {ref2_seconds:.1f} |")
    print(f"\nworkdir: {work}")


if __name__ == "__main__":
    main()
