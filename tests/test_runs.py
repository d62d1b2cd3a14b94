"""The run layer: staged outputs, content-keyed reuse, atomic caches, resume after kill -9, the divergence guard."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_unlearn import runs
from llm_unlearn.finetune import RECORD as FT_RECORD
from llm_unlearn.finetune import FinetuneConfig, finetune
from llm_unlearn.unlearn import RECORD, main, parse_args, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_train_epochs=2, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)


@pytest.fixture(scope="module")
def target(small_bench, tmp_path_factory) -> Path:
    return finetune(FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path_factory.mktemp("t") / "m"), **TINY))


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def unlearn_args(model, data, out, *flags) -> list[str]:
    return [
        "--method",
        "npo",
        "--model_name_or_path",
        str(model),
        "--data",
        str(data),
        "--output_dir",
        str(out),
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        "2",
        "--disable_tqdm",
        "true",
        *flags,
    ]


# --- atomic files and staged outputs ------------------------------------------------------------------------------


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = runs.atomic_write_text(tmp_path / "cache.json", '{"old": 1}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        runs.atomic_write_text(path, '{"new": 2}')
    assert path.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_commit_replaces_the_output_and_an_interrupted_commit_is_repaired(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    stage = runs.StagedOutput(final, "fp")
    staging = stage.begin()
    (staging / "new.txt").write_text("new")
    assert (final / "old.txt").exists(), "the output is untouched until the commit"
    stage.commit()
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"] and not staging.exists()
    # a kill between the two renames of a commit: the previous output sits in .out.previous, out is missing
    os.replace(final, runs.backup_path(final))
    runs.recover(final)
    assert (final / "new.txt").read_text() == "new" and not runs.backup_path(final).exists()


def test_only_checkpoints_written_to_the_end_count(tmp_path):
    for step, state in [(2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, '{"global_st'), (8, None)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in runs.checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert len(runs.checkpoints(tmp_path, complete=False)) == 4


def test_output_location_refuses_inputs_inside_or_around_it(tmp_path):
    (tmp_path / "data").mkdir()
    for out, how in ((tmp_path / "data", "is"), (tmp_path / "data" / "x", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(ValueError, match=f"--output_dir {re.escape(str(out))} {how} the data"):
            runs.check_output_location(out, {"data": tmp_path / "data", "model": "some/hub-id"})
    runs.check_output_location(tmp_path / "elsewhere", {"data": tmp_path / "data"})


def test_finetune_failing_mid_run_leaves_the_previous_output(small_bench, tmp_path, monkeypatch):
    out = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path / "m"), **TINY))
    before = tree(out)
    from transformers import PreTrainedModel

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        finetune(FinetuneConfig(data=str(small_bench), output_dir=str(out), overwrite=True, seed=1, **TINY))
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no staging folder is left behind"


# --- reuse keyed on content ---------------------------------------------------------------------------------------


def test_finetune_reuse_follows_the_data_content_not_the_path(small_bench, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_bench, data)
    cfg = dict(data=str(data), output_dir=str(tmp_path / "m"), **TINY)
    out = finetune(FinetuneConfig(**cfg))
    first = json.loads((out / FT_RECORD).read_text())["fingerprint"]
    finetune(FinetuneConfig(**cfg))
    assert json.loads((out / FT_RECORD).read_text())["fingerprint"] == first
    moved = tmp_path / "moved"
    shutil.move(data, moved)  # same content elsewhere: still the same run
    assert finetune(FinetuneConfig(**{**cfg, "data": str(moved)})) == out
    rows = (moved / "full.jsonl").read_text().splitlines()
    row = json.loads(rows[0])
    row["answer"] = row["answer"] + " Edited."
    (moved / "full.jsonl").write_text("\n".join([json.dumps(row), *rows[1:]]) + "\n")
    with pytest.raises(FileExistsError, match="the same config on other data"):
        finetune(FinetuneConfig(**{**cfg, "data": str(moved)}))
    finetune(FinetuneConfig(**{**cfg, "data": str(moved)}, overwrite=True))
    assert json.loads((out / FT_RECORD).read_text())["fingerprint"] != first


def test_data_fingerprint_sees_edits_under_a_hidden_parent_folder(small_bench, tmp_path):
    data = tmp_path / ".cache" / "data"  # e.g. ~/.cache/...: only hidden entries *inside* the data folder are skipped
    shutil.copytree(small_bench, data)
    before = runs.data_fingerprint(data)
    (data / ".staging-x").mkdir()
    (data / ".staging-x" / "forget10.jsonl").write_text("{}\n")
    assert runs.data_fingerprint(data) == before
    with open(data / "forget10.jsonl", "a") as f:
        f.write('{"question": "q?", "answer": "a."}\n')
    assert runs.data_fingerprint(data) != before


def test_hessian_scores_follow_the_weights_not_the_path(target, small_bench, tmp_path, caplog):
    model = tmp_path / "model"
    shutil.copytree(target, model)
    flags = ["--method", "grad_diff", "--selection", "hessian", "--max_steps", "1"]

    def score_files():
        return sorted(p.name for p in (model / "selection_cache").glob("hessian_*.pt"))

    run(*parse_args([*unlearn_args(model, small_bench, tmp_path / "a"), *flags]))
    first = score_files()
    w = weights(model)
    w = {k: v * 1.01 for k, v in w.items()}
    from safetensors.torch import save_file

    save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})
    run(*parse_args([*unlearn_args(model, small_bench, tmp_path / "b"), *flags]))
    assert len(score_files()) == 2 and set(first) < set(score_files()), "new weights must be scored anew"
    # a truncated cache file is recomputed with a warning, not a crash
    (current,) = set(score_files()) - set(first)  # the scores of the current weights
    cache = model / "selection_cache" / current
    cache.write_bytes(cache.read_bytes()[:100])
    run(*parse_args([*unlearn_args(model, small_bench, tmp_path / "c"), *flags]))
    assert f"Hessian cache {cache} is corrupt" in caplog.text
    assert len(torch.load(cache, weights_only=True)) > 0  # recomputed and written back whole


def test_unlearning_reuses_only_the_same_content(target, small_bench, tmp_path, capsys):
    out = tmp_path / "u"
    args = unlearn_args(target, small_bench, out, "--max_steps", "2")
    run(*parse_args(args))
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    run(*parse_args(args))
    assert "reusing the finished run" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="holds another run"):
        run(*parse_args([*args, "--learning_rate", "2e-3"]))


def test_eval_cache_is_keyed_on_weights_and_a_corrupt_entry_is_recomputed(target, small_bench, tmp_path, caplog):
    from llm_unlearn.evaluation.evaluator import CACHE_DIR, EvalConfig, evaluate_model

    model = tmp_path / "model"
    shutil.copytree(target, model)
    cfg = EvalConfig(max_new_tokens=2)
    first = evaluate_model(model, str(small_bench), cfg)
    (cache,) = (model / CACHE_DIR).glob("*.json")
    cache.write_text(cache.read_text()[:50])  # a cache truncated by a full disk
    again = evaluate_model(model, str(small_bench), cfg)
    assert f"cache file {cache} is corrupt" in caplog.text
    assert again["splits"]["forget"]["aggregate"] == first["splits"]["forget"]["aggregate"]
    assert json.loads(cache.read_text())["kind"] == "llm_unlearn.eval"
    w = {k: v * 0 for k, v in weights(model).items()}
    from safetensors.torch import save_file

    save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})  # same path, new weights
    zeroed = evaluate_model(model, str(small_bench), cfg)
    assert zeroed["splits"]["forget"]["aggregate"] != first["splits"]["forget"]["aggregate"]
    assert len(list((model / CACHE_DIR).glob("*.json"))) == 2


def test_a_cache_file_is_trusted_by_its_content_not_its_name(target, small_bench, tmp_path, caplog):
    """Another model's valid evaluation placed under this model's cache key is not reported as this model's."""
    from llm_unlearn.evaluation.evaluator import CACHE_DIR, EvalConfig, evaluate_model
    from llm_unlearn.runs import model_fingerprint

    model, other = tmp_path / "model", tmp_path / "other"
    shutil.copytree(target, model)
    shutil.copytree(target, other)
    w = {k: v * 0.5 for k, v in weights(other).items()}
    from safetensors.torch import save_file

    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    cfg = EvalConfig(max_new_tokens=2)
    mine = evaluate_model(model, str(small_bench), cfg)
    theirs = evaluate_model(other, str(small_bench), cfg)
    assert mine["model_fingerprint"] == model_fingerprint(model) != theirs["model_fingerprint"]
    (cache,) = (model / CACHE_DIR).glob("*.json")
    (theirs_cache,) = (other / CACHE_DIR).glob("*.json")
    shutil.copy(theirs_cache, cache)  # a valid evaluation, of other weights, under this model's key
    again = evaluate_model(model, str(small_bench), cfg)
    assert "it scored other weights" in caplog.text
    assert again["model_fingerprint"] == mine["model_fingerprint"]
    assert again["splits"]["forget"]["aggregate"] == mine["splits"]["forget"]["aggregate"]
    assert again["splits"]["forget"]["aggregate"] != theirs["splits"]["forget"]["aggregate"]


