"""End to end on the embedded default: the benchmark discriminates the target from the retrained reference.

Slow (about 2.5 minutes on 2 cores): it trains the target, the reference and a second reference.
"""

import pytest


@pytest.mark.slow
def test_embedded_pipeline_discriminates(tmp_path):
    from llm_unlearn.cli import run_eval
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.pipeline import run_embedded_pipeline

    run = run_embedded_pipeline(tmp_path)
    target = run["compared"]
    s, r = target["summary"], target["reference_summary"]
    assert target["forget_quality"] < 0.01
    assert s["forget/rouge_l_recall"] >= 0.9
    assert r["forget/rouge_l_recall"] <= 0.5
    assert s["retain/rouge_l_recall"] >= 0.9 and r["retain/rouge_l_recall"] >= 0.9
    assert set(run["timings"]) == {"data", "target", "reference", "evaluation"}

    ref2 = finetune(
        FinetuneConfig(
            data=str(tmp_path / "data"), split="retain90", seed=1, output_dir=str(tmp_path / "reference_seed1")
        )
    )
    second = run_eval(str(ref2), str(tmp_path / "reference"), str(tmp_path / "data"), EvalConfig())
    assert second["forget_quality"] > 0.05

    # A second run of the pipeline reuses every finished stage.
    again = run_embedded_pipeline(tmp_path)
    assert again["timings"]["target"] < 5 and again["compared"]["forget_quality"] == target["forget_quality"]
