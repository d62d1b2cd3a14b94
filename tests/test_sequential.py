"""Sequential unlearning requests (``--forget_split forget05,forget10``): bookkeeping and the per-request table."""

import json

import pytest

from llm_unlearn.unlearn import RECORD, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(num_train_epochs=3, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)
TRAIN = ["--method", "grad_ascent", "--max_steps", "2", "--per_device_train_batch_size", "4", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """20 authors (forget05 = 1 author ⊂ forget10 = 2), a target and the references of both splits."""
    from llm_unlearn.data.synth import SynthConfig, write_benchmark
    from llm_unlearn.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("sequential")
    data = write_benchmark(SynthConfig(n_authors=20, seed=1), root / "data")

    def train(name, split):
        return finetune(FinetuneConfig(data=str(data), output_dir=str(root / name), split=split, **TINY))

    return data, train("target", "full"), train("ref95", "retain95"), train("ref90", "retain90"), root


def test_requests_are_unlearned_one_after_another_and_evaluated_on_the_union(setting):
    from llm_unlearn.data.loading import load_split

    data, target, ref95, ref90, root = setting
    out = root / "chain"
    argv = [*TRAIN, "--model_name_or_path", str(target), "--data", str(data), "--output_dir", str(out)]
    assert main([*argv, "--forget_split", "forget05,forget10", "--eval_reference", f"{ref95},{ref90}"]) == 0
    step1, step2 = out / "step1_forget05", out / "step2_forget10"
    rec1, rec2 = (json.loads((s / RECORD).read_text()) for s in (step1, step2))
    assert rec1["base_model"] == str(target) and rec2["base_model"] == str(step1)
    f05, f10 = load_split(str(data), "forget05"), load_split(str(data), "forget10")
    new = [r for r in f10 if r["question"] not in {x["question"] for x in f05}]
    assert load_split(str(out / "requests" / "step1_forget05"), "forget05") == f05
    assert load_split(str(out / "requests" / "step2_forget10"), "forget10") == new  # only the new request's items
    assert load_split(str(out / "requests" / "step2_forget10"), "retain90") == load_split(str(data), "retain90")
    summary = json.loads((out / "sequential.json").read_text())
    assert [s["forget_split"] for s in summary["steps"]] == ["forget05", "forget10"]
    assert [(s["new_items"], s["union_items"]) for s in summary["steps"]] == [
        (len(f05), len(f05)),
        (len(new), len(f10)),
    ]
    second = json.loads((step2 / "eval_forget10.json").read_text())
    assert second["config"]["forget_split"] == "forget10" and second["reference"] == str(ref90)
    assert second["calibration"]["target"] == str(target)  # retention is measured against the untouched model
    for s, path in zip(summary["steps"], (step1 / "eval_forget05.json", step2 / "eval_forget10.json")):
        c = json.loads(path.read_text())
        assert s["forget_quality"] == c["calibration"]["forget_quality_median"]
        assert s["min_utility_retention"] == c["calibration"]["utility_retention"]["minimum"]
        assert s["bar"] == c["calibration"]["verdict"]["threshold"]
        assert s["distinguishable"] == c["calibration"]["verdict"]["distinguishable"]
        assert s["status"] == c["calibration"]["verdict"]["status"]
    table = (out / "sequential.md").read_text()
    assert f"| 2 | forget10 ({len(new)} / {len(f10)}) |" in table
    step = summary["steps"][1]
    assert f"({step['bar']:.3g}) | {step['status']} |" in table
    stamp = (step2 / "model.safetensors").stat().st_mtime_ns
    assert main([*argv, "--forget_split", "forget05,forget10", "--eval_reference", f"{ref95},{ref90}"]) == 0
    assert (step2 / "model.safetensors").stat().st_mtime_ns == stamp, "finished requests are reused"


def test_a_recipe_yaml_can_name_the_chain_of_requests(setting, tmp_path):
    import yaml

    data, target, ref95, ref90, root = setting
    out = tmp_path / "from_yaml"
    recipe = {"method": "grad_ascent", "max_steps": 2, "per_device_train_batch_size": 4, "disable_tqdm": True}
    recipe.update(
        model_name_or_path=str(target),
        data=str(data),
        output_dir=str(out),
        forget_split="forget05,forget10",
        eval_reference=f"{ref95},{ref90}",
    )
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["--config", str(path)]) == 0
    summary = json.loads((out / "sequential.json").read_text())
    assert [s["forget_split"] for s in summary["steps"]] == ["forget05", "forget10"]
    assert json.loads((out / "step2_forget10" / RECORD).read_text())["base_model"] == str(out / "step1_forget05")


def test_bad_request_lists_fail_before_any_training(setting, capsys):
    data, target, ref95, ref90, root = setting
    out = root / "bad"
    argv = [*TRAIN, "--model_name_or_path", str(target), "--data", str(data), "--output_dir", str(out)]
    assert main([*argv, "--forget_split", "forget10,forget05", "--eval_reference", f"{ref90},{ref95}"]) == 2
    assert "nested forget splits" in capsys.readouterr().err
    assert main([*argv, "--forget_split", "forget05,forget10", "--eval_reference", str(ref95)]) == 2
    assert "1 entries for 2 requests" in capsys.readouterr().err
    assert main([*argv, "--forget_split", "forget05,forget10"]) == 2
    assert "one per request" in capsys.readouterr().err
    assert main([*argv, "--forget_split", "forget05,forget10", "--eval_reference", f"{ref95},{ref90}",
                 "--learning_rate", "-1"]) == 2  # fmt: skip
    assert not out.exists()
