"""Fine-tuning a causal LM on one TOFU split: the target (on ``full``) and the retrained reference (on ``retainXX``).

Both use the same recipe; only the split (and, for a second reference, the seed) differ. For the embedded default
the base is a BPE tokenizer trained on the benchmark's text and a randomly initialised tiny Llama; any Hub id or
local path of a causal LM works as well, optionally through LoRA.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data.loading import LOCAL_SUFFIXES, is_local, load_split
from .data.schema import (
    CHAT_DATE,
    CHAT_DATE_HELP,
    SYSTEM_PROMPT_HELP,
    DataValidationError,
    check_disjoint,
    check_unique,
    normalize_text,
    tofu_split_names,
)
from .data.text import encode_chunks
from .devices import DEVICE_HELP, DTYPE_HELP, check_device, check_dtype
from .modeling import EMBEDDED_MODEL
from .validation import check_tokenizer

logger = logging.getLogger(__name__)

RECORD = "finetune_config.json"


@dataclass
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
        data: local folder of TOFU-schema files, or a Hub dataset id (``locuslab/TOFU``).
        split: split to train on (default ``full``; the reference uses ``retain90`` etc.). With
            ``data_format text``: comma-separated text splits (default ``raw/forget,raw/retain1``; the reference
            uses ``raw/retain1``).
        data_format: ``qa`` (TOFU schema, default) or ``text`` (MUSE-style documents, see ``llm_unlearn.data.text``).
        output_dir: where the model folder is written.
        model: ``embedded:tiny-llama`` (default), a Hub id / local folder of a causal LM, or a GGUF file (or a
            folder holding one), converted once to a cached fp32 model folder (see
            :func:`llm_unlearn.modeling.resolve_model_source`).
        seed: seed of initialisation and data order (default 0).
        data_seed: seed of the data order alone (default: ``seed``), for reference replicas that share the
            initialisation.
        num_train_epochs: epochs (default 20: the tiny model memorises the benchmark in about that many).
        learning_rate: peak learning rate (default 2e-3 for the tiny model; use ~1e-5 for a 1B model).
        per_device_train_batch_size: batch size per device (default 16).
        gradient_accumulation_steps: accumulation steps (default 1).
        weight_decay: AdamW weight decay (default 0.0).
        warmup_ratio: fraction of steps of linear warm-up (default 0.05).
        max_length: longest tokenized QA pair (default 128); a longer one loses the start of its prompt first, then
            the end of its answer, and a warning counts them per split.
        hidden_size: embedded model only: hidden size (default 128).
        num_layers: embedded model only: decoder layers (default 2).
        vocab_size: embedded model only: BPE vocabulary size (default 1024).
        lora: train LoRA adapters instead of all weights (default off); the output is an adapter folder.
        lora_r: LoRA rank (default 8).
        lora_alpha: LoRA alpha (default 16).
        merge_lora: under LoRA, save the base with the adapters merged into its weights (an ordinary model folder,
            what unlearning of a LoRA-made target starts from) instead of the adapter folder (default off).
        overwrite: replace an output folder that holds a different run (default off: refuse).
    """

    data: str = field(metadata={"help": "Local folder of TOFU-schema split files, or a Hub dataset id."})
    output_dir: str = field(metadata={"help": "Folder the fine-tuned model is written to."})
    split: str | None = field(
        default=None,
        metadata={
            "help": "Split to train on: full (target) or retainXX (reference); for text data, comma-separated "
            "text splits: raw/forget,raw/retain1 (target) or raw/retain1 (reference)."
        },
    )
    data_format: str = field(default="qa", metadata={"help": "qa (TOFU schema) or text (MUSE-style documents)."})
    model: str = field(
        default=EMBEDDED_MODEL,
        metadata={
            "help": "embedded:tiny-llama, a Hub id / folder of a causal LM, or a .gguf file (converted once to a "
            "cached fp32 model folder)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and data order."})
    data_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the data order alone (default: --seed). A reference replica that differs from the "
            "first only in data order keeps --seed (the same initialisation, as real unlearning starts from one "
            "pretrained model) and takes another --data_seed; another --seed changes both."
        },
    )
    num_train_epochs: float = field(default=20.0, metadata={"help": "Training epochs."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (use ~1e-5 for a 1B model)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps used for linear warm-up."})
    max_length: int = field(
        default=128,
        metadata={
            "help": "Maximum tokens of a QA pair; a longer one loses the start of its prompt first, then the "
            "end of its answer, and a warning counts them per split."
        },
    )
    chat_date: str = field(default=CHAT_DATE, metadata={"help": CHAT_DATE_HELP})
    system_prompt: str | None = field(default=None, metadata={"help": SYSTEM_PROMPT_HELP})
    hidden_size: int = field(default=128, metadata={"help": "Embedded model: hidden size."})
    num_layers: int = field(default=2, metadata={"help": "Embedded model: number of decoder layers."})
    vocab_size: int = field(default=1024, metadata={"help": "Embedded model: BPE vocabulary size."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    merge_lora: bool = field(
        default=False, metadata={"help": "Under --lora, save the merged model instead of the adapter folder."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an output folder holding a different run."})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    torch_dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})

    def __post_init__(self):
        if self.data_format not in ("qa", "text"):
            raise ValueError(f"--data_format must be qa or text, got {self.data_format!r}")
        if self.split is None:
            self.split = "full" if self.data_format == "qa" else "raw/forget,raw/retain1"
        from .validation import check_finite_fields, check_positive, check_seed

        check_finite_fields(self)
        check_positive(
            self,
            ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps"),
            minimum={"weight_decay": 0.0, "warmup_ratio": 0.0, "max_length": 8},
        )
        check_positive(self, ("hidden_size", "num_layers", "vocab_size", "lora_r", "lora_alpha"))
        check_seed(self.seed)
        check_seed(self.data_seed, "--data_seed")
        if self.warmup_ratio >= 1:
            raise ValueError(f"--warmup_ratio is a fraction of the steps in [0, 1), got {self.warmup_ratio}")
        if self.lora and self.model == EMBEDDED_MODEL:
            raise ValueError("LoRA needs a pretrained base: pass --model HUB_ID_OR_PATH, or drop --lora")
        if self.merge_lora and not self.lora:
            raise ValueError("--merge_lora only applies with --lora")
        self.device, self.torch_dtype = check_device(self.device), check_dtype(self.torch_dtype)

    def identity(self) -> dict:
        """What decides the trained weights (used to reuse a finished run)."""
        d = asdict(self)
        d.pop("overwrite")
        d.pop("output_dir")
        d.pop("device")  # where it runs, not what it trains (a GPU's last bits differ; the recipe is the same)
        if d["torch_dtype"] == "auto":
            d.pop("torch_dtype")  # runs recorded before --torch_dtype existed keep matching
        if d["data_format"] == "qa":
            d.pop("data_format")  # QA runs recorded before text support existed keep matching
        if d["data_seed"] is None:
            d.pop("data_seed")  # the data order follows --seed, as in runs recorded before --data_seed existed
        if d["chat_date"] == CHAT_DATE and d["system_prompt"] is None:
            d.pop("chat_date"), d.pop("system_prompt")  # the defaults: runs recorded before they existed keep matching
        if not d["merge_lora"]:
            d.pop("merge_lora")  # runs recorded before --merge_lora existed keep matching
        return d

    @property
    def text_splits(self) -> list[str]:
        return [s.strip() for s in self.split.split(",") if s.strip()]


def run_fingerprint(cfg: FinetuneConfig) -> str:
    """What decides the trained weights: the recipe, the data files' content and the base model's files (not
    their paths)."""
    from .runs import data_fingerprint, fingerprint, model_fingerprint

    ident = cfg.identity()
    ident["data"] = data_fingerprint(cfg.data)
    if cfg.model != EMBEDDED_MODEL:
        ident["model"] = model_fingerprint(cfg.model)
    return fingerprint(ident)


def _read_record(out: Path) -> dict | None:
    try:
        record = json.loads((out / RECORD).read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _check_output(cfg: FinetuneConfig, fp: str) -> bool:
    """True when ``output_dir`` already holds this finished run (same fingerprint); raise if it holds something
    else and ``--overwrite`` was not given. Nothing is changed on disk here."""
    from .runs import is_nonempty_dir, recover

    out = Path(cfg.output_dir)
    recover(out)
    old = _read_record(out)
    if old and old.get("complete") and old.get("fingerprint") == fp:
        return True
    if cfg.overwrite or not is_nonempty_dir(out):
        return False
    if old and old.get("complete"):
        ident = cfg.identity()
        changed = sorted(k for k in ident if k != "data" and (old.get("config") or {}).get(k) != ident[k])
        what = f"another config (differs in: {', '.join(changed)})" if changed else "the same config on other data"
        raise FileExistsError(
            f"{out} holds a finished run with {what}; pass --overwrite to replace it (once the new run has "
            "finished) or choose another --output_dir"
        )
    raise FileExistsError(f"{out} is not empty and is not a fine-tuning output; choose another --output_dir")


def check_inputs(cfg: FinetuneConfig) -> None:
    """Paths, before any data is read or model built."""
    from .runs import check_output_location
    from .validation import check_model_source

    inputs = {"data": cfg.data}
    if cfg.model != EMBEDDED_MODEL:
        check_model_source(cfg.model, "--model")
        inputs["model"] = cfg.model
    check_output_location(cfg.output_dir, inputs)


# Splits whose items the embedded tokenizer never sees: the forget sets (a pushed tokenizer.json would otherwise hold
# forget-only names as whole tokens) and the holdout sets (so members and non-members are tokenized alike).
EXCLUDED_FROM_TOKENIZER = ("forget", "holdout", "full")


def corpus_texts(data: str, splits: list[str] | None = None) -> list[str]:
    """The embedded tokenizer's training text: every question and answer variant of the benchmark except the items
    of its forget and holdout splits.

    From a local folder every TOFU split present is read, so target and every reference share one tokenizer (as
    they would share a pretrained one); from the Hub the retain, retain-evaluation and utility splits. An item is
    left out when its question appears in any forget or holdout split (``splits`` is accepted for compatibility
    and ignored: the tokenizer must not depend on which split a model trains on).
    """
    names = [s for s in tofu_split_names() if not s.startswith(EXCLUDED_FROM_TOKENIZER)]
    excluded = [s for s in tofu_split_names() if s.startswith(("forget", "holdout"))]
    if is_local(data):
        present = {p.stem for p in Path(data).iterdir() if p.suffix in LOCAL_SUFFIXES}
        names = [s for s in names if s in present]
        excluded = [s for s in excluded if s in present]
    else:
        names = [
            s for s in names if s.startswith("retain") or s in ("real_authors_perturbed", "world_facts_perturbed")
        ]
        excluded = []
    hidden = {normalize_text(r.get("question", "")) for n in excluded for r in load_split(data, n, validate=False)}
    texts = []
    for name in names:
        for row in _rows_or_empty(data, name):
            if normalize_text(row.get("question", "")) in hidden:
                continue
            texts += [row.get("question", ""), row.get("answer", ""), row.get("paraphrased_answer") or ""]
            texts += [p for p in (row.get("perturbed_answer") or []) if isinstance(p, str)]
    return [t for t in texts if isinstance(t, str) and t]


def _rows_or_empty(data: str, name: str) -> list[dict]:
    try:
        return load_split(data, name, validate=False)
    except DataValidationError:
        return []


def text_corpus_texts(data: str, splits: list[str]) -> list[str]:
    """The embedded tokenizer's training text for a text benchmark: every document and QA pair of a local folder
    (so target and reference share one tokenizer), or the documents of ``splits`` from the Hub."""
    from .data.text import load_documents

    if not is_local(data):
        return [
            d
            for s in splits
            for d in load_documents(data, s)
            if not s.split("/")[-1].startswith(("forget", "holdout"))
        ]
    texts = []
    for path in sorted(Path(data).rglob("*.jsonl")):
        if any(part.startswith(("forget", "holdout")) for part in path.relative_to(data).with_suffix("").parts):
            continue  # forget and holdout documents and QA pairs never shape the tokenizer
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            texts += [v for k, v in row.items() if k in ("text", "question", "answer") and isinstance(v, str)]
    return texts


def build_base(cfg: FinetuneConfig, dtype="auto"):
    """Tokenizer and model to fine-tune, the model's weights in ``dtype`` (from
    :func:`llm_unlearn.devices.resolve_dtype`; the Trainer moves the model to its device)."""
    from .modeling import build_tiny_llama, load_causal_lm, load_tokenizer, resolve_model_source, train_bpe_tokenizer

    if cfg.model == EMBEDDED_MODEL:
        texts = (
            corpus_texts(cfg.data, [cfg.split])
            if cfg.data_format == "qa"
            else text_corpus_texts(cfg.data, cfg.text_splits)
        )
        tokenizer = train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size)
        model = build_tiny_llama(
            tokenizer,
            cfg.seed,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            max_positions=max(256, cfg.max_length),
        )
        if not isinstance(dtype, str):
            model = model.to(dtype)
        return tokenizer, model
    source = resolve_model_source(cfg.model)  # a GGUF file: its converted folder
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, dtype=dtype)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model
        from transformers import set_seed

        set_seed(cfg.seed)  # the adapters' random initialisation: the same recipe gives the same adapter
        model = get_peft_model(
            model,
            LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    return tokenizer, model


def base_model_record(model: str) -> dict:
    """Where the base came from, for a run's record: the user's ``--model`` and, for a GGUF file, the converted
    folder that was loaded (a LoRA adapter's ``adapter_config.json`` names that folder as its base)."""
    if model == EMBEDDED_MODEL:
        return {}
    from .modeling import resolve_model_source

    source = resolve_model_source(model)  # already converted by build_base: only the path is looked up
    return {"base_model": model, **({"base_model_folder": source} if source != model else {})}


def training_arguments(cfg: FinetuneConfig, device=None, **overrides):
    """The HF ``TrainingArguments`` of the recipe on ``device`` (default: :func:`llm_unlearn.devices.resolve_device`
    of ``cfg.device``); bf16 mixed precision on a GPU that has it, none on the CPU."""
    import torch
    from transformers import TrainingArguments

    from .devices import resolve_device

    device = resolve_device(cfg.device) if device is None else device
    gpu = device.type == "cuda"
    kwargs = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed if cfg.data_seed is None else cfg.data_seed,
        bf16=gpu and torch.cuda.is_bf16_supported(),
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        dataloader_pin_memory=gpu,
        disable_tqdm=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _check_reference_split(cfg: FinetuneConfig, rows: list[dict]) -> None:
    """A reference trained on ``retainXX`` must not see any item of the matching ``forgetYY``."""
    pct = cfg.split.removeprefix("retain")
    if not (cfg.split.startswith("retain") and pct.isdigit()):
        return
    forget = f"forget{100 - int(pct):02d}"
    try:
        forget_rows = load_split(cfg.data, forget)
    except DataValidationError:
        logger.warning("no split %s next to %s: cannot check that they are disjoint", forget, cfg.split)
        return
    check_disjoint(forget_rows, rows, forget, cfg.split)


def finetune(cfg: FinetuneConfig) -> Path:
    """Train (or reuse) the model of ``cfg`` and return its folder.

    Every input is checked first (paths, data, the base model); training writes into a staging folder beside
    ``output_dir`` that replaces it only when the run has finished (see :mod:`llm_unlearn.runs`), so an interrupted
    run leaves the previous output as it was. A finished run with the same fingerprint (recipe, data content, base
    model files) is reused.
    """
    from transformers import Trainer

    from .data.formatting import QACollator, QADataset, QAFormatter  # torch: imported by the stage, not the CLI
    from .devices import pin_single_process_gpu, resolve_device, resolve_dtype
    from .runs import StagedOutput, atomic_write_json

    check_inputs(cfg)
    cfg.device = pin_single_process_gpu(cfg.device)  # before any CUDA call: cuda:N in one process
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.torch_dtype, device)  # auto: the checkpoint's own on a GPU (bf16 autocast on top)
    out = Path(cfg.output_dir)
    fp = run_fingerprint(cfg)
    if _check_output(cfg, fp):
        print(f"reusing the finished run in {out} (same recipe, data and base model)")
        return out
    if cfg.data_format == "text":
        from .data.text import load_documents

        rows = [d for ref in cfg.text_splits for d in load_documents(cfg.data, ref)]  # validated up front
    else:
        rows = load_split(cfg.data, cfg.split)  # validated before any model is built
        check_unique(rows, cfg.split, str(cfg.data))
        _check_reference_split(cfg, rows)
    stage = StagedOutput(out, fp, discard=True)  # fine-tuning keeps no checkpoints: a stale staging folder goes
    staging = stage.begin()
    try:
        tokenizer, model = build_base(cfg, dtype)
        check_tokenizer(tokenizer, cfg.model)
        formatter = QAFormatter(tokenizer, cfg.max_length, chat_date=cfg.chat_date, system_prompt=cfg.system_prompt)
        if cfg.data_format == "qa":
            dataset = QADataset(rows, formatter, split=cfg.split)
            if dataset.truncation.warning():
                logger.warning(dataset.truncation.warning())
        else:
            dataset = encode_chunks(tokenizer, rows, cfg.max_length)  # every token of a document is supervised
        trainer = Trainer(
            model=model,
            args=training_arguments(cfg, device, output_dir=str(staging)),
            train_dataset=dataset,
            data_collator=QACollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
        )
        result = trainer.train()
        if cfg.lora and cfg.merge_lora:  # an ordinary model folder: the adapters folded into the base weights
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(staging)
        else:  # under LoRA: the adapter, which load_causal_lm puts back on its base
            trainer.model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {
            "complete": True,
            "config": cfg.identity(),
            "fingerprint": fp,
            "train_loss": result.training_loss,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "n_train_items": len(rows),
        }
        record.update(base_model_record(cfg.model))
        atomic_write_json(staging / RECORD, record, indent=2)
    except BaseException:
        stage.abort()
        raise
    return stage.commit()
