"""Every unlearning method on the embedded benchmark, with the same budget, in one table.

    python eval/bench_methods.py [--workdir runs/embedded] [--methods natural,npo,...]

Builds (or reuses) the embedded pipeline in ``workdir`` (benchmark, target, retrained reference), then runs each
method from ``configs/embedded_<method>.yaml`` (every recipe carries the same budget: optimizer steps, batch size,
learning rate), evaluates it against the reference and prints:

1. method | forget quality | model utility | forget ROUGE | retain ROUGE | seconds;
2. the step-time ratio of each method to a plain fine-tuning step (``regularized_ft`` with no regularizer),
   measured in this run: every method runs ``TIMING_STEPS`` steps in each of ``TIMING_ROUNDS`` interleaved rounds
   (the order rotates between rounds), the first ``WARMUP_STEPS`` steps of every run are dropped, and a method's
   step time is the median over rounds of its runs' median step;
3. the cost of Hessian scoring (fisher, ggn, hutchinson per probe) as a multiple of one forward+backward pass over
   the same scoring data, measured in this run (median of 3).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name shown -> (recipe file, extra flags)
RUNS = {
    "finetune (no regularizer)": ("embedded_finetune.yaml", []),
    "regularized_ft": ("embedded_regularized_ft.yaml", []),
    "hessian (grad_diff)": ("embedded_hessian.yaml", []),
    "random selection (grad_diff)": ("embedded_hessian.yaml", ["--selection", "random"]),
    "natural": ("embedded_natural.yaml", []),
    "relabel": ("embedded_relabel.yaml", []),
    "grad_ascent": ("embedded_grad_ascent.yaml", []),
    "grad_diff": ("embedded_grad_diff.yaml", []),
    "npo": ("embedded_npo.yaml", []),
    "simnpo": ("embedded_simnpo.yaml", []),
    "idk_nll": ("embedded_idk_nll.yaml", []),
    "idk_dpo": ("embedded_idk_dpo.yaml", []),
}
PLAIN = "finetune (no regularizer)"
TIMING_ROUNDS, TIMING_STEPS, WARMUP_STEPS = 3, 12, 3


def _slug(name: str) -> str:
    """The run folder of a table row: ``hessian (grad_diff)`` → ``hessian_grad_diff``."""
    return re.sub(r"\W+", "_", name).strip("_")


def run_method(recipe: str, extra: list[str], work: Path, out: Path) -> dict:
    from llm_unlearn.stages import unlearn
    from llm_unlearn.unlearn import RECORD

    if out.exists():
        shutil.rmtree(out)
    unlearn(
        [
            "--config",
            str(ROOT / "configs" / recipe),
            "--model_name_or_path",
            str(work / "target"),
            "--data",
            str(work / "data"),
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
            *extra,
        ]
    )
    return json.loads((out / RECORD).read_text())


def step_times(names: list[str], work: Path) -> dict[str, float]:
    """Seconds per optimizer step of each method after a warm-up: the median over interleaved rounds."""
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(TIMING_ROUNDS):
        order = names[r % len(names) :] + names[: r % len(names)]  # no method always pays the first-run costs
        for name in order:
            recipe, extra = RUNS[name]
            out = work / "bench" / "timing" / _slug(name)
            record = run_method(recipe, [*extra, "--max_steps", str(TIMING_STEPS)], work, out)
            per_round[name].append(statistics.median(record["step_seconds"][WARMUP_STEPS:]))
    shutil.rmtree(work / "bench" / "timing", ignore_errors=True)
    return {n: statistics.median(v) for n, v in per_round.items()}


def hessian_costs(work: Path, n: int = 3) -> dict[str, float]:
    """Scoring time / one forward+backward pass over the same micro-batches (median of ``n``)."""
    from transformers import AutoModelForCausalLM

    from llm_unlearn.data.formatting import QACollator, QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.modeling import load_tokenizer
    from llm_unlearn.selection import forward_backward_seconds, score_parameters

    tok = load_tokenizer(work / "target")
    model = AutoModelForCausalLM.from_pretrained(work / "target")
    fmt, collate = QAFormatter(tok), QACollator(tok.pad_token_id)
    rows = load_split(work / "data", "forget10")
    batches = [collate([fmt.encode(r["question"], r["answer"])]) for r in rows]
    out = {}
    for est, probes in (("fisher", 1), ("ggn", 1), ("hutchinson", 4)):
        ratios = []
        for _ in range(n):
            base = forward_backward_seconds(model, batches)
            scores = score_parameters(model, batches, estimator=est, probes=probes)
            ratios.append(scores.seconds / base / (probes if est == "hutchinson" else 1))
        out[est + (" (per probe)" if est == "hutchinson" else "")] = statistics.median(ratios)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/embedded", help="Pipeline folder (built if missing).")
    parser.add_argument("--methods", help="Comma-separated subset of: " + ", ".join(RUNS))
    args = parser.parse_args()

    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.pipeline import run_embedded_pipeline
    from llm_unlearn.stages import evaluate as run_eval

    work = Path(args.workdir)
    base = run_embedded_pipeline(work)["compared"]
    names = [m.strip() for m in args.methods.split(",")] if args.methods else list(RUNS)
    rows = [
        ("target (before unlearning)", base["forget_quality"], base["summary"], None, None),
        ("retrained reference", 1.0, base["reference_summary"], None, None),
    ]
    for name in names:
        recipe, extra = RUNS[name]
        out = work / "bench" / _slug(name)
        t = time.perf_counter()
        record = run_method(recipe, extra, work, out)
        seconds = time.perf_counter() - t
        c = run_eval(str(out), str(work / "reference"), str(work / "data"), EvalConfig(), overwrite=True)
        rows.append((name, c["forget_quality"], c["summary"], seconds, record["global_steps"]))
        print(f"[{name}] forget quality {c['forget_quality']:.3g}, utility {c['model_utility']:.3f}", flush=True)

    print("\n| method | forget quality | model utility | forget ROUGE | retain ROUGE | PrivLeak % | steps | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, fq, s, sec, steps in rows:
        leak = s.get("privleak", float("nan"))
        print(
            f"| {name} | {fq:.3g} | {s['model_utility']:.3f} | {s['forget/rouge_l_recall']:.3f} | "
            f"{s['retain/rouge_l_recall']:.3f} | {leak:+.1f} | {steps or '-'} | {f'{sec:.1f}' if sec else '-'} |"
        )
    if PLAIN in names:
        step_seconds = step_times(names, work)
        print(
            f"\nStep times: median of {TIMING_ROUNDS} interleaved rounds of {TIMING_STEPS} steps, the first "
            f"{WARMUP_STEPS} steps of each run dropped.\n"
            "\n| method | step time / plain fine-tuning step | ms per step |\n|---|---:|---:|"
        )
        for name, sec in step_seconds.items():
            print(f"| {name} | {sec / step_seconds[PLAIN]:.2f} | {1000 * sec:.0f} |")
    from llm_unlearn.stages import report as write_runs_report

    run_dirs = [work / "target"] + [work / "bench" / _slug(n) for n in names]
    report = write_runs_report(run_dirs, work / "bench" / "report", overwrite=True)
    print("\nreport with 95 % intervals and plots: " + ", ".join(str(p) for p in report["files"]))
    print("\n| Hessian estimator | scoring time / one forward+backward pass |\n|---|---:|")
    for est, ratio in hessian_costs(work).items():
        print(f"| {est} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
