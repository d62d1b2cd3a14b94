"""Unlearning losses as pure functions of logits, labels and log-probabilities.

Conventions. ``labels`` carry -100 on prompt and padding positions and are aligned with ``logits`` the Hugging Face
way (position t predicts label t+1: the functions shift). Batch losses are means over *sequences* of per-sequence
quantities. That weights every QA item equally and makes the loss of a batch of 8 exactly the mean of 8 batches of
1, so gradient accumulation and data parallelism give the same update as one large batch (a token-level mean would
not: it depends on how tokens are split between micro-batches).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return logits, labels.clamp(min=0), mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logp(b)``: per-sequence sum of answer-token log-probs ``[B]``, and ``len(b)``: answer tokens ``[B]``."""
    logits, labels, mask = _shift(logits, labels)
    token_lp = -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    return (token_lp * mask).sum(-1), mask.sum(-1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean answer-token cross-entropy ``[B]``: ``−logp(b)/len(b)``."""
    logp, n = sequence_logprobs(logits, labels)
    return -logp / n.clamp(min=1)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``nll(b) = mean_i [−(1/|y_i|) Σ_t log p(y_it | x_i, y_i<t)]``: the fine-tuning loss on answer tokens."""
    return sequence_nll(logits, labels).mean()


def gradient_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L = −nll(forget)``: gradient ascent on the forget answers (Jang et al., 2022)."""
    return -nll_loss(logits, labels)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al., arXiv 2404.05868):
    ``L = −(2/β) · mean log σ(−β · (logp − logp_ref))`` with ``logp`` the per-sequence summed answer log-prob."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(logp: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO (Fan et al., arXiv 2410.07163), reference-free and length-normalised:
    ``L = −(2/β) · mean log σ(β · (−logp/len − δ))``, open-unlearning's parametrisation of the paper's
    ``−(2/β) · log σ(−(β/|y|) · log π(y|x) − γ)`` with ``δ = γ/β``: a positive δ asks for a larger per-token
    forget loss before the term saturates."""
    return -(2.0 / beta) * F.logsigmoid(beta * (-logp / lengths.clamp(min=1) - delta)).mean()


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290) on the unlearning scale:
    ``L = −(2/β) · mean log σ(β · [(logp_w − ref_w) − (logp_l − ref_l)])``; for IDK-DPO the chosen answer is a
    refusal and the rejected one the forget answer. The ``2/β`` factor is open-unlearning's (and our NPO's): its
    gradient at the reference is β-free, so a published recipe's β and learning rate mean the same here."""
    return -(2.0 / beta) * F.logsigmoid(beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))).mean()


def sequence_kl_uniform(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL(U ‖ p_θ) averaged over the answer tokens ``[B]``:
    ``KL_t = −log V − (1/V) Σ_v log p_θ(v | x, y_<t)``; zero exactly when the next-token distribution is uniform."""
    logits, _, mask = _shift(logits, labels)
    logp = torch.log_softmax(logits, dim=-1)
    vocab = logits.shape[-1]
    kl = -math.log(vocab) - logp.mean(-1)
    return (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def kl_uniform_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ p_θ) on the answer positions, per sequence averaged over its answer tokens, then over sequences
    (:func:`sequence_kl_uniform`). (The "KL-FT" regularizer of Ding et al., arXiv 2410.03833; the paper leaves the
    target open, see METHODS.md.)"""
    return sequence_kl_uniform(logits, labels).mean()


def forget_gate(true_nll: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """Which forget items a bounded regularizer still pushes ``[B]`` (1.0 or 0.0, no gradient): those whose true
    answer's mean answer-token loss ``nll_i`` is still below ``level`` (a number, or one level per item)."""
    return (true_nll.detach() < level).to(true_nll.dtype)


def gated_mean(per_sequence: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``(1/B) Σ_i gate_i · loss_i``: the batch mean with the stopped items contributing zero (divided by the whole
    batch, so that accumulation and data parallelism still give the large-batch update)."""
    return (per_sequence * gate).sum() / per_sequence.shape[0]


def answer_kl_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) on answer positions only (prompt and padding excluded), per sequence averaged over answer
    tokens, then over sequences: the GradDiff retain term that keeps the model close to the reference."""
    logits, _, mask = _shift(logits, labels)
    ref_logp = torch.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return ((kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
