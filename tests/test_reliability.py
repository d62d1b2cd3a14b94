"""The reliability suite: bad input and faults against every command.

Each case of ``CASES`` breaks one input of one command (``data check``, ``finetune``, ``unlearn``, ``eval``,
``report``, ``push``) and asserts that the command
- exits with status 2 and one line on stderr that matches the case's message (naming the file, field, row or flag),
- loads no model (model construction is made to fail loudly for the whole case),
- changes nothing on disk in the protected folders (data, target, reference, and any pre-existing output).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llm_unlearn.cli import main
from llm_unlearn.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(num_train_epochs=2, hidden_size=32, num_layers=1, vocab_size=400, per_device_train_batch_size=16)
FORGET = "forget10"


@pytest.fixture(scope="module")
def world(small_bench, tmp_path_factory):
    """A benchmark, a target and a reference (tiny), and the reference's saved evaluation on another split."""
    root = tmp_path_factory.mktemp("world")
    target = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "target"), split="full", **TINY))
    ref = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "ref"), split="retain90", **TINY))
    ref95 = finetune(FinetuneConfig(data=str(small_bench), output_dir=str(root / "ref95"), split="retain95", **TINY))
    other = root / "ref_forget05.json"
    rc = main(
        ["eval", "--model", str(ref95), "--reference", str(ref95), "--data", str(small_bench)]
        + ["--forget_split", "forget05", "--output", str(other), "--max_new_tokens", "2"]
    )
    assert rc == 0
    ref_json = root / "ref_forget10.json"
    rc = main(
        ["eval", "--model", str(ref), "--reference", str(ref), "--data", str(small_bench)]
        + ["--output", str(ref_json), "--max_new_tokens", "2"]
    )
    assert rc == 0
    return {"bench": small_bench, "target": target, "ref": ref, "ref_json_forget05": other, "ref_json": ref_json}


@dataclass
class Env:
    """A fresh copy of the world for one case: paths a case may break, and the files that must not change."""

    root: Path
    data: Path
    target: Path
    ref: Path
    ref_json_forget05: Path
    ref_json: Path
    protected: list[Path] = field(default_factory=list)
    cleanup: list = field(default_factory=list)

    def rows(self, split: str) -> list[dict]:
        return [json.loads(x) for x in (self.data / f"{split}.jsonl").read_text().splitlines() if x.strip()]

    def write_rows(self, split: str, rows: list[dict]) -> None:
        (self.data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def edit_row(self, split: str, i: int, **fields) -> None:
        rows = self.rows(split)
        rows[i].update(fields)
        self.write_rows(split, rows)


def snapshot(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                elif p.is_dir():
                    out[str(p)] = "dir"
    return out


def unlearn(env: Env, *flags, out: str = "out", method: str = "grad_diff") -> list[str]:
    return [
        "unlearn",
        "--method",
        method,
        "--model_name_or_path",
        str(env.target),
        "--data",
        str(env.data),
        "--output_dir",
        str(env.root / out) if not str(out).startswith("/") else out,
        "--max_steps",
        "2",
        *flags,
    ]


def finetune_args(env: Env, *flags, out: str = "ft") -> list[str]:
    return ["finetune", "--data", str(env.data), "--output_dir", str(env.root / out), *TINY_FLAGS, *flags]


TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items()]


def evaluate(env: Env, *flags, model=None, reference=None) -> list[str]:
    return [
        "eval",
        "--model",
        str(model or env.target),
        "--reference",
        str(reference or env.ref),
        "--data",
        str(env.data),
        *flags,
    ]


def recipe(env: Env, text: str) -> Path:
    path = env.root / "recipe.yaml"
    path.write_text(text)
    return path


def foreign_output(env: Env) -> Path:
    out = env.root / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    env.protected.append(out)
    return out


def no_tokenizer_model(env: Env) -> Path:
    path = env.root / "no_tok"
    shutil.copytree(env.target, path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).unlink()
    return path


def no_eos_model(env: Env) -> Path:
    from transformers import AutoTokenizer

    path = env.root / "no_eos"
    shutil.copytree(env.target, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.eos_token = None
    tok.save_pretrained(path)
    return path


def user_file(env: Env, name: str = "out") -> Path:
    """A file of the user's where an output folder is asked for."""
    path = env.root / name
    path.write_text("my notes")
    env.protected.append(path)
    return path


def held_lock(env: Env, name: str = "out") -> list[str]:
    """Another live process holds the output's lock (a run in progress into the same folder)."""
    import os
    import socket
    import subprocess

    proc = subprocess.Popen(["sleep", "60"])
    env.cleanup.append(proc.kill)
    lock = env.root / f".{name}.lock"
    lock.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "since": "2026-01-01 00:00:00"}))
    env.protected.append(lock)
    assert proc.pid != os.getpid()
    return unlearn(env, out=name)


