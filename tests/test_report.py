"""Reports: bootstrap intervals on hand-computed inputs, the Markdown and PNGs of one evaluation, and
``llm-unlearn report`` over several evaluated runs (tiny models, a few seconds)."""

import json
import shutil

import numpy as np
import pytest

from llm_unlearn.cli import main
from llm_unlearn.evaluation import metrics as M
from llm_unlearn.evaluation import report as R

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- bootstrap: pure functions ---------------------------------------------------------------------------------------


def test_ci_of_a_constant_sample_is_that_constant():
    lo, hi = R.bootstrap_mean_ci([0.3] * 25, n_resamples=200, seed=1)
    assert lo == pytest.approx(0.3, abs=1e-12) and hi == pytest.approx(0.3, abs=1e-12)


def test_ci_of_a_mean_contains_it_shrinks_with_n_and_is_reproducible():
    rng = np.random.default_rng(0)
    small, large = rng.normal(2.0, 1.0, 30), rng.normal(2.0, 1.0, 3000)
    lo_s, hi_s = R.bootstrap_mean_ci(small, seed=3)
    lo_l, hi_l = R.bootstrap_mean_ci(large, seed=3)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    # the width of a mean's interval scales like 1/sqrt(n): 10x smaller for 100x the items (within 25 %)
    assert (hi_l - lo_l) == pytest.approx((hi_s - lo_s) / 10, rel=0.25)
    # and like 2 * 1.96 * sd / sqrt(n) (normal approximation)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * large.std() / np.sqrt(len(large)), rel=0.1)
    assert R.bootstrap_mean_ci(small, seed=3) == (lo_s, hi_s)
    assert R.bootstrap_mean_ci(small, seed=4) != (lo_s, hi_s)


def test_counts_are_multiplicities_of_drawn_indices():
    counts = R.bootstrap_counts(7, 50, np.random.default_rng(0))
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all() and (counts >= 0).all()
    # the same generator state draws the same indices
    idx = np.random.default_rng(0).integers(0, 7, size=(50, 7))
    np.testing.assert_array_equal(counts[5], np.bincount(idx[5], minlength=7))


def test_resampled_statistics_equal_the_metric_on_the_resampled_items():
    rng = np.random.default_rng(2)
    members, nonmembers = rng.normal(1, 1, 9).round(1), rng.normal(0, 1, 6).round(1)  # rounding makes ties
    cm, ch = R.bootstrap_counts(9, 20, rng), R.bootstrap_counts(6, 20, rng)
    aucs = R.resampled_auc(members, nonmembers, cm, ch)
    for b in range(20):
        m, h = np.repeat(members, cm[b].astype(int)), np.repeat(nonmembers, ch[b].astype(int))
        assert aucs[b] == pytest.approx(M.roc_auc(m, h))
        assert R.resampled_means(members, cm)[b] == pytest.approx(m.mean())
    # all items once: the AUC of the data itself
    assert R.resampled_auc(members, nonmembers, np.ones((1, 9)), np.ones((1, 6)))[0] == pytest.approx(
        M.roc_auc(members, nonmembers)
    )
    values = np.array([[0.5, 0.2], [0.25, 0.0], [1.0, 0.7]])
    hm = R.resampled_harmonic_mean(values)
    assert hm[0] == pytest.approx(M.harmonic_mean([0.5, 0.25, 1.0])) and hm[1] == 0.0


