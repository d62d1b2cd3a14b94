"""Loading TOFU-schema splits from the Hub (``locuslab/TOFU``) or from a local folder.

A local folder holds one file per split, named after the split: ``forget10.json``, ``forget10.jsonl`` or
``forget10.parquet``. A ``.json`` file may hold a JSON list of objects or JSON Lines. The Hub path goes through
``datasets.load_dataset(repo_id, name=split)``, the way TOFU publishes its configs.
"""

from __future__ import annotations

import json
from pathlib import Path

from .schema import DataValidationError, validate_rows

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


def is_local(source: str | Path) -> bool:
    return Path(source).exists()


def local_split_file(folder: str | Path, split: str, suffixes: tuple[str, ...] = LOCAL_SUFFIXES) -> Path:
    """The file that holds ``split`` (a name, or a ``config/split`` path) in a local folder; a clear error listing
    what is there otherwise."""
    folder = Path(folder)
    found = [folder / f"{split}{suffix}" for suffix in suffixes if (folder / f"{split}{suffix}").exists()]
    if not found:
        parent = (folder / split).parent
        have = sorted(p.name for p in parent.iterdir() if p.suffix in suffixes) if parent.is_dir() else []
        raise DataValidationError(
            f"{folder}: no file for split {split!r} (looked for {', '.join(split + s for s in suffixes)}); "
            f"files in {parent}: {', '.join(have) or 'none'}"
        )
    if len(found) > 1:
        raise DataValidationError(f"{folder}: split {split!r} is ambiguous, found {', '.join(p.name for p in found)}")
    return found[0]


def _read_json_file(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix == ".json" and stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataValidationError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataValidationError(f"{path}: line {lineno} is not valid JSON: {e.msg}") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataValidationError(f"{path}: row {i} is a {type(row).__name__}, expected an object with fields")
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def load_split(source: str | Path, split: str, validate: bool = True) -> list[dict]:
    """Load one split as a list of dicts.

    Args:
        source: a local folder (see module docstring) or a Hub dataset id such as ``locuslab/TOFU``.
        split: the split (TOFU config) name, e.g. ``forget10`` or ``retain_perturbed``.
        validate: check fields and types, raising :class:`DataValidationError` naming file, field and row.
    """
    if is_local(source):
        path = local_split_file(source, split)
        rows = _read_parquet(path) if path.suffix == ".parquet" else _read_json_file(path)
        where = str(path)
    else:
        rows = _load_hub_split(str(source), split)
        where = f"{source} (config {split!r})"
    if validate:
        validate_rows(rows, split, where)
    return rows


def _load_hub_split(repo_id: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, name=split, split="train")
    except Exception as e:  # network errors, unknown config names: say what was asked for
        raise DataValidationError(
            f"could not load config {split!r} of Hub dataset {repo_id!r}: {type(e).__name__}: {str(e).rstrip('.')}. "
            "If you meant a local folder, check that the path exists."
        ) from e
    return ds.to_list()
