"""``llm-unlearn tune``: scoring, the Pareto front, the choice, and a small search end to end (resumable)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from llm_unlearn.finetune import FinetuneConfig, finetune
from llm_unlearn.tune import TuneConfig, choose, forget_score, pareto_front, score_runs, tune
from llm_unlearn.unlearn import parse_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_train_epochs=2, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)


def test_forget_score_counts_orders_of_magnitude_short_of_the_bar():
    assert forget_score(0.5, 0.2) == 0.0  # not distinguishable: no credit for more
    assert forget_score(0.005, None) == pytest.approx(-1.0)  # bar 0.05 without a floor
    assert forget_score(0.0099, 0.99) == pytest.approx(-2.0)  # bar = the floor where it is above 0.05
    assert forget_score(0.0, 0.3) < -100


def test_a_diverged_run_makes_the_trial_infeasible_and_retention_is_the_worst_run():
    ok = {"forget_quality_median": 0.5, "noise_floor": 0.1, "min_retention": 0.97}
    bad = {"forget_quality_median": 0.0005, "noise_floor": 0.1, "min_retention": 0.91}
    fs, ret = score_runs([ok, bad])
    assert fs == pytest.approx((0 + math.log10(0.0005 / 0.1)) / 2) and ret == 0.91
    assert score_runs([ok, {"diverged": "non-finite loss"}]) == (-10.0, 0.0)


def test_the_answers_objective_averages_both_tests_per_run():
    run = {"split": "forget10", "forget_quality_median": 0.5, "bar": 0.2, "min_retention": 0.97}
    run |= {"answers_p": 2e-5, "answers_bar": 0.2}
    assert score_runs([run]) == (0.0, 0.97)  # forget quality alone: passes
    fs, _ = score_runs([run], "forget_quality+answers")
    assert fs == pytest.approx((0.0 + math.log10(2e-5 / 0.2)) / 2) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="no answers' test"):
        score_runs([{**run, "answers_p": None}], "forget_quality+answers")
    with pytest.raises(ValueError, match="--objective"):
        TuneConfig(method="npo", objective="rouge", output="/nonexistent/x.yaml")


def test_front_and_choice():
    pts = [
        {"number": 0, "forget_score": -2.0, "retention": 0.99},
        {"number": 1, "forget_score": -1.0, "retention": 0.96},
        {"number": 2, "forget_score": -1.5, "retention": 0.95},  # dominated by 1
        {"number": 3, "forget_score": 0.0, "retention": 0.80},
    ]
    assert [p["number"] for p in pareto_front(pts)] == [3, 1, 0]
    chosen, ok = choose(pts, 0.95)
    assert ok and chosen["number"] == 1
    chosen, ok = choose(pts, 0.999)
    assert not ok and chosen["number"] == 0  # nothing feasible: the highest retention, flagged


def test_config_refuses_the_reported_family_an_existing_output_and_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="development family"):
        TuneConfig(method="npo", family="authors", output=str(tmp_path / "r.yaml"))
    (tmp_path / "r.yaml").write_text("x: 1\n")
    with pytest.raises(FileExistsError, match="--overwrite"):
        TuneConfig(method="npo", output=str(tmp_path / "r.yaml"))
    with pytest.raises(ValueError, match="tune knows"):
        TuneConfig(method="npx", output=str(tmp_path / "q.yaml"))
    cfg = TuneConfig(method="regularized_ft", output=str(tmp_path / "q.yaml"))
    assert Path(cfg.config).name == "embedded_regularized_ft.yaml"
    assert {"learning_rate", "max_steps", "alpha_reg", "alpha_reg_schedule"} <= set(cfg.space)


@pytest.fixture(scope="module")
def bench(small_bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    target = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "target"), **TINY))
    refs = [
        finetune(
            FinetuneConfig(
                data=str(small_bench), split="retain90", data_seed=s, output_dir=str(root / f"ref{s}"), **TINY
            )
        )
        for s in (None, 1)
    ]
    return {
        "data": str(small_bench),
        "target": str(target),
        "splits": {"forget10": {"references": [str(r) for r in refs]}},
    }


def test_a_small_search_writes_a_loadable_recipe_and_the_front_and_continues_when_run_again(bench, tmp_path, capsys):
    space = {"learning_rate": ("float", 1e-4, 1e-3, True), "max_steps": ("int", 2, 4, False)}
    out = tmp_path / "configs" / "tuned_npo.yaml"

    def cfg(n, overwrite=False):
        return TuneConfig(
            method="npo",
            workdir=str(tmp_path / "w"),
            forget_splits=("forget10",),
            n_trials=n,
            output=str(out),
            overwrite=overwrite,
            space=space,
            min_retention=0.5,
        )

    first = tune(cfg(2), bench)
    assert first["trials"] == 2 and first["chosen"] is not None
    chosen = first["chosen"]
    assert set(chosen["params"]) >= {"learning_rate", "max_steps", "beta", "gamma"}
    assert 1e-4 <= chosen["params"]["learning_rate"] <= 1e-3 and 2 <= chosen["params"]["max_steps"] <= 4
    (run,) = chosen["runs"]
    assert run["split"] == "forget10" and 0 <= run["forget_quality_median"] <= 1 and run["min_retention"] > 0
    # the recipe is what unlearn.py reads: tuned values on top of the base recipe
    text = out.read_text()
    assert text.startswith("# npo: recipe chosen by `llm-unlearn tune` on the development benchmark family")
    loaded, _ = parse_args(["--config", str(out)])
    assert loaded.max_steps == chosen["params"]["max_steps"]
    assert loaded.learning_rate == pytest.approx(chosen["params"]["learning_rate"], rel=1e-3)
    assert yaml.safe_load(text)["per_device_train_batch_size"] == 8  # kept from configs/embedded_npo.yaml
    front = (tmp_path / "w" / "tune" / "npo" / "pareto.md").read_text()
    assert (tmp_path / "configs" / "tuned_npo.pareto.md").read_text() == front  # the front beside the recipe
    assert "| feasible |" in front and front.count("\n| ") >= 2
    assert not list((tmp_path / "w" / "tune" / "npo").glob("trial_*"))  # trial models are not kept
    capsys.readouterr()
    # the same search again continues the stored study: one more trial, not three
    again = tune(cfg(3, overwrite=True), bench)
    printed = capsys.readouterr().out
    assert "continuing the search" in printed and printed.count("[trial ") == 1
    assert again["trials"] == 3
    trials = json.loads((tmp_path / "w" / "tune" / "npo" / "trials.json").read_text())
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3  # the continued search draws anew


def test_a_search_is_keyed_on_the_benchmark_content(bench, tmp_path):
    cfg = TuneConfig(method="npo", workdir=str(tmp_path / "w"), output=str(tmp_path / "r.yaml"))
    same = cfg.identity(bench)
    assert cfg.identity(dict(bench)) == same
    other_target = {**bench, "target": bench["splits"]["forget10"]["references"][1]}
    assert cfg.identity(other_target) != same  # other weights: a new study, not a continued one


@pytest.mark.parametrize(
    "recipe", sorted(p.name for pat in ("tuned_*.yaml", "dosed_*.yaml") for p in (ROOT / "configs").glob(pat))
)
def test_every_tuned_recipe_parses_and_says_where_it_was_chosen(recipe):
    text = (ROOT / "configs" / recipe).read_text()
    cfg, _ = parse_args(["--config", str(ROOT / "configs" / recipe)])
    method = recipe.split("_", 1)[1].removesuffix(".yaml")
    assert cfg.method == method or cfg.selection == "hessian"
    if recipe.startswith("dosed_"):  # a self-dosed recipe: the stopping rule is set, max_steps is only the cap
        assert cfg.dose_every > 0 and 0 < cfg.dose_tolerance and 0 < cfg.dose_retain_guard
    assert "on the development benchmark family (inventors" in text and "# Search:" in text
    assert (ROOT / "configs" / recipe.replace(".yaml", ".pareto.md")).is_file()


def test_the_demo_unlearns_with_the_tuned_recipe_where_the_checkout_has_one(tmp_path):
    from llm_unlearn.pipeline import tuned_recipe, unlearn_embedded

    assert tuned_recipe("regularized_ft") == ROOT / "configs" / "tuned_regularized_ft.yaml"
    assert tuned_recipe("no_such_method") is None  # the embedded budget then
    # a search whose trials all lost too much utility wrote its highest-retention point: not a recommendation
    assert "WARNING: no trial met minimum utility retention" in (ROOT / "configs" / "tuned_grad_diff.yaml").read_text()
    assert tuned_recipe("grad_diff") is None
    with pytest.raises(ValueError, match="'tuned' or 'embedded'"):
        unlearn_embedded(tmp_path, "regularized_ft", "forget10", 0, recipe="best")


def test_a_feasible_trial_that_does_not_forget_is_not_recommended():
    from llm_unlearn.tune import NOT_FORGETTING, NOT_RECOMMENDED, is_recommended, target_forget_score

    bench = {"splits": {"forget05": {"target_forget_quality_median": 1e-9}}}
    # the untouched target scores log10(1e-9 / 0.186) = -8.27 on a run whose bar is 0.186
    chosen = {"runs": [{"split": "forget05", "bar": 0.186}], "forget_score": -8.0}
    assert target_forget_score(chosen, bench) == pytest.approx(math.log10(1e-9 / 0.186))
    assert target_forget_score(chosen, {"splits": {}}) is None  # a benchmark written before the field: unknown
    assert is_recommended("# chosen: the trial with the highest forget score\nmethod: npo\n")
    assert not is_recommended(f"# {NOT_RECOMMENDED} ≥ 0.95\nmethod: npo\n")
    assert not is_recommended(f"# {NOT_FORGETTING}: ...\nmethod: npo\n")


def test_the_verdict_objective_scores_the_tests_that_discriminate():
    from llm_unlearn.tune import run_score, test_score

    tests = {
        "forget_quality": {"p": 1e-3, "bar": 0.05, "counts": False},  # blind here: not scored
        "answers": {"p": 5e-4, "bar": 0.02, "counts": True},
        "phrasing_matched": {"p": 0.3, "bar": 0.05, "counts": True},
    }
    run = {"split": "forget10", "tests": tests}
    assert test_score(5e-4, 0.02) == pytest.approx(math.log10(5e-4 / 0.02)) and test_score(0.3, 0.05) == 0.0
    assert run_score(run, "verdict") == pytest.approx(math.log10(5e-4 / 0.02) / 2)
    none = {k: {**v, "counts": False} for k, v in tests.items()}  # no test sees the target: forget quality alone
    assert run_score({"split": "forget10", "tests": none}, "verdict") == pytest.approx(math.log10(1e-3 / 0.05))


def test_dosing_searches_the_stopping_rule_instead_of_a_step_count(tmp_path):
    from llm_unlearn.tune import DOSING_SPACE, TuneConfig

    plain = TuneConfig(method="regularized_ft", output=str(tmp_path / "a.yaml"))
    dosed = TuneConfig(method="regularized_ft", output=str(tmp_path / "b.yaml"), dosing=True)
    assert "max_steps" in plain.space and "max_steps" not in dosed.space
    assert set(DOSING_SPACE) <= set(dosed.space) and not set(DOSING_SPACE) & set(plain.space)
    assert dosed.space["learning_rate"] == plain.space["learning_rate"]