def test_truth_ratio_contributions_follow_the_split_rule():
    items = [{"truth_ratio": 0.5}, {"truth_ratio": 2.0}, {"truth_ratio": 1.0}]
    np.testing.assert_allclose(R.item_contributions(items, "forget", "truth_ratio"), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(R.item_contributions(items, "retain", "truth_ratio"), [0.5, 0.0, 0.0])
    assert R.item_contributions(items, "forget", "rouge_l_recall") is None  # not in the items: no interval
    assert R.forget_truth_ratios({"splits": {"verbmem": {"items": [{"rouge_l_f1": 1.0}]}}}) is None


def _hand_result(values_by_role: dict, ratios: list[float]) -> dict:
    """A result whose per-item values are given; aggregates computed as the evaluator does."""
    from llm_unlearn.evaluation.evaluator import ROLES, model_utility, summary

    splits = {}
    for role in ROLES:
        items = [
            {"probability": v, "rouge_l_recall": v, "truth_ratio": r}
            for v, r in zip(values_by_role.get(role, [0.5] * len(ratios)), ratios)
        ]
        tr = [it["truth_ratio"] for it in items]
        agg = {
            "probability": float(np.mean([it["probability"] for it in items])),
            "rouge_l_recall": float(np.mean([it["rouge_l_recall"] for it in items])),
            "truth_ratio": M.forget_truth_ratio(tr) if role == "forget" else M.retain_truth_ratio(tr),
        }
        splits[role] = {"items": items, "aggregate": agg}
    result = {"splits": splits, "model_utility": model_utility(splits)}
    result["summary"] = summary(result)
    return result


def test_model_utility_interval_resamples_the_three_splits():
    constant = _hand_result({}, [0.4, 0.4, 0.4, 0.4])
    cis = R.summary_intervals(constant, constant["summary"], None, R._Resampler(300, 0))
    mu = constant["model_utility"]
    assert cis["model_utility"] == pytest.approx((mu, mu))  # nothing varies: a point
    varied = _hand_result({"retain": [0.1, 0.9, 0.5, 0.7]}, [0.2, 3.0, 0.9, 0.5])
    cis = R.summary_intervals(varied, varied["summary"], None, R._Resampler(300, 0))
    lo, hi = cis["model_utility"]
    assert lo < varied["model_utility"] < hi
    lo, hi = cis["retain/probability"]
    assert lo < 0.55 < hi
    # a stored value the items do not reproduce gets no interval rather than a wrong one
    tampered = dict(varied["summary"], **{"retain/probability": 0.99})
    assert R.summary_intervals(varied, tampered, None, R._Resampler(50, 0))["retain/probability"] is None
    assert R.summary_intervals(varied, {"forget_quality": 0.3}, None, R._Resampler(50, 0)) == {"forget_quality": None}


# --- real evaluations of tiny models ---------------------------------------------------------------------------------

TINY = dict(num_train_epochs=2, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)


@pytest.fixture(scope="module")
def evaluated(small_bench, tiny_tokenizer, tmp_path_factory):
    """Three evaluated run folders: a target trained on ``full``, an untrained model, and the reference evaluated
    against itself. The reference is an untrained model of another seed: training a second model would double the
    cost of this file and the report code does not care how the reference was made."""
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.modeling import build_tiny_llama

    root = tmp_path_factory.mktemp("runs")
    runs = {"target": finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "target"), **TINY))}
    for name, seed in (("untrained", 1), ("ref", 2)):
        runs[name] = root / name
        build_tiny_llama(tiny_tokenizer, seed=seed, hidden_size=32, num_layers=1).save_pretrained(runs[name])
        tiny_tokenizer.save_pretrained(runs[name])
    for name in ("target", "untrained", "ref"):
        args = ["eval", "--model", str(runs[name]), "--reference", str(runs["ref"]), "--data", str(small_bench)]
        assert main([*args, "--max_new_tokens", "4"]) == 0
    return runs


