"""Model card and Hub push, against the fake Hub of ``hub_server.py``: the real ``huggingface_hub`` upload and
download code over real HTTP on 127.0.0.1, no network.

Two tiny unlearning runs (a full model and a LoRA adapter, 2 steps each) are made once per module; the tests check the
card's content and metadata, the uploaded files, a ``from_pretrained`` round trip of both, the failure paths (no
server, bad token, missing files, a user's README) and the ``--push_to_hub`` / ``llm-unlearn push`` entry points.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import socket
from pathlib import Path

import pytest
import torch
from hub_server import FakeHub

from llm_unlearn.cli import main
from llm_unlearn.data.loading import load_split
from llm_unlearn.hub import HubPushError, _sanitize, card_is_ours, load_eval_result, model_card, push_run, sanitized
from llm_unlearn.unlearn import RECORD, forget_hash, parse_args, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FORGET = "forget10"
TRAIN = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "2e-3", "--logging_steps", "1"]


# --- helpers -------------------------------------------------------------------------------------------------------


def unlearn(base: Path, bench: Path, out: Path, *flags: str) -> Path:
    cfg, cls = parse_args(
        ["--model_name_or_path", str(base), "--data", str(bench), "--output_dir", str(out), *TRAIN, *flags]
    )
    return run(cfg, cls)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_intact(before: dict[str, str], folder: Path) -> None:
    """Every file that was there is unchanged; the only possible addition is the card."""
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before
    assert set(after) - set(before) <= {"README.md"}


def forget_texts(bench: Path) -> list[str]:
    """Every question, answer, paraphrase and author name of the forget split."""
    texts = set()
    for row in load_split(str(bench), FORGET) + load_split(str(bench), f"{FORGET}_perturbed"):
        texts.update([row["question"], row["answer"], row["paraphrased_answer"]])
        if row.get("entity"):
            texts.add(row["entity"])
    return sorted(texts)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model.eval()(input_ids=ids).logits


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tiny_model, tiny_tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub") / "base"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def full_run(base, small_bench, tmp_path_factory) -> Path:
    """A full-model run, evaluated against its base (standing in for the reference): has eval_*.json and eval_cache."""
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.stages import evaluate as run_eval

    out = unlearn(base, small_bench, tmp_path_factory.mktemp("hub") / "full")
    run_eval(str(out), str(base), str(small_bench), EvalConfig(forget_split=FORGET))
    return out


@pytest.fixture(scope="module")
def adapter_run(base, small_bench, tmp_path_factory) -> Path:
    return unlearn(base, small_bench, tmp_path_factory.mktemp("hub") / "lora", "--use_peft", "true")


@pytest.fixture
def copy_of(tmp_path):
    """``copy_of(run)``: a private copy of a run folder (tests that write into it or check it stays intact)."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture
