"""The scoring core: one batched teacher-forced pass per (model, split, answer variant), and batched generation.

Every probability-based metric (probability, truth ratio, membership-inference scores, memorization) derives from
the per-token arrays returned here, so nothing is computed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.formatting import IGNORE_INDEX, QACollator, QAFormatter


@dataclass
class TokenScores:
    """Per answer token of one (question, answer) pair.

    Attributes:
        logprobs: ``log p(y_t | x, y_<t)``.
        argmax_match: whether the teacher-forced argmax equals the label.
        mu: ``E_{z~p_t}[log p_t(z)]``, the expected log-prob under the model's next-token distribution.
        sigma: the standard deviation of ``log p_t(z)`` under ``z ~ p_t``. (``mu``/``sigma`` serve Min-K%++.)
    """

    logprobs: np.ndarray
    argmax_match: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @property
    def length(self) -> int:
        return len(self.logprobs)

    @property
    def avg_loss(self) -> float:
        """``ℓ(y) = −(1/|y|) Σ_t log p(y_t | x, y_<t)``."""
        return float(-self.logprobs.mean())


def _batches(order: Sequence[int], size: int, desc: str | None = None):
    """Consecutive slices of ``order``; with ``desc``, behind a progress bar (long evaluations take minutes)."""
    starts = range(0, len(order), size)
    if desc is not None:
        from tqdm.auto import tqdm

        # leave=False: the bar goes away under the evaluator's per-split bar; disable=None: hidden when not a tty
        starts = tqdm(starts, desc=desc, unit="batch", leave=False, disable=True if len(starts) <= 1 else None)
    for i in starts:
        yield order[i : i + size]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def score_answers(
    model, formatter: QAFormatter, questions: Sequence[str], answers: Sequence[str], batch_size: int = 32
) -> list[TokenScores]:
    """Teacher-forced answer-token scores of each (question, answer) pair, in input order."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    encoded = [formatter.encode(q, a) for q, a in zip(questions, answers)]
    return score_encoded(model, encoded, formatter.tokenizer.pad_token_id, batch_size)


@torch.no_grad()
def score_encoded(model, encoded: Sequence[dict], pad_token_id: int, batch_size: int = 32) -> list[TokenScores]:
    """Scores of the supervised tokens (``labels != -100``) of encoded items (QA pairs or text chunks), in input
    order. Items are sorted by length so batches carry little padding; padding is masked by length."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    collate = QACollator(pad_token_id)
    device = model_device(model)
    out: list[TokenScores | None] = [None] * len(encoded)
    for idx in _batches(order, batch_size, desc=f"scoring {len(order)} items (teacher-forced)"):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits, dim=-1)
        mask = labels != IGNORE_INDEX
        safe = labels.clamp(min=0)
        token_lp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        match = logits.argmax(-1) == safe
        probs = logp.exp()
        mu = (probs * logp).sum(-1)
        sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
        for row, i in enumerate(idx):
            m = mask[row]
            out[i] = TokenScores(
                logprobs=token_lp[row][m].cpu().numpy(),
                argmax_match=match[row][m].cpu().numpy(),
                mu=mu[row][m].cpu().numpy(),
                sigma=sigma[row][m].cpu().numpy(),
            )
    return out  # type: ignore[return-value]


def truncate_generation(text: str, stop: str = "\n\n") -> str:
    """Cut a generation at the first ``stop`` (default a blank line: TOFU answers are one paragraph)."""
    return text.split(stop, 1)[0].strip()


def generate_answers(
    model, formatter: QAFormatter, questions: Sequence[str], max_new_tokens: int = 200, batch_size: int = 32
) -> list[str]:
    """Greedy answers, batched with left padding and the KV cache; each stops at EOS or a blank line."""
    prompts = [formatter.prompt_ids(q) for q in questions]
    return generate_from_ids(model, formatter.tokenizer, prompts, max_new_tokens, batch_size, stop="\n\n")


@torch.no_grad()
def generate_from_ids(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    stop: str | None = "\n\n",
) -> list[str]:
    """Greedy continuations of tokenized prompts, batched with left padding and the KV cache. Each stops at EOS and
    at the string ``stop`` (a blank line for one-paragraph answers, a newline for one-line answers; ``None``: only
    EOS), which is cut off with what follows."""
    tok = tokenizer
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    device = model_device(model)
    out: list[str] = [""] * len(prompts)
    pad = tok.pad_token_id
    stopping = {"stop_strings": [stop], "tokenizer": tok} if stop else {}
    for idx in _batches(order, batch_size, desc=f"generating {len(order)} greedy answers"):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompts[i]
            ids[row, width - len(p) :] = torch.tensor(p)
            attn[row, width - len(p) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            **stopping,
        )
        for row, i in enumerate(idx):
            text = tok.decode(gen[row, width:], skip_special_tokens=True)
            out[i] = truncate_generation(text, stop) if stop else text.strip()
    return out


def gradient_norms(model, encoded: Sequence[dict], pad_token_id: int) -> list[float]:
    """GradNorm membership score input: ``‖∇_θ ℓ‖₂`` of each item's average loss over all trainable weights, one
    backward pass per item (costly: off by default). Gradients are cleared afterwards."""
    collate = QACollator(pad_token_id)
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    flags = [p.requires_grad for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    norms = []
    try:
        for item in encoded:
            batch = {k: v.to(device) for k, v in collate([item]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(
                logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=IGNORE_INDEX
            )  # the item's average loss ℓ over its supervised tokens
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms.append(float(torch.sqrt(sum(g.float().square().sum() for g in grads if g is not None))))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    return norms