def _png_shape(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(path).shape


def test_eval_writes_markdown_with_intervals_and_an_ecdf_png(evaluated, capsys):
    target = evaluated["target"]
    compared = json.loads((target / "eval_forget10.json").read_text())
    assert "reference_result" in compared
    cis = R.bootstrap_cis(compared, seed=0)
    # intervals exist for every item-derived key, and bracket the point estimates
    for side, summary in (("model", compared["summary"]), ("reference", compared["reference_summary"])):
        for key, value in summary.items():
            ci = cis[side][key]
            if key == "forget_quality" or (side == "reference" and key == "privleak"):
                assert ci is None  # a p-value / 0 by definition
                continue
            assert ci is not None, (side, key)
            assert ci[0] - 1e-9 <= value <= ci[1] + 1e-9, (side, key, ci, value)
    md = (target / "eval_forget10.md").read_text()
    assert "| metric | model | 95 % CI | reference | 95 % CI | gap |" in md
    mu, ref_mu = compared["summary"]["model_utility"], compared["reference_summary"]["model_utility"]
    row = next(line for line in md.splitlines() if line.startswith("| **Model utility**"))
    lo, hi = cis["model"]["model_utility"]
    rlo, rhi = cis["reference"]["model_utility"]
    expected = f"| {mu:.4g} | [{lo:.3g}, {hi:.3g}] | {ref_mu:.4g} | [{rlo:.3g}, {rhi:.3g}] | {mu - ref_mu:+.4g} |"
    assert row.endswith(expected)
    fq_row = next(line for line in md.splitlines() if "Forget quality" in line and line.startswith("|"))
    assert fq_row.split("|")[3].strip() == "–"  # no interval for a p-value, and the report says why
    assert "p-value, not an estimate" in md and "Forget quality is" in md
    assert "![forget truth-ratio ECDFs](eval_forget10_truth_ratio_ecdf.png)" in md
    png = target / "eval_forget10_truth_ratio_ecdf.png"
    h, w, channels = _png_shape(png)
    assert h > 300 and w > 500 and channels in (3, 4)
    # same seed, same report
    R.write_eval_report(compared, target / "eval_forget10.json", seed=0)
    assert (target / "eval_forget10.md").read_text() == md


def test_report_without_truth_ratios_or_reference_items_degrades(evaluated, tmp_path):
    compared = json.loads((evaluated["target"] / "eval_forget10.json").read_text())
    # an evaluation written before the reference's items travelled with it: no reference intervals, model-only ECDF
    old = {k: v for k, v in compared.items() if k != "reference_result"}
    files = R.write_eval_report(old, tmp_path / "old.json")
    assert [p.name for p in files] == ["old.md", "old_truth_ratio_ecdf.png"]
    assert "not in this file" in (tmp_path / "old.md").read_text()
    assert all(v is None for v in R.bootstrap_cis(old)["reference"].values())
    # a raw-text-like evaluation: no truth ratios, other metric keys, members in privacy["forget_items"]
    docs = compared["privacy"]["holdout_items"]
    text = {
        "benchmark": "text",
        "model": "m",
        "reference": "r",
        "splits": {"verbmem": {"items": [{"rouge_l_f1": 0.25}, {"rouge_l_f1": 0.75}]}},
        "privacy": {"forget_items": compared["splits"]["forget"]["items"], "holdout_items": docs},
        "summary": {"verbmem/rouge_l_f1": 0.5, "mia_auc/min_k": compared["summary"]["mia_auc/min_k"], "x/new": 1.0},
        "reference_summary": {"verbmem/rouge_l_f1": 0.4},
    }
    files = R.write_eval_report(text, tmp_path / "text.json")
    assert [p.name for p in files] == ["text.md"]
    md = (tmp_path / "text.md").read_text()
    assert "no ECDF plot" in md and "| x/new | 1 | – | – | – | – |" in md
    cis = R.bootstrap_cis(text)["model"]
    assert cis["verbmem/rouge_l_f1"] is not None and cis["mia_auc/min_k"] is not None and cis["x/new"] is None


def test_report_command_over_runs(evaluated, small_bench, tmp_path, capsys):
    out = tmp_path / "report"
    dirs = [str(evaluated[n]) for n in ("target", "untrained", "ref")]
    assert main(["report", *dirs, "--out", str(out), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run | method | forget quality | model utility | utility 95 % CI |")
    assert len(table) == 1 + 1 + 3  # header, reference, one row per run
    assert table[1].startswith("| **retrained reference** |")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["target", "untrained", "ref"]
    assert table[2] in printed
    ref_row = table[-1].split("|")  # the reference evaluated against itself: forget quality 1
    assert ref_row[3].strip() == "1"
    h, w, _ = _png_shape(out / "fq_vs_mu.png")
    assert h > 300 and w > 500
    for name in ("target", "untrained", "ref"):
        assert _png_shape(out / f"truth_ratio_ecdf_{name}.png")[0] > 300
        assert f"(truth_ratio_ecdf_{name}.png)" in md
    # an earlier report is replaced in place; a folder it did not write is refused, unless --overwrite
    assert main(["report", dirs[0], "--out", str(out), "--bootstrap", "0"]) == 0
    assert not (out / "truth_ratio_ecdf_untrained.png").exists()  # stale plots of the earlier report are gone
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["report", dirs[0], "--out", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["report", dirs[0], "--out", str(foreign), "--overwrite", "--bootstrap", "0"]) == 0
    assert (foreign / "keep.txt").read_text() == "mine"


def test_report_errors_name_the_run(evaluated, tmp_path, capsys):
    empty = tmp_path / "not_evaluated"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "no evaluation" in err and "llm-unlearn eval" in err
    # a run evaluated on other data cannot share a table with the others
    other = tmp_path / "other_run"
    shutil.copytree(evaluated["untrained"], other)
    result = json.loads((other / "eval_forget10.json").read_text())
    result["data_fingerprint"] = "something else"
    (other / "eval_forget10.json").write_text(json.dumps(result))
    assert main(["report", str(evaluated["target"]), str(other), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "other data" in err and str(other) in err
    assert not (tmp_path / "o2").exists()  # refused before anything is written


def test_progress_bars_do_not_change_batching():
    from llm_unlearn.evaluation.scoring import _batches

    order = list(range(7))
    assert list(_batches(order, 3, desc="scoring")) == list(_batches(order, 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_method_label_comes_from_the_unlearn_record(tmp_path):
    def label(method: str, **hp) -> str | None:
        (tmp_path / "unlearn_record.json").write_text(json.dumps({"method": method, "hyperparameters": hp}))
        return R._method(tmp_path / "eval_forget10.json", {"model": str(tmp_path / "elsewhere")})

    assert label("regularized_ft", forget_regularizer="none", selection="none") == "regularized_ft (no regularizer)"
    assert label("grad_diff", selection="hessian") == "grad_diff + hessian selection"
    assert label("npo", selection="none") == "npo"
    (tmp_path / "unlearn_record.json").unlink()
    assert R._method(tmp_path / "eval_forget10.json", {"model": ""}) is None  # not an unlearning run: no method
