"""How close to retraining is a model that never saw the forget entities' names? A bound for approximate unlearning.

    python eval/probe_unknown_names.py [--workdir runs/embedded] [--forget_splits forget01,forget05,forget10]
        [--model WORKDIR/target]

For each forget split, the forget evaluation items are rewritten with the name of a holdout entity (never trained
on) in place of the forget entity's name, in the question and in every answer variant; the model (default: the
untouched target) is evaluated on the rewritten items against the split's two references (each also evaluated on
the rewritten items). The target then answers about people it has never seen: its predictions are its prior for
such a question, which is what a perfect unlearning of the entity would leave if nothing else changed. Printed per
split: forget quality of the target on the real items, on the rewritten items, and the noise floor (between the
references) on the rewritten items.

When the rewritten target stays far below the floor, forget quality at this benchmark's resolution also sees what
the forget set taught beyond the names (e.g. how often each value occurs in training): an unlearning method that
removes every trace of the names still stays distinguishable from retraining. Needs the synthetic benchmark's
``entity`` field (TOFU's splits have none).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def _swap(value, old: str, new: str):
    return value.replace(old, new) if isinstance(value, str) else [v.replace(old, new) for v in value]


def rewrite_forget_items(data: Path, forget_split: str, out: Path) -> dict[str, str]:
    """Copy ``data`` to ``out`` with the forget evaluation split's names replaced by holdout names; returns the map."""
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.data.schema import BenchmarkSplits

    s = BenchmarkSplits.from_forget(forget_split)
    rows, holdout = load_split(str(data), s.forget_eval), load_split(str(data), s.holdout)
    if any("entity" not in r for r in rows + holdout):
        raise ValueError(f"{data}: the rows of {s.forget_eval} and {s.holdout} need an 'entity' field")
    names = list(dict.fromkeys(r["entity"] for r in rows))
    unknown = list(dict.fromkeys(r["entity"] for r in holdout))
    if len(unknown) < len(names):
        raise ValueError(f"{s.holdout} has {len(unknown)} entities, fewer than the {len(names)} of {s.forget_eval}")
    mapping = dict(zip(names, unknown))
    shutil.copytree(data, out)
    (out / "benchmark.json").unlink(missing_ok=True)  # no longer the generated benchmark
    fields = ("question", "answer", "paraphrased_answer", "perturbed_answer")
    rewritten = [
        {k: (_swap(v, r["entity"], mapping[r["entity"]]) if k in fields else v) for k, v in r.items()} for r in rows
    ]
    for path in out.glob(f"{s.forget_eval}.*"):
        path.unlink()
    (out / f"{s.forget_eval}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rewritten))
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/embedded", help="Pipeline folder (built if missing).")
    parser.add_argument("--forget_splits", default="forget01,forget05,forget10", help="Forget splits to probe.")
    parser.add_argument("--model", help="Model to probe (default: WORKDIR/target, the untouched target).")
    parser.add_argument("--family", default="authors", help="Synthetic family of the workdir (authors, inventors).")
    args = parser.parse_args()

    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.pipeline import reference_folders, run_embedded_pipeline
    from llm_unlearn.stages import evaluate

    work = Path(args.workdir)
    rows = []
    for split in [s.strip() for s in args.forget_splits.split(",") if s.strip()]:
        real = run_embedded_pipeline(work, forget_split=split, family=args.family)["compared"]
        model = Path(args.model) if args.model else work / "target"
        refs = [str(p) for p in reference_folders(work, split)]
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            rewrite_forget_items(work / "data", split, data)
            c = evaluate(model, refs, data, EvalConfig(forget_split=split), output=Path(tmp) / "eval.json")
        cal = c["calibration"]
        rows.append(
            (
                split,
                real["calibration"]["forget_quality_median"] if args.model is None else float("nan"),
                cal["forget_quality_median"],
                cal["noise_floor"],
                cal["verdict"]["threshold"],
                real["calibration"]["verdict"]["threshold"],
            )
        )
    print(
        f"\nModel {args.model or 'WORKDIR/target'} on the forget items with unknown (holdout) names, against the two "
        "references (median forget quality over them):\n"
    )
    print(
        "| split | target, real names | unknown names | noise floor (unknown names) | verdict's bar (unknown names) | "
        "verdict's bar (real names) |\n|---|---:|---:|---:|---:|---:|"
    )
    for split, a, b, floor, bar, real_bar in rows:
        print(f"| {split} | {a:.3g} | {b:.3g} | {floor:.3g} | {bar:.3g} | {real_bar:.3g} |")


if __name__ == "__main__":
    main()