def foreign_forget_item(env: Env) -> None:
    """A forget item the target never saw: in forget10 but not in full."""
    rows = env.rows(FORGET)
    rows[4] = {**rows[4], "question": "What is the favourite colour of Ilse Vantongeren?", "answer": "Teal."}
    env.write_rows(FORGET, rows)


def saved_reference(env: Env, edit) -> Path:
    """A copy of the reference's saved forget10 evaluation naming this case's reference folder, edited by ``edit``."""
    result = json.loads(env.ref_json.read_text())
    result["model"] = str(env.ref)
    edit(result)
    path = env.root / "ref_eval.json"
    path.write_text(json.dumps(result))
    return path


def _items(result: dict) -> list[dict]:
    return result["splits"]["forget"]["items"]


def other_tokenizer_model(env: Env) -> Path:
    from transformers import AutoTokenizer

    path = env.root / "other_tok"
    shutil.copytree(env.ref, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"eos_token": tok.convert_ids_to_tokens(50)})  # same size, another end-of-answer token
    tok.save_pretrained(path)
    return path


def rewritten_reference(env: Env) -> Path:
    """The reference's folder rewritten after its evaluation was saved: the saved numbers describe other weights."""
    path = saved_reference(env, lambda r: None)
    cfg = json.loads((env.ref / "config.json").read_text())
    (env.ref / "config.json").write_text(json.dumps({**cfg, "rewritten": True}))
    return path


def bigger_tokenizer_model(env: Env) -> Path:
    """A model folder holding another tokenizer, with more tokens than the model's embedding has rows."""
    from transformers import AutoTokenizer

    path = env.root / "big_tok"
    shutil.copytree(env.target, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_tokens([f"extra{i}" for i in range(60)])
    tok.save_pretrained(path)
    return path


def edit_config(folder: Path, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **fields}))


