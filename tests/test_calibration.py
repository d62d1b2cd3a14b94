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


def test_one_test_verdict_several_references_must_agree():
    assert C.test_verdict([1e-4, 1e-5], 0.01, None)[0] == C.DISTINGUISHABLE
    assert C.test_verdict([0.3, 0.02], 0.01, None)[0] == C.NOT_DISTINGUISHABLE
    assert C.test_verdict([1e-4, 0.3], 0.01, None)[0] == C.UNDETERMINED  # no median of p-values
    assert C.test_verdict([1e-4, 0.3, 0.2], 0.01, [1e-30])[0] == C.UNDETERMINED


def test_one_test_verdict_one_reference_needs_the_floor_below_0_05():
    # the replica of the other generator's benchmark: 0.0061 against one reference whose untouched target has 1.2e-4
    status, bar = C.test_verdict([0.0061], 0.05, [1.2e-4])
    assert status == C.UNDETERMINED and bar == pytest.approx((1.2e-4 * 0.05) ** 0.5)
    assert C.test_verdict([0.06], 0.05, [1e-30])[0] == C.NOT_DISTINGUISHABLE
    assert C.test_verdict([1.2e-4], 0.05, [1.2e-4])[0] == C.DISTINGUISHABLE  # the target itself
    assert C.test_verdict([1e-6], 0.05, None)[0] == C.UNDETERMINED  # no target: no bar for a claim


def test_calibrate_reports_the_resampled_floor_and_reads_the_verdict_against_it():
    refs = [result("r1", A), result("r2", B)]
    cal = C.calibrate(result("m", A), refs, None, False)
    assert cal["noise_floor_resampled"] == C.resampled_floor([A, B])
    assert cal["verdict"]["threshold"] == min(0.05, cal["noise_floor_resampled"])
    assert cal["tests"]["forget_quality"]["bar"] == cal["verdict"]["threshold"]


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
    tests = C.run_tests(r, refs, None, C.test_statistics(rows))
    pm = C.phrasing_matched(tests, ["answer", "paraphrase"])
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
    assert cal["tests"]["forget_quality"]["status"] == C.NOT_DISTINGUISHABLE  # the truth ratios are the references'
    # without the target every test counts (said so): the answers' test makes the headline, with its direction
    assert cal["verdict"]["distinguishable"] and cal["verdict"]["tests"] == ["answers"]
    assert "over-unlearned" in cal["verdict"]["text"] and "pass --target" in cal["verdict"]["text"]
    ap = cal["answer_probability"]
    assert ap["distinguishable"] and ap["over_unlearned"] and ap["p_median"] < 1e-10
    assert ap["noise_floor"] == pytest.approx(1.0)  # the references' losses are the same values
    assert ap["median_probability"] == pytest.approx(math.exp(-(1.39 + 4.0)), rel=0.02)
    assert "LESS likely" in ap["text"] and "over-unlearned" in ap["text"]
    assert any(line.startswith("The answers' test, the forget answers") for line in C.calibration_lines(cal))
    kept = with_losses(result("kept", ratios), [0.01] * n)  # the untouched target: more likely than retraining
    ap = C.calibrate(kept, refs, None, False)["answer_probability"]
    assert ap["distinguishable"] and not ap["over_unlearned"] and "MORE likely" in ap["text"]
    like = C.calibrate(with_losses(result("like", ratios), ref_losses), refs, None, False)["answer_probability"]
    assert not like["distinguishable"] and "not distinguishable from retraining by this test" in like["text"]
    assert C.calibrate(result("no_losses", ratios), refs, None, False)["answer_probability"] is None


# --- the headline: read from the tests that discriminate -------------------------------------------------------------


def _model(name, ratios, losses):
    return with_losses(result(name, ratios), losses)


def _spread(n, start, step):
    return [start + step * i for i in range(n)]


N = 40
REF_RATIOS = [(i + 0.5) / N for i in range(N)]
REF_LOSSES = _spread(N, 1.0, 0.02)


