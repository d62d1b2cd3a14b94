"""Models and tokenizers: the embedded tiny Llama built from a config, or any causal LM by Hub id or path."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from .runs import cache_root  # noqa: F401 (where derived files are cached; re-exported)

EMBEDDED_MODEL = "embedded:tiny-llama"

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``.

    It adds BOS to every encoded text (as Llama tokenizers do) and no EOS: the QA formatter appends EOS to answers.
    Deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_llama_config(tokenizer, hidden_size: int = 128, num_layers: int = 2, max_positions: int = 256):
    """The embedded model's architecture: a small Llama sized for 2 CPU cores."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        num_key_value_heads=max(1, hidden_size // 32),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def build_tiny_llama(tokenizer, seed: int, **kwargs):
    """A randomly initialised tiny Llama; the weights are a deterministic function of ``seed``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **kwargs))


def load_tokenizer(name_or_path: str | Path):
    """A tokenizer with a pad token (the EOS when the model has none; padding is masked by length anyway). A GGUF
    file gives the tokenizer of its converted folder (:func:`resolve_model_source`)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_source(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_fingerprint(tok) -> str:
    """What decides how text becomes token ids and back: the vocabulary, the added tokens and the special tokens
    (with their ids). Two models compared token by token must share it."""
    import hashlib
    import json

    special = {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}
    ident = {
        "vocab": sorted(tok.get_vocab().items()),
        "special": special,
        "special_ids": sorted((t, tok.convert_tokens_to_ids(t)) for t in tok.all_special_tokens),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def load_causal_lm(name_or_path: str | Path, dtype: str = "auto", device: str | None = None):
    """A causal LM (or a PEFT adapter folder, loaded onto its base; or a GGUF file, through its converted folder) in
    eval mode."""
    from transformers import AutoModelForCausalLM

    name_or_path = resolve_model_source(name_or_path)
    path = Path(name_or_path)
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
    if device:
        model.to(device)
    check_finite_weights(model, name_or_path)  # on the run's device: one pass there, not a CPU pass first
    return model.eval()


def check_finite_weights(model, source) -> None:
    """Every weight finite; else one line naming the first damaged tensor (not a metric's "Input contains NaN")."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                bad = int((~torch.isfinite(p)).sum())
                raise ValueError(
                    f"{source}: weight {name} holds {bad} NaN/inf value(s): the model is damaged (a run that "
                    "diverged, or a broken conversion); use another checkpoint"
                )


# --- GGUF bases ---------------------------------------------------------------------------------------------------
#
# A GGUF file (llama.cpp's single-file format, often quantized) is converted once into an ordinary fp32 safetensors
# folder with its tokenizer and chat template, cached by the file's content. Every stage then loads that folder like
# any other: training needs full-precision weights anyway, LoRA needs ordinary linear layers, and `save_pretrained`
# (so `push`) refuses a model that still carries the GGUF quantization config.

GGUF_SUFFIX = ".gguf"
GGUF_SOURCE = "gguf_source.json"  # in a converted folder: which file it came from, and the checks it passed


def find_gguf(name_or_path: str | Path, flag: str = "--model") -> Path | None:
    """The GGUF file that ``name_or_path`` names: the file itself, or the one ``.gguf`` file of a folder that is not
    a saved model (no ``config.json`` nor ``adapter_config.json``); ``None`` for a model folder, a Hub id or any
    other path. A missing ``.gguf`` path and a folder with several GGUF files are errors (which file is meant?)."""
    path = Path(str(name_or_path)).expanduser()
    if path.suffix.lower() == GGUF_SUFFIX and not path.exists():
        raise FileNotFoundError(f"{flag} {name_or_path}: no such GGUF file")
    if path.is_file():
        return path if path.suffix.lower() == GGUF_SUFFIX else None
    if not path.is_dir() or (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == GGUF_SUFFIX)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{flag} {name_or_path} holds several GGUF files ({names}): pass the path of one of them")
    return found[0] if found else None


def converted_gguf_folder(gguf: str | Path) -> Path:
    """The cache folder of a GGUF file's conversion: ``cache_root()/gguf/<file stem>-<sha256 prefix>``, keyed on
    the file's content (a replaced file gets a new folder; a copied or moved one reuses its conversion)."""
    gguf = Path(gguf)
    stat = gguf.stat()
    return cache_root() / "gguf" / f"{gguf.stem}-{_gguf_digest(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)}"


@functools.lru_cache(maxsize=16)
def _gguf_digest(path: str, size: int, mtime_ns: int) -> str:
    """The content key of a GGUF file, hashed once per process and file state (one command resolves its model
    argument several times: the input checks, the loader, the run record); a rewritten file changes size or mtime
    and is hashed again."""
    from .runs import sha256_file

    return sha256_file(path)[:16]


def resolve_model_source(name_or_path: str | Path, flag: str = "--model") -> str:
    """What ``from_pretrained`` should load for a user's model argument.

    A GGUF file (or a folder holding exactly one, see :func:`find_gguf`) becomes its converted fp32 safetensors
    folder, converted on first use (:func:`convert_gguf`); a Hub id, a model folder or an adapter folder is
    returned unchanged.
    """
    gguf = find_gguf(name_or_path, flag)
    if gguf is None:
        return str(name_or_path)
    folder = converted_gguf_folder(gguf)
    if not (folder / "config.json").is_file():
        convert_gguf(gguf, folder)
    return str(folder)


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def convert_gguf(gguf: str | Path, folder: str | Path) -> Path:
    """Convert ``gguf`` into the model folder ``folder``: fp32 safetensors weights, config (without the GGUF
    quantization config), generation config (its EOS ids), tokenizer and chat template.

    The conversion is written into a temporary sibling ``.<name>.<pid>.*.tmp`` and renamed into place once checked,
    so a killed conversion never leaves a half folder that a later run would trust; temporary folders of dead
    processes are removed on the next conversion. If another process finishes first, its folder is kept.
    Needs the ``gguf`` package; peak memory is about twice the fp32 model (the loaded and the rebuilt copy).
    """
    import os
    import shutil
    import tempfile

    from .runs import atomic_write_json, sha256_file

    gguf, folder = Path(gguf), Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        pid = stale.name[len(folder.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    print(f"converting the GGUF file {gguf} to an fp32 model folder (once): {folder}")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700): give it the mode a plain mkdir would
        checks = _write_converted(gguf, tmp)
        source = {"gguf": str(gguf.resolve()), "sha256": sha256_file(gguf), "size": gguf.stat().st_size, **checks}
        atomic_write_json(tmp / GGUF_SOURCE, source, indent=2)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process converted the same file first: keep its folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _write_converted(gguf: Path, out: Path) -> dict:
    """Load ``gguf`` dequantized, save it into ``out`` as an ordinary model folder, check what must survive the
    trip (tied embeddings, special-token ids, chat template) and return those facts."""
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader)
    except ImportError:
        raise ImportError(
            "loading a GGUF file needs the gguf package: pip install 'llm_unlearn[gguf]' (or pip install gguf)"
        ) from None
    where, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    # Each GGUF read parses the whole vocabulary (seconds): the model's config spares the tokenizer one more read.
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, config=loaded.config)
    # `save_pretrained` refuses a model whose config names the GGUF quantization: rebuild one from the same config
    # without it and give it the dequantized weights (ties, e.g. lm_head = embed_tokens, are re-made by the model).
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(loaded.generation_config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    del loaded
    out_emb = model.get_output_embeddings()
    if tied and out_emb is not None and out_emb.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError(f"converting {gguf}: the output embedding is not tied to the input embedding")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # What a later stage will read back: the same special tokens and template, and no quantization config.
    saved, saved_config = AutoTokenizer.from_pretrained(str(out)), AutoConfig.from_pretrained(str(out))
    ids = {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")}
    lost = [k for k, v in ids.items() if getattr(saved, f"{k}_token_id") != v]
    if saved.chat_template != tokenizer.chat_template:
        lost.append("chat_template")
    if getattr(saved_config, "quantization_config", None) is not None:
        lost.append("quantization_config removed")
    if bool(getattr(saved_config, "tie_word_embeddings", False)) != tied:
        lost.append("tie_word_embeddings")
    if lost:
        raise RuntimeError(f"converting {gguf}: the saved folder does not keep {', '.join(lost)}")
    return {
        "model_type": config.model_type,
        "tie_word_embeddings": tied,
        "token_ids": ids,
        "generation_eos_token_id": model.generation_config.eos_token_id,
        "chat_template": bool(tokenizer.chat_template),
        "vocab_size": len(tokenizer),
    }
