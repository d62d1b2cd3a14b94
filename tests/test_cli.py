"""Fine-tuning, evaluation and the CLI on a small benchmark with a tiny model (a few seconds each)."""

import json

import pytest

from llm_unlearn.cli import main
from llm_unlearn.finetune import RECORD, FinetuneConfig, finetune

TINY = dict(num_train_epochs=2, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)


@pytest.fixture(scope="module")
def models(small_bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    target = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "target"), split="full", **TINY))
    ref = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "ref"), split="retain90", **TINY))
    return target, ref


def test_finetune_writes_a_loadable_model_and_reuses_it(models, small_bench):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, _ = models
    record = json.loads((target / RECORD).read_text())
    assert record["complete"] and record["n_train_items"] == len(open(small_bench / "full.jsonl").readlines())
    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 1
    assert AutoTokenizer.from_pretrained(target).eos_token == "</s>"
    weights = target / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    finetune(FinetuneConfig(data=str(small_bench), output_dir=str(target), split="full", **TINY))
    assert weights.stat().st_mtime_ns == mtime, "a finished run with the same config must be reused"
    with pytest.raises(FileExistsError, match="differs in: seed"):
        finetune(FinetuneConfig(data=str(small_bench), output_dir=str(target), split="full", seed=5, **TINY))
    assert weights.stat().st_mtime_ns == mtime


def test_finetune_refuses_foreign_folder_and_lora_on_scratch_model(tmp_path, small_bench):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        finetune(FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path), **TINY))
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="LoRA needs a pretrained base"):
        FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path / "x"), lora=True)


def test_reference_training_checks_forget_retain_overlap(tmp_path, small_bench):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_bench, data)
    leaked = open(data / "forget10.jsonl").readline()
    with open(data / "retain90.jsonl", "a") as f:
        f.write(leaked)
    with pytest.raises(Exception, match="forget and retain must not share items"):
        finetune(FinetuneConfig(data=str(data), output_dir=str(tmp_path / "ref"), split="retain90", **TINY))
    assert not (tmp_path / "ref").exists()


def _eval(model, reference, data, output, *extra) -> int:
    return main(
        [
            "eval",
            "--model",
            str(model),
            "--reference",
            str(reference),
            "--data",
            str(data),
            "--output",
            str(output),
            *extra,
        ]
    )


def test_eval_cli_writes_json_and_markdown(models, small_bench, tmp_path, capsys):
    target, ref = models
    out = tmp_path / "report.json"
    rc = _eval(target, ref, small_bench, out, "--max_new_tokens", "16")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| metric | model | reference | gap |" in printed and "Forget quality" in printed
    result = json.loads(out.read_text())
    assert 0.0 <= result["forget_quality"] <= 1.0
    assert result["summary"]["model_utility"] == pytest.approx(result["model_utility"])
    forget = result["splits"]["forget"]
    assert forget["aggregate"]["n_items"] == len(forget["items"]) > 0
    assert {"generation", "truth_ratio", "rouge_l_recall", "probability"} <= set(forget["items"][0])
    assert out.with_suffix(".md").read_text().count("|") > 40
    # membership inference: forget (members) vs holdout, PrivLeak against the reference's own computed AUC
    privacy = result["privacy"]
    assert set(privacy["auc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}
    assert all(0.0 <= v <= 1.0 for v in privacy["auc"].values())
    ref_eval = json.loads(next((ref / "eval_cache").glob("*.json")).read_text())
    ref_auc = ref_eval["privacy"]["auc"]["min_k"]
    # MUSE's convention: AUCs as 1 − AUC, so an under-unlearned model reads negative
    assert privacy["privleak"] == pytest.approx(((1 - privacy["auc"]["min_k"]) - (1 - ref_auc)) / (1 - ref_auc) * 100)
    assert len(privacy["holdout_items"]) == len(open(small_bench / "holdout10.jsonl").readlines())
    assert "PrivLeak" in out.with_suffix(".md").read_text()
    # the reference's evaluation is cached in its folder and reusable as --reference EVAL.json
    caches = list((ref / "eval_cache").glob("*.json"))
    assert len(caches) == 1
    rc = _eval(target, caches[0], small_bench, tmp_path / "again.json", "--max_new_tokens", "16")
    assert rc == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["forget_quality"] == result["forget_quality"]
    assert len(list((ref / "eval_cache").glob("*.json"))) == 1


def test_eval_with_two_references_reports_the_noise_floor_and_a_verdict(models, small_bench, tmp_path, capsys):
    from llm_unlearn.evaluation import metrics as M

    target, ref = models
    replica = finetune(
        FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path / "ref2"), split="retain90", data_seed=1, **TINY)
    )
    out = tmp_path / "two.json"
    rc = main(
        ["eval", "--model", str(target), "--reference", str(ref), str(replica), "--data", str(small_bench)]
        + ["--output", str(out), "--max_new_tokens", "4"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    cal = json.loads(out.read_text())["calibration"]
    assert cal["references"] == [str(ref), str(replica)]

    def ratios(path):
        return [it["truth_ratio"] for it in json.loads(path.read_text())["splits"]["forget"]["items"]]

    ref_json = tmp_path / "r.json"
    rep_json = tmp_path / "rep.json"
    assert _eval(ref, ref, small_bench, ref_json, "--max_new_tokens", "4") == 0
    assert _eval(replica, replica, small_bench, rep_json, "--max_new_tokens", "4") == 0
    assert cal["noise_floor"] == M.forget_quality(ratios(ref_json), ratios(rep_json))
    assert cal["discrimination"] is not None  # a model without an unlearning record is its own target
    assert "Verdict: " in printed and f"noise floor {cal['noise_floor']:.3g}" in printed
    assert "## Calibration" in out.with_suffix(".md").read_text()
    # the record's data seed differs, the initialisation does not
    assert json.loads((replica / RECORD).read_text())["config"]["data_seed"] == 1


def test_model_against_itself_has_forget_quality_one(models, small_bench, tmp_path):
    _, ref = models
    out = tmp_path / "self.json"
    assert _eval(ref, ref, small_bench, out, "--max_new_tokens", "16") == 0
    assert json.loads(out.read_text())["forget_quality"] == pytest.approx(1.0)


def test_eval_without_reference_fails_clearly(models, small_bench, capsys):
    target, _ = models
    rc = main(["eval", "--model", str(target), "--data", str(small_bench)])
    assert rc == 2
    assert "--reference is required" in capsys.readouterr().err


def test_eval_refuses_to_overwrite_foreign_output(models, small_bench, tmp_path, capsys):
    target, ref = models
    out = tmp_path / "mine.json"
    out.write_text('{"my": "data"}')
    rc = _eval(target, ref, small_bench, out, "--max_new_tokens", "4")
    assert rc == 2 and "not an llm-unlearn evaluation" in capsys.readouterr().err
    assert out.read_text() == '{"my": "data"}'


def test_bad_data_fails_before_any_model_is_loaded(models, tmp_path, capsys):
    target, ref = models
    rc = main(["eval", "--model", str(target), "--reference", str(ref), "--data", str(tmp_path)])
    assert rc == 2 and "no file for split 'forget10_perturbed'" in capsys.readouterr().err


def test_data_cli(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "b"), "--n_authors", "10"]) == 0
    assert "forget10=" in capsys.readouterr().out
    assert main(["data", "check", "--data", str(tmp_path / "b"), "--forget_split", "forget05"]) == 0
    assert "share no items" in capsys.readouterr().out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "finetune", "eval", "demo"):
        assert cmd in out
