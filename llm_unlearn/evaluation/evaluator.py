"""Evaluation of a model against the retrained reference: forget quality, model utility and their parts.

For each (model, split) the evaluator runs one teacher-forced scoring pass per answer variant (answer,
paraphrase, perturbed answers) and one batched greedy generation; every metric derives from those. Results are
cached next to the evaluated model, keyed by the data, the evaluation settings and the model's weight files, so
the reference is evaluated once and reused by every run compared to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import devices
from ..data.loading import load_split
from ..data.schema import CHAT_DATE, CHAT_DATE_HELP, SYSTEM_PROMPT_HELP, BenchmarkSplits
from ..devices import DEVICE_HELP, DTYPE_HELP, check_device, check_dtype, dtype_name
from ..runs import atomic_write_json, read_json_cache
from . import metrics as M
from .privacy import HOLDOUT, MIA_ATTACKS, privacy_scores, privacy_summary  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

CACHE_DIR = "eval_cache"
EVAL_VERSION = 6  # bump when the result layout changes: invalidates cached evaluations
RESULT_KIND = "llm_unlearn.eval"
# role -> (display name, uses the paraphrase as the correct answer of the truth ratio)
ROLES = {
    "forget": ("Forget", True),
    "retain": ("Retain", True),
    "real_authors": ("Real authors", False),
    "world_facts": ("World facts", False),
}


@dataclass
class EvalConfig:
    """Evaluation settings.

    Attributes:
        data_format: ``qa`` (TOFU schema, default) or ``text`` (MUSE-style corpus, see ``llm_unlearn.data.text``).
        forget_split: QA: the forget split whose ``_perturbed`` version is evaluated (default ``forget10``); text:
            the forget documents, the members of membership inference (default ``raw/forget``).
        holdout_split: never-trained-on items, the non-members (default ``holdoutXX`` for QA, ``raw/holdout``).
        batch_size: items per scoring / generation batch (default 32).
        max_new_tokens: QA generation budget; generation also stops at EOS or a blank line (default 200).
        max_length: longest tokenized QA pair scored; text: tokens scored per document (default 256).
        gradnorm: also score membership by the per-item gradient norm (one backward per item; default off).
        verbmem_split, knowmem_forget_split, knowmem_retain_split: text only, MUSE's names by default.
        knowmem_prompt: text only: the KnowMem prompt with a ``{question}`` slot (default
            ``Question: {question}\\nAnswer:``).
        verbmem_max_new_tokens (default 128), knowmem_max_new_tokens (default 32): text-only generation budgets.
        max_scoring_memory: bytes (or a size such as ``512MB``, ``2GiB``) that the vocabulary-sized arrays of
            teacher-forced scoring may take at once on the scoring device (default 1 GiB; GPU memory when scoring
            runs on a GPU); answer positions are scored in chunks to fit, so it bounds memory, not results (see
            ``scoring.score_encoded``). Stored as bytes.
        device, torch_dtype: where the model is scored and generated from, and its weights' dtype (see
            ``llm_unlearn.devices``; default ``auto`` for both: the accelerator's device, and the checkpoint's dtype
            there or float32 on the CPU).
    """

    forget_split: str | None = field(
        default=None, metadata={"help": "Forget split: forgetXX (default forget10); text: raw/forget."}
    )
    data_format: str = field(default="qa", metadata={"help": "qa (TOFU schema) or text (MUSE-style corpus)."})
    holdout_split: str | None = field(
        default=None, metadata={"help": "Non-member split (default holdoutXX; text: raw/holdout)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Items per scoring and generation batch."})
    max_new_tokens: int = field(default=200, metadata={"help": "Maximum generated tokens per answer."})
    max_length: int = field(default=256, metadata={"help": "Maximum tokens of a scored QA pair or document."})
    gradnorm: bool = field(default=False, metadata={"help": "Add the GradNorm attack (one backward per item)."})
    verbmem_split: str = field(default="verbmem/forget", metadata={"help": "Text: VerbMem prompts (prompt, gt)."})
    knowmem_forget_split: str = field(default="knowmem/forget_qa", metadata={"help": "Text: forget QA pairs."})
    knowmem_retain_split: str = field(default="knowmem/retain_qa", metadata={"help": "Text: retain QA pairs."})
    knowmem_prompt: str = field(
        default="Question: {question}\nAnswer:", metadata={"help": "Text: KnowMem prompt with {question}."}
    )
    verbmem_max_new_tokens: int = field(default=128, metadata={"help": "Text: VerbMem continuation tokens."})
    knowmem_max_new_tokens: int = field(default=32, metadata={"help": "Text: KnowMem answer tokens."})
    max_scoring_memory: int | str = field(
        default="1GiB",
        metadata={
            "help": "Memory for the vocabulary-sized arrays of scoring, on the scoring device: bytes or a size "
            "(512MB, 2GiB)."
        },
    )
    holdout_half: str = field(
        default="all",
        metadata={
            "help": "all, or evaluation: only the evaluation half of the holdout split (the other half served "
            "self-dosing; chosen by itself for a run unlearned with --dose_every)."
        },
    )
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    torch_dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    chat_date: str = field(default=CHAT_DATE, metadata={"help": CHAT_DATE_HELP})
    system_prompt: str | None = field(default=None, metadata={"help": SYSTEM_PROMPT_HELP})

    def formatter(self, tokenizer):
        """The QA formatter of this evaluation (its length limit, chat date and system turn)."""
        from ..data.formatting import QAFormatter

        return QAFormatter(tokenizer, self.max_length, chat_date=self.chat_date, system_prompt=self.system_prompt)

    def __post_init__(self):
        if self.data_format not in ("qa", "text"):
            raise ValueError(f"--data_format must be qa or text, got {self.data_format!r}")
        if self.data_format == "qa":
            self.forget_split = self.forget_split or "forget10"
            self.holdout_split = self.holdout_split or BenchmarkSplits.from_forget(self.forget_split).holdout
        else:
            self.forget_split = self.forget_split or "raw/forget"
            self.holdout_split = self.holdout_split or "raw/holdout"
            # A prompt typed on the command line carries "\\n" as two characters: it means a newline.
            self.knowmem_prompt = self.knowmem_prompt.replace("\\n", "\n")
            if "{question}" not in self.knowmem_prompt:
                raise ValueError(f"--knowmem_prompt {self.knowmem_prompt!r} has no {{question}} slot")
        if min(self.batch_size, self.max_new_tokens, self.verbmem_max_new_tokens, self.knowmem_max_new_tokens) < 1:
            raise ValueError("batch_size and the max_new_tokens budgets must be positive")
        from .scoring import parse_memory_size

        self.max_scoring_memory = parse_memory_size(self.max_scoring_memory)
        self.device, self.torch_dtype = check_device(self.device), check_dtype(self.torch_dtype)
        if self.holdout_half not in ("all", "evaluation"):
            raise ValueError(f"--holdout_half must be all or evaluation, got {self.holdout_half!r}")

    def runtime(self):
        """``(torch.device, dtype)`` of this evaluation, from the one resolver (``llm_unlearn.devices``)."""
        device = devices.resolve_device(self.device)
        return device, devices.resolve_dtype(self.torch_dtype, device)


def role_splits(forget_split: str) -> dict[str, str]:
    s = BenchmarkSplits.from_forget(forget_split)
    return {
        "forget": s.forget_eval,
        "retain": s.retain_eval,
        "real_authors": s.utility[0],
        "world_facts": s.utility[1],
    }


def load_eval_data(data: str, cfg: EvalConfig | str) -> dict[str, list[dict]]:
    """The evaluation splits (QA: the four of TOFU; text: see ``text_eval``) and, when present, the holdout split
    (non-members for membership inference), validated before any model is loaded. ``cfg`` may be a forget split."""
    from ..data.schema import DataValidationError

    cfg = EvalConfig(forget_split=cfg) if isinstance(cfg, str) else cfg
    if cfg.data_format == "text":
        from .text_eval import load_text_eval_data

        return load_text_eval_data(data, cfg)
    out = {role: load_split(data, name) for role, name in role_splits(cfg.forget_split).items()}
    holdout = cfg.holdout_split
    try:
        out[HOLDOUT] = load_split(data, holdout)
        if cfg.holdout_half == "evaluation":  # the dosing half steered unlearning: never report on it
            from ..data.schema import holdout_halves

            out[HOLDOUT] = holdout_halves(out[HOLDOUT])[1]
    except DataValidationError as e:
        logger.warning(
            "no usable %s split (%s): membership-inference metrics are left out of this evaluation", holdout, e
        )
    return out


def _perturbed_list(row: dict) -> list[str]:
    p = row["perturbed_answer"]
    return [p] if isinstance(p, str) else list(p)


def add_gradnorm(model, formatter, rows: list[dict], items: list[dict]) -> None:
    """The GradNorm attack score ``−‖∇ℓ‖`` of each QA item (members sit nearer a minimum: smaller gradients)."""
    from .sharding import gradient_norms

    encoded = [formatter.encode(r["question"], r["answer"]) for r in rows]
    for item, norm in zip(items, gradient_norms(model, encoded, formatter.tokenizer.pad_token_id)):
        item["mia_gradnorm"] = -norm


def split_requests(rows: list[dict], role: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs a split's metrics score, in the order :func:`split_result` reads them: every
    item's answer, then (forget and retain) every item's paraphrased answer, then every perturbed answer."""
    pairs = [(r["question"], r["answer"]) for r in rows]
    if ROLES[role][1]:
        pairs += [(r["question"], r["paraphrased_answer"]) for r in rows]
    pairs += [(r["question"], p) for r in rows for p in _perturbed_list(r)]
    return pairs


