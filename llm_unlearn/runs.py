"""The run layer every stage goes through: staged outputs, content fingerprints, atomic files.

Guarantees (what the README's "Safety" section promises):

- **Staged outputs.** A stage (finetune, unlearn) writes into a hidden sibling of its output folder,
  ``PARENT/.NAME.partial``, and only a finished stage replaces ``PARENT/NAME`` with it (:class:`StagedOutput`). An
  interrupted or failed stage leaves the previous output untouched. A directory cannot be replaced by one atomic
  ``rename`` on POSIX, so the commit is two renames (old → ``.NAME.previous``, staging → ``NAME``); a crash between
  them is repaired the next time a stage touches that folder (:func:`recover`).
- **Reuse by content.** A finished output records the fingerprint of what made it: the resolved config, the data
  files' hashes and the input model's weights' hash (:func:`data_fingerprint`, :func:`model_fingerprint`). It is
  reused only when that fingerprint matches, never because a path matches.
- **Atomic files.** Every cache and report file is written to a temporary file in the same folder and moved into
  place with ``os.replace`` (:func:`atomic_write_bytes`): a full disk or a kill leaves the old file or none, never a
  truncated one.
- **One run per output.** A stage holds ``PARENT/.NAME.lock`` (who, where, since when) from staging to commit: a
  second run into the same folder is refused at once, naming the holder; the lock of a process that is gone (same
  host, pid no longer alive) is taken over. An existing *file* at the output path is refused, never moved.
- **Inputs are never inside outputs.** :func:`check_output_location` refuses an output folder that equals, contains
  or lies inside an input (model, data, reference).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .locks import OutputLock, lock_path  # noqa: F401 (lock_path: re-exported for callers and tests)

logger = logging.getLogger(__name__)

PARTIAL_MARKER = "llm_unlearn_partial.json"  # inside a staging folder: what run it belongs to
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")
# Files of a model folder that decide what the model computes (weights, architecture, tokenizer, adapter); not the
# Trainer's pickled arguments (training_args.bin), which name paths and settings, not weights.
MODEL_FILE_RE = re.compile(
    r"^(.*\.safetensors|(?!training_args\.bin$).*\.bin|.*\.gguf|.*\.safetensors\.index\.json|config\.json|generation_config\.json|"
    r"adapter_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|tokenizer\.model|"
    r"vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja|chat_template\.json)$"
)
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


# --- fingerprints -------------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def fingerprint(obj) -> str:
    """sha256 of a JSON-able object (keys sorted; other values through ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _files_fingerprint(root: Path, files: Iterable[Path]) -> str:
    return fingerprint([[str(p.relative_to(root)), sha256_file(p)] for p in sorted(files)])


def data_fingerprint(source: str | Path) -> str:
    """The content of a data source: every data file under a local folder (or the file itself), hashed; a Hub
    dataset id is named by its id (its files are not here to hash)."""
    path = Path(source)
    if path.is_file():
        return _files_fingerprint(path.parent, [path])
    if path.is_dir():
        files = [
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix in DATA_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)  # our staging files, not data
        ]
        return _files_fingerprint(path, files)
    return fingerprint({"hub_dataset": str(source)})


def model_fingerprint(name_or_path: str | Path) -> str:
    """The content of a model: its weight, config and tokenizer files (and an adapter's local base), hashed; a Hub
    id is named by its id."""
    path = Path(str(name_or_path))
    if path.is_file():  # a single weights file (e.g. GGUF)
        return _files_fingerprint(path.parent, [path])
    if not path.is_dir():
        return fingerprint({"hub_model": str(name_or_path)})
    files = [p for p in path.iterdir() if p.is_file() and MODEL_FILE_RE.match(p.name)]
    parts = {"files": _files_fingerprint(path, files)}
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            parts["base"] = model_fingerprint(base)
    return fingerprint(parts)


# --- locations ----------------------------------------------------------------------------------------------------


def check_output_location(output: str | Path, inputs: Mapping[str, str | Path | None], flag: str = "output_dir"):
    """Refuse an output that equals, contains or lies inside one of ``inputs`` (name → path; missing ones and Hub
    ids are skipped): writing there could delete or corrupt the input."""
    out = Path(output).resolve()
    for name, value in inputs.items():
        if not value or not Path(str(value)).exists():
            continue
        src = Path(str(value)).resolve()
        if out == src:
            how = "is"
        elif src in out.parents:
            how = "lies inside"
        elif out in src.parents:
            how = "contains"
        else:
            continue
        raise ValueError(
            f"--{flag} {output} {how} the {name} {value}: an output must be a folder of its own, outside every "
            "input (it could otherwise delete or overwrite it); choose another --" + flag
        )


