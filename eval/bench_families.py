"""The core methods' recipes on benchmarks they were not chosen on: authors (reported) and ships (checking only).

    python eval/bench_families.py [--workdir runs/families] [--families authors,ships]
        [--forget_splits forget01,forget05,forget10] [--seeds 0,1,2] [--methods regularized_ft,hessian,natural]
        [--write_docs]

The recipes are ``configs/dosed_<method>.yaml`` (self-dosing: ``llm-unlearn tune --dosing --objective verdict`` on
the development family, fictitious inventors) or, where a method has none, ``configs/tuned_<method>.yaml``. Neither
family here was used to choose anything. For each family and forget split the embedded pipeline builds (or reuses)
the family's data, target and two retrained references; each method then unlearns the target with each seed, and
``llm-unlearn attack --attacks relearn`` evaluates the run against both references and relearns a quarter of each
forget entity's items (10 steps) on the run and on the first reference.

A run **passes** when both forget tests say "not distinguishable" from retraining (forget quality: the truth
ratios' KS test; the answers' test: the forget answers' own loss), every utility component keeps ≥ 95 % of the
target's, and |PrivLeak| ≤ 15 %. The table gives, per family, split and method: the runs passing both tests, the
runs passing everything, the median steps the dose took and why it stopped, the lowest utility retention, PrivLeak
and the relearning recovery (share of the target's extra forget probability that 10 steps of relearning bring back)
beside the reference's own recovery under the same attack.

Every finished run is kept in ``WORKDIR/results.json``: an interrupted run continues where it stopped.
``--write_docs`` writes the tables to ``docs/benchmarks/families.md`` with the command, date and machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ("regularized_ft", "hessian", "natural")
RETENTION_GOAL, PRIVLEAK_GOAL = 0.95, 15.0
DOCS = ROOT / "docs" / "benchmarks" / "families.md"


def recipe_of(method: str) -> Path:
    """The dosed recipe where the development search wrote one, else the tuned one."""
    for name in (f"dosed_{method}.yaml", f"tuned_{method}.yaml"):
        if (ROOT / "configs" / name).is_file():
            return ROOT / "configs" / name
    raise FileNotFoundError(f"configs/dosed_{method}.yaml or configs/tuned_{method}.yaml: no recipe for {method}")


def run_row(compared: dict, record: dict) -> dict:
    """The numbers of one run that the tables read, from its evaluation (with the relearning attack) and record."""
    cal = compared["calibration"]
    tests = cal.get("tests") or {}
    relearn = next(iter(compared["robustness"]["relearn"].values()))
    dose = record.get("dosing") or {}
    return {
        "steps": record.get("global_steps"),
        "stop_reason": dose.get("stop_reason", "max_steps"),
        "verdict": cal["verdict"]["status"],
        "tests": {
            n: {"p": min(t["p_per_reference"]), "bar": t["bar"], "status": t["status"]} for n, t in tests.items()
        },
        "min_retention": cal["utility_retention"]["minimum"],
        "worst": cal["utility_retention"]["worst"],
        "privleak": compared["summary"].get("privleak"),
        "recovery": relearn["recovery"]["probability"],
        "reference_recovery": relearn["reference_recovery"]["probability"],
    }


def passes_tests(row: dict) -> bool:
    t = row["tests"]
    return all(t.get(n, {}).get("status") == "not distinguishable" for n in ("forget_quality", "answers"))


def passes_all(row: dict) -> bool:
    leak = row["privleak"]
    return (
        passes_tests(row)
        and row["min_retention"] >= RETENTION_GOAL
        and leak is not None
        and abs(leak) <= PRIVLEAK_GOAL
    )


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _f(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def summary_table(rows: list[dict]) -> list[str]:
    """One line per (family, split, method): counts over seeds and medians."""
    lines = [
        "| family | split | method | both tests pass | everything passes | steps (median) | stopped by | "
        "min retention (median) | PrivLeak % (median) | relearning recovery: run / reference (median) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["split"], r["method"]), []).append(r)
    for (family, split, method), runs in groups.items():
        reasons: dict[str, int] = {}
        for r in runs:
            reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
        n, both, every = len(runs), sum(map(passes_tests, runs)), sum(map(passes_all, runs))
        lines.append(
            f"| {family} | {split} | {method} | {both}/{n} | {every}/{n} | "
            f"{_f(_median(r['steps'] for r in runs), '.0f')} | "
            f"{', '.join(f'{k} ×{v}' for k, v in sorted(reasons.items()))} | "
            f"{_f(_median(r['min_retention'] for r in runs), '.3f')} | "
            f"{_f(_median(r['privleak'] for r in runs), '+.1f')} | "
            f"{_f(_median(r['recovery'] for r in runs), '.0%')} / "
            f"{_f(_median(r['reference_recovery'] for r in runs), '.0%')} |"
        )
    return lines


def totals_table(rows: list[dict]) -> list[str]:
    """Per method and family: the share of all runs (splits × seeds) that pass everything."""
    lines = ["| method | family | runs | both tests pass | everything passes |", "|---|---|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["family"]), []).append(r)
    for (method, family), runs in sorted(groups.items()):
        n, both, every = len(runs), sum(map(passes_tests, runs)), sum(map(passes_all, runs))
        lines.append(f"| {method} | {family} | {n} | {both} ({both / n:.0%}) | {every} ({every / n:.0%}) |")
    return lines


def runs_table(rows: list[dict]) -> list[str]:
    lines = [
        "| family | split | method | seed | steps | stopped by | verdict | forget quality p (bar) | "
        "answers' test p (bar) | min retention (worst) | PrivLeak % | recovery run / reference |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fq, ans = r["tests"].get("forget_quality", {}), r["tests"].get("answers", {})
        lines.append(
            f"| {r['family']} | {r['split']} | {r['method']} | {r['seed']} | {r['steps']} | {r['stop_reason']} | "
            f"{r['verdict']} | {_f(fq.get('p'), '.2g')} ({_f(fq.get('bar'), '.2g')}) | "
            f"{_f(ans.get('p'), '.2g')} ({_f(ans.get('bar'), '.2g')}) | {r['min_retention']:.3f} ({r['worst']}) | "
            f"{_f(r['privleak'], '+.1f')} | {_f(r['recovery'], '.0%')} / {_f(r['reference_recovery'], '.0%')} |"
        )
    return lines


def run_one(work: Path, family: str, split: str, method: str, seed: int) -> dict:
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.pipeline import reference_folders
    from llm_unlearn.robustness.run import AttackConfig, run_attacks
    from llm_unlearn.stages import unlearn

    out = work / "runs" / split / method / f"seed{seed}"
    unlearn(
        [
            "--config",
            str(recipe_of(method)),
            "--method",
            method,
            "--model_name_or_path",
            str(work / "target"),
            "--data",
            str(work / "data"),
            "--forget_split",
            split,
            "--seed",
            str(seed),
            "--output_dir",
            str(out),
            "--overwrite_output",
            "true",
            "--disable_tqdm",
            "true",
            "--save_strategy",
            "no",
        ]
    )
    record = json.loads((out / "unlearn_record.json").read_text())
    refs = [str(p) for p in reference_folders(work, split)]
    # a dosed run is evaluated on the holdout half its stopping rule never saw (chosen from its record)
    attack = AttackConfig(attacks="relearn", seed=seed)
    compared = run_attacks(
        str(out), refs, str(work / "data"), attack, EvalConfig(forget_split=split), target=str(work / "target")
    )
    row = {"family": family, "split": split, "method": method, "seed": seed, **run_row(compared, record)}
    shutil.rmtree(out, ignore_errors=True)  # the row is kept; the weights are not needed
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workdir", default="runs/families", help="Benchmarks, runs and results.json (default: %(default)s)."
    )
    p.add_argument("--families", default="authors,ships", help="Families to check on (never inventors: tuned there).")
    p.add_argument("--forget_splits", default="forget01,forget05,forget10")
    p.add_argument("--seeds", default="0,1,2", help="Unlearning seeds (default: %(default)s).")
    p.add_argument("--methods", default=",".join(CORE))
    p.add_argument("--write_docs", action="store_true", help=f"Write the tables to {DOCS.relative_to(ROOT)}.")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if "inventors" in families:
        p.error("--families inventors: the recipes were chosen on inventors; check them on authors or ships")
    methods = [m for m in args.methods.split(",") if m]
    recipes = {m: recipe_of(m) for m in methods}  # a missing recipe is said before any work
    seeds = [int(s) for s in args.seeds.split(",") if s]
    splits = [s for s in args.forget_splits.split(",") if s]

    from llm_unlearn.pipeline import run_embedded_pipeline

    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    store = root / "results.json"
    done = json.loads(store.read_text()) if store.is_file() else {}
    for fam in families:
        for split in splits:
            run_embedded_pipeline(root / fam, forget_split=split, seed=0, family=fam)
            for method in methods:
                for seed in seeds:
                    key = f"{fam}/{split}/{method}/{seed}/{recipes[method].name}"
                    if key in done:
                        continue
                    row = run_one(root / fam, fam, split, method, seed)
                    done[key] = row
                    store.write_text(json.dumps(done, indent=1))
                    print(
                        f"[{fam} {split} {method} seed {seed}] steps {row['steps']} ({row['stop_reason']}), "
                        f"{row['verdict']}, min retention {row['min_retention']:.3f}, PrivLeak "
                        f"{_f(row['privleak'], '+.1f')} %, recovery {_f(row['recovery'], '.0%')}",
                        flush=True,
                    )
    wanted = {f"{f}/{s}/{m}/{d}/{recipes[m].name}" for f in families for s in splits for m in methods for d in seeds}
    rows = [done[k] for k in done if k in wanted]
    tables = ["## Per method", "", *totals_table(rows), "", "## Per split", "", *summary_table(rows)]
    tables += ["", "## Every run", "", *runs_table(rows)]
    print("\n".join(tables))
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_vs_open_unlearning import machine

        command = "python eval/bench_families.py " + " ".join(sys.argv[1:] if argv is None else argv)
        used = ", ".join(f"{m}: `configs/{r.name}`" for m, r in recipes.items())
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(
            "# Recipes checked on families they were not chosen on\n\n"
            f"Measured {time.strftime('%a %b %d %H:%M:%S %Z %Y')} with\n\n```bash\n{command.strip()}\n```\n\n"
            f"- Machine: {machine()}.\n- Recipes ({used}) were chosen on the development family (inventors) only; "
            "`authors` is the embedded benchmark results are reported on, `ships` is used only to check.\n"
            f"- A run passes everything when forget quality and the answers' test are both not distinguishable from "
            f"retraining, every utility component keeps ≥ {RETENTION_GOAL:.0%} of the target's and |PrivLeak| ≤ "
            f"{PRIVLEAK_GOAL:.0f} %. Recovery: the share of the target's extra forget probability that relearning a "
            "quarter of each forget entity's items for 10 steps brings back on the untouched rest; the reference's "
            "own under the same attack beside it.\n\n" + "\n".join(tables) + "\n"
        )
        print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
