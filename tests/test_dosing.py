"""Self-dosing: the holdout halves, the stopping rule on hand numbers, and a run that stops itself and records why."""

import json

import pytest

from llm_unlearn.data.schema import holdout_halves
from llm_unlearn.trainers.dosing import DoseCallback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_holdout_halves_are_seeded_disjoint_and_independent_of_order():
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(200)]
    dosing, evaluation = holdout_halves(rows)
    assert len(dosing) + len(evaluation) == 200 and 70 < len(dosing) < 130
    assert not {r["question"] for r in dosing} & {r["question"] for r in evaluation}
    again = holdout_halves(rows[::-1])
    assert sorted(r["question"] for r in again[0]) == sorted(r["question"] for r in dosing)
    assert holdout_halves(rows, seed=1)[0] != dosing


class _Rule(DoseCallback):
    """The decision alone (no probes to score)."""

    def __init__(self, tolerance=0.1, guard=0.05, retain_start=0.8):
        self.tolerance, self.guard, self.retain_start = tolerance, guard, retain_start


@pytest.mark.parametrize(
    "m, reason",
    [
        ({"p": 1e-6, "forget_loss": 0.1, "holdout_loss": 2.0, "retain_probability": 0.8}, None),
        ({"p": 0.3, "forget_loss": 1.8, "holdout_loss": 2.0, "retain_probability": 0.79}, "looks never-seen"),
        ({"p": 0.01, "forget_loss": 2.5, "holdout_loss": 2.0, "retain_probability": 0.8}, "over-unlearned"),
        ({"p": 0.9, "forget_loss": 2.5, "holdout_loss": 2.0, "retain_probability": 0.8}, "over-unlearned"),
        ({"p": 1e-6, "forget_loss": 0.1, "holdout_loss": 2.0, "retain_probability": 0.7}, "retain guard"),
    ],
)
def test_the_stopping_rule(m, reason):
    got = _Rule().decide(dict(m))
    assert (got is None) if reason is None else got.startswith(reason)


@pytest.mark.slow
def test_a_dosed_run_stops_itself_records_why_and_is_evaluated_on_the_other_half(small_bench, tmp_path):
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.stages import evaluate
    from llm_unlearn.unlearn import parse_args, run

    base = finetune(
        FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path / "t"), split="full", num_train_epochs=8,
                       hidden_size=32, num_layers=1, vocab_size=400, learning_rate=5e-3)
    )  # fmt: skip
    cfg, cls = parse_args(
        ["--method", "grad_ascent", "--model_name_or_path", str(base), "--data", str(small_bench)]
        + ["--output_dir", str(tmp_path / "u"), "--max_steps", "200", "--learning_rate", "5e-3"]
        + ["--dose_every", "2", "--disable_tqdm", "true", "--per_device_train_batch_size", "4"]
    )
    out = run(cfg, cls)
    record = json.loads((out / "unlearn_record.json").read_text())
    dose = record["dosing"]
    assert dose["stop_reason"] != "max_steps" and record["global_steps"] == dose["stop_step"] < 200
    steps = [t["step"] for t in dose["trajectory"]]
    assert steps == list(range(0, dose["stop_step"] + 1, 2))  # step 0, then every 2 steps until the stop
    first, last = dose["trajectory"][0], dose["trajectory"][-1]
    assert first["forget_loss"] < first["holdout_loss"]  # the target knows its forget set
    assert last["forget_loss"] > first["forget_loss"]  # gradient ascent pushed it away
    assert any("dose/p" in h for h in record["log_history"])
    # the evaluation reports membership inference on the holdout's other half, for the run and its reference alike
    ref = finetune(
        FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path / "r"), split="retain90", num_train_epochs=1,
                       hidden_size=32, num_layers=1, vocab_size=400)
    )  # fmt: skip
    compared = evaluate(out, ref, small_bench, EvalConfig(max_new_tokens=8), target=base)
    _, evaluation = holdout_halves(load_split(str(small_bench), "holdout10"))
    assert compared["config"]["holdout_half"] == "evaluation"
    assert [h["question"] for h in compared["privacy"]["holdout_items"]] == [r["question"] for r in evaluation]


def test_a_resumed_run_continues_its_trajectory_against_the_same_start():
    """A checkpoint's log history holds every check (step 0 included): the resumed run keeps the retain guard's
    start and the trajectory, and a checkpoint without dosing history is refused rather than run unguarded."""
    from types import SimpleNamespace

    check = {"dose/p": 1e-6, "dose/forget_loss": 0.1, "dose/holdout_loss": 2.0, "dose/retain_probability": 0.8}
    history = [{"step": 0, **check}, {"step": 2, "loss": 1.0}, {"step": 2, **check, "dose/retain_probability": 0.79}]
    cb = _Rule(retain_start=None)
    cb.trajectory = []
    cb.on_train_begin(None, SimpleNamespace(global_step=2, log_history=history), None, model=None)
    assert cb.retain_start == 0.8 and [t["step"] for t in cb.trajectory] == [0, 2]
    assert cb.trajectory[1]["retain_probability"] == 0.79
    with pytest.raises(ValueError, match="no dosing history"):
        cb.on_train_begin(None, SimpleNamespace(global_step=2, log_history=history[1:2]), None, model=None)


def test_dosing_settings_enter_the_fingerprint_only_when_dosing(small_bench, tmp_path):
    from llm_unlearn.unlearn import parse_args, run_fingerprint

    base = ["--model_name_or_path", str(small_bench), "--data", str(small_bench), "--output_dir", str(tmp_path)]
    plain = run_fingerprint(parse_args(base)[0])
    assert run_fingerprint(parse_args([*base, "--dose_tolerance", "0.3"])[0]) == plain  # off: decides nothing
    dosed = run_fingerprint(parse_args([*base, "--dose_every", "2"])[0])
    assert (
        dosed != plain
        and run_fingerprint(parse_args([*base, "--dose_every", "2", "--dose_tolerance", "0.3"])[0]) != dosed
    )