# --- atomic files -------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``: readers see the
    old file or the new one, never a part of it; on any error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600: give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_missing():
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def read_json_cache(path: Path) -> dict | None:
    """A cached JSON object, or None when it is missing; a corrupt one is reported (naming the file) and ignored so
    that the caller recomputes and overwrites it."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    except (ValueError, UnicodeDecodeError) as e:
        logger.warning("cache file %s is corrupt (%s): recomputing it", path, e)
        return None


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        return typ is not None and issubclass(typ, FileNotFoundError)


# --- staged outputs -----------------------------------------------------------------------------------------------


def staging_path(final: str | Path) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.partial"


def backup_path(final: str | Path) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.previous"


def recover(final: str | Path) -> None:
    """Repair a commit that was interrupted between its two renames."""
    final, backup = Path(final), backup_path(final)
    if not backup.exists():
        return
    if final.exists():  # the new output is in place; only the old copy's removal was missed
        shutil.rmtree(backup, ignore_errors=True)
    else:
        logger.warning("restoring %s from %s (an earlier commit was interrupted)", final, backup)
        os.replace(backup, final)


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether a ``checkpoint-N`` folder was written to the end. The Trainer writes ``trainer_state.json`` last
    (after the weights, optimizer, scheduler and RNG states), so a kill while saving leaves a folder without it,
    or with a truncated one: such a folder cannot be resumed from. Its weights files must also hold every byte their
    headers declare."""
    try:
        state = json.loads((Path(path) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not (isinstance(state, dict) and "global_step" in state):
        return False
    # a checkpoint copied or synced incompletely: its weights are cut though its state reads fine
    return not any(safetensors_problem(p) for p in Path(path).glob("*.safetensors"))


def safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file cannot be loaded, from its header alone (no tensor is read): too short, an
    unreadable header, or fewer bytes than the header declares (a truncated copy or an interrupted save)."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"its header claims {n} bytes but the file has {size}"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable header ({type(e).__name__})"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"truncated: {size} of {expected} bytes"
    return None


def checkpoints(folder: str | Path, complete: bool = True) -> list[Path]:
    """``checkpoint-N`` folders of ``folder``, oldest first; only those written to the end unless ``complete`` is
    false (a kill while saving leaves the newest one half written)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found) if not complete or is_complete_checkpoint(p)]


def check_not_a_file(final: str | Path, flag: str = "--output_dir") -> None:
    """An existing file at an output folder's path is the user's: refused, never moved aside."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(
            f"{flag} {final} is an existing file, not a folder: an output folder never replaces a file; choose "
            f"another {flag} (or move the file away yourself)"
        )


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


class StagedOutput:
    """A stage's output folder, written in a staging sibling and committed by rename when the stage finished.

    Args:
        final: the output folder the user asked for.
        fingerprint: identity of the run (see module docstring); stored in the staging folder so that a resume
            continues only the same run.
        resume: keep an existing staging folder (its checkpoints) instead of starting afresh.
        discard: an existing staging folder holding checkpoints may be deleted (``--overwrite_output``); without it,
            such a folder is refused, since it is what a resume needs.
    """

    def __init__(self, final: str | Path, fingerprint: str, resume: bool = False, discard: bool = False):
        self.final = Path(final)
        self.staging = staging_path(self.final)
        self.lock = OutputLock(self.final)
        self.fingerprint = fingerprint
        self.resume = resume
        self.discard = discard

    def check(self) -> None:
        """Validate the staging folder against this run, before any work (no changes on disk)."""
        check_not_a_file(self.final)
        recover(self.final)
        if not self.staging.exists():
            if self.resume:
                raise FileNotFoundError(
                    f"nothing to resume: {self.staging} (where an interrupted run into {self.final} keeps its "
                    "checkpoints) does not exist"
                )
            return
        marker = self.staging / PARTIAL_MARKER
        try:
            owner = json.loads(marker.read_text()).get("fingerprint")
        except (OSError, ValueError):
            owner = None
        if self.resume:
            if owner != self.fingerprint:
                raise ValueError(
                    f"{self.staging} holds checkpoints of another run (its data, model or settings differ from "
                    "this one): resume with the same settings, or drop --resume_from_checkpoint and pass "
                    "--overwrite_output true to discard them"
                )
            return
        if checkpoints(self.staging) and not self.discard:
            raise FileExistsError(
                f"{self.staging} holds checkpoints of an interrupted run into {self.final}: continue it with "
                "--resume_from_checkpoint true, or pass --overwrite_output true to discard them"
            )

    def begin(self) -> Path:
        """Take the output's lock, then create (or, on resume, keep) the staging folder; call on the main process
        only. A second run into the same output is refused here, before it touches anything."""
        self.check()
        self.lock.acquire()
        try:
            self.check()  # again under the lock: the holder before us may have changed the staging folder
        except BaseException:
            self.lock.release()
            raise
        if self.staging.exists() and not self.resume:
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.staging / PARTIAL_MARKER, {"fingerprint": self.fingerprint, "final": str(self.final)})
        return self.staging

    def commit(self) -> Path:
        """Replace ``final`` with the staging folder (main process only)."""
        (self.staging / PARTIAL_MARKER).unlink(missing_ok=True)
        backup = backup_path(self.final)
        if backup.exists():
            shutil.rmtree(backup)
        if self.final.exists():
            os.replace(self.final, backup)
        os.replace(self.staging, self.final)
        shutil.rmtree(backup, ignore_errors=True)
        self.lock.release()
        return self.final

    def abort(self) -> Path | None:
        """After a failure: keep the staging folder when it holds a checkpoint (returned, for a resume), else
        remove it. ``final`` is never touched."""
        if not self.lock.held:  # refused at begin(): the staging folder is another run's
            return None
        kept = checkpoints(self.staging)
        if not kept:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.release()
        return kept[-1] if kept else None


