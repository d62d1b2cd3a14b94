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

from ..data.loading import load_split
from ..data.schema import BenchmarkSplits
from . import metrics as M

logger = logging.getLogger(__name__)

CACHE_DIR = "eval_cache"
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
        forget_split: the forget split whose ``_perturbed`` version is evaluated (default ``forget10``).
        batch_size: items per scoring / generation batch (default 32).
        max_new_tokens: generation budget; generation also stops at EOS or a blank line (default 200).
        max_length: longest tokenized QA pair scored (default 256).
    """

    forget_split: str = field(default="forget10", metadata={"help": "Forget split (forgetXX) to evaluate."})
    batch_size: int = field(default=32, metadata={"help": "Items per scoring and generation batch."})
    max_new_tokens: int = field(default=200, metadata={"help": "Maximum generated tokens per answer."})
    max_length: int = field(default=256, metadata={"help": "Maximum tokens of a scored QA pair."})

    def __post_init__(self):
        BenchmarkSplits.from_forget(self.forget_split)  # raises with the expected form
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be positive")


def role_splits(forget_split: str) -> dict[str, str]:
    s = BenchmarkSplits.from_forget(forget_split)
    return {
        "forget": s.forget_eval,
        "retain": s.retain_eval,
        "real_authors": s.utility[0],
        "world_facts": s.utility[1],
    }


def load_eval_data(data: str, forget_split: str) -> dict[str, list[dict]]:
    """The four evaluation splits, validated before any model is loaded."""
    return {role: load_split(data, name) for role, name in role_splits(forget_split).items()}


def _perturbed_list(row: dict) -> list[str]:
    p = row["perturbed_answer"]
    return [p] if isinstance(p, str) else list(p)


def evaluate_split(model, formatter, rows: list[dict], role: str, cfg: EvalConfig) -> dict:
    """Per-item values and aggregates of one evaluation split."""
    from .scoring import generate_answers, score_answers

    questions = [r["question"] for r in rows]
    answer = score_answers(model, formatter, questions, [r["answer"] for r in rows], cfg.batch_size)
    uses_paraphrase = ROLES[role][1]
    correct = (
        score_answers(model, formatter, questions, [r["paraphrased_answer"] for r in rows], cfg.batch_size)
        if uses_paraphrase
        else answer
    )
    pert_lists = [_perturbed_list(r) for r in rows]
    flat_q = [q for q, ps in zip(questions, pert_lists) for _ in ps]
    flat = score_answers(model, formatter, flat_q, [p for ps in pert_lists for p in ps], cfg.batch_size)
    generations = generate_answers(model, formatter, questions, cfg.max_new_tokens, cfg.batch_size)

    items, pos = [], 0
    for i, row in enumerate(rows):
        k = len(pert_lists[i])
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


def model_utility(splits: dict[str, dict]) -> float:
    """Harmonic mean of {probability, ROUGE-L recall, truth ratio} over retain, real authors and world facts."""
    values = [
        splits[r]["aggregate"][m]
        for r in ("retain", "real_authors", "world_facts")
        for m in ("probability", "rouge_l_recall", "truth_ratio")
    ]
    return M.harmonic_mean(values)


def _weights_fingerprint(model_path: Path) -> list:
    files = sorted(p for p in model_path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cache_key(model_path: Path, data: dict[str, list[dict]], cfg: EvalConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"cfg": asdict(cfg), "weights": _weights_fingerprint(model_path)}, sort_keys=True).encode())
    h.update(json.dumps(data, sort_keys=True).encode())
    return h.hexdigest()[:16]


def data_fingerprint(data: dict[str, list[dict]]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_model(
    model_path: str | Path,
    data_source: str,
    cfg: EvalConfig,
    use_cache: bool = True,
    data: dict[str, list[dict]] | None = None,
) -> dict:
    """Evaluate the model folder at ``model_path`` on the benchmark's four evaluation splits (cached)."""
    from ..data.formatting import QAFormatter
    from ..modeling import load_causal_lm, load_tokenizer

    model_path = Path(model_path)
    if not model_path.is_dir():
        raise FileNotFoundError(f"model folder {model_path} does not exist")
    data = data if data is not None else load_eval_data(data_source, cfg.forget_split)
    key = cache_key(model_path, data, cfg)
    cache = model_path / CACHE_DIR / f"{key}.json"
    if use_cache and cache.exists():
        logger.info("reusing cached evaluation %s", cache)
        return json.loads(cache.read_text())

    from tqdm.auto import tqdm

    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path)
    formatter = QAFormatter(tokenizer, max_length=cfg.max_length)
    splits = {}
    for role in tqdm(ROLES, desc=f"evaluating {model_path.name}", leave=False):
        splits[role] = evaluate_split(model, formatter, data[role], role, cfg)
        splits[role]["split"] = role_splits(cfg.forget_split)[role]
    result = {
        "kind": RESULT_KIND,
        "model": str(model_path),
        "data": str(data_source),
        "data_fingerprint": data_fingerprint(data),
        "config": asdict(cfg),
        "model_utility": model_utility(splits),
        "splits": splits,
    }
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(result) + "\n")
    return result


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
    """Attach forget quality (KS test against the reference's forget truth ratios) and the comparison table.

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
    out["forget_quality"] = M.forget_quality(forget_truth_ratios(result), forget_truth_ratios(reference))
    out["reference_summary"] = summary(reference, forget_quality=1.0)
    out["summary"] = summary(result, forget_quality=out["forget_quality"])
    return out


def summary(result: dict, forget_quality: float | None = None) -> dict[str, float]:
    """The headline numbers of one result, in table order."""
    rows = {}
    if forget_quality is not None:
        rows["forget_quality"] = forget_quality
    rows["model_utility"] = result["model_utility"]
    for role in ROLES:
        for m in ("probability", "truth_ratio", "rouge_l_recall"):
            rows[f"{role}/{m}"] = result["splits"][role]["aggregate"][m]
    return rows


_LABELS = {"probability": "probability", "truth_ratio": "truth ratio", "rouge_l_recall": "ROUGE-L recall"}


def _label(key: str) -> str:
    if "/" not in key:
        return {"forget_quality": "**Forget quality** (KS p)", "model_utility": "**Model utility**"}[key]
    role, m = key.split("/")
    return f"{ROLES[role][0]} {_LABELS[m]}"


def markdown_table(compared: dict) -> str:
    """``metric | model | reference | gap`` for a compared result."""
    lines = ["| metric | model | reference | gap |", "|---|---:|---:|---:|"]
    for key, value in compared["summary"].items():
        ref = compared["reference_summary"][key]
        lines.append(f"| {_label(key)} | {value:.4g} | {ref:.4g} | {value - ref:+.4g} |")
    return "\n".join(lines)
