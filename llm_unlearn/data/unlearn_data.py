"""Building the paired forget/retain dataset of an unlearning run from TOFU-schema rows."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from .formatting import QAFormatter
from .pairing import PairedDataset
from .schema import DataValidationError, normalize_text

N_RANDOM_OTHER = 8


@lru_cache(maxsize=1)
def refusal_answers() -> tuple[str, ...]:
    """The refusal answers shipped with the package (``llm_unlearn/resources/idk.txt``)."""
    text = resources.files("llm_unlearn").joinpath("resources/idk.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def scored_answers(row: dict) -> set[str]:
    """Every answer to a forget row's question that the evaluation scores (the answer, its paraphrase and the
    perturbed wrong answers), normalised: no training sequence may pair the question with one of them (the truth
    ratio, and so forget quality, scores exactly the perturbed ones: training toward them is training on the test)."""
    texts = [row.get("answer"), row.get("paraphrased_answer")]
    p = row.get("perturbed_answer")
    texts += [p] if isinstance(p, str) else list(p or [])
    return {normalize_text(t) for t in texts if isinstance(t, str) and t}


def random_other_answers(
    forget_rows: Sequence[dict], retain_rows: Sequence[dict], k: int, seed: int
) -> list[list[str]]:
    """For each forget item, ``k`` answers of retain items about another entity (seeded; no global RNG), never one
    the evaluation scores for its question (:func:`scored_answers`)."""
    rng = random.Random(seed)
    out = []
    for row in forget_rows:
        entity, scored = row.get("entity"), scored_answers(row)
        pool = [
            r["answer"]
            for r in retain_rows
            if (entity is None or r.get("entity") != entity) and normalize_text(r["answer"]) not in scored
        ]
        out.append(rng.sample(pool, min(k, len(pool))))
    return out


def _question_words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def similar_other_answers(forget_rows: Sequence[dict], retain_rows: Sequence[dict], k: int) -> list[list[str]]:
    """For each forget item, the answers of the ``k`` retain items about another entity whose questions share the
    most words with its question (Jaccard; ties: the earlier retain row). Those answer the same kind of question
    for someone else: plausible wrong values in a phrasing the model was trained on, without using the
    evaluation's ``perturbed_answer`` texts. Answers equal to one the evaluation scores for the question (after
    normalisation: the answer, its paraphrase, the perturbed ones) are skipped; without an ``entity`` field, items
    with the same question are skipped too."""
    keyed = [(_question_words(r["question"]), r) for r in retain_rows]
    out = []
    for row in forget_rows:
        mine, entity, excluded = _question_words(row["question"]), row.get("entity"), scored_answers(row)
        ranked = []
        for j, (words, r) in enumerate(keyed):
            if (entity is not None and r.get("entity") == entity) or r["question"] == row["question"]:
                continue
            if normalize_text(r["answer"]) in excluded:
                continue  # the same value (not a wrong answer), or an answer the evaluation scores
            union = len(mine | words)
            ranked.append((-(len(mine & words) / union if union else 0.0), j, r["answer"]))
        ranked.sort()
        out.append([a for _, _, a in ranked[:k]])
    return out


def standard_dataset(
    formatter: QAFormatter,
    forget_rows: Sequence[dict],
    retain_rows: Sequence[dict],
    sides: Sequence[str],
    alt_source: str = "random_other",
    seed: int = 0,
    forget_split: str = "forget",
) -> PairedDataset:
    """Forget items with the requested sides: ``forget`` (question → answer), ``alt`` (question → a wrong answer:
    another entity's, ``random_other`` or ``similar_other``; never one the evaluation scores), ``idk`` (question →
    a refusal); retain items (question → answer)."""
    others = None
    if "alt" in sides:
        if alt_source == "random_other":
            others = random_other_answers(forget_rows, retain_rows, N_RANDOM_OTHER, seed)
        elif alt_source == "similar_other":
            others = similar_other_answers(forget_rows, retain_rows, N_RANDOM_OTHER)
        else:
            raise ValueError(f"wrong answers from {alt_source!r}: use random_other or similar_other")
    items = []
    for i, row in enumerate(forget_rows):
        q = row["question"]
        item = {"forget": formatter.encode(q, row["answer"])}
        if "alt" in sides:
            if not others[i]:
                raise DataValidationError(
                    f"row {i} of split {forget_split!r}: no retain answer about another entity is left as a wrong "
                    "answer (each equals one the evaluation scores for this question)"
                )
            item["alt"] = [formatter.encode(q, w) for w in others[i]]
        if "idk" in sides:
            item["idk"] = [formatter.encode(q, a) for a in refusal_answers()]
        items.append({k: v for k, v in item.items() if k in sides})
    retain = [formatter.encode(r["question"], r["answer"]) for r in retain_rows]
    return PairedDataset(items, retain)
