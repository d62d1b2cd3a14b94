"""Multi-process runs: the accelerate configs parse, a 2-process CPU run (gloo) stays in sync, the launch layout
does not change the run, and a launch that cannot take effect (FSDP, DeepSpeed, mixed precision without a GPU) is
refused by ``llm_unlearn.distributed.check_launch``.

The slow tests launch ``unlearn.py``'s code path through ``accelerate launch --config_file
configs/accelerate/cpu_2proc.yaml`` (torchrun underneath; ``--cpu --num_processes 2`` would start one process).
Their script is a thin wrapper over ``llm_unlearn.unlearn.parse_args`` + ``run`` that records, per rank, the final
weights, the batches seen, the local loss terms, the trainer's log history, ``launch_record`` and the
``save_pretrained`` calls, without changing library code.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"

# What each config must say: (distributed_type, num_processes, mixed_precision, extra checks).
EXPECTED = {
    "cpu_2proc.yaml": ("MULTI_GPU", 2, "no", {"use_cpu": True}),
    "ddp.yaml": ("MULTI_GPU", 8, "bf16", {"use_cpu": False}),
    "zero2.yaml": ("DEEPSPEED", 8, "bf16", {"deepspeed_config.zero_stage": 2}),
    "zero3.yaml": (
        "DEEPSPEED",
        8,
        "bf16",
        {
            "deepspeed_config.zero_stage": 3,
            "deepspeed_config.zero3_init_flag": False,
            "deepspeed_config.zero3_save_16bit_model": True,
        },
    ),
    "fsdp.yaml": (
        "FSDP",
        8,
        "bf16",
        {
            "fsdp_config.fsdp_version": 2,
            "fsdp_config.fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_config.fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
            "fsdp_config.fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_config.fsdp_cpu_ram_efficient_loading": False,
        },
    ),
}


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    assert sorted(p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    for name, (dist, n_proc, precision, extra) in EXPECTED.items():
        path = ACCELERATE_CONFIGS / name
        assert path.read_text().startswith("#"), f"{name}: no comment header"
        config = load_config_from_file(str(path))  # what `accelerate launch --config_file` does: unknown keys raise
        assert isinstance(config, ClusterConfig), name
        assert config.distributed_type == DistributedType(dist), name
        assert (config.num_processes, config.num_machines, config.mixed_precision) == (n_proc, 1, precision), name
        for key, value in extra.items():
            section, _, field = key.rpartition(".")
            holder = getattr(config, section) if section else vars(config)
            assert holder.get(field) == value, f"{name}: {key}"
        if dist == "DEEPSPEED":
            # "auto" from the Trainer's --gradient_accumulation_steps / --max_grad_norm: a number would have to match.
            assert "gradient_accumulation_steps" not in config.deepspeed_config, name
            assert "gradient_clipping" not in config.deepspeed_config, name


LAUNCHER = {"MULTI_GPU": "multi_gpu", "DEEPSPEED": "use_deepspeed", "FSDP": "use_fsdp"}


def test_accelerate_launch_routes_configs():
    """`accelerate launch --config_file` picks torchrun (multi_gpu), deepspeed or FSDP; never the simple launcher,
    which is what runs a single process for MULTI_CPU configs or `--cpu` (accelerate's own validation step)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    for name, (dist, n_proc, precision, _) in EXPECTED.items():
        argv = ["--config_file", str(ACCELERATE_CONFIGS / name), "script.py", "--flag", "1"]
        args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
        flags = {flag: bool(getattr(args, flag)) for flag in ("multi_gpu", "use_deepspeed", "use_fsdp", "cpu")}
        assert flags == {flag: flag == LAUNCHER[dist] for flag in flags}, name
        assert (args.num_processes, args.mixed_precision) == (n_proc, precision), name
        assert args.training_script_args == ["--flag", "1"], name


# --- two processes on CPU -------------------------------------------------------------------------------------------

PROBE_SCRIPT = '''\
"""unlearn.py, plus per-rank observations written to $PROBE_DIR (see tests/test_distributed.py)."""

import hashlib
import json
import os
import sys
from pathlib import Path

from llm_unlearn import unlearn
from llm_unlearn.distributed import check_launch, launch_record

RANK = int(os.environ.get("RANK", "0"))
PROBE = Path(os.environ["PROBE_DIR"])
if RANK:  # a record written by a non-main rank would land in its own file
    unlearn.RECORD = f"unlearn_record.rank{RANK}.json"
    unlearn.RESOLVED_CONFIG = f"unlearn_config.rank{RANK}.yaml"


def state_sha256(model):
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def row_ids(side):
    """A short id of each sequence of a batch side, from its unpadded tokens."""
    ids = []
    for tokens, mask in zip(side["input_ids"].tolist(), side["attention_mask"].tolist()):
        kept = [t for t, m in zip(tokens, mask) if m]
        ids.append(hashlib.sha256(str(kept).encode()).hexdigest()[:16])
    return ids


def main():
    from transformers import PreTrainedModel

    saves, seen, local_terms = [], {"forget": [], "retain": []}, []
    save_pretrained = PreTrainedModel.save_pretrained

    def recording_save(self, save_directory, *args, is_main_process=True, **kwargs):
        saves.append({"dir": str(save_directory), "is_main_process": bool(is_main_process)})
        return save_pretrained(self, save_directory, *args, is_main_process=is_main_process, **kwargs)

    PreTrainedModel.save_pretrained = recording_save
    cfg, trainer_cls = unlearn.parse_args()
    check_launch(cfg)  # a cpu_2proc.yaml launch can take effect here (whether or not run() checks it too)

    class Probe(trainer_cls):
        def compute_loss(self, model, inputs, *args, **kwargs):
            for side in seen:
                seen[side].append(row_ids(inputs[side]))
            return super().compute_loss(model, inputs, *args, **kwargs)

        def log(self, logs, *args, **kwargs):
            if self._terms and "loss" in logs:  # this rank's terms, before log() averages them over ranks
                local_terms.append({k: sum(v) / len(v) for k, v in self._terms.items()})
            return super().log(logs, *args, **kwargs)

        def train(self, *args, **kwargs):
            result = super().train(*args, **kwargs)
            info = {
                "launch": launch_record(self),
                "log_history": self.state.log_history,
                "rank": self.args.process_index,
                "world_size": self.args.world_size,
                "distributed_type": str(self.accelerator.distributed_type),
                "backend": self.accelerator.state.backend,
                "global_step": self.state.global_step,
                "weights_sha256": state_sha256(self.accelerator.unwrap_model(self.model)),
                "seen": seen,
                "local_terms": local_terms,
            }
            (PROBE / f"train.rank{RANK}.json").write_text(json.dumps(info))
            return result

    unlearn.run(cfg, Probe)
    (PROBE / f"saves.rank{RANK}.json").write_text(json.dumps(saves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


# What launch_record must say of a cpu_2proc.yaml launch on a CPU machine.
CPU_2PROC_LAUNCH = {
    "world_size": 2,
    "distributed_type": "MULTI_CPU",
    "backend": "gloo",
    "sharding": None,
    "mixed_precision": "no",
    "device": "cpu",
}


def _env(probe: Path) -> dict:
    return {
        **os.environ,
        "PROBE_DIR": str(probe),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _launch_cmd(config: str, script: Path, *args: str, num_processes: int | None = None) -> list[str]:
    """``accelerate launch --config_file configs/accelerate/CONFIG`` on a free port."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "--main_process_port", "0", str(script), *args]  # port 0: accelerate picks a free one


def _state_sha256(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_two_process_cpu_run_stays_in_sync(small_bench, tmp_path):
    from llm_unlearn.finetune import FinetuneConfig, finetune

    model_dir = finetune(
        FinetuneConfig(
            data=str(small_bench),
            output_dir=str(tmp_path / "target"),
            split="full",
            num_train_epochs=2,
            hidden_size=32,
            num_layers=1,
            vocab_size=400,
        )
    )
    script, probe, out = tmp_path / "probe_unlearn.py", tmp_path / "probe", tmp_path / "unlearned"
    script.write_text(PROBE_SCRIPT)
    probe.mkdir()
    cmd = _launch_cmd(
        "cpu_2proc.yaml",
        script,
        "--method",
        "npo",
        "--model_name_or_path",
        str(model_dir),
        "--data",
        str(small_bench),
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
    )
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(probe), capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"launch failed after {seconds:.0f} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]

    # Two ranks, both gloo on CPU, each through 3 optimizer steps.
    ranks = [json.loads((probe / f"train.rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(p.name for p in probe.glob("train.rank*.json")) == ["train.rank0.json", "train.rank1.json"]
    for r, info in enumerate(ranks):
        assert (info["rank"], info["world_size"]) == (r, 2)
        assert (info["distributed_type"], info["backend"]) == ("DistributedType.MULTI_CPU", "gloo")
        assert info["global_step"] == 3
        assert info["launch"] == CPU_2PROC_LAUNCH

    # The ranks stayed in sync: DDP averaged the gradients, so both end with the same weights ...
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # ... which are the ones saved (once, by the main process, in one file).
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out)
    assert _state_sha256(saved) == ranks[0]["weights_sha256"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    saves = {r: json.loads((probe / f"saves.rank{r}.json").read_text()) for r in (0, 1)}
    # (into the output folder or a staging folder that becomes it: the weights above are read from `out`)
    assert [s["is_main_process"] for s in saves[0]] == [True]
    assert not any(s["is_main_process"] for s in saves[1])
    assert sorted(p.name for p in out.glob("unlearn_record*.json")) == ["unlearn_record.json"]
    assert sorted(p.name for p in out.glob("unlearn_config*.yaml")) == ["unlearn_config.yaml"]

    record = json.loads((out / "unlearn_record.json").read_text())
    assert record["world_size"] == 2
    assert record["effective_batch"] == 2 * 1 * 2
    assert record["global_steps"] == 3

    # Each rank trained on its own shard: in the first epoch the two ranks together cover the whole forget set
    # (the PairSampler's forget order is the same on every rank, accelerate hands out alternate batches).
    n_forget = record["n_forget_side_items"]
    steps_per_epoch = math.ceil(n_forget / record["effective_batch"])
    first = min(steps_per_epoch, 3)
    for info in ranks:
        assert [len(batch) for batch in info["seen"]["forget"]] == [2, 2, 2]
    epoch0 = [row for info in ranks for batch in info["seen"]["forget"][:first] for row in batch]
    if steps_per_epoch <= 3:
        assert len(set(epoch0)) == n_forget, (n_forget, epoch0)
    else:
        assert len(set(epoch0)) == len(epoch0)
    assert ranks[0]["seen"]["forget"][0] != ranks[1]["seen"]["forget"][0]

    # The logged terms are averaged over ranks (UnlearnTrainer.log reduces them), consistently with the loss.
    steps = [entry for entry in record["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3]
    for i, entry in enumerate(steps):
        assert {"forget_loss", "retain_loss"} <= set(entry)
        for term in ("forget_loss", "retain_loss"):
            mean = (ranks[0]["local_terms"][i][term] + ranks[1]["local_terms"][i][term]) / 2
            assert entry[term] == pytest.approx(mean, abs=1e-4), (i, term)
        # NPO with gamma = alpha = 1: loss = forget_loss + retain_loss, the loss being the Trainer's mean over ranks.
        assert entry["loss"] == pytest.approx(entry["forget_loss"] + entry["retain_loss"], abs=1e-3)
    print(f"2-process launch: {seconds:.1f} s")


# --- the launch: what cannot take effect is an error, the record says what ran -----------------------------------

LAUNCH_ENV = (
    "ACCELERATE_USE_FSDP",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_MIXED_PRECISION",
    "ACCELERATE_USE_CPU",
    "FSDP_VERSION",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE",
)


@pytest.fixture
def launch_env(monkeypatch):
    """A clean launch environment on a machine without a GPU (whatever this one has)."""
    import torch

    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch, "xpu", None) is not None:
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    return monkeypatch


@pytest.mark.parametrize(
    "env, fields, named",
    [
        # what `accelerate launch --config_file fsdp.yaml` sets (accelerate/utils/launch.py prepare_multi_gpu_env)
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, {}, "FSDP (ACCELERATE_USE_FSDP=true)"),
        # ... and zero2.yaml / zero3.yaml (prepare_deepspeed_cmd_env)
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
            {},
            "DeepSpeed (ACCELERATE_USE_DEEPSPEED=true)",
        ),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, {}, "mixed precision bf16 (ACCELERATE_MIXED_PRECISION)"),
        ({"ACCELERATE_MIXED_PRECISION": "fp16"}, {}, "mixed precision fp16"),
        ({}, {"fsdp": "full_shard"}, "FSDP (--fsdp)"),
        ({}, {"deepspeed": {"zero_optimization": {"stage": 2}}}, "DeepSpeed (--deepspeed)"),
        ({}, {"bf16": True}, "--bf16 needs a GPU"),
        ({}, {"fp16": True}, "--fp16 needs a GPU"),
        ({}, {"mixed_precision": "bf16"}, "mixed precision bf16 needs a GPU"),
    ],
)
def test_check_launch_refuses_what_cannot_take_effect_without_a_gpu(launch_env, env, fields, named):
    from types import SimpleNamespace

    from llm_unlearn.distributed import check_launch

    for name, value in env.items():
        launch_env.setenv(name, value)
    with pytest.raises(ValueError) as err:
        check_launch(SimpleNamespace(**fields))
    message = str(err.value)
    assert "\n" not in message and named in message
    assert "configs/accelerate/cpu_2proc.yaml" in message  # what to use instead


def test_check_launch_names_every_problem_of_the_fsdp_config(launch_env):
    from types import SimpleNamespace

    from llm_unlearn.distributed import check_launch

    launch_env.setenv("ACCELERATE_USE_FSDP", "true")
    launch_env.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match=r"FSDP .*; mixed precision bf16 .*cpu_2proc\.yaml"):
        check_launch(SimpleNamespace(fsdp=True, bf16=False, mixed_precision="bf16"))


def test_check_launch_accepts_plain_runs_and_gpu_runs(launch_env):
    from types import SimpleNamespace

    import torch

    from llm_unlearn.distributed import check_launch

    check_launch(SimpleNamespace())  # a plain python run
    check_launch(SimpleNamespace(fsdp=False, deepspeed=None, bf16=False, fp16=False, mixed_precision="no"))
    for name, value in (("ACCELERATE_MIXED_PRECISION", "no"), ("ACCELERATE_USE_FSDP", "false")):
        launch_env.setenv(name, value)  # what cpu_2proc.yaml / ddp.yaml without bf16 set
    check_launch(SimpleNamespace(mixed_precision="no"))

    # with a GPU the same requests can take effect ...
    launch_env.setattr(torch.cuda, "is_available", lambda: True)
    launch_env.setenv("ACCELERATE_USE_FSDP", "true")
    launch_env.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    check_launch(SimpleNamespace(bf16=True))
    # ... unless the run is told to stay on the CPU
    with pytest.raises(ValueError, match="FSDP"):
        check_launch(SimpleNamespace(use_cpu=True))


def test_check_launch_on_a_real_unlearn_config_from_an_fsdp_launch(launch_env):
    """UnlearnConfig drops bf16 on CPU, but the TrainingArguments keep accelerate's ACCELERATE_MIXED_PRECISION."""
    from llm_unlearn.distributed import check_launch
    from llm_unlearn.unlearn import parse_args

    argv = ["--model_name_or_path", "m", "--data", "d", "--output_dir", "o"]
    cfg, _ = parse_args(argv)
    check_launch(cfg)
    launch_env.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    launch_env.setenv("ACCELERATE_USE_FSDP", "true")
    cfg, _ = parse_args(argv)
    with pytest.raises(ValueError, match="FSDP .*mixed precision bf16"):
        check_launch(cfg)


CHECK_SCRIPT = """\
import types

from llm_unlearn.distributed import check_launch

check_launch(types.SimpleNamespace())
print("launch ok")
"""


def test_fsdp_config_launch_fails_on_cpu(tmp_path):
    """`accelerate launch --config_file configs/accelerate/fsdp.yaml` on a CPU machine: the script's check_launch
    stops it with the message (accelerate alone would run DDP with bf16 autocast and exit 0). The same check passes
    under cpu_2proc.yaml in the 2-process tests (their probe script calls it)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the FSDP launch can take effect")
    script = tmp_path / "check_launch.py"
    script.write_text(CHECK_SCRIPT)
    env = _env(tmp_path)
    # 2 processes instead of the config's 8 placeholder: what matters is the environment the config sets
    fsdp = subprocess.run(
        _launch_cmd("fsdp.yaml", script, num_processes=2),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fsdp.returncode != 0, fsdp.stdout + fsdp.stderr
    assert "launch ok" not in fsdp.stdout
    assert "ValueError: this launch cannot take effect (no GPU in use): FSDP (ACCELERATE_USE_FSDP=true)" in fsdp.stderr
    assert "mixed precision bf16" in fsdp.stderr and "configs/accelerate/cpu_2proc.yaml" in fsdp.stderr


# --- the launch layout does not change the run ----------------------------------------------------------------------

# (processes, per-device batch, accumulation): one global batch of 16 each
LAYOUTS = {"1x16": (1, 16, 1), "1x8x2": (1, 8, 2), "2x8": (2, 8, 1)}


@pytest.fixture(scope="module")
def bench21(tmp_path_factory):
    """A benchmark whose forget10 has 21 items: not a multiple of 16, so each epoch ends on a partial global batch."""
    from llm_unlearn.data.synth import SynthConfig, write_benchmark

    return write_benchmark(SynthConfig(n_authors=30, seed=3), tmp_path_factory.mktemp("bench21"))


def _run_keeping_trainer(argv: list[str]):
    """``parse_args`` + ``run`` in this process; returns the trainer that ran."""
    from llm_unlearn.unlearn import parse_args, run

    cfg, trainer_cls = parse_args(argv)
    trainers = []

    class Keep(trainer_cls):
        def train(self, *args, **kwargs):
            trainers.append(self)
            return super().train(*args, **kwargs)

    run(cfg, Keep)
    (trainer,) = trainers
    return trainer


@pytest.mark.slow
def test_launch_layouts_give_the_same_per_step_losses(bench21, tmp_path):
    """The same unlearning as 1 process x 16, 1 x 8 x 2 accumulation and 2 processes x 8 (cpu_2proc.yaml): the
    sampler draws one global stream of pairs, padded to whole global batches, and accelerate shards it, so every
    optimizer step sees the same 16 (forget, retain, draw) triples and logs the same loss."""
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.distributed import launch_record
    from llm_unlearn.finetune import FinetuneConfig, finetune

    assert len(load_split(str(bench21), "forget10")) == 21
    model_dir = finetune(
        FinetuneConfig(
            data=str(bench21),
            output_dir=str(tmp_path / "target"),
            split="full",
            num_train_epochs=2,
            hidden_size=32,
            num_layers=1,
            vocab_size=400,
        )
    )
    common = [
        "--method",
        "npo",
        "--model_name_or_path",
        str(model_dir),
        "--data",
        str(bench21),
        "--max_steps",
        "6",  # 3 epochs of 2 steps (21 items padded to 32)
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--seed",
        "0",
        "--disable_tqdm",
        "true",
    ]

    def layout_args(name: str) -> list[str]:
        _, per_device, accumulation = LAYOUTS[name]
        return [
            *common,
            "--output_dir",
            str(tmp_path / name),
            "--per_device_train_batch_size",
            str(per_device),
            "--gradient_accumulation_steps",
            str(accumulation),
        ]

    histories = {}
    for name, (processes, _, _) in LAYOUTS.items():
        if processes != 1:
            continue
        trainer = _run_keeping_trainer(layout_args(name))
        assert trainer.args.world_size == 1 and trainer.get_total_train_batch_size(trainer.args) == 16
        one_process = {"world_size": 1, "distributed_type": "NO", "backend": None}
        assert launch_record(trainer) == {**CPU_2PROC_LAUNCH, **one_process}
        histories[name] = trainer.state.log_history

    script, probe = tmp_path / "probe_unlearn.py", tmp_path / "probe"
    script.write_text(PROBE_SCRIPT)
    probe.mkdir()
    start = time.perf_counter()
    proc = subprocess.run(
        _launch_cmd("cpu_2proc.yaml", script, *layout_args("2x8")),
        cwd=ROOT,
        env=_env(probe),
        capture_output=True,
        text=True,
        timeout=240,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"launch failed after {seconds:.0f} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = [json.loads((probe / f"train.rank{r}.json").read_text()) for r in (0, 1)]
    for info in ranks:
        assert info["launch"] == CPU_2PROC_LAUNCH
        assert [len(batch) for batch in info["seen"]["forget"]] == [8] * 6  # equal micro-batches, no short tail
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    histories["2x8"] = ranks[0]["log_history"]

    steps = {name: [entry for entry in history if "loss" in entry] for name, history in histories.items()}
    reference = steps["1x16"]
    assert [entry["step"] for entry in reference] == [1, 2, 3, 4, 5, 6]
    assert len({round(entry["loss"], 3) for entry in reference}) > 1, "the steps must move the loss"
    worst = {}
    for name, entries in steps.items():
        assert [entry["step"] for entry in entries] == [1, 2, 3, 4, 5, 6], name
        worst[name] = max(abs(a["loss"] - b["loss"]) for a, b in zip(entries, reference))
        for a, b in zip(entries, reference):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5, rel=0), (name, a["step"])
            for term in ("forget_loss", "retain_loss"):  # logged rounded to 5 decimals
                assert a[term] == pytest.approx(b[term], abs=2e-5, rel=0), (name, a["step"], term)
    print(f"max |loss - loss(1x16)| per layout: {worst}; 2-process launch {seconds:.1f} s")
