"""Evaluation on a raw-text (MUSE-style) benchmark: VerbMem, KnowMem and membership inference on documents.

- **VerbMem**: ROUGE-L F1 between the greedy continuation (``verbmem_max_new_tokens``, 128 by default, stopping only
  at EOS) of a forget-document prefix and the document's true continuation.
- **KnowMem**: ROUGE-L F1 between the greedy one-line answer (``knowmem_max_new_tokens``, 32 by default) to a
  question about the forget (resp. retain) documents and the true answer. KnowMem on retain is the utility.
- **Membership inference**: the scores of ``privacy.privacy_scores`` on the first ``max_length`` tokens of each
  forget document (members) and holdout document (non-members), every token scored.

Prompts are plain text (no chat template): raw-text corpora are for base models, as in MUSE.
"""

from __future__ import annotations

import logging

import numpy as np

from ..data.text import chunk_document, load_documents, load_knowmem, load_verbmem
from . import metrics as M
from .privacy import HOLDOUT, privacy_scores, privacy_summary

logger = logging.getLogger(__name__)

TEXT_ROLES = {
    "verbmem": "VerbMem (forget)",
    "knowmem_forget": "KnowMem forget",
    "knowmem_retain": "KnowMem retain",
}


def load_text_eval_data(data: str, cfg) -> dict[str, list]:
    """Every text split the evaluation reads, validated before any model is loaded; the holdout documents are
    optional (without them membership inference is left out, with a warning)."""
    from ..data.schema import DataValidationError

    out = {
        "verbmem": load_verbmem(data, cfg.verbmem_split),
        "knowmem_forget": load_knowmem(data, cfg.knowmem_forget_split),
        "knowmem_retain": load_knowmem(data, cfg.knowmem_retain_split),
        "forget_documents": load_documents(data, cfg.forget_split),
    }
    try:
        out[HOLDOUT] = load_documents(data, cfg.holdout_split)
    except DataValidationError as e:
        logger.warning("no usable holdout split (%s): membership inference is left out of this evaluation", e)
    return out


def _prefix_ids(tokenizer, text: str) -> list[int]:
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + tokenizer(text, add_special_tokens=False)["input_ids"]


def verbmem_items(model, tokenizer, rows: list[dict], cfg) -> list[dict]:
    from .sharding import generate_from_ids

    prompts = [_prefix_ids(tokenizer, r["prompt"]) for r in rows]
    gens = generate_from_ids(model, tokenizer, prompts, cfg.verbmem_max_new_tokens, cfg.batch_size, stop=None)
    return [{**r, "generation": g, "rouge_l_f1": M.rouge_l_f1(g, r["gt"])} for r, g in zip(rows, gens)]


def knowmem_items(model, tokenizer, rows: list[dict], cfg) -> list[dict]:
    from .sharding import generate_from_ids

    prompts = [_prefix_ids(tokenizer, cfg.knowmem_prompt.format(question=r["question"])) for r in rows]
    gens = generate_from_ids(model, tokenizer, prompts, cfg.knowmem_max_new_tokens, cfg.batch_size, stop="\n")
    return [{**r, "generation": g, "rouge_l_f1": M.rouge_l_f1(g, r["answer"])} for r, g in zip(rows, gens)]


def document_items(model, tokenizer, docs: list[str], cfg) -> list[dict]:
    """Attack scores and memorization of the first ``max_length`` tokens of each document."""
    from .sharding import gradient_norms, score_encoded

    heads = [chunk_document(tokenizer, d, cfg.max_length)[0] for d in docs]
    encoded = [{"input_ids": h, "labels": list(h)} for h in heads]
    scores = score_encoded(model, encoded, tokenizer.pad_token_id, cfg.batch_size, cfg.max_scoring_memory)
    items = []
    for h, s in zip(heads, scores):
        text = tokenizer.decode(h, skip_special_tokens=True)
        items.append({"text_head": text[:80], "answer_loss": s.avg_loss, **privacy_scores(s, text)})
    if cfg.gradnorm:
        for item, norm in zip(items, gradient_norms(model, encoded, tokenizer.pad_token_id)):
            item["mia_gradnorm"] = -norm  # members sit nearer a minimum: smaller gradients
    return items


def evaluate_text(model, tokenizer, data: dict[str, list], cfg) -> dict:
    """Splits (per-item values and aggregates), privacy and utility of one model on a text benchmark."""
    from tqdm.auto import tqdm

    splits = {}
    for role in tqdm(TEXT_ROLES, desc="text evaluation", leave=False):
        fn = verbmem_items if role == "verbmem" else knowmem_items
        items = fn(model, tokenizer, data[role], cfg)
        splits[role] = {
            "aggregate": {"rouge_l_f1": float(np.mean([it["rouge_l_f1"] for it in items])), "n_items": len(items)},
            "items": items,
        }
    privacy = None
    if HOLDOUT in data:
        members = document_items(model, tokenizer, data["forget_documents"], cfg)
        holdout = document_items(model, tokenizer, data[HOLDOUT], cfg)
        privacy = {"forget_items": members, "holdout_items": holdout, **privacy_summary(members, holdout)}
    return {
        "benchmark": "text",
        "model_utility": splits["knowmem_retain"]["aggregate"]["rouge_l_f1"],
        "splits": splits,
        "privacy": privacy,
    }
