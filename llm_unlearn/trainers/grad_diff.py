"""Gradient ascent and GradDiff: the shared skeleton of methods with a forget term and a retain term."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import losses as L
from .base import UnlearnConfig, UnlearnTrainer


@dataclass
class GradDiffConfig(UnlearnConfig):
    r"""GradDiff: ``γ·(−nll(forget)) + α·retain``.

    Parameters:
        retain_loss_type (`str`, defaults to `"nll"`): ``nll`` on retain answers, or ``kl`` to the reference on
            retain answer positions only.
    """

    method: str = field(default="grad_diff", metadata={"help": "Unlearning method name."})
    retain_loss_type: str = field(default="nll", metadata={"help": "Retain term: nll, or kl to the reference."})

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss_type not in ("nll", "kl"):
            raise ValueError(f"--retain_loss_type must be nll or kl, got {self.retain_loss_type!r}")
        self.needs_reference = self.needs_reference or (self.retain_loss_type == "kl" and self.alpha > 0)


class GradDiffTrainer(UnlearnTrainer):
    """GradDiff (Liu et al., "Continual Learning and Private Unlearning", arXiv 2203.12817; TOFU's baseline):
    ``L = γ·L_forget + α·L_retain`` with ``L_forget = −nll(forget)``. Subclasses change :meth:`forget_terms`."""

    paper = "Continual Learning and Private Unlearning (arXiv 2203.12817)"
    forget_sides: tuple[str, ...] = ("forget",)

    def forget_terms(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["forget"]
        return {"forget_loss": L.gradient_ascent_loss(self.forward(model, side), side["labels"])}

    def unlearn_losses(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        kind = getattr(self.args, "retain_loss_type", "nll")
        return self.add_retain_term(model, inputs, self.forget_terms(model, inputs), self.args.gamma, kind)


@dataclass
class GradAscentConfig(GradDiffConfig):
    r"""Gradient ascent: ``−nll(forget)`` alone (``alpha`` defaults to 0: no retain term)."""

    method: str = field(default="grad_ascent", metadata={"help": "Unlearning method name."})
    alpha: float = field(default=0.0, metadata={"help": "Weight of the retain term (0: pure gradient ascent)."})


class GradAscentTrainer(GradDiffTrainer):
    """Gradient ascent on the forget set (Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in
    Language Models", arXiv 2210.01504): ``L = −nll(forget)``."""

    paper = "Knowledge Unlearning for Mitigating Privacy Risks in Language Models (arXiv 2210.01504)"