@contextlib.contextmanager
def staged_files(folder: str | Path, last: tuple[str, ...] = ()):
    """Write a set of files into a temporary folder inside ``folder``; when the block ends without error each file
    is moved into ``folder`` with ``os.replace`` (atomic per file), the names in ``last`` (e.g. a manifest that
    marks the set as complete) after all others. On error nothing in ``folder`` changes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    try:
        yield tmp
        for p in sorted(tmp.iterdir(), key=lambda p: (p.name in last, p.name)):
            os.replace(p, folder / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- derived inputs, computed once per content key ------------------------------------------------------------


def cache_root() -> Path:
    """Where llm-unlearn caches what it derives (absolute): ``$LLM_UNLEARN_CACHE``, else
    ``$XDG_CACHE_HOME/llm_unlearn``, else ``~/.cache/llm_unlearn``."""
    import os

    if os.environ.get("LLM_UNLEARN_CACHE"):
        root = Path(os.environ["LLM_UNLEARN_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm_unlearn"
    return root.expanduser().absolute()  # absolute: a LoRA adapter records its converted base by this path


def selection_cache_dir(cfg) -> Path:
    """Where derived inputs of a run are cached by content (Hessian scores, retention saliency, natural partners):
    beside a local model, else under the user's cache."""
    if Path(cfg.model_name_or_path).is_dir():
        return Path(cfg.model_name_or_path) / "selection_cache"
    return cache_root() / "selection"


def computed_once(cfg, what: str, cached: Path, compute, device=None, model=None):
    """``compute()`` on the main process first (on ``device``, where ``model`` is moved when the value is not
    cached yet), then on the other ranks, which find it in the cache file ``cached`` that the main process wrote:
    the work is done once per content key, never once per rank. A rank that does not find the file (a cache
    folder that is not shared between nodes) computes it itself, with a warning."""
    rank = cfg.process_index
    with cfg.main_process_first(desc=what):
        hit = cached.is_file()
        if not hit:
            if rank != 0:
                logger.warning(
                    "rank %d: %s not found in %s after the main process computed it (is the cache folder on a "
                    "shared file system?): computing it on this rank",
                    rank,
                    what,
                    cached,
                )
            if model is not None and device is not None:
                model.to(device)
        value = compute()
        state = "read from the cache" if hit else f"computed on {device}" if device is not None else "computed"
        logger.info("rank %d: %s %s (%s)", rank, what, state, cached.name)
    return value
