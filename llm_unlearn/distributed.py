"""The launch: refuse a distributed setup that cannot take effect, and record what actually ran.

``accelerate launch --config_file X`` hands its settings to the script as environment variables (accelerate 1.15,
``accelerate/utils/launch.py``): ``prepare_multi_gpu_env`` (the torchrun path of MULTI_GPU and FSDP configs) sets
``ACCELERATE_MIXED_PRECISION`` and, for FSDP, ``ACCELERATE_USE_FSDP=true`` with ``FSDP_VERSION``,
``FSDP_SHARDING_STRATEGY``, ``FSDP_RESHARD_AFTER_FORWARD``, ...; ``prepare_deepspeed_cmd_env`` sets
``ACCELERATE_USE_DEEPSPEED=true``, ``ACCELERATE_DEEPSPEED_ZERO_STAGE`` and ``ACCELERATE_MIXED_PRECISION``;
``prepare_simple_launcher_cmd_env`` sets ``ACCELERATE_USE_CPU`` and ``ACCELERATE_MIXED_PRECISION``. The
``TrainingArguments`` read ``ACCELERATE_MIXED_PRECISION`` into ``mixed_precision``; ``--fsdp`` / ``--deepspeed`` ask
for the same from the command line.

Without a GPU none of this fails: ``AcceleratorState`` only turns a MULTI_GPU state into FSDP or DeepSpeed when it is
not on CPU, so ``configs/accelerate/fsdp.yaml`` silently runs plain DDP (MULTI_CPU, gloo) with bf16 autocast, and
the record would say nothing about it. :func:`check_launch` turns that into an error before any model is loaded;
:func:`launch_record` reads what ran from the trainer's accelerator state (for the run record).
"""

from __future__ import annotations

import os