def split_result(rows: list[dict], role: str, scores: list, generations: list[str]) -> dict:
    """Per-item values and aggregates of one evaluation split from its scores (in :func:`split_requests` order) and
    its greedy generations."""
    n = len(rows)
    answer = scores[:n]
    uses_paraphrase = ROLES[role][1]
    correct = scores[n : 2 * n] if uses_paraphrase else answer
    flat = scores[2 * n :] if uses_paraphrase else scores[n:]
    items, pos = [], 0
    for i, row in enumerate(rows):
        k = len(_perturbed_list(row))
        pert_losses = [s.avg_loss for s in flat[pos : pos + k]]
        pos += k
        loss = answer[i].avg_loss
        prob = M.probability(loss) if uses_paraphrase else M.normalized_probability(loss, pert_losses)
        items.append(
            {
                "question": row["question"],
                "answer": row["answer"],
                "generation": generations[i],
                "answer_loss": loss,
                "answer_tokens": answer[i].length,
                "paraphrase_loss": correct[i].avg_loss,
                "perturbed_losses": pert_losses,
                "probability": prob,
                "truth_ratio": M.truth_ratio(correct[i].avg_loss, pert_losses),
                "rouge_l_recall": M.rouge_l_recall(generations[i], row["answer"]),
                **(privacy_scores(answer[i], row["answer"]) if role == "forget" else {}),
            }
        )
    ratios = [it["truth_ratio"] for it in items]
    aggregate = {
        "probability": float(np.mean([it["probability"] for it in items])),
        "truth_ratio": M.forget_truth_ratio(ratios) if role == "forget" else M.retain_truth_ratio(ratios),
        "rouge_l_recall": float(np.mean([it["rouge_l_recall"] for it in items])),
        "n_items": len(items),
    }
    return {"split": None, "aggregate": aggregate, "items": items}


