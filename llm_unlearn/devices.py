"""Where every stage runs and in which precision: the one resolver behind ``--device`` and ``--torch_dtype``.

Every stage (``finetune``, ``unlearn.py``, ``eval``, ``attack``, ``tune``) asks :func:`resolve_device` for its device
and :func:`resolve_dtype` for its weights' dtype; nothing else picks one.

``--device``:
    ``auto`` (default): the accelerator's device, ``accelerate.PartialState().device``: under ``accelerate launch``
    or ``torchrun`` this rank's GPU (``LOCAL_RANK``), in a single process the first visible GPU, else the CPU.
    ``cpu``: the CPU even where a GPU is visible. ``cuda``: the first visible GPU (an error when none is).
    ``cuda:N``: GPU ``N`` (single process only: under a launch every rank takes its own).
``--torch_dtype``:
    ``auto`` (default): the checkpoint's own dtype on an accelerator, float32 on the CPU (half-precision matrix
    products there are slow and their numbers are not comparable); for an unlearning run, bfloat16 under
    ``--bf16 true`` and float32 otherwise. ``bfloat16``, ``float16``, ``float32``: that dtype (half precision needs
    a GPU).
"""

from __future__ import annotations

import os
import re

DEVICE_HELP = (
    "Where to run: auto (default: the accelerator's device, accelerate.PartialState().device: this rank's GPU under "
    "a launch, else the first GPU, else the CPU), cpu, cuda or cuda:N (one process only)."
)
DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_HELP = (
    "Dtype of the loaded weights: auto (default: the checkpoint's own on a GPU, float32 on the CPU; for unlearning "
    "bfloat16 under --bf16 true, else float32), bfloat16, float16 or float32 (half precision needs a GPU)."
)
_DEVICE = re.compile(r"(auto|cpu|cuda|mps|xpu)(?::(\d+))?")


def check_device(value: str | None, flag: str = "--device") -> str:
    """The request, normalised (``None`` and ``""`` mean ``auto``); a malformed one is a ``ValueError`` naming the
    accepted forms. Checks the spelling only (no device is touched): call it before any work."""
    text = "auto" if value in (None, "") else str(value).strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None or (match.group(2) is not None and match.group(1) in ("auto", "cpu")):
        raise ValueError(f"{flag} {value!r} is not a device: use auto, cpu, cuda or cuda:N (N a GPU index)")
    return text


def check_dtype(value: str | None, flag: str = "--torch_dtype") -> str:
    text = "auto" if value in (None, "") else str(value).strip().lower()
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    text = aliases.get(text, text)
    if text not in DTYPES:
        raise ValueError(f"{flag} {value!r} is not one of {', '.join(DTYPES)}")
    return text


def in_launch() -> bool:
    """Whether this process is one of several (``WORLD_SIZE > 1``, as torchrun and ``accelerate launch`` set it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(request: str | None = "auto", flag: str = "--device"):
    """The ``torch.device`` for ``request`` (see the module docstring), checked to exist here: a GPU asked for where
    none is visible, or an index past the last one, is a ``ValueError`` that says what to pass instead."""
    import torch

    request = check_device(request, flag)
    if request == "cpu":
        return torch.device("cpu")
    if request == "auto":
        from accelerate import PartialState

        # cpu=True where no accelerator is visible: a launch then opens a gloo group (see evaluation.sharding).
        device = PartialState(cpu=not _accelerator_visible()).device
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu") if device.type == "cpu" else device  # a launch's gloo ranks say cpu:0
    device = torch.device(request)
    if device.type == "cuda":
        count = _visible_gpus()
        if count == 0:
            raise ValueError(f"{flag} {request}: no CUDA device is visible here; use {flag} cpu (or auto)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise ValueError(f"{flag} {request}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
        if in_launch() and device.index != int(os.environ.get("LOCAL_RANK", "0") or 0):
            raise ValueError(
                f"{flag} {request}: under a multi-process launch every rank takes its own GPU (LOCAL_RANK); "
                f"use {flag} auto"
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{flag} {request}: no MPS device here; use {flag} cpu (or auto)")
    elif device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"{flag} {request}: no XPU device here; use {flag} cpu (or auto)")
    return device


def _accelerator_visible() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available()) or (mps is not None and mps.is_available()))


def resolve_dtype(request: str | None, device, training_precision: str | None = None, flag: str = "--torch_dtype"):
    """The dtype to load weights in: a ``torch.dtype``, or the string ``"auto"`` (the checkpoint's own, as
    ``from_pretrained(dtype="auto")`` reads it). Half precision on the CPU is a ``ValueError``.

    ``training_precision``: ``None`` for a stage that only runs the model (auto: the checkpoint's dtype on an
    accelerator, float32 on the CPU); for an unlearning run its mixed precision (``"bf16"``, ``"fp16"`` or ``"no"``):
    auto is then bfloat16 under bf16 and float32 otherwise (fp16 autocast keeps fp32 master weights)."""
    import torch

    request = check_dtype(request, flag)
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if request in ("bfloat16", "float16") and on_cpu:
        raise ValueError(f"{flag} {request} needs a GPU (this stage runs on the CPU): use {flag} float32 or auto")
    if request != "auto":
        return getattr(torch, request)
    if training_precision is not None:
        return torch.bfloat16 if training_precision == "bf16" else torch.float32
    return torch.float32 if on_cpu else "auto"


def dtype_name(dtype) -> str:
    """``"bfloat16"`` for ``torch.bfloat16``; strings pass through."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def pin_single_process_gpu(request: str | None, flag: str = "--device") -> str:
    """For the Trainer stages, before any CUDA call: a single process asked for ``cuda:N`` sees GPU ``N`` alone
    (``CUDA_VISIBLE_DEVICES``), because the Trainer of a single process always takes the first visible GPU and,
    with several visible, would wrap the model in ``nn.DataParallel``. Under a launch nothing is changed (each rank
    takes ``LOCAL_RANK``'s GPU). Returns the request to resolve from then on (``cuda`` once pinned)."""
    request = check_device(request, flag)
    match = _DEVICE.fullmatch(request)
    if in_launch() or match.group(1) != "cuda" or match.group(2) is None:
        return request
    import torch

    index = int(match.group(2))
    if torch.cuda.is_initialized():
        raise ValueError(
            f"{flag} {request}: CUDA is already initialised in this process; set CUDA_VISIBLE_DEVICES={index} "
            f"and pass {flag} cuda instead"
        )
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and index >= len(visible):
        raise ValueError(f"{flag} {request}: CUDA_VISIBLE_DEVICES={','.join(visible)} has no GPU {index}")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return "cuda"


def runtime_record(device, dtype) -> dict:
    """What an evaluation or a run records about where it ran."""
    import torch

    record = {"device": str(device), "dtype": dtype_name(dtype)}
    if getattr(device, "type", None) == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    return record