def online(monkeypatch):
    """Hub access on for this test: conftest sets HF_HUB_OFFLINE=1, which huggingface_hub read once at import."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no developer's token travels to the test servers


@pytest.fixture
def hub(online, monkeypatch, tmp_path):
    """A running fake Hub that ``huggingface_hub`` talks to as if it were HF_ENDPOINT (empty download cache)."""
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import constants

    with FakeHub() as server:
        # HF_ENDPOINT is read once at import too: patch what it was turned into.
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)  # the module-level HfApi behind `file_exists`
        yield server


# --- (a) the card --------------------------------------------------------------------------------------------------


def test_card_names_the_run_never_the_forget_text_and_carries_the_eval(full_run, small_bench, tmp_path):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    record = json.loads((full_run / RECORD).read_text())
    (eval_json,) = full_run.glob("eval_*.json")
    result = load_eval_result(eval_json)
    text = model_card(full_run, result, repo_id="tester/tiny-unlearned")

    assert f"`{Path(record['base_model']).name} (a local folder)`" in text and "`regularized_ft`" in text
    assert record["base_model"] not in text and str(small_bench) not in text  # no local path is published
    assert "Why Fine-tuning Struggles with Forgetting" in text and "https://arxiv.org/abs/2410.03833" in text
    assert f"| effective batch | {record['effective_batch']} (= 4 × 1 × 1) |" in text
    assert "| learning_rate | 0.002 |" in text and "| max_steps | 2 |" in text
    assert "| alpha_reg | 0.3 |" in text  # a field of the method's own config
    assert f"| forget split | `{FORGET}` |" in text and f"| items | {record['n_forget']} |" in text
    rows = load_split(str(small_bench), FORGET)
    assert f"`{forget_hash(rows)}`" in text  # the hash whoever holds the data can recompute
    leaked = [t for t in forget_texts(small_bench) if t in text]
    assert not leaked, f"forget text in the card: {leaked}"
    assert "| metric | model | reference | gap |" in text  # the evaluation table
    assert 'from_pretrained("tester/tiny-unlearned")' in text
    assert card_is_ours(text) and not card_is_ours(text.replace("unlearned", "edited", 1))

    # metadata: parsed by huggingface_hub as the Hub parses it
    data = ModelCard(text).data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert {"llm-unlearn", "unlearning", "regularized_ft", "arxiv:2410.03833"} <= set(data.tags)
    assert data.base_model is None  # a local path is no Hub id: named in the body only
    finite = {k: v for k, v in result["summary"].items() if math.isfinite(v)}
    cal = result["calibration"]  # one reference: the floor is unknown (no metric), the retention is known
    assert cal["noise_floor"] is None and "Noise floor of forget quality: unknown (one retrained reference)." in text
    finite["min_utility_retention"] = cal["utility_retention"]["minimum"]
    assert {r.metric_type: r.metric_value for r in data.eval_results} == finite
    assert f"Verdict: {cal['verdict']['text']}." in text
    assert data.model_name == "tiny-unlearned"
    (tmp_path / "README.md").write_text(text)
    name, results = model_index_to_eval_results(metadata_load(tmp_path / "README.md")["model-index"])
    assert name == "tiny-unlearned" and results[0].metric_type == "forget_quality"
    assert results[0].metric_value == pytest.approx(result["forget_quality"])
    assert {(r.task_type, r.task_name, r.dataset_name, r.dataset_split) for r in results} == {
        ("text-generation", "Machine unlearning", f"{small_bench.name} (a local folder)", FORGET)
    }
    assert results[0].metric_name == "Forget quality (KS p)"

    # an undefined value (PrivLeak with a reference AUC of 0) is left out of the metadata, not written as NaN
    result["summary"]["privleak"] = float("nan")
    types = {r.metric_type for r in ModelCard(model_card(full_run, result)).data.eval_results}
    assert "privleak" not in types and "forget_quality" in types


def test_card_of_an_unevaluated_adapter_says_how_to_evaluate_and_load(adapter_run, copy_of):
    from huggingface_hub import ModelCard

    text = model_card(adapter_run, repo_id="tester/tiny-lora")
    data = ModelCard(text).data
    assert data.library_name == "peft" and data.eval_results is None and "model-index" not in text
    assert "Not evaluated yet" in text and f"llm-unlearn eval --model {adapter_run.name} " in text
    assert "llm-unlearn push" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("tester/tiny-lora")' in text
    assert "PeftModel.from_pretrained" in text  # the adapter names its base by a local path
    assert "| use_peft | True |" in text and "| lora_r | 8 |" in text  # LoRA settings of a LoRA run

    # a base named by Hub id goes into the metadata; --base_model / --license override
    run = copy_of(adapter_run)
    record = json.loads((run / RECORD).read_text())
    (run / RECORD).write_text(json.dumps({**record, "base_model": "some-org/some-base-1b"}))
    assert ModelCard(model_card(run)).data.base_model == "some-org/some-base-1b"
    data = ModelCard(model_card(adapter_run, base_model="org/base", license="apache-2.0")).data
    assert (data.base_model, data.license) == ("org/base", "apache-2.0")


# --- (b), (c) round trips ------------------------------------------------------------------------------------------


def test_push_full_model_round_trip(full_run, small_bench, hub, copy_of, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = copy_of(full_run)
    before = snapshot(run_dir)
    url = push_run(run_dir, "tester/tiny-unlearned", token=hub.token, endpoint=hub.url)
    assert url == f"{hub.url}/tester/tiny-unlearned"

    files = hub.files("tester/tiny-unlearned")
    expected = {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {RECORD, "unlearn_config.yaml"} <= set(files)
    assert not [p for p in files if p.startswith(("eval_", "checkpoint-")) or p == "training_args.bin"], files
    assert files["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert files["README.md"] == (run_dir / "README.md").read_bytes()  # the card is also written locally
    assert b"model-index" in files["README.md"]
    uploaded = "\n".join(d.decode("utf-8", "ignore") for d in files.values())
    assert not [t for t in forget_texts(small_bench) if t in uploaded]
    assert_intact(before, run_dir)

    # download through the Hub API (resolve + HEAD metadata) and compare outputs with the local model
    tok = AutoTokenizer.from_pretrained("tester/tiny-unlearned", cache_dir=tmp_path / "dl")
    model = AutoModelForCausalLM.from_pretrained("tester/tiny-unlearned", cache_dir=tmp_path / "dl")
    assert any(r.path.endswith("/resolve/" + hub.repos["tester/tiny-unlearned"].head + "/model.safetensors")
               for r in hub.requests)  # fmt: skip
    local_tok = AutoTokenizer.from_pretrained(run_dir)
    question = load_split(str(small_bench), FORGET)[0]["question"]
    assert tok(question)["input_ids"] == local_tok(question)["input_ids"]
    ids = torch.tensor([tok(question)["input_ids"]])
    assert torch.equal(logits(model, ids), logits(AutoModelForCausalLM.from_pretrained(run_dir), ids))

    # pushing again updates the same repo (the card is ours, so it is regenerated without asking)
    push_run(run_dir, "tester/tiny-unlearned", token=hub.token, endpoint=hub.url, commit_message="again")
    assert hub.repos["tester/tiny-unlearned"].commit_messages[-1] == "again"
    assert len(hub.repos["tester/tiny-unlearned"].commits) == 2


def test_push_adapter_round_trip(adapter_run, base, hub, copy_of, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from llm_unlearn.modeling import load_causal_lm

    run_dir = copy_of(adapter_run)
    assert "[More Information Needed]" in (run_dir / "README.md").read_text()  # PEFT's blank template: replaced
    push_run(run_dir, "tester/tiny-lora", token=hub.token, endpoint=hub.url, private=True)
    assert hub.repos["tester/tiny-lora"].private
    files = hub.files("tester/tiny-lora")
    assert set(files) == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        RECORD,
        "unlearn_config.yaml",
    }
    assert b"library_name: peft" in files["README.md"] and b"More Information Needed" not in files["README.md"]

    # private: reading needs the token
    remote = AutoPeftModelForCausalLM.from_pretrained("tester/tiny-lora", cache_dir=tmp_path / "dl", token=hub.token)
    ids = torch.tensor([[1, 5, 9, 17, 33, 65]])
    adapted = logits(remote, ids)
    assert torch.equal(adapted, logits(load_causal_lm(run_dir), ids))
    assert (adapted - logits(AutoModelForCausalLM.from_pretrained(base), ids)).abs().max() > 0  # the adapter acts


# --- what goes up: an allow-list, the record and config without local paths or tokens ---------------------------


PLANTED_SECRET = "hf_planted_secret"


def test_push_uploads_only_the_allow_list_and_sanitized_record_and_config(
    full_run, small_bench, base, hub, copy_of, capsys, caplog, monkeypatch
):
    import yaml

    run_dir = copy_of(full_run)
    rows = load_split(str(small_bench), FORGET)
    # what a user's run folder gathers besides the model: none of it may reach the Hub
    (run_dir / ".env").write_text(f"HF_TOKEN={PLANTED_SECRET}\n")
    (run_dir / "train.log").write_text(f"step 1 loss 7.8 sample: {rows[0]['question']}\n")
    (run_dir / "notes").mkdir()
    (run_dir / "notes" / "dump.json").write_text(json.dumps([[r["question"], r["answer"]] for r in rows]))
    if not (run_dir / f"eval_{FORGET}.json").exists():
        (run_dir / f"eval_{FORGET}.json").write_text(json.dumps({"rows": rows}))
    (run_dir / "checkpoint-5").mkdir()
    (run_dir / "checkpoint-5" / "model.safetensors").write_bytes(b"old weights")
    (run_dir / "checkpoint-5" / "trainer_state.json").write_text(json.dumps({"sample": rows[1]["answer"]}))
    (run_dir / "training_args.bin").write_bytes(f"pickled {PLANTED_SECRET}".encode())
    (run_dir / "secrets.txt").write_text(f"{PLANTED_SECRET}\n{rows[2]['question']}\n")
    # an old record and config with a token, a relative path that exists (checkpoint-5, from the cwd) and a Hub id
    config = yaml.safe_load((run_dir / "unlearn_config.yaml").read_text())
    extra = {"hub_token": PLANTED_SECRET, "resume_from_checkpoint": "checkpoint-5", "hub_model_id": "tester/planted"}
    (run_dir / "unlearn_config.yaml").write_text(yaml.safe_dump({**config, **extra}, sort_keys=True))
    record = json.loads((run_dir / RECORD).read_text())
    record["hyperparameters"].update(extra)
    (run_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    monkeypatch.chdir(run_dir)
    before = snapshot(run_dir)

    with caplog.at_level("INFO", logger="llm_unlearn.hub"):
        push_run(run_dir, "tester/allow", token=hub.token, endpoint=hub.url)

    files = hub.files("tester/allow")
    expected = {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        RECORD,
        "unlearn_config.yaml",
    }
    assert set(files) == expected
    assert f"uploading {len(expected)} files: {', '.join(sorted(expected))}" in capsys.readouterr().out.splitlines()
    skipped = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("not uploaded"))
    for name in (".env", "train.log", "notes/", f"eval_{FORGET}.json", "checkpoint-5/", "training_args.bin"):
        assert name in skipped
    assert "secrets.txt" in skipped and "eval_cache/" in skipped

    # no uploaded byte holds the forget set's text, the token or a local path (the card names folders by their name)
    leaks = [*forget_texts(small_bench), PLANTED_SECRET, str(run_dir), str(small_bench), str(base)]
    for path, data in files.items():
        text = data.decode("utf-8", "ignore")
        assert not [t for t in leaks if t in text], path
    # plain files go up as they are; the record and config as sanitized copies: paths null, token gone, rest kept
    for name in expected - {RECORD, "unlearn_config.yaml"}:
        assert files[name] == (run_dir / name).read_bytes(), name
    up_config = yaml.safe_load(files["unlearn_config.yaml"])
    assert "hub_token" not in up_config and up_config["hub_model_id"] == "tester/planted"
    nulled = {"model_name_or_path", "data", "output_dir", "resume_from_checkpoint"}
    assert {k for k in up_config if up_config[k] != {**config, **extra}[k]} == nulled
    assert all(up_config[k] is None for k in nulled)
    up_record = json.loads(files[RECORD])
    assert up_record["base_model"] is None and "hub_token" not in up_record["hyperparameters"]
    assert {k: up_record["hyperparameters"][k] for k in nulled} == dict.fromkeys(nulled)
    assert up_record["log_history"] == record["log_history"] and up_record["forget_sha256"] == record["forget_sha256"]
    assert up_record["hyperparameters"]["learning_rate"] == record["hyperparameters"]["learning_rate"]
    assert_intact(before, run_dir)  # the files on disk are as they were (the card is new)
    assert set(snapshot(run_dir)) - set(before) == {"README.md"}


@pytest.mark.parametrize(
    ("key", "value", "kept"),
    [
        ("data", "locuslab/TOFU", True),  # a Hub id that is no local folder
        ("model_name_or_path", "/models/llama", False),
        ("output_dir", "./out/run1", False),
        ("eval_reference", "../reference", False),
        ("logging_dir", "~/runs", False),
        ("run_name", "/tmp/somewhere", False),  # a path-like value of any key
        ("base_model", "here", False),  # a path key whose value exists (a folder in the cwd)
        ("lr_scheduler_type", "here", True),  # no path key: a plain word, even if a file has that name
        ("learning_rate", 0.002, True),
        ("report_to", ["/abs/x", "wandb"], None),
    ],
)
def test_sanitize_nulls_local_paths_and_keeps_hub_ids(key, value, kept, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    out = _sanitize({key: value, "hub_token": "hf_x", "nested": [{"step": 1, "loss": 0.5}]})
    assert "hub_token" not in out and out["nested"] == [{"step": 1, "loss": 0.5}]
    if kept is None:
        assert out[key] == [None, "wandb"]
    else:
        assert out[key] == (value if kept else None)


def test_sanitized_copies_reject_a_broken_file_before_any_request(full_run, copy_of, hub):
    run_dir = copy_of(full_run)
    (run_dir / "unlearn_config.yaml").write_text("- a list\n- not a mapping\n")
    with pytest.raises(ValueError, match="unlearn_config.yaml is not a YAML mapping"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url)
    assert hub.requests == []
    assert (run_dir / "unlearn_config.yaml").read_text() == "- a list\n- not a mapping\n"
    # the copy of an intact file is built in memory: the file keeps its local paths
    assert (
        str(full_run).encode() not in sanitized(full_run / RECORD) and str(full_run) in (full_run / RECORD).read_text()
    )


# --- (d) failures --------------------------------------------------------------------------------------------------


def test_unreachable_hub_fails_clearly_and_leaves_the_run_intact(full_run, copy_of, online):
    run_dir = copy_of(full_run)
    before = snapshot(run_dir)
    endpoint = closed_port_url()
    with pytest.raises(HubPushError) as e:
        push_run(run_dir, "tester/nowhere", token="hf_x", endpoint=endpoint)
    msg = str(e.value)
    assert "tester/nowhere" in msg and f"cannot reach {endpoint}" in msg and "\n" not in msg
    assert f"local output in {run_dir} is intact" in msg
    assert f"retry with `llm-unlearn push {run_dir} --repo_id tester/nowhere`" in msg
    assert_intact(before, run_dir)


def test_bad_token_fails_clearly(full_run, hub, copy_of):
    run_dir = copy_of(full_run)
    before = snapshot(run_dir)
    with pytest.raises(HubPushError, match=r"tester/secret.*401 Unauthorized.*--token.*is intact"):
        push_run(run_dir, "tester/secret", token="hf_wrong", endpoint=hub.url)
    assert not hub.repos  # nothing was created
    # a public repo that exists: the library goes on to the upload, which the Hub refuses in the same way
    push_run(run_dir, "tester/secret", token=hub.token, endpoint=hub.url)
    with pytest.raises(HubPushError, match=r"uploading the files.*401 Unauthorized"):
        push_run(run_dir, "tester/secret", token="hf_wrong", endpoint=hub.url)
    assert len(hub.repos["tester/secret"].commits) == 1
    assert_intact(before, run_dir)


def test_bad_local_input_fails_before_any_request(full_run, base, hub, copy_of, monkeypatch):
    from huggingface_hub import constants

    from llm_unlearn.runs import model_fingerprint

    run_dir = copy_of(full_run)
    (run_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no model weights: expected model\.safetensors"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url)
    shutil.copy(full_run / "model.safetensors", run_dir)
    (run_dir / RECORD).rename(run_dir / "record.bak")
    with pytest.raises(FileNotFoundError, match="unlearn_record.json is missing"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url)
    (run_dir / "record.bak").rename(run_dir / RECORD)
    with pytest.raises(ValueError, match="repo id 'a/b/c'"):
        push_run(run_dir, "a/b/c", token=hub.token, endpoint=hub.url)
    with pytest.raises(FileNotFoundError, match="--eval"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, eval_json=run_dir / "nope.json")
    # an evaluation of other weights (here: the base's, as the untouched target's would be) never reaches a card
    other = json.loads(next(run_dir.glob("eval_*.json")).read_text())
    other["model_fingerprint"] = model_fingerprint(base)
    (run_dir.parent / "target_eval.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"scored other weights .* the card would publish another model's numbers"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, eval_json=run_dir.parent / "target_eval.json")
    other.pop("model_fingerprint")
    (run_dir.parent / "old_eval.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"does not record which weights it scored"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, eval_json=run_dir.parent / "old_eval.json")

    # a README.md of the user's is neither replaced nor uploaded unasked
    (run_dir / "README.md").write_text("# My own notes\n")
    with pytest.raises(FileExistsError, match="--card overwrite.*--card keep"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url)
    assert (run_dir / "README.md").read_text() == "# My own notes\n"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, card="keep")
    assert hub.requests == []

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.warns(UserWarning, match="empty or missing yaml metadata"):  # the Hub's validation, relayed
        push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, card="keep")
    assert hub.files("tester/x")["README.md"] == b"# My own notes\n"
    push_run(run_dir, "tester/x", token=hub.token, endpoint=hub.url, card="overwrite")
    assert card_is_ours((run_dir / "README.md").read_text())


# --- (e) --push_to_hub in unlearn.py, (f) llm-unlearn push ---------------------------------------------------------


def unlearn_argv(base: Path, bench: Path, out: Path, *flags: str) -> list[str]:
    paths = ["--model_name_or_path", str(base), "--data", str(bench), "--output_dir", str(out)]
    return ["unlearn", *paths, *TRAIN, *flags]


def test_unlearn_push_to_hub_evaluates_and_pushes_once(base, small_bench, full_run, hub, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--push_to_hub", "true", "--hub_model_id", "tester/e2e", "--hub_token", hub.token]
    rc = main(unlearn_argv(base, small_bench, out, *flags, "--eval_reference", str(base)))
    assert rc == 0, capsys.readouterr().err
    assert f"pushed {out} to {hub.url}/tester/e2e" in capsys.readouterr().out

    repo = hub.repos["tester/e2e"]
    assert len(repo.commits) == 1  # one push of the final output; the Trainer pushed nothing of its own
    assert [r.path for r in hub.requests].count("/api/repos/create") == 1
    assert {"model.safetensors", "README.md", RECORD, "unlearn_config.yaml"} <= set(repo.files)
    assert "training_args.bin" not in repo.files
    assert not [p for p, d in repo.files.items() if hub.token.encode() in d], "the token must not be uploaded"
    # the card carries the evaluation made after training
    from huggingface_hub import ModelCard

    (eval_json,) = out.glob("eval_*.json")
    summary = json.loads(eval_json.read_text())["summary"]
    card = ModelCard(repo.files["README.md"].decode())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["forget_quality"] == pytest.approx(
        summary["forget_quality"]
    )
    # what the user asked for is recorded (and reloadable with --config), the token is not
    config = (out / "unlearn_config.yaml").read_text()
    assert "push_to_hub: true" in config and "hub_model_id: tester/e2e" in config and hub.token not in config


def test_unlearn_push_settings_are_checked_before_training(base, small_bench, hub, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(unlearn_argv(base, small_bench, out, "--push_to_hub", "true")) == 2
    assert "--push_to_hub true needs --hub_model_id" in capsys.readouterr().err
    rc = main(unlearn_argv(base, small_bench, out, "--eval_reference", str(tmp_path / "no_ref")))
    assert rc == 2 and "--eval_reference" in capsys.readouterr().err
    assert not out.exists() and hub.requests == []


def test_failed_push_keeps_the_trained_model_and_push_cli_retries(
    base, small_bench, hub, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import constants

    out = tmp_path / "run"
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())  # HF_ENDPOINT names a Hub that is down
    rc = main(unlearn_argv(base, small_bench, out, "--push_to_hub", "true", "--hub_model_id", "tester/later"))
    err = capsys.readouterr().err
    assert rc == 1 and "tester/later" in err and f"local output in {out} is intact" in err
    assert f"llm-unlearn push {out} --repo_id tester/later" in err
    assert (out / "model.safetensors").is_file() and (out / RECORD).is_file()

    # `llm-unlearn push`: retry once the Hub is back; then its error paths
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    hub_url = hub.url
    argv = ["push", str(out), "--repo_id", "tester/later", "--endpoint", hub_url]
    assert main([*argv, "--token", hub.token]) == 0
    assert f"pushed {out} to {hub_url}/tester/later" in capsys.readouterr().out
    assert "model.safetensors" in hub.files("tester/later")
    assert main([*argv, "--token", "hf_wrong"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-unlearn push: error:") and "401" in err and "intact" in err and "\n" not in err
    assert main(["push", str(tmp_path / "missing"), "--repo_id", "tester/later"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_push_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["push", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--repo_id" in out and "--token" in out and "--card" in out and "never its text" in out