def evaluate_split(model, formatter, rows: list[dict], role: str, cfg: EvalConfig) -> dict:
    """Per-item values and aggregates of one evaluation split (one scoring pass, one generation pass)."""
    from .sharding import generate_answers, score_answers

    pairs = split_requests(rows, role)
    scores = score_answers(
        model, formatter, [q for q, _ in pairs], [a for _, a in pairs], cfg.batch_size, cfg.max_scoring_memory
    )
    generations = generate_answers(model, formatter, [r["question"] for r in rows], cfg.max_new_tokens, cfg.batch_size)
    return split_result(rows, role, scores, generations)


def model_utility(splits: dict[str, dict]) -> float:
    """Harmonic mean of {probability, ROUGE-L recall, truth ratio} over retain, real authors and world facts."""
    values = [
        splits[r]["aggregate"][m]
        for r in ("retain", "real_authors", "world_facts")
        for m in ("probability", "rouge_l_recall", "truth_ratio")
    ]
    return M.harmonic_mean(values)


def cache_key(
    model_path: Path,
    data: dict[str, list[dict]],
    cfg: EvalConfig,
    runtime=None,
    weights: str | None = None,
    prompt_format: str | None = None,
) -> str:
    """Content key of an evaluation: the settings, the model's weight/config/tokenizer files' hashes (never their
    paths or times; ``weights`` when already computed), the evaluation data, and the kind of device and the dtype it
    is scored in (``runtime``, from :meth:`EvalConfig.runtime`: a GPU's or a bfloat16 evaluation is another one)."""
    from ..runs import model_fingerprint

    h = hashlib.sha256()
    # the memory bound bounds memory, not results; the device and dtype requests enter as what they resolve to
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("max_scoring_memory", "device", "torch_dtype")}
    weights = weights or model_fingerprint(model_path)
    ident = {"cfg": settings, "weights": weights, "version": EVAL_VERSION}
    if prompt_format is not None:  # the rendered prompt: a template that renders differently is another evaluation
        ident["prompt_format"] = prompt_format
    if runtime is not None:
        device, dtype = runtime
        if getattr(device, "type", "cpu") != "cpu" or dtype_name(dtype) != "float32":
            ident["runtime"] = {"device_type": device.type, "dtype": dtype_name(dtype)}
    h.update(json.dumps(ident, sort_keys=True).encode())
    h.update(json.dumps(data, sort_keys=True).encode())
    return h.hexdigest()[:16]


