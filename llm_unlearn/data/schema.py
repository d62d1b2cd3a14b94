"""The TOFU schema: split names, the fields each split must carry, and validation with precise errors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FORGET_PERCENTS = ("01", "05", "10")
UTILITY_SPLITS = ("real_authors_perturbed", "world_facts_perturbed")
RETAIN_EVAL_SPLIT = "retain_perturbed"

QA_FIELDS = ("question", "answer")
EVAL_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
UTILITY_FIELDS = ("question", "answer", "perturbed_answer")


def tofu_split_names() -> list[str]:
    """Every split name of the TOFU schema."""
    names = ["full", RETAIN_EVAL_SPLIT, *UTILITY_SPLITS]
    for pct in FORGET_PERCENTS:
        names += [f"forget{pct}", f"retain{100 - int(pct):02d}", f"forget{pct}_perturbed", f"holdout{pct}"]
    return names


# How QA items are rendered with a chat template (used by data.formatting; here so that configs import no torch).
# The date a template may write into its system turn (Llama 3.x: "Today Date: ..."): pinned, so that training and
# evaluation on different days see the same prompt; Llama 3.1's own fallback date.
CHAT_DATE = "26 Jul 2024"
CHAT_DATE_HELP = (
    "Date a chat template may write into the prompt (Llama 3.x's 'Today Date'): pinned, never today's, so that "
    "training and evaluation on different days see the same prompt."
)
SYSTEM_PROMPT_HELP = (
    "System turn put before every chat-template conversation (default: none, so the template's own default, if any)."
)


class DataValidationError(ValueError):
    """Raised when a split does not follow the TOFU schema. The message names the file, field and row."""


@dataclass(frozen=True)
class BenchmarkSplits:
    """The split names that belong to one forget percentage, e.g. ``forget10``."""

    forget: str
    retain: str
    forget_eval: str
    holdout: str
    retain_eval: str = RETAIN_EVAL_SPLIT
    utility: tuple[str, ...] = UTILITY_SPLITS

    @classmethod
    def from_forget(cls, forget_split: str) -> BenchmarkSplits:
        pct = forget_split.removeprefix("forget")
        if not forget_split.startswith("forget") or not pct.isdigit() or not 0 < int(pct) < 100:
            raise ValueError(
                f"forget split {forget_split!r} is not of the form 'forgetXX' (e.g. forget01, forget05, forget10)"
            )
        return cls(
            forget=forget_split,
            retain=f"retain{100 - int(pct):02d}",
            forget_eval=f"{forget_split}_perturbed",
            holdout=f"holdout{pct}",
        )


def required_fields(split: str) -> tuple[str, ...]:
    """The fields a split must have: evaluation splits need the answer variants."""
    if split in UTILITY_SPLITS:
        return UTILITY_FIELDS
    if split.endswith("_perturbed"):
        return EVAL_FIELDS
    return QA_FIELDS


def _type_name(value) -> str:
    return type(value).__name__


def perturbed_answer_problem(value) -> str | None:
    """Why ``value`` is not a valid ``perturbed_answer`` (``None`` when it is). A single string is accepted as a
    one-element list, as before; anything else must be a non-empty list (or tuple) of non-empty strings."""
    if isinstance(value, str):
        return "an empty string" if not value.strip() else None
    if not isinstance(value, (list, tuple)):
        return _type_name(value)
    if not value:
        return f"an empty {_type_name(value)}"
    for k, v in enumerate(value):
        if not isinstance(v, str):
            return f"a {_type_name(value)} holding {_type_name(v)} at position {k}"
        if not v.strip():
            return f"a {_type_name(value)} holding an empty string at position {k}"
    return None


def validate_rows(rows: Sequence[Mapping], split: str, source: str) -> None:
    """Check that every row has the split's fields with the right types.

    Required fields (see :func:`required_fields`) must be present and not ``None``. The answer variants are
    checked wherever they are present (not ``None``), in any split, required or not: ``perturbed_answer`` must be
    a non-empty list of non-empty strings (a single string is accepted as a one-element list) and
    ``paraphrased_answer`` a non-empty string. ``question`` and ``answer`` must be non-empty strings.

    Args:
        rows: the split's items.
        split: its name (decides which fields are required).
        source: the file or dataset id, quoted in errors.
    """
    if len(rows) == 0:
        raise DataValidationError(f"{source}: split {split!r} is empty")
    required = required_fields(split)
    for i, row in enumerate(rows):
        where = f"{source}: row {i} of split {split!r}"
        for name in required:
            if name not in row or row[name] is None:
                raise DataValidationError(f"{source}: row {i} of split {split!r} has no field {name!r}")
        for name in ("question", "answer", "paraphrased_answer"):
            value = row.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataValidationError(f"{where}: field {name!r} must be a string, got {_type_name(value)}")
            if not value.strip():
                raise DataValidationError(f"{where}: field {name!r} is empty")
        value = row.get("perturbed_answer")
        if value is not None:
            problem = perturbed_answer_problem(value)
            if problem is not None:
                raise DataValidationError(
                    f"{where}: field 'perturbed_answer' must be a non-empty list of strings, got {problem}"
                )


_CLOSING = ".!?;:,\"'\u201d\u2019\u00bb"  # final punctuation and closing quotes


def normalize_text(text: str) -> str:
    """The form in which two texts count as the same: lower case, whitespace runs collapsed to one space and
    stripped, final punctuation (``.!?;:,``) and closing quotes stripped (repeatedly: ``'Yes."'`` → ``yes``)."""
    return " ".join(text.lower().split()).rstrip(_CLOSING + " ")


def _key(row: Mapping) -> tuple[str, str]:
    return (normalize_text(row["question"]), normalize_text(row["answer"]))


def _more(n: int, what: str) -> str:
    return f" ({n} more {what})" if n else ""


def check_unique(rows: Sequence[Mapping], split: str, source: str) -> None:
    """Fail if two rows of one split are the same item: same question and answer after :func:`normalize_text`.

    The error names the first pair of rows and counts the other duplicates."""
    first: dict[tuple[str, str], int] = {}
    dupes = []
    for i, row in enumerate(rows):
        j = first.setdefault(_key(row), i)
        if j != i:
            dupes.append((j, i))
    if dupes:
        j, i = dupes[0]
        a, b = rows[j], rows[i]
        raise DataValidationError(
            f"{source}: rows {j} and {i} of split {split!r} are the same item after normalization "
            f"(question {a['question']!r} / {b['question']!r}, answer {a['answer']!r} / {b['answer']!r})"
            f"{_more(len(dupes) - 1, 'duplicate rows')}: remove the duplicates"
        )


def _check_disjoint(
    forget: Sequence[Mapping], retain: Sequence[Mapping], forget_name: str, retain_name: str, source: str | None
) -> None:
    retain_keys: dict[tuple[str, str], int] = {}
    for j, r in enumerate(retain):
        retain_keys.setdefault(_key(r), j)
    shared = [(i, retain_keys[k]) for i, row in enumerate(forget) if (k := _key(row)) in retain_keys]
    if shared:
        i, j = shared[0]
        f, r = forget[i], retain[j]
        prefix = f"{source}: " if source else ""
        raise DataValidationError(
            f"{prefix}row {i} of {forget_name!r} is also row {j} of {retain_name!r} after normalization "
            f"(question {f['question']!r} / {r['question']!r}, answer {f['answer']!r} / {r['answer']!r})"
            f"{_more(len(shared) - 1, 'shared items')}: forget and retain must not share items"
        )


def check_disjoint(forget: Sequence[Mapping], retain: Sequence[Mapping], forget_name: str, retain_name: str) -> None:
    """Fail if an item (same question and answer after :func:`normalize_text`) is in both the forget and the
    retain split; the error names both rows, both splits and counts the other shared items."""
    _check_disjoint(forget, retain, forget_name, retain_name, None)


def validate_training_splits(
    forget_rows: Sequence[Mapping], retain_rows: Sequence[Mapping], forget_name: str, retain_name: str, source: str
) -> None:
    """Every check on the forget and retain splits of a run, cheap enough to run before any model is loaded:
    fields and types (:func:`validate_rows`), no duplicate items within either split (:func:`check_unique`) and
    none shared between them (:func:`check_disjoint`), all on normalized text.

    Args:
        forget_rows, retain_rows: the splits' items.
        forget_name, retain_name: their split names (e.g. ``forget10``, ``retain90``).
        source: the folder, file or dataset id they came from, quoted in errors.

    Raises:
        DataValidationError: naming the source, split, row(s) and field.
    """
    validate_rows(forget_rows, forget_name, source)
    validate_rows(retain_rows, retain_name, source)
    check_unique(forget_rows, forget_name, source)
    check_unique(retain_rows, retain_name, source)
    _check_disjoint(forget_rows, retain_rows, forget_name, retain_name, source)


def check_partition(
    full: Sequence[Mapping], forget: Sequence[Mapping], retain: Sequence[Mapping] | None, names: tuple, source: str
) -> None:
    """``forget`` ⊆ ``full``, and (when ``retain`` is given) ``retain`` = ``full`` − ``forget``: every item (normalized
    question and answer) of the forget and retain splits is in ``full``, and every item of ``full`` is in one of them.
    ``names`` = (full, forget, retain) split names for the error."""
    full_name, forget_name, retain_name = names
    in_full = {_key(r) for r in full}
    for split, rows in ((forget_name, forget), (retain_name, retain or [])):
        missing = [i for i, r in enumerate(rows) if _key(r) not in in_full]
        if missing:
            row = rows[missing[0]]
            raise DataValidationError(
                f"{source}: row {missing[0]} of split {split!r} (question {row['question']!r}) is not in "
                f"{full_name!r}{_more(len(missing) - 1, 'such rows')}: the target is trained on {full_name!r}, so "
                f"{split!r} must be drawn from it"
            )
    if retain is not None:
        covered = {_key(r) for r in forget} | {_key(r) for r in retain}
        left = [i for i, r in enumerate(full) if _key(r) not in covered]
        if left:
            row = full[left[0]]
            raise DataValidationError(
                f"{source}: row {left[0]} of {full_name!r} (question {row['question']!r}) is in neither "
                f"{forget_name!r} nor {retain_name!r}{_more(len(left) - 1, 'such rows')}: the retain split must be "
                f"{full_name!r} without {forget_name!r}"
            )


def holdout_halves(rows: Sequence[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Two seeded halves of a holdout split, ``(dosing half, evaluation half)``: an item's half is decided by a hash
    of the seed and its question alone, so the halves do not depend on the rows' order or on the other rows."""
    halves: tuple[list[dict], list[dict]] = ([], [])
    for row in rows:
        digest = hashlib.sha256(f"holdout-half:{seed}:{row['question']}".encode()).digest()
        halves[digest[0] & 1].append(row)
    return halves
