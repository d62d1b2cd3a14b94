"""NPO and SimNPO: preference-style forget terms on the GradDiff skeleton."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import losses as L
from .grad_diff import GradDiffConfig, GradDiffTrainer


@dataclass
class NPOConfig(GradDiffConfig):
    r"""NPO: ``γ·(−(2/β)·mean log σ(−β·(logp − logp_ref)))`` on forget, GradDiff retain term.

    Parameters:
        beta (`float`, defaults to `0.1`): inverse temperature β.
    """

    method: str = field(default="npo", metadata={"help": "Unlearning method name."})
    beta: float = field(default=0.1, metadata={"help": "NPO inverse temperature beta."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta must be positive, got {self.beta}")
        self.needs_reference = True


class NPOTrainer(GradDiffTrainer):
    """Negative Preference Optimization (Zhang et al., arXiv 2404.05868)."""

    paper = "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning (arXiv 2404.05868)"

    def forget_terms(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["forget"]
        logp, _ = L.sequence_logprobs(self.forward(model, side), side["labels"])
        ref = self.reference_logprobs(model, side)
        return {"forget_loss": L.npo_loss(logp, ref, self.args.beta), "log_ratio": (logp - ref).mean().detach()}


@dataclass
class SimNPOConfig(GradDiffConfig):
    r"""SimNPO: ``γ·(−(2/β)·mean log σ(−β·(logp/len − δ)))`` on forget, GradDiff retain term; no reference.

    Parameters:
        beta (`float`, defaults to `4.5`), delta (`float`, defaults to `0.0`), gamma (defaults to `0.125`).
    """

    method: str = field(default="simnpo", metadata={"help": "Unlearning method name."})
    beta: float = field(default=4.5, metadata={"help": "SimNPO inverse temperature beta."})
    delta: float = field(default=0.0, metadata={"help": "SimNPO reward margin delta."})
    gamma: float = field(default=0.125, metadata={"help": "Weight of the forget term."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta must be positive, got {self.beta}")


class SimNPOTrainer(GradDiffTrainer):
    """SimNPO (Fan et al., "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
    arXiv 2410.07163)."""

    paper = "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning (arXiv 2410.07163)"

    def forget_terms(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["forget"]
        logp, n = L.sequence_logprobs(self.forward(model, side), side["labels"])
        return {"forget_loss": L.simnpo_loss(logp, n, self.args.beta, self.args.delta)}
