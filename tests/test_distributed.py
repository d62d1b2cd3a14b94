"""Multi-process runs: the accelerate configs parse, and a 2-process CPU run (gloo) stays in sync.

The slow test launches ``unlearn.py``'s code path through ``accelerate launch --config_file
configs/accelerate/cpu_2proc.yaml`` (torchrun underneath; ``--cpu --num_processes 2`` would start one process).
Its script is a thin wrapper over ``llm_unlearn.unlearn.parse_args`` + ``run`` that records, per rank, the final
weights, the batches seen, the local loss terms and the ``save_pretrained`` calls, without changing library code.
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
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / "cpu_2proc.yaml"),
        "--main_process_port",
        "0",  # accelerate picks a free port
        str(script),
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
    ]
    env = {
        **os.environ,
        "PROBE_DIR": str(probe),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
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

    # The ranks stayed in sync: DDP averaged the gradients, so both end with the same weights ...
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # ... which are the ones saved (once, by the main process, in one file).
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out)
    assert _state_sha256(saved) == ranks[0]["weights_sha256"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    saves = {r: json.loads((probe / f"saves.rank{r}.json").read_text()) for r in (0, 1)}
    assert [s["is_main_process"] for s in saves[0]] == [True] and saves[0][0]["dir"] == str(out)
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