def _refs(k):
    """k retrained references: the same truth-ratio and loss distributions, items in other orders."""
    out = []
    for j in range(k):
        shift = j * 7 % N
        out.append(_model(f"r{j}", REF_RATIOS[shift:] + REF_RATIOS[:shift], REF_LOSSES[shift:] + REF_LOSSES[:shift]))
    return out


def test_the_headline_never_rests_on_a_test_that_cannot_see_the_target():
    """The disagreeing case of the issue: the truth ratios cannot tell the untouched target from retraining (its
    forget quality is near the references'), the answers' test can. A model whose truth ratios differ from the
    references' (forget quality alone would call it distinguishable) but whose answers are as likely as under
    retraining is not distinguishable, and the verdict says by which test; the discrimination line names the same."""
    refs = _refs(2)
    target = _model("target", [r * 1.02 for r in REF_RATIOS], [0.02] * N)  # truth ratios ~ the references'
    odd = _model("odd", [r + 2.0 for r in REF_RATIOS], REF_LOSSES)  # truth ratios off, answers like retraining
    cal = C.calibrate(odd, refs, target, target_is_model=False)
    tests = cal["tests"]
    assert tests["forget_quality"]["status"] == C.DISTINGUISHABLE  # what the old headline read
    assert tests["forget_quality"]["discriminates"] is False and tests["answers"]["discriminates"] is True
    assert cal["verdict"]["status"] == C.NOT_DISTINGUISHABLE and cal["verdict"]["tests"] == ["answers"]
    assert "the answers' test" in cal["verdict"]["text"]
    assert cal["discrimination"]["counting_tests"] == ["answers"]
    assert "not informative here: forget quality" in cal["discrimination"]["text"]
    # the same references and target judge the target itself: distinguishable, by the test that sees it
    own = C.calibrate(target, refs, target, target_is_model=True)
    assert own["verdict"]["status"] == C.DISTINGUISHABLE and own["verdict"]["tests"] == ["answers"]
    assert "MORE likely" in own["verdict"]["text"]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_retrained_replica_is_never_distinguishable_and_the_target_always_is(k):
    refs = _refs(k)
    target = _model("target", [r * 0.2 for r in REF_RATIOS], [0.01] * N)
    replica = _model("replica", REF_RATIOS[3:] + REF_RATIOS[:3], [x + 0.01 for x in REF_LOSSES])
    assert C.calibrate(target, refs, target, target_is_model=True)["verdict"]["status"] == C.DISTINGUISHABLE
    assert C.calibrate(replica, refs, target, target_is_model=False)["verdict"]["status"] != C.DISTINGUISHABLE


def test_a_replica_with_one_reference_whose_forget_quality_is_low_is_undetermined_not_distinguishable():
    """One reference: a p-value below 0.05 but far above the target's is what retrained models themselves can get
    on some benchmarks (the noise floor is unknown): undetermined."""
    (ref,) = _refs(1)
    target = _model("target", [r * 0.05 for r in REF_RATIOS], [0.01] * N)
    near = _model("near", [r * 0.65 for r in REF_RATIOS], REF_LOSSES)  # FQ against the reference below 0.05
    t = C.calibrate(near, [ref], target, target_is_model=False)["tests"]["forget_quality"]
    assert t["p_per_reference"][0] < 0.05 and t["p_per_reference"][0] > t["claim_bar"]
    assert t["status"] == C.UNDETERMINED


def test_no_test_that_sees_the_target_means_undetermined():
    refs = _refs(2)
    blind_target = _model("target", REF_RATIOS[::-1], REF_LOSSES[::-1])  # the references' own distributions
    cal = C.calibrate(_model("m", [r + 3 for r in REF_RATIOS], REF_LOSSES), refs, blind_target, False)
    assert cal["verdict"]["status"] == C.UNDETERMINED and cal["verdict"]["distinguishable"] is None
    assert "no test tells the untouched target from retraining" in cal["verdict"]["text"]
    assert cal["discrimination"]["counting_tests"] == []
