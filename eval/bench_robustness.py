"""Is it really gone? Every method on the embedded benchmark under relearning, quantization and rephrasing.

    python eval/bench_robustness.py [--workdir runs/embedded] [--methods natural,npo,...] [--seeds 0,1,2]
        [--forget_split forget10]

Builds (or reuses) the embedded pipeline in ``workdir`` (benchmark, target, the split's retrained reference and its
data-order replica). Each method runs its recommended recipe (``configs/tuned_<method>.yaml`` where ``llm-unlearn
tune`` chose one on the development family, else the hand-set ``configs/embedded_<method>.yaml``) with each
unlearning seed; every run is evaluated and attacked with ``llm-unlearn attack``'s defaults (relearning on a quarter
of each forget author's items and, separately, on retain items about related authors; 8- and 4-bit weights;
paraphrased, few-shot and exact questions), and so is the retrained reference, once. It prints, per method, the
mean over seeds of:

- forget quality before any attack (median over the two references), the forget probability and the minimum
  utility retention (a method that removes the forget set by breaking the model shows it here);
- the **recovery** under each attack: the share of the gap between the unlearned model and the untouched target
  that the attack regains (forget probability); the retrained reference's own recovery is the floor (what plain
  learning, or quantization noise, gives a model that never learned the forget set);
- the **residual** before (the plain question) and after each attack: the model's forget probability above the
  reference's (each attacked alike), as a share of the target's above it. A method whose residual is ≥ 25 % with the
  plain question did not remove the forget set; one below 25 % before and ≥ 25 % after an attack hides it from the
  plain question rather than removing it (a reading, not a test: the threshold is a convention).

Recoveries of runs that never moved away from the target (gap < 0.02, or under a quarter of the target − reference
gap) are undefined and left out of the mean; the cell then counts the runs it averages.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKEN = 0.9  # minimum utility retention below which a "removed" reading says the model itself is broken


def recipe(method: str) -> tuple[Path, str]:
    from llm_unlearn.pipeline import tuned_recipe

    tuned = tuned_recipe(method)
    if tuned is not None:
        return tuned, "tuned on dev"
    return ROOT / "configs" / f"embedded_{method}.yaml", "hand-set"


def unlearn_run(method: str, split: str, seed: int, work: Path) -> Path:
    from llm_unlearn.stages import unlearn

    config, _ = recipe(method)
    out = work / "bench" / "robustness" / split / f"seed{seed}" / method
    return unlearn(
        [
            "--config", str(config), "--model_name_or_path", str(work / "target"), "--data", str(work / "data"),
            "--forget_split", split, "--seed", str(seed), "--output_dir", str(out), "--overwrite_output", "true",
            "--disable_tqdm", "true",
        ]
    )  # fmt: skip


def attack_rows(rob: dict) -> dict[str, dict]:
    """attack name -> its entry, for every relearn source and bit width, plus the best rephrase probe."""
    rows = {f"relearn {s}": e for s, e in (rob.get("relearn") or {}).items()}
    rows.update({f"{b}-bit": e for b, e in (rob.get("quantize") or {}).items()})
    return rows


def exact_share(rob: dict) -> float | None:
    """The residual share under the plain (exact) question, before any attack."""
    exact = ((rob.get("rephrase") or {}).get("probes") or {}).get("exact")
    return exact["share"]["probability"] if exact else None


def _avg(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.fmean(have) if have else None


def best_probe(rob: dict) -> tuple[str, float | None]:
    """The rephrase probe (other than the exact question) with the largest residual share, and that share."""
    probes = {k: v for k, v in ((rob.get("rephrase") or {}).get("probes") or {}).items() if k != "exact"}
    shares = {k: v["share"]["probability"] for k, v in probes.items() if v["share"]["probability"] is not None}
    if not shares:
        return "–", None
    name = max(shares, key=shares.get)
    return name, shares[name]


def _mean(values: list[float | None], n: int) -> str:
    have = [v for v in values if v is not None]
    if not have:
        return "–"
    text = f"{100 * statistics.fmean(have):.0f} %"
    return text if len(have) == n else f"{text} ({len(have)}/{n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/embedded", help="Pipeline folder (built if missing).")
    from llm_unlearn.trainers import METHODS, SELECTION_ALIASES

    every = [*METHODS, *SELECTION_ALIASES]  # the registry's methods and hessian selection (over grad_diff)
    parser.add_argument("--methods", default=",".join(every), help="Comma-separated methods (default: all).")
    parser.add_argument("--seeds", default="0,1,2", help="Unlearning seeds (default 0,1,2).")
    parser.add_argument("--forget_split", default="forget10", help="Forget split (default forget10).")
    args = parser.parse_args()

    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.pipeline import reference_folders, run_embedded_pipeline
    from llm_unlearn.robustness.run import HIDDEN_SHARE, AttackConfig, reading, run_attacks

    work, split = Path(args.workdir), args.forget_split
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    run_embedded_pipeline(work, forget_split=split)
    refs = [str(p) for p in reference_folders(work, split)]
    cfg, ecfg = AttackConfig(relearn_source="both"), EvalConfig(forget_split=split)
    results: dict[str, list[dict]] = {}
    for method in methods:
        for seed in seeds:
            run = unlearn_run(method, split, seed, work)
            compared = run_attacks(str(run), refs, str(work / "data"), cfg, ecfg)
            results.setdefault(method, []).append(compared)
            rob = compared["robustness"]
            cells = ", ".join(
                f"{k} {e['recovery']['probability'] if e['recovery']['probability'] is not None else float('nan'):.2f}"
                for k, e in attack_rows(rob).items()
            )
            print(f"[{method} seed {seed}] forget quality {compared['calibration']['forget_quality_median']:.3g}; "
                  f"recovery {cells}", flush=True)  # fmt: skip
    any_rob = next(iter(results.values()))[0]["robustness"]
    names = list(attack_rows(any_rob))
    n = len(seeds)
    print(
        f"\nRobustness on the embedded benchmark, {split}, {n} unlearning seeds (means): recovery (share of the "
        "target − model gap in forget probability that the attack regains) / residual after the attack (share of "
        "the target's forget probability above the attacked reference's).\n"
    )
    head = (
        "| method (recipe) | forget quality | forget prob. | min retention | residual before | "
        + " | ".join(names)
        + " | best rephrase probe |"
    )
    print(head + "\n|" + "---|" * (6 + len(names)))
    ref = {k: e["reference_recovery"]["probability"] for k, e in attack_rows(any_rob).items()}
    target_fe = any_rob["relearn"]["forget"]["target"]["probability"] if "relearn" in any_rob else None
    ref_prob = any_rob["quantize"][next(iter(any_rob["quantize"]))]["reference"]["before"]["probability"]
    print(
        f"| retrained reference (floor) | – | {ref_prob:.3f} | – | 0 % | "
        + " | ".join(f"{_mean([ref[k]], 1)} / 0 %" for k in names)
        + " | 0 % (by definition) |"
    )
    readings = []
    for method, runs in results.items():
        robs = [c["robustness"] for c in runs]
        fq = statistics.fmean(c["calibration"]["forget_quality_median"] for c in runs)
        prob = statistics.fmean(c["summary"]["forget/probability"] for c in runs)
        plain = [exact_share(r) for r in robs]
        kept = statistics.fmean(c["calibration"]["utility_retention"]["minimum"] for c in runs)
        cells, hidden = [], []
        for k in names:
            rec = [attack_rows(r)[k]["recovery"]["probability"] for r in robs]
            before = [attack_rows(r)[k]["share_before"]["probability"] for r in robs]
            res = [attack_rows(r)[k]["share_after"]["probability"] for r in robs]
            cells.append(f"{_mean(rec, n)} / {_mean(res, n)}")
            if reading({"probability": _avg(before)}, {"probability": _avg(res)})[0] == "hidden":
                hidden.append(k)
        probes = [best_probe(r) for r in robs]
        shares = [s for _, s in probes]
        label = max({p for p, _ in probes}, key=[p for p, _ in probes].count)
        rephrase = f"{label}: {_mean(shares, n)}"
        if reading({"probability": _avg(plain)}, {"probability": _avg(shares)})[0] == "hidden":
            hidden.append(f"rephrase ({label})")
        print(
            f"| {method} ({recipe(method)[1]}) | {fq:.3g} | {prob:.3f} | {kept:.2f} | {_mean(plain, n)} | "
            + " | ".join(cells)
            + f" | {rephrase} |"
        )
        readings.append((method, _avg(plain), hidden, kept))
    print(f"\nTarget forget probability on the relearning evaluation items: {target_fe:.3f}." if target_fe else "")
    print(
        f"\nReading (residual = the model's forget probability above the reference's, as a share of the target's; "
        f"≥ {100 * HIDDEN_SHARE:.0f} % with the plain question = not removed; < {100 * HIDDEN_SHARE:.0f} % before "
        f"and ≥ {100 * HIDDEN_SHARE:.0f} % after an attack = hidden, not removed):"
    )
    for method, before, hidden, kept in readings:
        broken = (
            f" (but utility collapsed: minimum utility retention {kept:.2f}, below {BROKEN:.0%}: nothing is left to "
            "recover, about the forget set or anything else)"
            if kept < BROKEN
            else ""
        )
        if before is not None and before >= HIDDEN_SHARE:
            print(f"- {method}: not removed: the plain question keeps {100 * before:.0f} % (no attack needed)")
        elif hidden:
            print(f"- {method}: hides: comes back under {', '.join(hidden)}")
        else:
            print(
                f"- {method}: removed as far as these attacks see: none brings back more than the reference holds"
                + broken
            )


if __name__ == "__main__":
    main()
