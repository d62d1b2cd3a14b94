"""Correct-label injection ("natural unlearning", seed paper 002) and its ``relabel`` ablation.

For each forget QA ``(q_f, a_f)`` pick ``n_hybrids`` retain partners ``(q_r, a_r)`` (each used once), build a hybrid
input that mixes ``q_f`` with ``q_r``, and train it toward the partner's *correct* answer ``a_r``; the loss is plain
NLL over retain items and hybrids. The ablation ``relabel`` trains ``q_f`` toward a random retain answer with no
injection: the "incorrect label" approach the paper argues against.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch

from ..data.formatting import IGNORE_INDEX, QACollator
from ..data.pairing import PairedDataset, seeded_generator
from . import losses as L
from .base import UnlearnConfig, UnlearnTrainer

RAMPS = ("rising", "falling", "tent", "inverted_tent")


def ramp(pattern: str, n: int) -> torch.Tensor:
    """A gradual mask ``M ∈ [0, 1]^n`` over aligned positions (the 1-D analogue of the paper's row/column tents)."""
    x = torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1)
    return {"rising": x, "falling": 1 - x, "tent": 1 - (2 * x - 1).abs(), "inverted_tent": (2 * x - 1).abs()}[pattern]


def mix_tokens(
    forget_ids: list[int], retain_ids: list[int], m: torch.Tensor, delta: float, pad: int, generator: torch.Generator
) -> list[int]:
    """Token-space hybrid: position i takes the forget token with probability ``clip(M[i] + δ, 0, 1)``, else the
    retain token; the shorter sequence is padded and pads are dropped from the result."""
    n = max(len(forget_ids), len(retain_ids))
    f = forget_ids + [pad] * (n - len(forget_ids))
    r = retain_ids + [pad] * (n - len(retain_ids))
    take_forget = torch.rand(n, generator=generator) < (m + delta).clamp(0, 1)
    return [a if t else b for a, b, t in zip(f, r, take_forget.tolist()) if (a if t else b) != pad]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@torch.no_grad()
def answer_logprobs(model, formatter, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[float]:
    """Per-pair ``logp(answer | question)`` (sum over answer tokens) under ``model``."""
    collate = QACollator(formatter.tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(pairs), batch_size):
        batch = collate([formatter.encode(q, a) for q, a in pairs[i : i + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out += L.sequence_logprobs(logits, batch["labels"])[0].tolist()
    return out


def select_partners(args, formatter, forget_rows, retain_rows, model) -> list[list[int]]:
    """``n_hybrids`` retain partners per forget item, never reused across forget items.

    ``likelihood``: the retain answers the model finds most plausible for ``q_f`` (highest ``logp(a_r | q_f)``
    among ``partner_candidates`` sampled ones: the analogue of the "most-confused classes"); ``similarity``: highest
    word overlap (Jaccard) between questions; ``random``: a seeded draw.
    """
    rng = random.Random(args.seed)
    n = args.n_hybrids
    if n * len(forget_rows) > len(retain_rows):
        raise ValueError(
            f"--n_hybrids {n} x {len(forget_rows)} forget items needs more retain items than the "
            f"{len(retain_rows)} available (partners are never reused): lower --n_hybrids"
        )
    used: set[int] = set()
    partners = []
    model_was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    for row in forget_rows:
        free = [j for j in range(len(retain_rows)) if j not in used]
        if args.partner_selection == "random":
            chosen = rng.sample(free, n)
        else:
            cands = rng.sample(free, min(len(free), max(args.partner_candidates, n)))
            if args.partner_selection == "likelihood":
                scores = answer_logprobs(
                    model, formatter, [(row["question"], retain_rows[j]["answer"]) for j in cands]
                )
            else:
                qf = _words(row["question"])
                scores = [
                    len(qf & _words(retain_rows[j]["question"])) / len(qf | _words(retain_rows[j]["question"]))
                    for j in cands
                ]
            chosen = [j for _, j in sorted(zip(scores, cands), key=lambda t: -t[0])[:n]]
        used.update(chosen)
        partners.append(chosen)
    if model is not None and model_was_training:
        model.train()
    return partners


def hybrid_item(args, formatter, f_row: dict, r_row: dict, pattern: str, gen: torch.Generator) -> dict:
    """One hybrid, labelled with the retain partner's correct answer."""
    tok = formatter.tokenizer
    if args.mix_space == "context":
        return formatter.encode(f"{r_row['question']} {r_row['answer']} {f_row['question']}", r_row["answer"])
    if args.mix_space == "token":
        ids_f = tok(f_row["question"], add_special_tokens=False)["input_ids"]
        ids_r = tok(r_row["question"], add_special_tokens=False)["input_ids"]
        mixed = mix_tokens(ids_f, ids_r, ramp(pattern, max(len(ids_f), len(ids_r))), args.delta, -1, gen)
        return formatter.encode(tok.decode(mixed), r_row["answer"])
    # embedding: inputs_embeds = M ⊙ E(prompt_f) + (1 − M) ⊙ E(prompt_r) over right-aligned prompt positions
    pf, pr = formatter.prompt_ids(f_row["question"]), formatter.prompt_ids(r_row["question"])
    width = max(len(pf), len(pr))
    pad = tok.pad_token_id
    pf, pr = [pad] * (width - len(pf)) + pf, [pad] * (width - len(pr)) + pr
    completion = formatter.completion_ids(r_row["question"], r_row["answer"])
    m = (ramp(pattern, width) + args.delta).clamp(0, 1)
    m = torch.where(torch.tensor(pf) == pad, 0.0, torch.where(torch.tensor(pr) == pad, 1.0, m))
    return {
        "input_ids": pr + completion,
        "mix_ids": pf + completion,
        "mix_weight": m.tolist() + [0.0] * len(completion),
        "labels": [IGNORE_INDEX] * width + completion,
    }


@dataclass
class NaturalConfig(UnlearnConfig):
    r"""Correct-label injection.

    Parameters:
        n_hybrids (`int`, defaults to `4`): retain partners (hybrids) per forget item; partners are never reused.
        partner_selection (`str`, defaults to `"likelihood"`): ``likelihood``, ``similarity`` or ``random``.
        partner_candidates (`int`, defaults to `64`): candidates scored per forget item by ``likelihood`` /
            ``similarity`` (bounds the cost on large retain sets).
        mix_space (`str`, defaults to `"token"`): ``token``, ``embedding`` or ``context`` hybrids.
        delta (`float`, defaults to `0.0`): offset δ added to the ramp mask (more forget content when > 0).
        hybrid_weight (`float`, defaults to `1.0`): weight of the hybrids' NLL next to the retain NLL (weight
            ``alpha``).
    """

    method: str = field(default="natural", metadata={"help": "Unlearning method name."})
    n_hybrids: int = field(default=4, metadata={"help": "Retain partners (hybrids) per forget item."})
    partner_selection: str = field(default="likelihood", metadata={"help": "likelihood, similarity or random."})
    partner_candidates: int = field(default=64, metadata={"help": "Candidates scored per forget item."})
    mix_space: str = field(default="token", metadata={"help": "Hybrid space: token, embedding or context."})
    delta: float = field(default=0.0, metadata={"help": "Offset added to the ramp mask."})
    hybrid_weight: float = field(default=1.0, metadata={"help": "Weight of the hybrids' NLL."})

    def __post_init__(self):
        super().__post_init__()
        if self.partner_selection not in ("likelihood", "similarity", "random"):
            raise ValueError(
                f"--partner_selection must be likelihood, similarity or random, got {self.partner_selection!r}"
            )
        if self.mix_space not in ("token", "embedding", "context"):
            raise ValueError(f"--mix_space must be token, embedding or context, got {self.mix_space!r}")
        if self.n_hybrids < 1:
            raise ValueError("--n_hybrids must be at least 1")


class NaturalTrainer(UnlearnTrainer):
    """He et al., "Towards Natural Machine Unlearning", arXiv 2405.15495 (TPAMI 2025): inject correct information
    from remaining samples into the forget samples and label them with that correct label;
    ``L = hybrid_weight · nll(hybrids) + α · nll(retain)``."""

    paper = "Towards Natural Machine Unlearning (arXiv 2405.15495)"

    @classmethod
    def build_dataset(cls, args, formatter, forget_rows, retain_rows, model=None):
        partners = select_partners(args, formatter, forget_rows, retain_rows, model)
        items = []
        for i, (row, chosen) in enumerate(zip(forget_rows, partners)):
            for h, j in enumerate(chosen):
                gen = seeded_generator(args.seed, i, h)
                items.append({"forget": hybrid_item(args, formatter, row, retain_rows[j], RAMPS[h % 4], gen)})
        retain = [formatter.encode(r["question"], r["answer"]) for r in retain_rows]
        return PairedDataset(items, retain)

    def forget_logits(self, model, side: dict) -> torch.Tensor:
        if "mix_ids" not in side:
            return self.forward(model, side)
        embed = self.accelerator.unwrap_model(model).get_input_embeddings()
        w = side["mix_weight"].unsqueeze(-1).to(embed.weight.dtype)
        embeds = w * embed(side["mix_ids"]) + (1 - w) * embed(side["input_ids"])
        return model(inputs_embeds=embeds, attention_mask=side["attention_mask"]).logits

    def unlearn_losses(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["forget"]
        terms = {"forget_loss": L.nll_loss(self.forget_logits(model, side), side["labels"])}
        return self.add_retain_term(model, inputs, terms, self.args.hybrid_weight)


@dataclass
class RelabelConfig(UnlearnConfig):
    r"""Relabel ablation: ``γ · nll(q_f → random retain answer) + α · nll(retain)``, no injection."""

    method: str = field(default="relabel", metadata={"help": "Unlearning method name."})


class RelabelTrainer(UnlearnTrainer):
    """Relabeling forget questions with incorrect (other entities') answers: the baseline that He et al.
    (arXiv 2405.15495) argue teaches wrong information and over-forgets."""

    paper = "Towards Natural Machine Unlearning (arXiv 2405.15495), relabel ablation"
    forget_sides = ("alt",)

    @classmethod
    def alt_source(cls, args) -> str:
        return "random_other"

    def unlearn_losses(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        side = inputs["alt"]
        terms = {"forget_loss": L.nll_loss(self.forward(model, side), side["labels"])}
        return self.add_retain_term(model, inputs, terms, self.args.gamma)
