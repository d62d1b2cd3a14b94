"""The TOFU schema: split names, the fields each split must carry, and validation with precise errors."""

from __future__ import annotations

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


def validate_rows(rows: Sequence[Mapping], split: str, source: str) -> None:
    """Check that every row has the split's fields with the right types.

    Args:
        rows: the split's items.
        split: its name (decides which fields are required).
        source: the file or dataset id, quoted in errors.
    """
    if len(rows) == 0:
        raise DataValidationError(f"{source}: split {split!r} is empty")
    for i, row in enumerate(rows):
        for name in required_fields(split):
            if name not in row or row[name] is None:
                raise DataValidationError(f"{source}: row {i} of split {split!r} has no field {name!r}")
            value = row[name]
            if name == "perturbed_answer":
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
                    raise DataValidationError(
                        f"{source}: row {i} of split {split!r}: field 'perturbed_answer' must be a non-empty "
                        f"list of strings, got {type(row[name]).__name__}"
                    )
            elif not isinstance(value, str):
                raise DataValidationError(
                    f"{source}: row {i} of split {split!r}: field {name!r} must be a string, "
                    f"got {type(value).__name__}"
                )
            elif name in ("question", "answer") and not value.strip():
                raise DataValidationError(f"{source}: row {i} of split {split!r}: field {name!r} is empty")


def _key(row: Mapping) -> tuple[str, str]:
    return (row["question"].strip(), row["answer"].strip())


def check_disjoint(forget: Sequence[Mapping], retain: Sequence[Mapping], forget_name: str, retain_name: str) -> None:
    """Fail if an item (same question and answer) is in both the forget and the retain split."""
    retain_keys = {_key(r): i for i, r in enumerate(retain)}
    for i, row in enumerate(forget):
        j = retain_keys.get(_key(row))
        if j is not None:
            raise DataValidationError(
                f"row {i} of {forget_name!r} is also row {j} of {retain_name!r} "
                f"(question {row['question']!r}): forget and retain must not share items"
            )