def cut_file(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def resume_into_finished(env: Env) -> None:
    (env.root / "ckpt").mkdir()


# (id, setup(env) -> argv, message regex). setup may edit env's copies of the inputs and add protected paths.
CASES = [
    # --- data ---------------------------------------------------------------------------------------------------
    (
        "perturbed_dict",
        lambda e: (e.edit_row(FORGET, 0, perturbed_answer={"a": 1}), unlearn(e, method="regularized_ft"))[1],
        r"forget10.jsonl: row 0 of split 'forget10': field 'perturbed_answer' must be a non-empty list of strings, "
        r"got dict",
    ),
    (
        "perturbed_int",
        lambda e: (e.edit_row(FORGET, 1, perturbed_answer=5), unlearn(e))[1],
        r"row 1 of split 'forget10': field 'perturbed_answer' .* got int",
    ),
    (
        "perturbed_empty_list",
        lambda e: (e.edit_row(FORGET, 2, perturbed_answer=[]), unlearn(e))[1],
        r"row 2 of split 'forget10': field 'perturbed_answer' must be a non-empty list",
    ),
    (
        "int_answer_in_full",
        lambda e: (e.edit_row("full", 3, answer=7), finetune_args(e))[1],
        r"full.jsonl: row 3 of split 'full': field 'answer' must be a string, got int",
    ),
    (
        "missing_question",
        lambda e: (e.write_rows("retain90", [{"answer": "x"}]), ["data", "check", "--data", str(e.data)])[1],
        r"row 0 of split 'retain90' has no field 'question'",
    ),
    (
        "empty_split",
        lambda e: ((e.data / "forget10.jsonl").write_text(""), unlearn(e))[1],
        r"split 'forget10' is empty",
    ),
    (
        "invalid_json_line",
        lambda e: ((e.data / "full.jsonl").write_text('{"question": "q", "answer": "a"}\n{oops\n'), finetune_args(e))[
            1
        ],
        r"full.jsonl: line 2 is not valid JSON",
    ),
    (
        "duplicate_forget_rows",
        lambda e: (e.write_rows(FORGET, e.rows(FORGET) + e.rows(FORGET)[:1]), unlearn(e))[1],
        r"rows 0 and \d+ of split 'forget10' are the same item",
    ),
    (
        "near_duplicate_forget_retain",
        lambda e: (
            e.write_rows(
                "retain90",
                e.rows("retain90")
                + [
                    {
                        "question": "  " + e.rows(FORGET)[0]["question"].upper().rstrip("?") + " ",
                        "answer": e.rows(FORGET)[0]["answer"].rstrip(".") + "  ",
                    }
                ],
            ),
            unlearn(e),
        )[1],
        r"row 0 of 'forget10' is also row \d+ of 'retain90'",
    ),
    ("missing_split", lambda e: unlearn(e, "--forget_split", "forget07"), r"no file for split 'forget07'"),
    ("bad_split_name", lambda e: evaluate(e, "--forget_split", "forgetX"), r"'forgetX' is not of the form"),
    (
        "data_check_duplicates",
        lambda e: (e.write_rows(FORGET, e.rows(FORGET) * 2), ["data", "check", "--data", str(e.data)])[1],
        r"are the same item after normalization",
    ),
    (
        "forget_item_not_in_full",
        lambda e: (foreign_forget_item(e), ["data", "check", "--data", str(e.data)])[1],
        r"row 4 of split 'forget10' \(question 'What is the favourite colour of Ilse Vantongeren\?'\) is not in "
        r"'full'",
    ),
    (
        "unlearn_forget_item_not_in_full",
        lambda e: (foreign_forget_item(e), unlearn(e))[1],
        r"row 4 of split 'forget10' .* is not in 'full'",
    ),
    (
        "retain_not_full_minus_forget",
        lambda e: (
            e.write_rows("retain90", e.rows("retain90")[1:]),
            ["data", "check", "--data", str(e.data)],
        )[1],
        r"row \d+ of 'full' .* is in neither 'forget10' nor 'retain90'",
    ),
    # --- eval ---------------------------------------------------------------------------------------------------
    (
        "reference_on_other_split",
        lambda e: evaluate(e, reference=e.ref_json_forget05),
        r"--reference .*ref_forget05.json was evaluated on forget split 'forget05', not 'forget10'",
    ),
    ("eval_missing_model", lambda e: evaluate(e, model=e.root / "nope"), r"--model .*nope: no such model folder"),
    (
        "eval_missing_reference",
        lambda e: evaluate(e, reference=e.root / "nope"),
        r"--reference .*nope: neither a model folder nor an evaluation JSON",
    ),
    (
        "eval_output_in_data",
        lambda e: evaluate(e, "--output", str(e.data / "forget10.json")),
        r"--output .*forget10.json lies inside the data",
    ),
    (
        "eval_output_is_foreign_file",
        lambda e: (
            ((e.root / "mine.json").write_text('{"x": 1}'), e.protected.append(e.root / "mine.json"))
            and evaluate(e, "--output", str(e.root / "mine.json"))
        ),
        r"mine.json exists and is not an llm-unlearn evaluation",
    ),
    (
        "eval_reference_not_a_model",
        lambda e: ((e.root / "empty").mkdir(), evaluate(e, reference=e.root / "empty"))[1],
        r"--reference .*empty: no config.json",
    ),
    (
        "eval_same_reference_twice",
        lambda e: [*evaluate(e), "--reference", str(e.ref), str(e.ref)],
        r"--reference .*ref is --reference .*ref: each reference must be a separately retrained model",
    ),
    (
        "eval_reference_copied_under_another_name",
        lambda e: (
            shutil.copytree(e.ref, e.root / "ref_copy"),
            [*evaluate(e), "--reference", str(e.ref), str(e.root / "ref_copy")],
        )[1],
        r"--reference .*ref_copy holds the same weights as --reference .*ref:",
    ),
    (
        "eval_reference_trained_for_another_split",
        lambda e: evaluate(e, "--forget_split", "forget05"),
        r"--reference .*ref was trained on 'retain90' .* --forget_split forget05 needs a reference retrained on "
        r"'retain95'",
    ),
    (
        "eval_reference_with_another_tokenizer",
        lambda e: evaluate(e, reference=other_tokenizer_model(e)),
        r"--reference .*other_tok has another tokenizer \(vocabulary or special tokens\) than --model",
    ),
    (
        "eval_reference_json_items_cut",
        lambda e: evaluate(e, reference=saved_reference(e, lambda r: _items(r).__delitem__(slice(3, None)))),
        r"ref_eval.json holds 3 forget items, the forget split 'forget10' has \d+",
    ),
    (
        "eval_reference_json_nan_truth_ratio",
        lambda e: evaluate(e, reference=saved_reference(e, lambda r: _items(r)[2].update(truth_ratio=float("nan")))),
        r"ref_eval.json: forget item 2 has truth ratio nan \(not a finite number\)",
    ),
    (
        "eval_reference_json_numbers_edited",
        lambda e: evaluate(e, reference=saved_reference(e, lambda r: _items(r)[0].update(truth_ratio=0.5))),
        r"ref_eval.json: its numbers do not match its integrity hash",
    ),
    (
        "eval_reference_json_items_swapped",
        lambda e: evaluate(e, reference=saved_reference(e, lambda r: _items(r).reverse())),
        r"ref_eval.json: forget item 0 is .*, the forget split's row 0 is",
    ),
    (
        "eval_reference_json_without_fingerprint",
        lambda e: evaluate(e, reference=saved_reference(e, lambda r: r.pop("model_fingerprint"))),
        r"ref_eval.json does not record the fingerprint of the weights it scored",
    ),
    (
        "eval_reference_json_of_rewritten_weights",
        lambda e: evaluate(e, reference=rewritten_reference(e)),
        r"ref_eval.json scored other weights than those now in .*ref",
    ),
    (
        "eval_output_over_the_models_config",
        lambda e: evaluate(e, "--output", str(e.target / "config.json"), "--overwrite"),
        r"--output .*config.json would overwrite .*config.json, a file of the model .*: an evaluation never writes "
        r"over its inputs, even with --overwrite",
    ),
    (
        "eval_output_over_the_targets_tokenizer",
        lambda e: evaluate(
            e, "--target", str(e.target), "--output", str(e.target / "tokenizer.json"), "--overwrite", model=e.ref
        ),
        r"would overwrite .*tokenizer.json, a file of the target",
    ),
    # --- where the output goes ----------------------------------------------------------------------------------
    (
        "output_is_model",
        lambda e: unlearn(e, "--overwrite_output", "true", out=str(e.target)),
        r"--output_dir .*target is the model",
    ),
    (
        "output_is_data",
        lambda e: unlearn(e, "--overwrite_output", "true", out=str(e.data)),
        r"--output_dir .*data is the data",
    ),
    (
        "output_inside_model",
        lambda e: unlearn(e, "--overwrite_output", "true", out=str(e.target / "sub")),
        r"lies inside the model",
    ),
    (
        "output_contains_data",
        lambda e: unlearn(e, "--overwrite_output", "true", out=str(e.root)),
        r"contains the (model|data)",
    ),
    (
        "finetune_output_is_data",
        lambda e: finetune_args(e, "--overwrite", out="data"),
        r"--output_dir .*data is the data",
    ),
    ("output_not_empty", lambda e: (foreign_output(e), unlearn(e))[1], r"output_dir .*out is not empty"),
    (
        "output_dir_is_a_file",
        lambda e: (user_file(e), unlearn(e, "--overwrite_output", "true"))[1],
        r"--output_dir .*out is an existing file, not a folder",
    ),
    (
        "finetune_output_dir_is_a_file",
        lambda e: (user_file(e, "ft"), finetune_args(e, "--overwrite"))[1],
        r"--output_dir .*ft is an existing file, not a folder",
    ),
    (
        "output_in_use_by_another_run",
        held_lock,
        r"--output_dir .*out is being written by another run \(pid \d+ on .*; lock .*\.out\.lock\)",
    ),
    (
        "finetune_foreign_output",
        lambda e: (foreign_output(e), finetune_args(e, out="out"))[1],
        r"out is not empty and is not a fine-tuning output",
    ),
    (
        "finetune_other_run",
        lambda e: finetune_args(e, "--seed", "9", out=str(e.target)),
        r"holds a finished run with another config \(differs in: .*seed",
    ),
    # --- models -------------------------------------------------------------------------------------------------
    (
        "model_missing",
        lambda e: [*unlearn(e), "--model_name_or_path", str(e.root / "nothing")],
        r"--model_name_or_path .*nothing: no such folder",
    ),
    (
        "model_is_file",
        lambda e: [*unlearn(e), "--model_name_or_path", str(e.target / "config.json")],
        r"config.json is a file; expected a model folder",
    ),
    (
        "model_without_tokenizer",
        lambda e: [*unlearn(e), "--model_name_or_path", str(no_tokenizer_model(e))],
        r"no_tok: no tokenizer",
    ),
    (
        "tokenizer_without_pad_or_eos",
        lambda e: [*unlearn(e), "--model_name_or_path", str(no_eos_model(e))],
        r"has neither a pad token nor an EOS token",
    ),
    (
        "hub_id_offline",
        lambda e: [*unlearn(e), "--model_name_or_path", "someone/not-cached-model"],
        r"someone/not-cached-model: not a local folder, and not in the local Hub cache while the Hub is offline",
    ),
    (
        "finetune_missing_base",
        lambda e: finetune_args(e, "--model", str(e.root / "nothing")),
        r"--model .*nothing: no such folder",
    ),
    (
        "unlearn_truncated_weights",
        lambda e: (cut_file(e.target / "model.safetensors"), unlearn(e))[1],
        r"--model_name_or_path: .*model.safetensors is damaged \(truncated: \d+ of \d+ bytes\)",
    ),
    (
        "eval_truncated_weights",
        lambda e: (cut_file(e.ref / "model.safetensors", 0.9), evaluate(e))[1],
        r"--reference: .*ref/model.safetensors is damaged \(truncated",
    ),
    (
        "unlearn_model_with_another_tokenizer",
        lambda e: [*unlearn(e), "--model_name_or_path", str(bigger_tokenizer_model(e))],
        r"the tokenizer in .*big_tok has \d+ tokens but the model's embedding \(config.json vocab_size\) holds 400",
    ),
    (
        "eval_model_with_another_tokenizer",
        lambda e: evaluate(e, model=bigger_tokenizer_model(e)),
        r"the tokenizer in .*big_tok has \d+ tokens",
    ),
    (
        "eval_config_with_wrong_vocab_size",
        lambda e: (edit_config(e.target, vocab_size=512), evaluate(e))[1],
        r"--model: .*config.json says vocab_size 512 but the weights' embedding has 400 rows",
    ),
    (
        "eval_truncated_config",
        lambda e: (cut_file(e.target / "config.json"), evaluate(e))[1],
        r"--model: .*target/config.json is not valid JSON",
    ),
    # --- numbers ------------------------------------------------------------------------------------------------
    ("lr_zero", lambda e: unlearn(e, "--learning_rate", "0"), r"--learning_rate must be positive, got 0"),
    ("lr_negative", lambda e: unlearn(e, "--learning_rate=-1e-3"), r"--learning_rate must be positive"),
    ("lr_nan", lambda e: unlearn(e, "--learning_rate", "nan"), r"--learning_rate nan is not a finite number"),
    ("max_steps_zero", lambda e: [*unlearn(e), "--max_steps", "0"], r"--max_steps 0 .* untouched model"),
    ("epochs_zero", lambda e: [*unlearn(e), "--max_steps", "-1", "--num_train_epochs", "0"], r"untouched model"),
    (
        "accumulation_zero",
        lambda e: unlearn(e, "--gradient_accumulation_steps", "0"),
        r"--gradient_accumulation_steps must be positive",
    ),
    ("batch_zero", lambda e: unlearn(e, "--per_device_train_batch_size", "0"), r"--per_device_train_batch_size"),
    ("alpha_nan", lambda e: unlearn(e, "--alpha", "nan"), r"--alpha nan is not a finite number"),
    ("gamma_inf", lambda e: unlearn(e, "--gamma", "inf"), r"--gamma inf is not a finite number"),
    ("beta_nan", lambda e: unlearn(e, "--beta", "nan", method="npo"), r"--beta nan is not a finite number"),
    ("finetune_lr_nan", lambda e: finetune_args(e, "--learning_rate", "nan"), r"--learning_rate nan is not a finite"),
    (
        "finetune_accumulation_zero",
        lambda e: finetune_args(e, "--gradient_accumulation_steps", "0"),
        r"--gradient_accumulation_steps must be positive",
    ),
    ("seed_negative", lambda e: unlearn(e, "--seed=-1"), r"--seed must be an integer in \[0, 2\*\*32 - 1\]"),
    ("lora_rank_zero", lambda e: unlearn(e, "--lora_r", "0"), r"--lora_r must be positive, got 0"),
    ("finetune_seed_too_large", lambda e: finetune_args(e, "--seed", str(2**32)), r"--seed must be an integer"),
    ("bf16_on_cpu", lambda e: unlearn(e, "--bf16", "true"), r"--bf16 true needs a GPU and this machine has none"),
    ("eval_batch_zero", lambda e: evaluate(e, "--batch_size", "0"), r"batch_size .* must be positive"),
    # --- recipes ------------------------------------------------------------------------------------------------
    (
        "yaml_syntax",
        lambda e: unlearn(e, "--config", str(recipe(e, "method: npo\nlearning_rate: 1e-3\n  beta: [0.1\n"))),
        r"recipe.yaml:\d+: invalid YAML recipe",
    ),
    (
        "yaml_unsafe_tag",
        lambda e: unlearn(e, "--config", str(recipe(e, "learning_rate: !!python/object/apply:os.system [ls]\n"))),
        r"recipe.yaml:1: invalid YAML recipe",
    ),
    (
        "yaml_list_value",
        lambda e: unlearn(e, "--config", str(recipe(e, "learning_rate: [1e-3, 1e-4]\n"))),
        r"recipe.yaml: learning_rate: expected a single value, got a list",
    ),
    (
        "yaml_wrong_type",
        lambda e: unlearn(e, "--config", str(recipe(e, "alpha: lots\n"))),
        r"recipe.yaml: alpha: expected float, got 'lots'",
    ),
    (
        "yaml_unknown_key",
        lambda e: unlearn(e, "--config", str(recipe(e, "learning_rat: 1e-3\n"))),
        r"unknown argument\(s\) for method 'grad_diff': learning_rat",
    ),
    (
        "yaml_duplicate_key",
        lambda e: unlearn(e, "--config", str(recipe(e, "max_steps: 3\nlearning_rate: 1e-3\nmax_steps: 5000\n"))),
        r"recipe.yaml:3: invalid YAML recipe: key 'max_steps' appears twice \(lines 1 and 3\)",
    ),
    ("yaml_missing", lambda e: unlearn(e, "--config", str(e.root / "no.yaml")), r"--config .*no.yaml: no such file"),
    # --- resume -------------------------------------------------------------------------------------------------
    ("resume_nothing", lambda e: unlearn(e, "--resume_from_checkpoint", "true"), r"nothing to resume"),
    (
        "resume_not_a_checkpoint",
        lambda e: (resume_into_finished(e), unlearn(e, "--resume_from_checkpoint", str(e.root / "ckpt")))[1],
        r"ckpt: not a complete checkpoint folder",
    ),
    # --- publishing ---------------------------------------------------------------------------------------------
    (
        "push_without_hub_id",
        lambda e: unlearn(e, "--push_to_hub", "true"),
        r"--push_to_hub true needs --hub_model_id",
    ),
    (
        "eval_reference_missing_in_unlearn",
        lambda e: unlearn(e, "--eval_reference", str(e.root / "nope")),
        r"--eval_reference .*nope: neither a model folder",
    ),
    ("push_not_a_run", lambda e: ["push", str(e.target), "--repo_id", "me/x"], r"unlearn_record.json is missing"),
    (
        "report_of_rewritten_weights",
        lambda e: ["report", str(rewritten_reference(e)), "--out", str(e.root / "rep")],
        r"ref_eval.json scored other weights than those now in .*ref \(the folder was rewritten since\)",
    ),
    (
        "report_of_an_evaluation_without_fingerprint",
        lambda e: [
            "report",
            str(saved_reference(e, lambda r: r.pop("model_fingerprint"))),
            "--out",
            str(e.root / "r"),
        ],
        r"ref_eval.json does not record which weights it scored",
    ),
    ("report_missing_run", lambda e: ["report", str(e.root / "nope"), "--out", str(e.root / "rep")], r"nope"),
]


@pytest.fixture
def env(world, tmp_path) -> Env:
    data, target, ref = tmp_path / "data", tmp_path / "target", tmp_path / "ref"
    shutil.copytree(world["bench"], data)
    shutil.copytree(world["target"], target)
    shutil.copytree(world["ref"], ref)
    e = Env(tmp_path, data, target, ref, world["ref_json_forget05"], world["ref_json"], protected=[data, target, ref])
    yield e
    for undo in e.cleanup:
        undo()


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model construction fails the case: every error must come before a model is loaded or built."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(LlamaForCausalLM, "__init__", refuse)
    import llm_unlearn.modeling as modeling

    monkeypatch.setattr(modeling, "build_tiny_llama", refuse)


def test_the_suite_covers_at_least_40_kinds_of_bad_input():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,setup,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_before_any_model_and_changes_nothing(
    name, setup, message, env, no_model_loads, capsys
):
    argv = setup(env)
    capsys.readouterr()
    before = snapshot(env.protected)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (name, rc, err)
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), (name, err)
    assert snapshot(env.protected) == before, f"{name}: a protected file changed"
    assert not (env.root / ".out.partial").exists()


