"""Calibrated forget quality (noise floor, verdict, discrimination) and utility retention, on hand-made results."""

import pytest

from llm_unlearn.evaluation import calibration as C
from llm_unlearn.evaluation import metrics as M

UTILITY = {"probability": 0.8, "rouge_l_recall": 0.9, "truth_ratio": 0.5}


def result(name, ratios, utility=None, forget=None):
    """The parts of an evaluation result that calibration reads."""
    splits = {
        "forget": {
            "items": [{"truth_ratio": r} for r in ratios],
            "aggregate": {"probability": 0.5, "truth_ratio": 0.6, "rouge_l_recall": 0.5, **(forget or {})},
        }
    }
    for role in C.UTILITY_ROLES:
        splits[role] = {"items": [], "aggregate": dict((utility or {}).get(role, UTILITY))}
    return {
        "kind": "llm_unlearn.eval",
        "model": name,
        "data": "d",
        "data_fingerprint": "f",
        "config": {"forget_split": "forget10"},
        "benchmark": "qa",
        "model_utility": 0.7,
        "splits": splits,
        "privacy": None,
    }


A = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
B = [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85]
FAR = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]


def test_noise_floor_is_the_lowest_forget_quality_between_references():
    assert C.noise_floor([result("r1", A)]) == (None, [])
    floor, pairs = C.noise_floor([result("r1", A), result("r2", B), result("r3", FAR)])
    assert len(pairs) == 3
    assert floor == pytest.approx(M.forget_quality(A, FAR)) == pytest.approx(M.forget_quality(B, FAR))
    assert {(p["a"], p["b"]) for p in pairs} == {("r1", "r2"), ("r1", "r3"), ("r2", "r3")}


def test_verdict_needs_both_0_05_and_the_floor():
    assert C.verdict(0.2, 0.5)["distinguishable"]  # above 0.05, below what retraining itself reaches
    assert not C.verdict(0.6, 0.5)["distinguishable"]
    assert not C.verdict(0.06, 1e-7)["distinguishable"]
    assert C.verdict(0.01, 1e-7)["distinguishable"]  # a low floor does not lower the 0.05 bar
    text = C.verdict(0.3, None)["text"]
    assert "not distinguishable" in text and "noise floor is unknown" in text and "--data_seed" in text


def test_resampled_floor_is_the_low_quantile_of_reference_pairs_over_item_resamples():
    import numpy as np

    rng = np.random.default_rng(3)
    ref = rng.random(30)
    replica = np.round(ref + rng.normal(0, 0.05, 30), 1)  # rounded: ties, as resampled items always have
    ref = np.round(ref, 1)
    # the same numbers as resampling by hand and running the KS test on every resample (the statistic cache is exact)
    draw = np.random.default_rng(0)
    by_hand = []
    for _ in range(200):
        idx = draw.integers(0, 30, 30)
        by_hand.append(M.forget_quality(ref[idx], replica[idx]))
    low = C.resampled_floor([ref, replica], n_resamples=200, seed=0)
    assert low == pytest.approx(np.quantile(by_hand, C.FLOOR_QUANTILE), abs=1e-12)
    assert low < M.forget_quality(ref, replica)  # one draw sits well above the low end of its own resamples
    assert C.resampled_floor([ref]) is None
    assert C.resampled_floor([ref, ref]) == 1.0  # identical references: no noise to measure
    with pytest.raises(ValueError, match="items"):
        C.resampled_floor([ref, replica[:-1]])


def test_verdict_bar_is_the_resampled_floor_when_there_is_one():
    # the embedded forget10: the two references score 0.993 against each other, retrained models 0.93-0.96
    assert C.verdict(0.932, 0.993)["distinguishable"]  # a bar at the one observed draw rejects retraining
    v = C.verdict(0.932, 0.993, 0.186)
    assert not v["distinguishable"] and v["threshold"] == 0.186 and "resampled 5 % bound 0.186" in v["text"]
    assert C.verdict(0.1, 0.993, 0.186)["distinguishable"]
    assert C.verdict(0.04, 0.993, 0.01)["distinguishable"] and C.verdict(0.04, 0.993, 0.01)["threshold"] == 0.05


def test_calibrate_reports_the_resampled_floor_and_reads_the_verdict_against_it():
    refs = [result("r1", A), result("r2", B)]
    cal = C.calibrate(result("m", A), refs, None, False)
    assert cal["noise_floor_resampled"] == C.resampled_floor([A, B])
    assert cal["verdict"]["threshold"] == max(0.05, cal["noise_floor_resampled"])


