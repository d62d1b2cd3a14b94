"""IDK baselines: train forget questions toward a refusal ("I don't know ...", shipped in the package)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import losses as L
from .grad_diff import GradDiffConfig, GradDiffTrainer


@dataclass
class IdkNLLConfig(GradDiffConfig):
    r"""IDK-NLL: ``γ·nll(forget question → refusal) + α·nll(retain)``."""

    method: str = field(default="idk_nll", metadata={"help": "Unlearning method name."})


class IdkNLLTrainer(GradDiffTrainer):
    """IDK fine-tuning (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv 2401.06121)."""

    paper = "TOFU: A Task of Fictitious Unlearning for LLMs (arXiv 2401.06121)"
    forget_sides = ("forget", "idk")

    def forget_terms(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["idk"]
        return {"forget_loss": L.nll_loss(self.forward(model, side), side["labels"])}


@dataclass
class IdkDPOConfig(GradDiffConfig):
    r"""IDK-DPO: DPO with the refusal preferred and the forget answer rejected, GradDiff retain term.

    Parameters:
        beta (`float`, defaults to `0.1`): DPO inverse temperature β.
    """

    method: str = field(default="idk_dpo", metadata={"help": "Unlearning method name."})
    beta: float = field(default=0.1, metadata={"help": "DPO inverse temperature beta."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta must be positive, got {self.beta}")
        self.needs_reference = True


class IdkDPOTrainer(GradDiffTrainer):
    """DPO toward refusals (Rafailov et al., arXiv 2305.18290; the IDK variant of Zhang et al., arXiv 2404.05868)."""

    paper = "Direct Preference Optimization (arXiv 2305.18290)"
    forget_sides = ("forget", "idk")

    def forget_terms(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        chosen, rejected = inputs["idk"], inputs["forget"]
        lw, _ = L.sequence_logprobs(self.forward(model, chosen), chosen["labels"])
        ll, _ = L.sequence_logprobs(self.forward(model, rejected), rejected["labels"])
        rw, rl = self.reference_logprobs(model, chosen), self.reference_logprobs(model, rejected)
        return {"forget_loss": L.dpo_loss(lw, ll, rw, rl, self.args.beta)}