def test_a_distributed_config_that_cannot_take_effect_is_refused(env, no_model_loads, monkeypatch, capsys):
    """What `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets on a machine without GPUs."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    before = snapshot(env.protected)
    assert main(unlearn(env)) == 2
    err = capsys.readouterr().err
    assert re.search(r"FSDP .* needs GPUs .*mixed precision bf16", err), err
    assert snapshot(env.protected) == before


def test_a_hub_id_that_cannot_be_reached_fails_at_once(env, no_model_loads, monkeypatch, capsys):
    """Online but with no route to the Hub: one line from one probe request (no model download is attempted:
    ``no_model_loads`` would fail the test), not the download's retries."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    assert main([*unlearn(env), "--model_name_or_path", "someone/some-model"]) == 2
    err = capsys.readouterr().err
    assert "someone/some-model: not a local folder, and the Hub (http://127.0.0.1:9) cannot be reached" in err


def said(err: str) -> list[str]:
    """stderr without progress bars (model loading draws one): the lines a person reads."""
    return [x for x in err.strip().splitlines() if x.strip() and "it/s]" not in x and "s/it]" not in x]


def test_a_nan_weight_is_named(env, capsys):
    """A damaged model is one line naming the tensor, not a metric's 'Input contains NaN'."""
    from safetensors.torch import load_file, save_file

    w = load_file(str(env.ref / "model.safetensors"))
    name = sorted(w)[1]
    w[name][0] = float("nan")
    save_file(w, str(env.ref / "model.safetensors"), metadata={"format": "pt"})
    assert main(evaluate(env, "--max_new_tokens", "2")) == 2
    err = said(capsys.readouterr().err)
    assert len(err) == 1 and re.search(r"ref: weight .* holds \d+ NaN/inf value\(s\)", err[0]), err