def test_discrimination_names_the_measures_that_see_the_forget_set():
    target = {
        "forget/probability": 0.97,
        "forget/rouge_l_recall": 1.0,
        "mia_auc/min_k": 0.55,
        "forget/truth_ratio": 0.5,
    }
    ref = {"forget/probability": 0.3, "forget/rouge_l_recall": 0.3, "mia_auc/min_k": 0.5, "forget/truth_ratio": 0.52}
    blind = C.discrimination(0.17, 1e-7, target, ref)
    assert not blind["informative"]
    assert [m["measure"] for m in blind["discriminating_measures"]] == ["forget/probability", "forget/rouge_l_recall"]
    assert "NOT informative" in blind["text"] and "forget probability (target − reference +0.67)" in blind["text"]
    assert "membership" not in blind["text"]  # a gap of 0.05 in AUC does not count
    assert C.discrimination(1e-12, 0.6, target, ref)["informative"]  # far below min(0.05, floor) / 100
    assert not C.discrimination(1e-3, 0.6, target, ref)["informative"]  # the bar is 0.05 / 100 with a floor of 0.6
    # retrained models get down to 1e-6 on resampled items: the target must be far below that, not below 0.05
    assert C.discrimination(1e-4, 0.6, target, ref)["informative"]
    low = C.discrimination(1e-4, 0.6, target, ref, floor_low=1e-6)
    assert not low["informative"] and "not far below 1e-06" in low["text"]


def test_utility_retention_shows_the_collapse_a_harmonic_mean_hides():
    target = result("t", A)
    collapsed = result("u", A, utility={"retain": {"probability": 0.26, "rouge_l_recall": 0.38, "truth_ratio": 0.5}})
    r = C.utility_retention(collapsed, target)
    assert r["components"]["retain/probability"] == pytest.approx(0.26 / 0.8)
    assert r["components"]["world_facts/truth_ratio"] == pytest.approx(1.0)
    assert r["minimum"] == pytest.approx(0.26 / 0.8) and r["worst"] == "retain/probability"
    assert r["below_90"] == ["retain/probability", "retain/rouge_l_recall"]
    assert "WARNING: below 90 %" in r["text"]
    assert C.utility_retention(target, target)["below_90"] == []


def test_retention_says_how_much_one_item_moves_it():
    target = result("t", A)
    target["splits"]["real_authors"]["items"] = [{"probability": 0.8, "rouge_l_recall": 1.0, "truth_ratio": 0.5}] * 20
    one_lost = result("u", A, utility={**{r: UTILITY for r in C.UTILITY_ROLES}, "real_authors": {**UTILITY}})
    one_lost["splits"]["real_authors"]["aggregate"]["rouge_l_recall"] = 0.9 * 19 / 20
    r = C.utility_retention(one_lost, target)
    assert r["one_item"]["real_authors/rouge_l_recall"] == pytest.approx(1 / 20)
    assert r["worst"] == "real_authors/rouge_l_recall" and r["minimum"] == pytest.approx(0.95)
    assert r["within_one_item"] and "about 1/20, so the loss is within one item" in r["text"]
    two_lost = result("u", A)
    two_lost["splits"]["real_authors"]["aggregate"]["rouge_l_recall"] = 0.9 * 18 / 20
    r2 = C.utility_retention(two_lost, target)
    assert not r2["within_one_item"] and "within one item" not in r2["text"]
    assert r2["one_item"]["retain/probability"] != r2["one_item"]["retain/probability"]  # no items: unknown (NaN)


def test_calibrate_against_two_references_with_the_target():
    refs = [result("r1", A), result("r2", B)]
    target, unlearned = result("t", FAR), result("u", B)
    cal = C.calibrate(unlearned, refs, target, target_is_model=False)
    assert cal["forget_quality_per_reference"] == [M.forget_quality(B, A), M.forget_quality(B, B)]
    assert cal["noise_floor"] == pytest.approx(M.forget_quality(A, B))
    assert cal["discrimination"]["target_forget_quality"] == pytest.approx(M.forget_quality(FAR, A))
    assert cal["utility_retention"]["minimum"] == pytest.approx(1.0)
    lines = C.calibration_lines(cal)
    assert lines[0].startswith("Verdict: not distinguishable from retraining")
    assert any("against each of the 2 references" in line for line in lines)
    own = C.calibrate(target, refs[:1], target, target_is_model=True)
    assert own["utility_retention"] is None and own["noise_floor"] is None
    assert own["verdict"]["distinguishable"]
    assert "Utility retention: 1 by definition (this is the untouched target)." in C.calibration_lines(own)
    unknown = C.calibrate(unlearned, refs, None, target_is_model=False)
    assert unknown["discrimination"] is None
    assert "Utility retention: unknown (the untouched target was not evaluated; pass --target)." in (
        C.calibration_lines(unknown)
    )


