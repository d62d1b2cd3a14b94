"""The raw-text (MUSE-style) benchmark on the embedded data: target vs retrained reference, then unlearning.

    python eval/bench_text.py [--n_authors 150] [--workdir runs/embedded_text_150] [--methods npo,grad_diff,...]

Derives the text benchmark from the embedded QA benchmark (one biography per author), fine-tunes a target on the
forget + retain documents and a reference on the retain documents only, unlearns the forget documents with each
method (the shared embedded budget of ``configs/embedded_*.yaml``) and prints VerbMem, KnowMem and PrivLeak for all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_METHODS = ("npo", "simnpo", "grad_diff", "hessian", "grad_ascent", "regularized_ft")
FINETUNE = dict(num_train_epochs=60, max_length=256)


def main() -> int:
    from llm_unlearn.data.synth import SynthConfig, write_benchmark, write_text_corpus
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig
    from llm_unlearn.stages import evaluate as run_eval
    from llm_unlearn.stages import finetune

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n_authors",
        type=int,
        default=150,
        help="Authors of the synthetic benchmark: 10 %% are forgotten, as many held out (membership inference "
        "needs enough documents on both sides: with 150, an AUC moves in steps of 1/225).",
    )
    parser.add_argument(
        "--workdir", help="Folder for data, models and results (default runs/embedded_text_<n_authors>)."
    )
    parser.add_argument("--methods", default=",".join(TEXT_METHODS), help="Comma-separated methods to run.")
    args = parser.parse_args()
    work = Path(args.workdir or f"runs/embedded_text_{args.n_authors}")
    qa = write_benchmark(SynthConfig(n_authors=args.n_authors), work / "qa")
    data = work / "text"
    if not (data / "benchmark.json").exists():
        write_text_corpus(qa, data)
    timings = {}
    for name, split, seed in (("target", "raw/forget,raw/retain1", 0), ("reference", "raw/retain1", 0)):
        start = time.perf_counter()
        cfg = FinetuneConfig(str(data), str(work / name), split=split, data_format="text", seed=seed, **FINETUNE)
        finetune(cfg)
        timings[name] = time.perf_counter() - start
    # The embedded tokenizer never sees the forget biographies, so their continuations (`gt`) run longer than
    # MUSE's 128 tokens: give VerbMem room for the whole `gt`, or it would measure the budget, not the memory.
    ecfg = EvalConfig(data_format="text", knowmem_prompt="{question}", gradnorm=True, verbmem_max_new_tokens=256)
    rows = {"target": run_eval(str(work / "target"), str(work / "reference"), str(data), ecfg, overwrite=True)}
    for method in [m for m in args.methods.split(",") if m]:
        out = work / "unlearned" / method
        cmd = [sys.executable, str(ROOT / "unlearn.py"), "--config", str(ROOT / f"configs/embedded_{method}.yaml")]
        cmd += ["--model_name_or_path", str(work / "target"), "--data", str(data), "--data_format", "text"]
        cmd += ["--forget_split", "raw/forget", "--output_dir", str(out), "--overwrite_output", "true"]
        cmd += ["--max_length", "256"]
        if method == "regularized_ft":
            cmd += ["--forget_regularizer", "kl_uniform"]  # the wrong-answer regularizer needs QA items
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        timings[method] = time.perf_counter() - start
        rows[method] = run_eval(str(out), str(work / "reference"), str(data), ecfg, overwrite=True)
    ref = rows["target"]["reference_summary"]
    keys = [
        "privleak",
        "mia_auc/min_k",
        "verbmem/rouge_l_f1",
        "knowmem_forget/rouge_l_f1",
        "knowmem_retain/rouge_l_f1",
    ]
    print(
        "| model | PrivLeak % | MIA AUC Min-K% | MIA AUC GradNorm | VerbMem F1 | KnowMem forget F1 "
        "| KnowMem retain F1 | s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref_auc = rows["target"]["reference_result"]["privacy"]["auc"]["gradnorm"]
    print(
        f"| reference | {' | '.join(f'{ref[k]:.3g}' for k in keys[:2])} | {ref_auc:.3g} | "
        f"{' | '.join(f'{ref[k]:.3g}' for k in keys[2:])} | {timings['reference']:.0f} |"
    )
    for name, compared in rows.items():
        s = compared["summary"]
        gn = compared["privacy"]["auc"]["gradnorm"]
        print(
            f"| {name} | {' | '.join(f'{s[k]:.3g}' for k in keys[:2])} | {gn:.3g} | "
            f"{' | '.join(f'{s[k]:.3g}' for k in keys[2:])} | {timings.get(name, 0):.0f} |"
        )
    (work / "bench_text.json").write_text(json.dumps({k: v["summary"] for k, v in rows.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