@pytest.mark.parametrize(
    "fault,message,rc",
    [
        (OSError(28, "No space left on device", "OUT"), r"no space left on the device holding OUT", 1),
        (PermissionError(13, "Permission denied", "OUT"), r"cannot write OUT \(Permission denied\)", 1),
        (KeyboardInterrupt(), r"interrupted; no output was left looking finished", 130),
    ],
    ids=["disk_full", "read_only", "ctrl_c"],
)
def test_io_faults_while_writing_an_evaluation_are_one_line(env, monkeypatch, capsys, fault, message, rc):
    from llm_unlearn.evaluation import run as eval_run

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(eval_run, "atomic_write_json", fail)
    out = env.root / "eval.json"
    assert main(evaluate(env, "--max_new_tokens", "2", "--output", str(out))) == rc
    err = said(capsys.readouterr().err)
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists() and not list(env.root.glob(".staging-*"))


def test_a_checkpoint_with_cut_weights_is_not_complete(tmp_path):
    import torch
    from safetensors.torch import save_file

    from llm_unlearn import runs

    for n in (2, 4):
        ckpt = tmp_path / f"checkpoint-{n}"
        ckpt.mkdir()
        save_file({"w": torch.ones(64, 64)}, str(ckpt / "model.safetensors"))
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": n}))
    cut_file(tmp_path / "checkpoint-4" / "model.safetensors", 0.7)
    assert [p.name for p in runs.checkpoints(tmp_path)] == ["checkpoint-2"]  # resume falls back past the cut one


