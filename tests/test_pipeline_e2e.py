"""End to end on the embedded default: the benchmark discriminates the target from the retrained reference.

Slow (about 2.5 minutes on 2 cores): it trains the target, the reference and a second reference.
"""

import pytest


@pytest.mark.slow
def test_embedded_pipeline_discriminates(tmp_path):
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.pipeline import run_embedded_pipeline
    from llm_unlearn.stages import evaluate as run_eval

    run = run_embedded_pipeline(tmp_path, method="regularized_ft")
    target = run["compared"]
    s, r = target["summary"], target["reference_summary"]
    assert target["forget_quality"] < 0.01
    assert s["forget/rouge_l_recall"] >= 0.9
    assert r["forget/rouge_l_recall"] <= 0.5
    assert s["retain/rouge_l_recall"] >= 0.9 and r["retain/rouge_l_recall"] >= 0.9
    assert set(run["timings"]) == {"data", "target", "reference", "reference_2", "unlearning", "evaluation"}
    # Calibration: two references (data-order replicas) give the noise floor; the target is far below it, so forget
    # quality discriminates on this benchmark; the unlearned model's utility is read part by part.
    cal = target["calibration"]
    assert len(cal["references"]) == 2 and cal["noise_floor"] > 0.05
    assert cal["discrimination"]["informative"] and cal["verdict"]["distinguishable"]
    assert cal["forget_quality_per_reference"][0] == target["forget_quality"]
    # Membership inference: the target's forget items are told from never-seen holdout items, the reference's not.
    assert s["mia_auc/min_k"] > 0.9 and 0.3 < r["mia_auc/min_k"] < 0.7
    assert s["privleak"] < -50 and r["privleak"] == 0.0  # MUSE's convention: under-unlearned reads negative
    # The default core method moves forget quality toward the reference by orders of magnitude, keeping utility.
    unlearned = run["unlearned"]
    assert unlearned["forget_quality"] > 1000 * target["forget_quality"]
    assert unlearned["summary"]["forget/rouge_l_recall"] < 0.6
    assert unlearned["model_utility"] > 0.8 * target["model_utility"]
    assert unlearned["summary"]["privleak"] > s["privleak"]  # unlearning moves PrivLeak from −100 % toward 0
    retention = unlearned["calibration"]["utility_retention"]
    assert set(retention["components"]) == {
        f"{r}/{m}"
        for r in ("retain", "real_authors", "world_facts")
        for m in ("probability", "rouge_l_recall", "truth_ratio")
    }
    assert retention["minimum"] == min(retention["components"].values())
    assert unlearned["calibration"]["discrimination"]["target_forget_quality"] == target["forget_quality"]
    md = (tmp_path / "unlearned" / "regularized_ft" / "eval_forget10.md").read_text()
    assert "## Calibration" in md and "noise floor" in md and "| retain/rouge_l_recall |" in md
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| target | (before unlearning) |" in report and (tmp_path / "report" / "fq_vs_mu.png").stat().st_size

    ref2 = finetune(
        FinetuneConfig(
            data=str(tmp_path / "data"), split="retain90", seed=1, output_dir=str(tmp_path / "reference_seed1")
        )
    )
    second = run_eval(str(ref2), str(tmp_path / "reference"), str(tmp_path / "data"), EvalConfig())
    assert second["forget_quality"] > 0.05

    # A second run of the pipeline reuses every finished stage: no weights file is written again.
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors") if ".partial" not in str(p)}
    assert any("target" in str(p) for p in written) and any("regularized_ft" in str(p) for p in written)
    again = run_embedded_pipeline(tmp_path, method="regularized_ft")
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert again["unlearned"]["forget_quality"] == unlearned["forget_quality"]