def test_an_evaluation_overlapping_a_rewrite_of_the_model_saves_nothing(target, small_bench, tmp_path, monkeypatch):
    from llm_unlearn.evaluation import evaluator
    from llm_unlearn.evaluation.evaluator import CACHE_DIR, EvalConfig, evaluate_model

    model = tmp_path / "model"
    shutil.copytree(target, model)
    real = evaluator.evaluate_qa

    def scored_while_rewritten(*args, **kwargs):
        out = real(*args, **kwargs)
        w = {k: v * 0 for k, v in weights(model).items()}
        from safetensors.torch import save_file

        save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})  # another run commits meanwhile
        return out

    monkeypatch.setattr(evaluator, "evaluate_qa", scored_while_rewritten)
    with pytest.raises(OSError, match=r"changed while they were evaluated .* nothing was saved"):
        evaluate_model(model, str(small_bench), EvalConfig(max_new_tokens=2))
    assert not list((model / CACHE_DIR).glob("*.json"))


def test_no_token_reaches_the_disk(target, small_bench, tmp_path):
    out = tmp_path / "u"
    secret = "hf_never_on_disk_123"
    args = unlearn_args(target, small_bench, out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1")
    run(*parse_args([*args, "--hub_token", secret]))
    for p in out.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_embedded_tokenizer_never_sees_forget_or_holdout_items(target, small_bench):
    from transformers import AutoTokenizer

    from llm_unlearn.finetune import corpus_texts

    def rows(split):
        return [json.loads(x) for x in (small_bench / f"{split}.jsonl").read_text().splitlines()]

    hidden = {r["question"] for s in ("forget10", "forget10_perturbed", "holdout10") for r in rows(s)}
    texts = corpus_texts(str(small_bench))
    assert not hidden & set(texts)
    seen = " ".join(texts)
    # names that only the forget split holds are never whole tokens of the tokenizer a push would upload
    words = {w for r in rows("forget10") for w in re.findall(r"[A-Z][a-z]{4,}", r["question"])}
    forget_only = {w for w in words if w not in seen}
    assert forget_only, "the benchmark's forget authors have names of their own"
    vocab = AutoTokenizer.from_pretrained(target).get_vocab()
    assert not {w for w in forget_only if w in vocab or "Ġ" + w in vocab}


# --- divergence and resume ----------------------------------------------------------------------------------------


def test_a_diverging_run_stops_with_an_error_saves_nothing_and_keeps_the_last_good_checkpoint(
    target, small_bench, tmp_path, capsys
):
    out = tmp_path / "u"
    args = unlearn_args(target, small_bench, out, "--max_steps", "30", "--learning_rate", "50")
    rc = main([*args, "--save_strategy", "steps", "--save_steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert re.search(r"training diverged: non-finite (loss|gradient norm) .* at step (\d+)", err), err
    assert "nothing was saved as unlearned" in err
    assert not out.exists()
    step = int(re.search(r"at step (\d+)", err).group(1))
    kept = runs.checkpoints(runs.staging_path(out))
    assert kept and kept[-1].name == f"checkpoint-{step - 1}", (kept, step)
    assert f"the last good checkpoint is {kept[-1]}" in err


SCRIPT = """
import sys
from llm_unlearn.unlearn import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_then_resume_equals_the_uninterrupted_run(target, small_bench, tmp_path):
    flags = ["--max_steps", "40", "--save_strategy", "steps", "--save_steps", "2", "--seed", "3"]
    whole = tmp_path / "whole"
    run(*parse_args(unlearn_args(target, small_bench, whole, *flags)))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", SCRIPT, *unlearn_args(target, small_bench, out, *flags)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = runs.staging_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and len(runs.checkpoints(staging)) < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # a real kill -9 after the third checkpoint, with 34 steps still to go
    proc.wait()
    assert not out.exists()
    # a kill while saving leaves the newest checkpoint half written (trainer_state.json is written last): make one
    # for sure, and check that the resume skips it for the newest complete one
    newest = runs.checkpoints(staging)[-1]
    half = staging / f"checkpoint-{int(newest.name.split('-')[1]) + 2}"
    shutil.rmtree(half, ignore_errors=True)
    shutil.copytree(newest, half)
    (half / "trainer_state.json").write_text((newest / "trainer_state.json").read_text()[:40])
    assert runs.checkpoints(staging)[-1] == newest and half in runs.checkpoints(staging, complete=False)
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint true"):
        run(*parse_args(unlearn_args(target, small_bench, out, *flags)))
    with pytest.raises(ValueError, match="checkpoints of another run"):
        run(*parse_args(unlearn_args(target, small_bench, out, *flags[:-1], "4", "--resume_from_checkpoint", "true")))
    run(*parse_args(unlearn_args(target, small_bench, out, *flags, "--resume_from_checkpoint", "true")))
    record = json.loads((out / RECORD).read_text())
    assert record["resumed_from"] == newest.name and record["global_steps"] == 40
    assert max_diff(weights(out), weights(whole)) <= 1e-6
    # the record describes the whole run, not only the steps after the resume
    assert record["train_loss"] == pytest.approx(json.loads((whole / RECORD).read_text())["train_loss"], abs=1e-6)
    assert not staging.exists()


def test_two_runs_into_one_folder_one_succeeds_the_other_is_refused_at_once(target, small_bench, tmp_path):
    """The second run starts while the first trains (its lock exists): it is refused before it loads a model, and
    the first one finishes into the folder."""
    out = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", SCRIPT, *unlearn_args(target, small_bench, out, "--max_steps", "600")]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not runs.lock_path(out).exists() and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    still_training = first.poll() is None
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert still_training, "the first run ended before the second was refused: the race was not tested"
    assert second.returncode == 2, second.stderr
    assert re.search(r"--output_dir .*shared is being written by another run \(pid \d+ on ", second.stderr)
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    record = json.loads((out / RECORD).read_text())
    assert record["global_steps"] == 600
    assert not runs.lock_path(out).exists() and not runs.staging_path(out).exists()
