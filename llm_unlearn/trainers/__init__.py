"""Unlearning trainers: one explicit mapping from a method name to its (config class, trainer class).

Adding a method means one file with its config and trainer, and one line here.
"""

from __future__ import annotations

from .. import DEFAULT_METHOD as _DEFAULT_METHOD
from .base import UnlearnConfig, UnlearnTrainer
from .grad_diff import GradAscentConfig, GradAscentTrainer, GradDiffConfig, GradDiffTrainer
from .idk import IdkDPOConfig, IdkDPOTrainer, IdkNLLConfig, IdkNLLTrainer
from .natural import NaturalConfig, NaturalTrainer, RelabelConfig, RelabelTrainer
from .npo import NPOConfig, NPOTrainer, SimNPOConfig, SimNPOTrainer
from .regularized import RegularizedFTConfig, RegularizedFTTrainer

METHODS: dict[str, tuple[type[UnlearnConfig], type[UnlearnTrainer]]] = {
    "regularized_ft": (RegularizedFTConfig, RegularizedFTTrainer),
    "natural": (NaturalConfig, NaturalTrainer),
    "relabel": (RelabelConfig, RelabelTrainer),
    "grad_ascent": (GradAscentConfig, GradAscentTrainer),
    "grad_diff": (GradDiffConfig, GradDiffTrainer),
    "npo": (NPOConfig, NPOTrainer),
    "simnpo": (SimNPOConfig, SimNPOTrainer),
    "idk_nll": (IdkNLLConfig, IdkNLLTrainer),
    "idk_dpo": (IdkDPOConfig, IdkDPOTrainer),
}
# Hessian-selected parameter unlearning is a selection layer, not a loss: `--method hessian` means
# `--selection hessian` over `--base_method` (GradDiff by default); `--selection hessian` works with every method.
SELECTION_ALIASES = {"hessian": "grad_diff"}
DEFAULT_METHOD = _DEFAULT_METHOD


def get_method(name: str) -> tuple[type[UnlearnConfig], type[UnlearnTrainer]]:
    if name not in METHODS:
        known = ", ".join([*METHODS, *SELECTION_ALIASES])
        raise ValueError(f"unknown method {name!r}; choose one of: {known}")
    return METHODS[name]


__all__ = ["METHODS", "SELECTION_ALIASES", "DEFAULT_METHOD", "get_method", "UnlearnConfig", "UnlearnTrainer"]
