"""Checks of user input that run before any model is loaded: model and tokenizer sources, recipes, numbers.

Each check raises ``ValueError`` / ``FileNotFoundError`` with one line that names the flag, file, field or row and
says what to do; the commands print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import get_args, get_origin

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or os.sep != "/" and os.sep in value


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_model_source(value: str | None, flag: str) -> None:
    """A model is a local folder with a config and a tokenizer (or a LoRA adapter folder), a GGUF file (or a folder
    holding one), or a Hub id that can be reached (or is in the local Hub cache). Fails in a second, never after
    the Hub client's retries."""
    if not value:
        raise ValueError(f"{flag} is required (a model folder, a GGUF file or a Hub model id)")
    from .modeling import find_gguf

    gguf = find_gguf(value, flag)
    if gguf is not None:
        check_gguf_file(gguf, flag)
        return
    path = Path(value).expanduser()
    if path.is_file():
        raise ValueError(
            f"{flag} {value} is a file; expected a model folder (config.json, weights, tokenizer) or a .gguf file"
        )
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "config.json" not in names and "adapter_config.json" not in names:
            raise FileNotFoundError(
                f"{flag} {value}: no config.json (nor adapter_config.json): not a model folder saved with "
                "save_pretrained"
            )
        if not names & set(TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{flag} {value}: no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}); save it beside the model"
            )
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors_file(weights, flag)
        check_json_file(path / "config.json", flag)
        check_config_matches_weights(path, flag)
        return
    if _looks_like_path(value) or not HUB_ID_RE.match(value):
        raise FileNotFoundError(f"{flag} {value}: no such folder")
    check_hub_reachable(value, flag, "model")


def check_safetensors_file(path: Path, flag: str) -> None:
    from .runs import safetensors_problem

    problem = safetensors_problem(path)
    if problem:
        raise ValueError(
            f"{flag}: {path} is damaged ({problem}): the save was interrupted or the copy is incomplete; copy or save "
            "the model again"
        )


def check_json_file(path: Path, flag: str) -> None:
    """A config file that exists must be valid JSON (a truncated config.json is named, not a traceback)."""
    import json

    if not path.is_file():
        return
    try:
        json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag}: {path} is not valid JSON ({e}): the file is damaged; save the model again") from (
            None
        )


def check_gguf_file(path: Path, flag: str) -> None:
    """A GGUF base needs the ``gguf`` package (transformers reads the file with it) and a file that starts with
    the GGUF magic bytes."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ValueError(
            f"{flag} {path} is a GGUF file: loading it needs the gguf package (pip install 'llm_unlearn[gguf]', "
            "or pip install gguf)"
        )
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{flag} {path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def check_hub_reachable(repo_id: str, flag: str, repo_type: str = "model") -> None:
    """A Hub id must be in the local cache or reachable now: one quick request, no retries."""
    from huggingface_hub import try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    cached = try_to_load_from_cache(repo_id, probe, repo_type=repo_type)
    if isinstance(cached, str):
        return
    if hub_offline():
        raise FileNotFoundError(
            f"{flag} {repo_id}: not a local folder, and not in the local Hub cache while the Hub is offline "
            "(HF_HUB_OFFLINE=1); pass a local folder, or download it first"
        )
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    url = f"{constants.ENDPOINT}/api/{repo_type}s/{repo_id}"
    try:
        response = get_session().get(url, timeout=5.0)  # one request: no retries, whatever the client's transport
    except Exception as e:
        raise FileNotFoundError(
            f"{flag} {repo_id}: not a local folder, and the Hub ({constants.ENDPOINT}) cannot be reached "
            f"({type(e).__name__}); pass a local folder or check the network / HF_ENDPOINT"
        ) from None
    if response.status_code == 404:  # 401/403 (private, gated) are left to the download, which takes the token
        raise FileNotFoundError(f"{flag} {repo_id}: no such local folder, and no such {repo_type} on the Hub")


def check_tokenizer(tokenizer, source: str) -> None:
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ValueError(
            f"the tokenizer of {source} has neither a pad token nor an EOS token: answers need an end; add one "
            "(tokenizer.add_special_tokens({'eos_token': ...})) and save it beside the model"
        )
    config = Path(str(source)) / "config.json"
    if not config.is_file():
        return
    import json

    cfg = json.loads(config.read_text())
    cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
    vocab = cfg.get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens but the model's embedding (config.json "
            f"vocab_size) holds {vocab}: the tokenizer is not this model's; save the model's own tokenizer beside it"
        )


def _embedding_rows(folder: Path) -> int | None:
    """Rows of the input embedding in the folder's safetensors headers (no tensor is read), or None."""
    import json
    import struct

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, t in header.items():
            if name.endswith("embed_tokens.weight") and isinstance(t, dict):
                return int(t["shape"][0])
    return None


