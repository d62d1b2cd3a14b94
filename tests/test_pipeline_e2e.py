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
    assert set(run["timings"]) == {"data", "target", "reference", "unlearning", "evaluation"}
    # Membership inference: the target's forget items are told from never-seen holdout items, the reference's not.
    assert s["mia_auc/min_k"] > 0.9 and 0.3 < r["mia_auc/min_k"] < 0.7
    assert s["privleak"] > 50 and r["privleak"] == 0.0
    # The default core method moves forget quality toward the reference by orders of magnitude, keeping utility.
    unlearned = run["unlearned"]
    assert unlearned["forget_quality"] > 1000 * target["forget_quality"]
    assert unlearned["summary"]["forget/rouge_l_recall"] < 0.6
    assert unlearned["model_utility"] > 0.8 * target["model_utility"]
    assert unlearned["summary"]["privleak"] < s["privleak"]  # unlearning moves PrivLeak toward 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| target | (before unlearning) |" in report and (tmp_path / "report" / "fq_vs_mu.png").stat().st_size

    ref2 = finetune(
        FinetuneConfig(
            data=str(tmp_path / "data"), split="retain90", seed=1, output_dir=str(tmp_path / "reference_seed1")
        )
    )
    second = run_eval(str(ref2), str(tmp_path / "reference"), str(tmp_path / "data"), EvalConfig())
    assert second["forget_quality"] > 0.05

    # A second run of the pipeline reuses every finished stage.
    again = run_embedded_pipeline(tmp_path, method="regularized_ft")
    assert again["timings"]["target"] < 5 and again["timings"]["unlearning"] < 15
    assert again["unlearned"]["forget_quality"] == unlearned["forget_quality"]
