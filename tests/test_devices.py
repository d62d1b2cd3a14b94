"""The one device resolver (``llm_unlearn.devices``): what ``--device`` / ``--torch_dtype`` accept and resolve to, that
every stage asks it, that derived inputs (Hessian scores, natural partners) are computed once per content key, and
that the batched partner search chooses what an unbatched one chooses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm_unlearn import devices

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the resolver ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(None, "auto"), ("", "auto"), ("AUTO", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), (" cuda:1 ", "cuda:1")],
)
def test_device_requests_are_normalised(value, expected):
    assert devices.check_device(value) == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cpu:0", "auto:1", "cuda:-1", "tpu"])
def test_malformed_device_requests_name_the_accepted_forms(value):
    with pytest.raises(ValueError, match=r"--device .* use auto, cpu, cuda or cuda:N"):
        devices.check_device(value)


@pytest.mark.parametrize(
    "value, expected", [(None, "auto"), ("bf16", "bfloat16"), ("Float16", "float16"), ("fp32", "float32")]
)
def test_dtype_requests_are_normalised(value, expected):
    assert devices.check_dtype(value) == expected


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="--torch_dtype 'int8' is not one of auto, bfloat16, float16, float32"):
        devices.check_dtype("int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")
def test_resolve_device_on_a_machine_without_gpu():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto") == torch.device("cpu")  # accelerate's PartialState().device here
    for request in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match=rf"--device {request}: no CUDA device is visible here; use --device cpu"):
            devices.resolve_device(request)


def test_resolve_dtype_rules():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # resolve_dtype reads the device's type only
    assert devices.resolve_dtype("auto", cpu) is torch.float32  # the checkpoint's dtype would be bf16 on CPU
    assert devices.resolve_dtype("auto", gpu) == "auto"  # the checkpoint's own on an accelerator
    assert devices.resolve_dtype("float16", gpu) is torch.float16
    assert devices.resolve_dtype("float32", cpu) is torch.float32
    # unlearning runs: bf16 mixed precision loads bf16 weights; otherwise fp32 master weights
    assert devices.resolve_dtype("auto", gpu, "bf16") is torch.bfloat16
    assert devices.resolve_dtype("auto", gpu, "fp16") is torch.float32
    assert devices.resolve_dtype("auto", cpu, "no") is torch.float32
    for half in ("bfloat16", "float16"):
        with pytest.raises(ValueError, match=f"--torch_dtype {half} needs a GPU"):
            devices.resolve_dtype(half, cpu)


@pytest.mark.skipif(torch.cuda.is_initialized(), reason="pinning happens before CUDA starts")
def test_cuda_index_in_one_process_pins_that_gpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.pin_single_process_gpu("cuda:1") == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert devices.pin_single_process_gpu("cuda:1") == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # the index counts among the visible GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=3 has no GPU 1"):
        devices.pin_single_process_gpu("cuda:1")
    for request in ("auto", "cpu", "cuda"):  # nothing to pin
        assert devices.pin_single_process_gpu(request) == request
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setenv("WORLD_SIZE", "2")  # under a launch each rank takes LOCAL_RANK's GPU: left alone
    assert devices.pin_single_process_gpu("cuda:1") == "cuda:1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


# --- the unlearning config ------------------------------------------------------------------------------------------


def _parse(*flags, recipe: Path | None = None):
    from llm_unlearn.unlearn import parse_args

    argv = ["--model_name_or_path", "m", "--data", "d", "--output_dir", "o", *flags]
    if recipe is not None:
        argv += ["--config", str(recipe)]
    return parse_args(argv)[0]


def test_unlearn_config_takes_device_and_dtype_from_flags_and_recipes(tmp_path):
    cfg = _parse("--device", "cpu", "--torch_dtype", "float32")
    assert (cfg.run_device, cfg.torch_dtype, cfg.use_cpu, cfg.device) == ("cpu", "float32", True, torch.device("cpu"))
    assert cfg.load_dtype() is torch.float32
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: npo\ndevice: cpu\n")
    assert _parse(recipe=recipe).run_device == "cpu"  # a recipe spells it as the flag does
    from llm_unlearn.unlearn import config_to_dict

    assert config_to_dict(_parse("--device", "cpu"))["run_device"] == "cpu"  # round-trips through the saved YAML
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: no CUDA device is visible"):
            _parse("--device", "cuda")
        with pytest.raises(ValueError, match="--bf16 true needs a GPU"):
            _parse("--bf16", "true")


def test_half_precision_on_the_cpu_is_refused_before_any_work(small_bench, tmp_path):
    from llm_unlearn.unlearn import check_inputs, parse_args

    cfg, cls = parse_args(
        ["--model_name_or_path", str(small_bench), "--data", str(small_bench), "--output_dir", str(tmp_path / "o")]
        + ["--device", "cpu", "--torch_dtype", "bfloat16"]
    )
    with pytest.raises(ValueError, match="--torch_dtype bfloat16 needs a GPU"):
        check_inputs(cfg, cls)
    assert not (tmp_path / "o").exists()


def test_the_device_is_not_part_of_what_a_run_trains(small_bench, tmp_path):
    from llm_unlearn.unlearn import run_fingerprint

    base = ["--model_name_or_path", str(small_bench), "--data", str(small_bench), "--output_dir", str(tmp_path)]
    from llm_unlearn.unlearn import parse_args

    auto, cpu, fp32 = (
        parse_args([*base, *extra])[0] for extra in ([], ["--device", "cpu"], ["--torch_dtype", "fp32"])
    )
    assert run_fingerprint(auto) == run_fingerprint(cpu)
    assert run_fingerprint(auto) != run_fingerprint(fp32)  # a dtype asked for is part of the recipe


# --- every stage asks the one resolver ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(small_bench, tmp_path_factory):
    from llm_unlearn.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        data=str(small_bench),
        output_dir=str(tmp_path_factory.mktemp("devices") / "base"),
        split="full",
        num_train_epochs=3,
        hidden_size=32,
        num_layers=1,
        vocab_size=400,
    )
    return finetune(cfg)


@pytest.fixture
def resolver_calls(monkeypatch):
    """Every call of ``devices.resolve_device`` (the request), passed through to the real resolver."""
    calls = []
    real = devices.resolve_device

    def spy(request="auto", flag="--device"):
        calls.append(request)
        return real(request, flag)

    monkeypatch.setattr(devices, "resolve_device", spy)
    return calls


def test_every_stage_asks_the_one_resolver(base, small_bench, tmp_path, resolver_calls):
    from llm_unlearn.evaluation.evaluator import EvalConfig, evaluate_model
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.robustness.run import AttackConfig, Subject
    from llm_unlearn.unlearn import parse_args, run

    finetune(
        FinetuneConfig(
            data=str(small_bench),
            output_dir=str(tmp_path / "ft"),
            split="retain90",
            num_train_epochs=1,
            hidden_size=32,
            num_layers=1,
            vocab_size=400,
            device="cpu",
        )
    )
    assert resolver_calls == ["cpu"]

    resolver_calls.clear()
    cfg, cls = parse_args(
        ["--method", "npo", "--model_name_or_path", str(base), "--data", str(small_bench)]
        + ["--output_dir", str(tmp_path / "u"), "--max_steps", "1", "--device", "cpu", "--disable_tqdm", "true"]
    )
    run(cfg, cls)
    assert resolver_calls == ["cpu"]
    record = json.loads((tmp_path / "u" / "unlearn_record.json").read_text())
    assert record["runtime"] == {"device": "cpu", "dtype": "float32"}

    resolver_calls.clear()
    result = evaluate_model(base, str(small_bench), EvalConfig(forget_split="forget10", device="cpu"), use_cache=False)
    assert resolver_calls == ["cpu"]
    assert result["runtime"] == {"device": "cpu", "dtype": "float32"}
    assert (result["config"]["device"], result["config"]["torch_dtype"]) == ("cpu", "auto")

    resolver_calls.clear()
    model, _ = Subject(base, EvalConfig(forget_split="forget10"), AttackConfig())._load()
    assert resolver_calls == ["auto"] and next(model.parameters()).device == torch.device("cpu")


def test_eval_on_the_cpu_and_by_default_agree_and_share_the_cache(base, small_bench):
    """On a machine without GPU ``--device auto`` is the CPU: the same numbers, the same cache entry."""
    from llm_unlearn.evaluation.evaluator import EvalConfig, cache_key, evaluate_model, load_eval_data

    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    data = load_eval_data(str(small_bench), "forget10")
    keys = {cache_key(base, data, EvalConfig(device=d), EvalConfig(device=d).runtime()) for d in ("auto", "cpu")}
    assert len(keys) == 1
    auto = evaluate_model(base, str(small_bench), EvalConfig(), use_cache=False, data=data)
    cpu = evaluate_model(base, str(small_bench), EvalConfig(device="cpu"), use_cache=False, data=data)
    assert auto["splits"] == cpu["splits"] and auto["model_utility"] == cpu["model_utility"]


# --- the partner search ---------------------------------------------------------------------------------------------


def _natural_args(**overrides):
    from types import SimpleNamespace

    values = dict(n_hybrids=2, partner_candidates=8, partner_selection="likelihood", seed=3, partner_batch_size=64)
    return SimpleNamespace(**{**values, **overrides})


def test_partner_scores_are_the_mean_log_probability_per_answer_token(base, small_bench):
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.modeling import load_causal_lm, load_tokenizer
    from llm_unlearn.trainers.natural import mean_answer_logprobs

    model, tok = load_causal_lm(base, dtype=torch.float32), load_tokenizer(base)
    fmt = QAFormatter(tok, max_length=128)
    rows = load_split(str(small_bench), "retain90")[:6]
    pairs = [(rows[0]["question"], r["answer"]) for r in rows]
    batched = mean_answer_logprobs(model, fmt, pairs, batch_size=4)
    for (q, a), value in zip(pairs, batched):  # one pair at a time, by hand: Σ log p(answer tokens) / their count
        enc = fmt.encode(q, a)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        labels = torch.tensor(enc["labels"][1:])
        answer = labels != -100
        token_lp = logp[answer].gather(-1, labels[answer].unsqueeze(-1)).squeeze(-1)
        assert value == pytest.approx(float(token_lp.mean()), abs=1e-5)


def test_the_partner_choice_does_not_depend_on_batching(base, small_bench):
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.modeling import load_causal_lm, load_tokenizer
    from llm_unlearn.trainers.natural import select_partners

    model, tok = load_causal_lm(base, dtype=torch.float32), load_tokenizer(base)
    fmt = QAFormatter(tok, max_length=128)
    forget, retain = load_split(str(small_bench), "forget10"), load_split(str(small_bench), "retain90")
    choices = [
        select_partners(_natural_args(partner_batch_size=b), fmt, forget, retain, model) for b in (1, 5, 64, 512)
    ]
    assert all(c == choices[0] for c in choices[1:])
    flat = [j for p in choices[0] for j in p]
    assert len(flat) == 2 * len(forget) and len(set(flat)) == len(flat)  # never reused
    # a tight candidate pool: later items find their candidates taken and draw more, still never reusing one
    tight = select_partners(_natural_args(partner_candidates=2, n_hybrids=2), fmt, forget, retain, model)
    flat = [j for p in tight for j in p]
    assert len(set(flat)) == len(flat) == 2 * len(forget)


# --- work done once in a 2-process launch ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_two_process_launch_computes_scores_and_partners_once(base, small_bench, tmp_path):
    """Hessian scores and natural partners are computed by the main process and read from the cache by the other
    rank (counted from each rank's log line), and the second launch computes nothing."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }

    def launch(out: str) -> str:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        cmd += [str(ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", "0", str(ROOT / "unlearn.py")]
        cmd += ["--method", "natural", "--selection", "hessian", "--model_name_or_path", str(base)]
        cmd += ["--data", str(small_bench), "--output_dir", str(tmp_path / out), "--max_steps", "1"]
        cmd += ["--per_device_train_batch_size", "2", "--n_hybrids", "2", "--partner_candidates", "8"]
        cmd += ["--disable_tqdm", "true"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout + proc.stderr

    def events(log: str) -> list[tuple[str, str, str]]:
        pattern = r"rank (\d): (fisher Hessian scores|natural partners \(likelihood\)) (computed|read from the cache)"
        return sorted(re.findall(pattern, log))

    first = events(launch("a"))
    assert first == [
        ("0", "fisher Hessian scores", "computed"),
        ("0", "natural partners (likelihood)", "computed"),
        ("1", "fisher Hessian scores", "read from the cache"),
        ("1", "natural partners (likelihood)", "read from the cache"),
    ]
    second = events(launch("b"))
    assert [e[2] for e in second] == ["read from the cache"] * 4


# --- the frozen reference under DeepSpeed ---------------------------------------------------------------------------


def test_deepspeed_reference_config_keeps_zero3_and_drops_the_optimizer():
    from llm_unlearn.distributed import deepspeed_reference_config

    policy = {
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": {"type": "AdamW"},
        "scheduler": {"type": "WarmupLR"},
        "bf16": {"enabled": True},
        "zero_optimization": {
            "stage": 3,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": 1000,
        },
    }
    ref = deepspeed_reference_config(policy, hidden_size=64)
    assert "optimizer" not in ref and "scheduler" not in ref
    assert ref["zero_optimization"] == {
        "stage": 3,  # partitioned like the policy: no full copy of the weights on any rank
        "reduce_bucket_size": 64 * 64,
        "stage3_prefetch_bucket_size": int(0.9 * 64 * 64),
        "stage3_param_persistence_threshold": 1000,  # a number the user gave is kept
    }
    assert ref["bf16"] == {"enabled": True} and ref["train_micro_batch_size_per_gpu"] == 4
    assert policy["optimizer"] == {"type": "AdamW"} and policy["zero_optimization"]["reduce_bucket_size"] == "auto"
    for stage in (0, 1, 2):  # whole weights on every rank: the reference is a plain copy (stage 0)
        config = deepspeed_reference_config({**policy, "zero_optimization": {"stage": stage, "overlap_comm": True}})
        assert config["zero_optimization"] == {"stage": 0}
    with pytest.raises(ValueError, match="zero_optimization.reduce_bucket_size is 'auto'"):
        deepspeed_reference_config(policy, hidden_size=None)