def data_fingerprint(data: dict[str, list[dict]]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


INTEGRITY_KEYS = ("model_fingerprint", "tokenizer_fingerprint", "data_fingerprint", "config", "splits")


def result_integrity(result: dict) -> str:
    """A hash of what an evaluation measured (its per-item numbers, settings, data and the weights it scored): a
    saved evaluation whose numbers were edited, cut or swapped no longer matches its recorded hash."""
    part = {k: result.get(k) for k in INTEGRITY_KEYS}
    return hashlib.sha256(json.dumps(part, sort_keys=True, allow_nan=True).encode()).hexdigest()[:16]


def _cache_problem(cached: dict, weights: str, data: dict) -> str | None:
    """Why a cache file cannot be this evaluation (verified by content, never trusted by its name); None if it is."""
    if cached.get("kind") != RESULT_KIND:
        return "not an evaluation result"
    if cached.get("model_fingerprint") != weights:
        return "it scored other weights"
    if cached.get("data_fingerprint") != data_fingerprint(data):
        return "it scored other data"
    if cached.get("integrity") != result_integrity(cached):
        return "its numbers do not match its integrity hash"
    return None


class ModelChangedError(OSError):
    """The model folder was rewritten while it was evaluated: the numbers describe no single set of weights."""


def evaluate_model(
    model_path: str | Path,
    data_source: str,
    cfg: EvalConfig,
    use_cache: bool = True,
    data: dict[str, list[dict]] | None = None,
) -> dict:
    """Evaluate the model folder at ``model_path`` on the benchmark's four evaluation splits (cached)."""
    from ..devices import runtime_record
    from ..modeling import load_causal_lm, load_tokenizer, tokenizer_fingerprint
    from ..runs import model_fingerprint
    from .sharding import from_main, is_main_process

    model_path = Path(model_path)
    if not model_path.is_dir():
        raise FileNotFoundError(f"model folder {model_path} does not exist")
    data = data if data is not None else load_eval_data(data_source, cfg)
    device, dtype = cfg.runtime()
    weights = model_fingerprint(model_path)
    tokenizer = load_tokenizer(model_path)
    formatter = cfg.formatter(tokenizer)
    key = cache_key(model_path, data, cfg, (device, dtype), weights=weights, prompt_format=formatter.prompt_format())
    cache = model_path / CACHE_DIR / f"{key}.json"
    cached = read_json_cache(cache) if use_cache else None
    if cached is not None and (problem := _cache_problem(cached, weights, data)):
        logger.warning("ignoring the cached evaluation %s (%s): evaluating again", cache, problem)
        cached = None
    # Several processes take the main one's answer: a rank that reuses the cache skips the collectives of the others.
    cached = from_main(cached)
    if cached is not None:
        logger.info("reusing cached evaluation %s", cache)
        return cached

    model = load_causal_lm(model_path, dtype=dtype, device=device)
    if cfg.data_format == "text":
        from .text_eval import evaluate_text

        body = evaluate_text(model, tokenizer, data, cfg)
    else:
        body = evaluate_qa(model, formatter, data, cfg, model_path.name)
    result = {
        "kind": RESULT_KIND,
        "model": str(model_path),
        "data": str(data_source),
        "data_fingerprint": data_fingerprint(data),
        "config": asdict(cfg),
        "runtime": runtime_record(device, next(model.parameters()).dtype),
        "model_fingerprint": weights,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        **body,
    }
    result["integrity"] = result_integrity(result)
    if model_fingerprint(model_path) != weights:  # re-hashed only when a file's size or time changed
        raise ModelChangedError(
            f"the model files in {model_path} changed while they were evaluated (another run rewrote the folder): "
            "nothing was saved; evaluate again once that run has finished"
        )
    if is_main_process():  # the other ranks hold the same result
        atomic_write_json(cache, result, indent=None)
    return result


def evaluate_qa(model, formatter, data: dict[str, list[dict]], cfg: EvalConfig, name: str = "model") -> dict:
    """Splits, privacy and model utility of one model on a TOFU-schema benchmark."""
    from ..data.formatting import truncation_report

    for role, split in role_splits(cfg.forget_split).items():  # scores of cut answers are not the whole answer's
        message = truncation_report(formatter, data[role], split).warning()
        if message:
            logger.warning("evaluation: %s", message)
    # One teacher-forced pass over every scored pair of every split (answers, paraphrases, perturbed answers and
    # the holdout's answers) and one generation pass over every question: the batches are as full as batch_size
    # allows whatever the split sizes, and a model is run in as few calls as the data permit.
    from .sharding import generate_answers, score_answers

    roles = list(ROLES)
    requests = {role: split_requests(data[role], role) for role in roles}
    if HOLDOUT in data:
        requests[HOLDOUT] = [(r["question"], r["answer"]) for r in data[HOLDOUT]]
    pairs = [pair for reqs in requests.values() for pair in reqs]
    logger.info("%s: scoring %d pairs, generating %d answers", name, len(pairs), sum(len(data[r]) for r in roles))
    scores = score_answers(
        model, formatter, [q for q, _ in pairs], [a for _, a in pairs], cfg.batch_size, cfg.max_scoring_memory
    )
    questions = [r["question"] for role in roles for r in data[role]]
    generations = generate_answers(model, formatter, questions, cfg.max_new_tokens, cfg.batch_size)
    splits, at, gen_at = {}, 0, 0
    for role in roles:
        n_pairs, n_rows = len(requests[role]), len(data[role])
        splits[role] = split_result(data[role], role, scores[at : at + n_pairs], generations[gen_at : gen_at + n_rows])
        splits[role]["split"] = role_splits(cfg.forget_split)[role]
        at, gen_at = at + n_pairs, gen_at + n_rows
    privacy = None
    if HOLDOUT in data:
        if cfg.gradnorm:
            add_gradnorm(model, formatter, data["forget"], splits["forget"]["items"])
        holdout_items = [
            {"question": r["question"], "answer_loss": sc.avg_loss, **privacy_scores(sc, r["answer"])}
            for r, sc in zip(data[HOLDOUT], scores[at:])
        ]
        if cfg.gradnorm:
            add_gradnorm(model, formatter, data[HOLDOUT], holdout_items)
        privacy = {"holdout_items": holdout_items, **privacy_summary(splits["forget"]["items"], holdout_items)}
    return {"benchmark": "qa", "model_utility": model_utility(splits), "splits": splits, "privacy": privacy}


def load_result(path: str | Path) -> dict:
    """A saved evaluation JSON (from ``llm-unlearn eval`` or the cache), checked to be one."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}") from None
    if result.get("kind") != RESULT_KIND:
        raise ValueError(f'{path} is not an llm-unlearn evaluation result (no "kind": "{RESULT_KIND}")')
    return result


def forget_truth_ratios(result: dict) -> list[float]:
    return [it["truth_ratio"] for it in result["splits"]["forget"]["items"]]


def compare(result: dict, reference: dict | None) -> dict:
    """Attach forget quality (KS test against the reference's forget truth ratios), PrivLeak and the comparison
    table. On a text benchmark there are no truth ratios: the comparison is VerbMem, KnowMem and PrivLeak.

    Forget quality is only defined against a reference: without one this raises instead of reporting None.
    """
    if reference is None:
        raise ValueError(
            "forget quality compares the model to a retrained reference: pass --reference MODEL_DIR or "
            "--reference EVAL.json (the reference's saved evaluation)"
        )
    if reference.get("data_fingerprint") != result.get("data_fingerprint"):
        raise ValueError(
            f"the reference {reference.get('model')} was evaluated on other data "
            f"({reference.get('data')}, forget split {reference['config']['forget_split']}) than the model "
            f"({result.get('data')}, forget split {result['config']['forget_split']}): evaluate both on the same data"
        )
    out = dict(result)
    out["reference"] = reference["model"]
    # The reference's own result travels with the comparison (per-item values for plots and confidence intervals).
    out["reference_result"] = {k: v for k, v in reference.items() if k != "reference_result"}
    is_text = result.get("benchmark") == "text"
    if is_text != (reference.get("benchmark") == "text"):
        raise ValueError("the model and the reference were evaluated on different kinds of benchmark (qa vs text)")
    if not is_text:
        out["forget_quality"] = M.forget_quality(forget_truth_ratios(result), forget_truth_ratios(reference))
    ref_privacy = None
    if result.get("privacy") and reference.get("privacy"):
        out["privacy"] = dict(result["privacy"])
        out["privacy"]["auc"] = {**result["privacy"]["auc"], "reference": _reference_attack_auc(result, reference)}
        # PrivLeak from Min-K% AUCs, the reference's computed on the reference model (never a constant).
        out["privacy"]["privleak"] = M.privleak(
            result["privacy"]["auc"]["min_k"], reference["privacy"]["auc"]["min_k"]
        )
        ref_privacy = {**reference["privacy"], "privleak": 0.0}
    out["reference_summary"] = summary(reference, forget_quality=None if is_text else 1.0, privacy=ref_privacy)
    out["summary"] = summary(result, forget_quality=out.get("forget_quality"), privacy=out.get("privacy"))
    return out


def _reference_attack_auc(result: dict, reference: dict) -> float:
    """Reference-based attack: score ``−(ℓ_model − ℓ_ref)`` per item (members lose more relative to the reference)."""

    def scores(items, ref_items):
        return [-(a["answer_loss"] - b["answer_loss"]) for a, b in zip(items, ref_items)]

    def member_items(r):  # QA: the forget split's items; text: the forget documents'
        return r["privacy"].get("forget_items") or r["splits"]["forget"]["items"]

    members = scores(member_items(result), member_items(reference))
    non_members = scores(result["privacy"]["holdout_items"], reference["privacy"]["holdout_items"])
    return M.roc_auc(members, non_members)


def summary(result: dict, forget_quality: float | None = None, privacy: dict | None = None) -> dict[str, float]:
    """The headline numbers of one result, in table order."""
    rows = {}
    is_text = result.get("benchmark") == "text"
    if forget_quality is not None:
        rows["forget_quality"] = forget_quality
    if not is_text:  # on text the utility is KnowMem on retain, its own row below
        rows["model_utility"] = result["model_utility"]
    if privacy is not None:
        rows["privleak"] = privacy["privleak"]
        rows["mia_auc/min_k"] = privacy["auc"]["min_k"]
        rows["forget/extraction_strength"] = privacy["extraction_strength"]
        rows["forget/exact_memorization"] = privacy["exact_memorization"]
    if is_text:
        for role in ("verbmem", "knowmem_forget", "knowmem_retain"):
            rows[f"{role}/rouge_l_f1"] = result["splits"][role]["aggregate"]["rouge_l_f1"]
        return rows
    for role in ROLES:
        for m in ("probability", "truth_ratio", "rouge_l_recall"):
            rows[f"{role}/{m}"] = result["splits"][role]["aggregate"][m]
    return rows


_LABELS = {
    "probability": "probability",
    "truth_ratio": "truth ratio",
    "rouge_l_recall": "ROUGE-L recall",
    "extraction_strength": "extraction strength",
    "exact_memorization": "exact memorization",
    "rouge_l_f1": "ROUGE-L F1",
}
_TEXT_ROLES = {"verbmem": "VerbMem", "knowmem_forget": "KnowMem forget", "knowmem_retain": "KnowMem retain (utility)"}


def _label(key: str) -> str:
    if "/" not in key:
        return {
            "forget_quality": "**Forget quality** (KS p)",
            "model_utility": "**Model utility**",
            "privleak": "**PrivLeak** (%, Min-K% AUC vs reference)",
        }[key]
    role, m = key.split("/")
    if role == "mia_auc":
        return "MIA AUC forget vs holdout (Min-K%)"
    if role in _TEXT_ROLES:
        return f"{_TEXT_ROLES[role]} {_LABELS[m]}"
    return f"{ROLES[role][0]} {_LABELS[m]}"


def markdown_table(compared: dict) -> str:
    """``metric | model | reference | gap`` for a compared result."""
    lines = ["| metric | model | reference | gap |", "|---|---:|---:|---:|"]
    for key, value in compared["summary"].items():
        ref = compared["reference_summary"][key]
        lines.append(f"| {_label(key)} | {value:.4g} | {ref:.4g} | {value - ref:+.4g} |")
    return "\n".join(lines)
