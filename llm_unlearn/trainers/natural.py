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
def mean_answer_logprobs(
    model, formatter, pairs: list[tuple[str, str]], batch_size: int = 64, max_memory: int = 1 << 30
) -> list[float]:
    """Per pair, ``(1/|a|) Σ_t log p(a_t | q, a_<t)`` under ``model``: the mean log-probability per answer token
    (length-normalised, so that a short answer is not preferred for having fewer tokens to pay for).

    The pairs are sorted by length and run ``batch_size`` at a time (fewer when a batch's fp32 logits would pass
    ``max_memory``) on the model's device, in eval mode; results come back in the order of ``pairs``."""
    if not pairs:
        return []
    collate = QACollator(formatter.tokenizer.pad_token_id)
    device = next(model.parameters()).device
    encoded = [formatter.encode(q, a) for q, a in pairs]
    order = sorted(range(len(encoded)), key=lambda k: (len(encoded[k]["input_ids"]), k))
    vocab = model.get_output_embeddings().weight.shape[0]
    was_training = model.training
    model.eval()
    out = [0.0] * len(pairs)
    start = 0
    try:
        while start < len(order):
            widest = len(encoded[order[min(start + batch_size, len(order)) - 1]]["input_ids"])
            rows = max(1, min(batch_size, max_memory // (2 * 4 * widest * vocab)))  # logits + their log-softmax
            idx = order[start : start + rows]
            batch = {k: v.to(device) for k, v in collate([encoded[k] for k in idx]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logp, n = L.sequence_logprobs(logits.float(), batch["labels"])
            for k, value in zip(idx, (logp / n.clamp(min=1)).tolist()):
                out[k] = value
            start += rows
    finally:
        model.train(was_training)
    return out


def _ranked(scores: list[float], cands: list[int]) -> list[int]:
    """Candidates by score, highest first; equal scores by index (a stable, batching-independent order)."""
    return [j for _, j in sorted(zip(scores, cands), key=lambda t: (-t[0], t[1]))]


def likelihood_partners(args, formatter, forget_rows, retain_rows, model) -> list[list[int]]:
    """``n_hybrids`` partners per forget item by likelihood, never reused: every forget item draws its own
    ``partner_candidates`` retain items (seeded by ``seed`` and the item's index), all pairs are scored in one
    batched pass (:func:`mean_answer_logprobs`), and the items then take, in order, their highest-scoring
    candidates not taken before. An item whose candidates are all taken draws and scores as many more from the
    free ones. The choice depends on the seed, the data and the model, not on ``partner_batch_size``."""
    n, k = args.n_hybrids, max(args.partner_candidates, args.n_hybrids)
    n_retain = len(retain_rows)
    cands = [
        random.Random(f"partners/{args.seed}/{i}").sample(range(n_retain), min(k, n_retain))
        for i in range(len(forget_rows))
    ]
    pairs = [(i, j) for i, js in enumerate(cands) for j in js]
    values = mean_answer_logprobs(
        model,
        formatter,
        [(forget_rows[i]["question"], retain_rows[j]["answer"]) for i, j in pairs],
        args.partner_batch_size,
    )
    score = dict(zip(pairs, values))
    used: set[int] = set()
    partners = []
    for i, row in enumerate(forget_rows):
        chosen = [j for j in _ranked([score[(i, j)] for j in cands[i]], cands[i]) if j not in used][:n]
        if len(chosen) < n:
            taken = set(cands[i]) | used
            free = [j for j in range(n_retain) if j not in taken]
            extra = random.Random(f"partners/{args.seed}/{i}/more").sample(free, min(k, len(free)))
            more = mean_answer_logprobs(
                model, formatter, [(row["question"], retain_rows[j]["answer"]) for j in extra], args.partner_batch_size
            )
            chosen += _ranked(more, extra)[: n - len(chosen)]
        used.update(chosen)
        partners.append(chosen)
    return partners


def select_partners(args, formatter, forget_rows, retain_rows, model) -> list[list[int]]:
    """``n_hybrids`` retain partners per forget item, never reused across forget items.

    ``likelihood``: the retain answers the model finds most plausible for ``q_f``: the highest mean log-probability
    per answer token of ``a_r`` given ``q_f`` among ``partner_candidates`` sampled ones (the analogue of the
    "most-confused classes"; :func:`likelihood_partners`); ``similarity``: highest word overlap (Jaccard) between
    questions; ``random``: a seeded draw.
    """
    n = args.n_hybrids
    if n * len(forget_rows) > len(retain_rows):
        raise ValueError(
            f"--n_hybrids {n} x {len(forget_rows)} forget items needs more retain items than the "
            f"{len(retain_rows)} available (partners are never reused): lower --n_hybrids"
        )
    if args.partner_selection == "likelihood":
        return likelihood_partners(args, formatter, forget_rows, retain_rows, model)
    rng = random.Random(args.seed)
    used: set[int] = set()
    partners = []
    for row in forget_rows:
        free = [j for j in range(len(retain_rows)) if j not in used]
        if args.partner_selection == "random":
            chosen = rng.sample(free, n)
        else:
            cands = rng.sample(free, min(len(free), max(args.partner_candidates, n)))
            qf = _words(row["question"])
            scores = [
                len(qf & _words(retain_rows[j]["question"])) / len(qf | _words(retain_rows[j]["question"]))
                for j in cands
            ]
            chosen = [j for _, j in sorted(zip(scores, cands), key=lambda t: -t[0])[:n]]
        used.update(chosen)
        partners.append(chosen)
    return partners


PARTNERS_VERSION = 2  # bump when the search changes: invalidates cached partners


def partners_once(args, formatter, forget_rows, retain_rows, model, device=None) -> list[list[int]]:
    """:func:`select_partners`, computed once per content key (model weights, data, settings) by the main process
    on ``device`` and cached as JSON; the other ranks of a launch read it (``llm_unlearn.runs.computed_once``)."""
    if args.partner_selection != "likelihood":  # no model involved: cheap, the same on every rank
        return select_partners(args, formatter, forget_rows, retain_rows, model)
    from transformers.integrations import is_deepspeed_zero3_enabled

    from ..runs import atomic_write_json, computed_once, fingerprint, model_fingerprint, selection_cache_dir

    key = {
        "version": PARTNERS_VERSION,
        "model": model_fingerprint(args.model_name_or_path),
        "forget": [[r["question"], r["answer"]] for r in forget_rows],
        "retain": [[r["question"], r["answer"]] for r in retain_rows],
        "prompt": formatter.prompt_ids("{question}"),  # the rendered prompt format (template, special tokens)
        "settings": [args.n_hybrids, args.partner_candidates, args.seed, args.max_length],
    }
    path = selection_cache_dir(args) / f"partners_{fingerprint(key)[:16]}.json"

    def compute():
        cached = _read_partners(path, len(forget_rows), len(retain_rows), args.n_hybrids)
        if cached is not None:
            return cached
        if is_deepspeed_zero3_enabled():
            raise ValueError(
                "--partner_selection likelihood scores with the whole model on one process, which DeepSpeed ZeRO-3 "
                "partitions as it loads: launch with DDP or ZeRO-2, or use --partner_selection similarity"
            )
        partners = select_partners(args, formatter, forget_rows, retain_rows, model)
        atomic_write_json(path, {"partners": partners})
        return partners

    return computed_once(args, "natural partners (likelihood)", path, compute, device, model)


def _read_partners(path, n_forget: int, n_retain: int, n: int) -> list[list[int]] | None:
    """Cached partners, checked to fit the data (a file that does not is recomputed)."""
    from ..runs import read_json_cache

    data = read_json_cache(path)
    partners = data.get("partners") if isinstance(data, dict) else None
    if not isinstance(partners, list) or len(partners) != n_forget:
        return None
    flat = [j for p in partners if isinstance(p, list) and len(p) == n for j in p]
    if len(flat) != n * n_forget or len(set(flat)) != len(flat):
        return None
    if not all(isinstance(j, int) and 0 <= j < n_retain for j in flat):
        return None
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
        partner_selection (`str`, defaults to `"likelihood"`): ``likelihood`` (the candidates whose answer has the
            highest mean log-probability per answer token given the forget question), ``similarity`` or ``random``.
        partner_candidates (`int`, defaults to `64`): candidates scored per forget item by ``likelihood`` /
            ``similarity`` (bounds the cost on large retain sets).
        partner_batch_size (`int`, defaults to `64`): question-answer pairs per forward pass of the likelihood
            search (sorted by length); the choice does not depend on it.
        mix_space (`str`, defaults to `"token"`): ``token``, ``embedding`` or ``context`` hybrids.
        delta (`float`, defaults to `0.0`): offset δ added to the ramp mask (more forget content when > 0).
        hybrid_weight (`float`, defaults to `1.0`): weight of the hybrids' NLL next to the retain NLL (weight
            ``alpha``).
    """

    method: str = field(default="natural", metadata={"help": "Unlearning method name."})
    n_hybrids: int = field(default=4, metadata={"help": "Retain partners (hybrids) per forget item."})
    partner_selection: str = field(
        default="likelihood",
        metadata={
            "help": "likelihood (the candidates whose answer has the highest mean log-probability per answer token "
            "given the forget question: length-normalised), similarity (word overlap of the questions) or random."
        },
    )
    partner_candidates: int = field(default=64, metadata={"help": "Candidates scored per forget item."})
    partner_batch_size: int = field(
        default=64,
        metadata={
            "help": "Pairs per forward pass of the likelihood search, run once on the main process on the run's "
            "device and cached; the choice does not depend on it."
        },
    )
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
        if self.partner_batch_size < 1 or self.partner_candidates < 1:
            raise ValueError("--partner_batch_size and --partner_candidates must be at least 1")


class NaturalTrainer(UnlearnTrainer):
    """He et al., "Towards Natural Machine Unlearning", arXiv 2405.15495 (TPAMI 2025): inject correct information
    from remaining samples into the forget samples and label them with that correct label;
    ``L = hybrid_weight · nll(hybrids) + α · nll(retain)``."""

    paper = "Towards Natural Machine Unlearning (arXiv 2405.15495)"

    @classmethod
    def build_dataset(cls, args, formatter, forget_rows, retain_rows, model=None, device=None):
        partners = partners_once(args, formatter, forget_rows, retain_rows, model, device)
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