def test_phrasing_matched_truth_ratio_compares_wrong_answers_with_the_correct_answer_in_their_phrasing():
    rows = [
        {  # wrong answers phrased like the trained answer, not like the paraphrase
            "answer": "He was born in 1962 in Lisbon.",
            "paraphrased_answer": "Lisbon, 1962.",
            "perturbed_answer": ["He was born in 1931 in Oslo.", "He was born in 1950 in Rome."],
        },
        {  # TOFU's case: the wrong answers follow the paraphrase
            "answer": "She writes horror stories.",
            "paraphrased_answer": "Her books are mostly about war.",
            "perturbed_answer": ["Her books are mostly about love."],
        },
    ]
    assert C.phrasing_choice(rows) == ["answer", "paraphrase"]

    def res(name, losses):
        items = [
            {"answer_loss": a, "paraphrase_loss": p, "perturbed_losses": w, "truth_ratio": 1.0} for a, p, w in losses
        ]
        return {"model": name, "splits": {"forget": {"items": items}}}

    r = res("m", [(0.1, 2.0, [1.0, 3.0]), (0.5, 1.5, [2.5])])
    assert C.matched_ratios(r, ["answer", "paraphrase"]) == pytest.approx(
        [M.truth_ratio(0.1, [1.0, 3.0]), M.truth_ratio(1.5, [2.5])]
    )
    refs = [
        res("r1", [(1.0, 1.0, [1.0, 1.0]), (1.0, 1.2, [1.1])]),
        res("r2", [(1.1, 1.0, [1.0, 1.2]), (1.0, 1.0, [1.0])]),
    ]
    pm = C.phrasing_matched(r, refs, r, ["answer", "paraphrase"], {"discrimination": None, "noise_floor": None})
    assert pm["correct_variant_counts"] == {"answer": 1, "paraphrase": 1}
    assert pm["noise_floor"] == pytest.approx(
        M.forget_quality(
            C.matched_ratios(refs[0], ["answer", "paraphrase"]), C.matched_ratios(refs[1], ["answer", "paraphrase"])
        )
    )
    assert pm["discriminates_better"].startswith("unknown")  # no standard discrimination to compare with


def with_losses(res, losses):
    for it, loss in zip(res["splits"]["forget"]["items"], losses):
        it["answer_loss"] = loss
    return res


def test_answer_probability_catches_a_model_whose_truth_ratios_pass_but_whose_answers_vanished():
    import math

    n = 40
    ratios = [(i + 0.5) / n for i in range(n)]
    ref_losses = [1.0 + 0.02 * i for i in range(n)]  # probabilities around 0.5 to 0.22
    refs = [with_losses(result("r1", ratios), ref_losses), with_losses(result("r2", ratios), ref_losses[::-1])]
    flat = with_losses(result("flat", ratios), [x + 4.0 for x in ref_losses])  # same ratios, answers ~e^-4 as likely
    cal = C.calibrate(flat, refs, None, False)
    assert not cal["verdict"]["distinguishable"]  # the truth ratios are the references' own
    ap = cal["answer_probability"]
    assert ap["distinguishable"] and ap["over_unlearned"] and ap["p_median"] < 1e-10
    assert ap["noise_floor"] == pytest.approx(1.0)  # the references' losses are the same values
    assert ap["median_probability"] == pytest.approx(math.exp(-(1.39 + 4.0)), rel=0.02)
    assert "LESS likely" in ap["text"] and "over-unlearned" in ap["text"]
    assert any(line.startswith("Second opinion, the forget answers") for line in C.calibration_lines(cal))
    kept = with_losses(result("kept", ratios), [0.01] * n)  # the untouched target: more likely than retraining
    ap = C.calibrate(kept, refs, None, False)["answer_probability"]
    assert ap["distinguishable"] and not ap["over_unlearned"] and "MORE likely" in ap["text"]
    like = C.calibrate(with_losses(result("like", ratios), ref_losses), refs, None, False)["answer_probability"]
    assert not like["distinguishable"] and "not distinguishable from retraining by this test" in like["text"]
    assert C.calibrate(result("no_losses", ratios), refs, None, False)["answer_probability"] is None
