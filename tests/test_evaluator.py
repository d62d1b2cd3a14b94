"""Comparison logic on hand-made results (no model)."""

import pytest

from llm_unlearn.evaluation.evaluator import ROLES, compare, markdown_table, model_utility


def _result(ratios, fingerprint="abc", agg=0.5):
    splits = {
        role: {
            "aggregate": {"probability": agg, "truth_ratio": agg, "rouge_l_recall": agg},
            "items": [{"truth_ratio": r} for r in ratios],
        }
        for role in ROLES
    }
    return {
        "kind": "llm_unlearn.eval",
        "model": "m",
        "data": "d",
        "data_fingerprint": fingerprint,
        "config": {"forget_split": "forget10"},
        "splits": splits,
        "model_utility": model_utility(splits),
    }


def test_model_utility_is_harmonic_mean_of_nine_numbers():
    r = _result([1.0])
    r["splits"]["retain"]["aggregate"]["rouge_l_recall"] = 0.25
    # eight values of 0.5 and one of 0.25: 9 / (8 * 2 + 4)
    assert model_utility(r["splits"]) == pytest.approx(9 / 20)
    r["splits"]["world_facts"]["aggregate"]["probability"] = 0.0
    assert model_utility(r["splits"]) == 0.0


def test_compare_computes_forget_quality_and_table():
    c = compare(_result([1.0, 2.0, 3.0]), _result([4.0, 5.0, 6.0]))
    assert c["forget_quality"] == pytest.approx(0.1)
    table = markdown_table(c)
    assert table.splitlines()[0] == "| metric | model | reference | gap |"
    assert "| **Forget quality** (KS p) | 0.1 | 1 | -0.9 |" in table
    assert len(table.splitlines()) == 2 + 2 + 3 * len(ROLES)


def test_compare_refuses_missing_or_mismatched_reference():
    with pytest.raises(ValueError, match="retrained reference"):
        compare(_result([1.0]), None)
    with pytest.raises(ValueError, match="other data"):
        compare(_result([1.0]), _result([1.0], fingerprint="other"))
