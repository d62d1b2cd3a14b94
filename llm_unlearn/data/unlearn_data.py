"""Building the paired forget/retain dataset of an unlearning run from TOFU-schema rows."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from .formatting import QAFormatter
from .pairing import PairedDataset
from .schema import DataValidationError, normalize_text, perturbed_answer_problem

N_RANDOM_OTHER = 8


@lru_cache(maxsize=1)
def refusal_answers() -> tuple[str, ...]:
    """The refusal answers shipped with the package (``llm_unlearn/resources/idk.txt``)."""
    text = resources.files("llm_unlearn").joinpath("resources/idk.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _perturbed(row: dict, i: int, split: str) -> list[str]:
    """The wrong answers of a forget row as a list (a single string is one answer). Anything but a non-empty list of
    non-empty strings raises, naming the row: a dict, for one, would otherwise train toward its keys."""
    p = row.get("perturbed_answer")
    if p is None or (isinstance(p, (str, list, tuple)) and not p):
        raise DataValidationError(
            f"row {i} of split {split!r} has no 'perturbed_answer': the wrong-answer regularizer needs it "
            "(or use --wrong_answer_source random_other)"
        )
    problem = perturbed_answer_problem(p)
    if problem is not None:
        raise DataValidationError(
            f"row {i} of split {split!r}: field 'perturbed_answer' must be a non-empty list of strings, got {problem}"
        )
    return [p] if isinstance(p, str) else list(p)


def random_other_answers(
    forget_rows: Sequence[dict], retain_rows: Sequence[dict], k: int, seed: int
) -> list[list[str]]:
    """For each forget item, ``k`` answers of retain items about another entity (seeded; no global RNG)."""
    rng = random.Random(seed)
    out = []
    for row in forget_rows:
        entity = row.get("entity")
        pool = [r["answer"] for r in retain_rows if entity is None or r.get("entity") != entity]
        out.append(rng.sample(pool, min(k, len(pool))))
    return out


def _question_words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def similar_other_answers(forget_rows: Sequence[dict], retain_rows: Sequence[dict], k: int) -> list[list[str]]:
    """For each forget item, the answers of the ``k`` retain items about another entity whose questions share the
    most words with its question (Jaccard; ties: the earlier retain row). Those answer the same kind of question
    for someone else: plausible wrong values in a phrasing the model was trained on, without using the
    evaluation's ``perturbed_answer`` texts. Answers equal to the forget answer (after normalisation) are skipped;
    without an ``entity`` field, items with the same question are skipped instead."""
    keyed = [(_question_words(r["question"]), r) for r in retain_rows]
    out = []
    for row in forget_rows:
        mine, entity = _question_words(row["question"]), row.get("entity")
        scored = []
        for j, (words, r) in enumerate(keyed):
            if (entity is not None and r.get("entity") == entity) or r["question"] == row["question"]:
                continue
            if normalize_text(r["answer"]) == normalize_text(row["answer"]):
                continue  # someone else with the same value: not a wrong answer
            union = len(mine | words)
            scored.append((-(len(mine & words) / union if union else 0.0), j, r["answer"]))
        scored.sort()
        out.append([a for _, _, a in scored[:k]])
    return out


def standard_dataset(
    formatter: QAFormatter,
    forget_rows: Sequence[dict],
    retain_rows: Sequence[dict],
    sides: Sequence[str],
    alt_source: str = "perturbed",
    seed: int = 0,
    forget_split: str = "forget",
) -> PairedDataset:
    """Forget items with the requested sides: ``forget`` (question → answer), ``alt`` (question → a wrong answer:
    a perturbed one or another entity's), ``idk`` (question → a refusal); retain items (question → answer)."""
    others = None
    if "alt" in sides and alt_source == "random_other":
        others = random_other_answers(forget_rows, retain_rows, N_RANDOM_OTHER, seed)
    elif "alt" in sides and alt_source == "similar_other":
        others = similar_other_answers(forget_rows, retain_rows, N_RANDOM_OTHER)
    items = []
    for i, row in enumerate(forget_rows):
        q = row["question"]
        item = {"forget": formatter.encode(q, row["answer"])}
        if "alt" in sides:
            wrong = _perturbed(row, i, forget_split) if alt_source == "perturbed" else others[i]
            item["alt"] = [formatter.encode(q, w) for w in wrong]
        if "idk" in sides:
            item["idk"] = [formatter.encode(q, a) for a in refusal_answers()]
        items.append({k: v for k, v in item.items() if k in sides})
    retain = [formatter.encode(r["question"], r["answer"]) for r in retain_rows]
    return PairedDataset(items, retain)