def check_config_matches_weights(folder: Path, flag: str) -> None:
    """config.json's vocab_size must be the embedding's row count in the weights (else loading fails deep inside)."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
    rows, vocab = _embedding_rows(folder), cfg.get("vocab_size")
    if rows is not None and isinstance(vocab, int) and rows != vocab:
        raise ValueError(
            f"{flag}: {folder / 'config.json'} says vocab_size {vocab} but the weights' embedding has {rows} rows: "
            "the config is not these weights'; restore the model's own config.json"
        )


# --- numbers ------------------------------------------------------------------------------------------------------


def check_finite_fields(cfg, skip: tuple[str, ...] = ()) -> None:
    """Every float-valued field of a dataclass config must be finite (NaN/inf silently break losses)."""
    for f in dataclasses.fields(cfg):
        if f.name in skip or not f.init:
            continue
        value = getattr(cfg, f.name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name} {value} is not a finite number")


def check_positive(cfg, names: tuple[str, ...], minimum: dict[str, float] | None = None) -> None:
    """``names`` must be > 0; ``minimum`` maps names to the smallest allowed value."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    for name, low in (minimum or {}).items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be at least {low}, got {value}")


def describe_os_error(e: OSError) -> str:
    """One line for an I/O fault, naming the file and what to do: a full disk, a read-only or forbidden place, or
    any other OS error (its own message)."""
    import errno

    where = e.filename or "the output"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device holding {where}: free some space (or write elsewhere) and run again"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where} ({e.strerror}): choose a writable place for the output"
    if e.errno is None:
        return str(e)
    return f"{where}: {e.strerror or e}"


def check_seed(value, flag: str = "--seed") -> None:
    """A seed numpy, torch and Python all accept: an integer in [0, 2**32 - 1]."""
    if value is not None and not 0 <= value < 2**32:
        raise ValueError(f"{flag} must be an integer in [0, 2**32 - 1] (numpy's seed range), got {value}")


# --- recipes ------------------------------------------------------------------------------------------------------


def _strict_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one silently)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}): "
                        "keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_yaml_recipe(path: str | Path) -> dict:
    """A flat YAML recipe, with a one-line error naming file and line for syntax errors, unsafe tags and keys
    given twice."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        recipe = yaml.load(path.read_text(), Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where}: invalid YAML recipe: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    recipe = recipe or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a flat YAML mapping of argument names to values")
    return recipe


def _is_list_type(typ) -> bool:
    if get_origin(typ) is list or typ is list:
        return True
    return any(_is_list_type(a) for a in get_args(typ))


def _scalar_types(typ) -> set:
    args = get_args(typ) or (typ,)
    return {a for a in args if a in (bool, int, float, str)}


def _parse_number(text: str, typ):
    try:
        return typ(text)
    except ValueError:
        return text


def check_recipe_types(recipe: dict, cls, source: str) -> None:
    """Recipe values must fit their fields: a number for a numeric field, one value unless the field is a list."""
    from typing import get_type_hints

    hints = get_type_hints(cls)
    for key, value in recipe.items():
        typ = hints.get(key)
        if typ is None:
            continue
        if isinstance(value, (list, dict)) and not _is_list_type(typ):
            raise ValueError(f"{source}: {key}: expected a single value, got a {type(value).__name__}")
        kinds = _scalar_types(typ)
        if value is None or isinstance(value, (list, dict)) or not kinds or str in kinds:
            continue
        if isinstance(value, str):  # YAML reads 1e-3 as a string; argparse converts it like a flag
            value = _parse_number(value, float if float in kinds else int)
        ok = (
            (bool in kinds and isinstance(value, bool))
            or (float in kinds and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (int in kinds and isinstance(value, int) and not isinstance(value, bool))
        )
        if not ok:
            want = " or ".join(sorted(t.__name__ for t in kinds))
            raise ValueError(f"{source}: {key}: expected {want}, got {value!r}")