_TRUE = ("y", "yes", "t", "true", "on", "1")  # accelerate's str_to_bool
CPU_LAUNCH = (
    "on CPU launch with `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml` "
    "(DDP over gloo, no mixed precision) or run without accelerate"
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _gpu_in_use(cfg) -> bool:
    """A CUDA (or XPU) device is present and the run is not told to stay on the CPU."""
    import torch

    if getattr(cfg, "use_cpu", False) or _env_flag("ACCELERATE_USE_CPU"):
        return False
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def launch_problems(cfg) -> list[str]:
    """What the launch asks for that cannot take effect here (empty when it can run as asked)."""
    problems = []
    if _env_flag("ACCELERATE_USE_FSDP") or getattr(cfg, "fsdp", None):
        source = "ACCELERATE_USE_FSDP=true" if _env_flag("ACCELERATE_USE_FSDP") else "--fsdp"
        problems.append(f"FSDP ({source}) needs GPUs (on CPU accelerate silently runs plain DDP)")
    if _env_flag("ACCELERATE_USE_DEEPSPEED") or getattr(cfg, "deepspeed", None):
        source = "ACCELERATE_USE_DEEPSPEED=true" if _env_flag("ACCELERATE_USE_DEEPSPEED") else "--deepspeed"
        problems.append(f"DeepSpeed ({source}) needs GPUs")
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if precision not in ("", "no"):
        problems.append(f"mixed precision {precision} (ACCELERATE_MIXED_PRECISION) needs a GPU (on CPU it autocasts)")
    else:
        for flag in ("bf16", "fp16"):
            if getattr(cfg, flag, False) is True:
                problems.append(f"--{flag} needs a GPU")
                break
        else:
            precision = getattr(cfg, "mixed_precision", None)
            if isinstance(precision, str) and precision.lower() not in ("", "no"):
                problems.append(f"mixed precision {precision} needs a GPU")
    return problems if problems and not _gpu_in_use(cfg) else []  # torch is imported only when something is asked


def check_launch(cfg) -> None:
    """Raise ``ValueError`` (one line) when the launch environment or ``cfg`` asks for FSDP, DeepSpeed or mixed
    precision without a GPU. Call it before loading any model. ``cfg`` is any config object: the fields
    ``fsdp``, ``deepspeed``, ``bf16``, ``fp16``, ``mixed_precision`` and ``use_cpu`` are read when present."""
    problems = launch_problems(cfg)
    if problems:
        raise ValueError(f"this launch cannot take effect (no GPU in use): {'; '.join(problems)}; {CPU_LAUNCH}")


def _sharding(state) -> str | None:
    from accelerate.utils import DistributedType

    if state.distributed_type == DistributedType.FSDP:
        plugin = state.fsdp_plugin
        version = int(getattr(plugin, "fsdp_version", 1) or 1)
        if version >= 2:
            return f"fsdp2 (reshard_after_forward={getattr(plugin, 'reshard_after_forward', None)})"
        strategy = getattr(plugin, "sharding_strategy", None) or getattr(plugin, "reshard_after_forward", None)
        return f"fsdp1 ({getattr(strategy, 'name', strategy)})"
    if state.distributed_type == DistributedType.DEEPSPEED:
        return f"deepspeed zero-{state.deepspeed_plugin.zero_stage}"
    return None


def launch_record(trainer) -> dict:
    """What actually ran, from the trainer's accelerator state and ``torch.distributed`` (not from the config):
    ``world_size``, ``distributed_type`` (e.g. ``MULTI_CPU``), ``backend`` (``gloo``, ``nccl`` or ``None`` without a
    process group), ``sharding`` (``fsdp2 (...)``, ``deepspeed zero-N`` or ``None``), ``mixed_precision`` and
    ``device``."""
    import torch.distributed as dist

    state = trainer.accelerator.state
    initialized = dist.is_available() and dist.is_initialized()
    distributed_type = state.distributed_type
    return {
        "world_size": dist.get_world_size() if initialized else int(state.num_processes),
        "distributed_type": getattr(distributed_type, "value", str(distributed_type)),
        "backend": str(dist.get_backend()) if initialized else None,
        "sharding": _sharding(state),
        "mixed_precision": str(state.mixed_precision),
        "device": state.device.type,
    }


# --- the frozen reference under DeepSpeed ---------------------------------------------------------------------------
#
# A reference model (NPO, SimNPO's KL, IdkDPO, the regularizer's bound) runs forward only. Under ZeRO-3 it loads
# partitioned (``from_pretrained`` inside ``zero.Init``), and a partitioned module computes nothing outside a
# DeepSpeed engine, whose hooks gather each layer's weights for its forward: so the reference gets an engine of its
# own, partitioned like the policy, without optimizer or scheduler. Under ZeRO-0/1/2 the weights are whole on every
# rank anyway: the reference engine is stage 0 (a plain copy on this rank's GPU).


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def deepspeed_reference_config(ds_config: dict, hidden_size: int | None = None) -> dict:
    """The DeepSpeed config of a frozen reference beside a ZeRO-trained policy, derived from the policy's
    (``accelerator.state.deepspeed_plugin.deepspeed_config``): no optimizer, no scheduler; ZeRO-3 kept (with its
    ``"auto"`` bucket sizes, which the Trainer fills only at train time, set from ``hidden_size`` as the Trainer
    would: ``h²``, ``0.9·h²`` and ``10·h``), any other stage turned into stage 0. The input is not changed."""
    import copy

    config = copy.deepcopy(ds_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    if int(zero.get("stage", 0) or 0) == 3:
        sizes = {
            "reduce_bucket_size": None if hidden_size is None else hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": None if hidden_size is None else int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": None if hidden_size is None else 10 * hidden_size,
        }
        for key, value in sizes.items():
            if _is_auto(zero.get(key)):
                if value is None:
                    raise ValueError(f"the DeepSpeed config's zero_optimization.{key} is 'auto': give a number")
                zero[key] = value
    else:
        config["zero_optimization"] = {"stage": 0}
    return config


def prepare_deepspeed_reference(model, accelerator):
    """``model`` (frozen, eval mode) inside a DeepSpeed inference engine of :func:`deepspeed_reference_config`."""
    import deepspeed

    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(text_config, "hidden_size", None)
    config = deepspeed_reference_config(accelerator.state.deepspeed_plugin.deepspeed_config, hidden)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine
