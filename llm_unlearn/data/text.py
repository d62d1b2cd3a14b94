"""Raw-text (MUSE-style) corpora: loading, validation and chunking for training.

A text benchmark names its splits as ``config/split``, the way MUSE publishes them on the Hub
(``muse-bench/MUSE-News``): ``raw/forget``, ``raw/retain1``, ``raw/holdout`` hold documents (field ``text``),
``verbmem/forget`` holds verbatim-memorization probes (``prompt``, ``gt``: a text prefix and its true continuation)
and ``knowmem/forget_qa`` / ``knowmem/retain_qa`` hold short QA pairs (``question``, ``answer``) about the forget and
retain documents. A local folder mirrors that layout: ``DIR/raw/forget.jsonl`` (or ``.json``, ``.parquet``, or
``.txt``, which is one document). A name without ``/`` is a file ``DIR/<name>.*`` or the Hub config ``<name>``.

For training, documents are tokenized and cut into chunks of at most ``max_length`` tokens; every token of a
chunk is supervised (there is no prompt), so the unlearning losses act on the whole text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .loading import LOCAL_SUFFIXES, _read_json_file, _read_parquet, is_local, local_split_file
from .schema import DataValidationError

TEXT_SUFFIXES = (*LOCAL_SUFFIXES, ".txt")


@dataclass(frozen=True)
class TextSplits:
    """The split names of a text benchmark (MUSE's by default)."""

    forget: str = "raw/forget"
    retain: str = "raw/retain1"
    holdout: str = "raw/holdout"
    verbmem: str = "verbmem/forget"
    knowmem_forget: str = "knowmem/forget_qa"
    knowmem_retain: str = "knowmem/retain_qa"


def _load_rows(source: str | Path, ref: str) -> tuple[list[dict], str]:
    if is_local(source):
        path = local_split_file(source, ref, TEXT_SUFFIXES)
        if path.suffix == ".txt":
            return [{"text": path.read_text(encoding="utf-8")}], str(path)
        rows = _read_parquet(path) if path.suffix == ".parquet" else _read_json_file(path)
        return rows, str(path)
    import datasets

    config, split = ref.split("/", 1) if "/" in ref else (ref, "train")
    try:
        ds = datasets.load_dataset(str(source), name=config, split=split)
    except Exception as e:  # network errors, unknown configs: say what was asked for
        raise DataValidationError(
            f"could not load split {split!r} of config {config!r} of Hub dataset {source!r}: "
            f"{type(e).__name__}: {str(e).rstrip('.')}. If you meant a local folder, check that the path exists."
        ) from e
    return ds.to_list(), f"{source} ({config}/{split})"


def _check_fields(rows: list[dict], fields: Sequence[str], ref: str, where: str) -> None:
    if not rows:
        raise DataValidationError(f"{where}: text split {ref!r} is empty")
    for i, row in enumerate(rows):
        for f in fields:
            value = row.get(f)
            if not isinstance(value, str) or not value.strip():
                got = "missing" if f not in row else f"{type(value).__name__} {value!r:.40}"
                raise DataValidationError(f"{where}: row {i}: field {f!r} must be a non-empty string ({got})")


def load_documents(source: str | Path, ref: str) -> list[str]:
    """The documents (field ``text``) of one split, validated."""
    rows, where = _load_rows(source, ref)
    _check_fields(rows, ("text",), ref, where)
    return [r["text"] for r in rows]


def load_verbmem(source: str | Path, ref: str) -> list[dict]:
    """Verbatim-memorization probes: ``prompt`` (a prefix of a forget document) and ``gt`` (its continuation)."""
    rows, where = _load_rows(source, ref)
    _check_fields(rows, ("prompt", "gt"), ref, where)
    return [{"prompt": r["prompt"], "gt": r["gt"]} for r in rows]


def load_knowmem(source: str | Path, ref: str) -> list[dict]:
    """Knowledge-memorization QA pairs (``question``, ``answer``)."""
    rows, where = _load_rows(source, ref)
    _check_fields(rows, ("question", "answer"), ref, where)
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def check_disjoint_documents(forget: list[str], retain: list[str], forget_ref: str, retain_ref: str) -> None:
    """A document in both the forget and the retain split would be trained on and away from at once."""
    seen = {d.strip(): i for i, d in enumerate(forget)}
    for j, d in enumerate(retain):
        if d.strip() in seen:
            raise DataValidationError(
                f"document {seen[d.strip()]} of {forget_ref!r} is also document {j} of {retain_ref!r}: "
                "forget and retain splits must not share documents"
            )


def documents_hash(docs: Sequence[str]) -> str:
    """A sha256 naming a forget corpus in records and model cards without its text."""
    return hashlib.sha256(json.dumps(list(docs), ensure_ascii=False).encode()).hexdigest()


def chunk_document(tokenizer, text: str, max_length: int) -> list[list[int]]:
    """Token ids of ``text`` (with the tokenizer's BOS, and EOS at the very end) cut into chunks of at most
    ``max_length`` tokens; chunks after the first start with BOS again so each is a well-formed sequence."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if eos is not None:
        ids = ids + [eos]
    head = [bos] if bos is not None else []
    body = max_length - len(head)
    if body < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text")
    return [head + ids[i : i + body] for i in range(0, len(ids), body) if ids[i : i + body]]


def encode_chunks(tokenizer, docs: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Training items of a corpus: every token after the first is supervised (``labels == input_ids``)."""
    items = []
    for doc in docs:
        for chunk in chunk_document(tokenizer, doc, max_length):
            if len(chunk) > 1:
                items.append({"input_ids": chunk, "labels": list(chunk)})
    return items


def text_dataset(tokenizer, forget_docs: Sequence[str], retain_docs: Sequence[str], max_length: int):
    """The paired dataset of an unlearning run on raw text: forget chunks (side ``forget``) and retain chunks."""
    from .pairing import PairedDataset

    forget = encode_chunks(tokenizer, forget_docs, max_length)
    return PairedDataset([{"forget": c} for c in forget], encode_chunks(tokenizer, retain_docs, max_length))