@pytest.mark.parametrize(
    "fault,message,rc",
    [
        (
            OSError(28, "No space left on device", "OUT"),
            r"^unlearn: error: no space left on the device holding OUT",
            1,
        ),
        (
            OSError(30, "Read-only file system", "OUT"),
            r"^unlearn: error: cannot write OUT \(Read-only file system\)",
            1,
        ),
        (KeyboardInterrupt(), r"^unlearn: interrupted: .*out is unchanged; no checkpoint was kept", 130),
    ],
    ids=["disk_full", "read_only", "ctrl_c"],
)
def test_io_faults_and_ctrl_c_while_unlearning_are_one_line(env, monkeypatch, capsys, fault, message, rc):
    """Whenever the fault strikes (here: in training), one line says what happened and that the output is
    unchanged; the staging folder is cleaned up and nothing looks finished."""
    import llm_unlearn.unlearn as U

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(U, "_train", fail)
    before = snapshot(env.protected)
    assert main(unlearn(env)) == rc
    err = said(capsys.readouterr().err)
    assert len(err) == 1 and re.search(message, err[0]), err
    if rc == 1:
        assert "is unchanged" in err[0]
    assert not (env.root / "out").exists() and not (env.root / ".out.partial").exists()
    assert not (env.root / ".out.lock").exists()
    assert snapshot(env.protected) == before
