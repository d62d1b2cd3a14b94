"""The attack stage (``llm-unlearn attack RUN_DIR --reference REF --data DATA``): attack the unlearned model and the
retrained reference, join the results to the run's evaluation JSON, its Markdown report and (through them) the
model card.

Inputs are checked before any model is loaded. Each subject's attack results are cached in its folder
(``attack_cache/``), keyed on the attack settings, the evaluation settings, the subject's weights and the data, so the
reference is attacked once and reused by every run compared to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import attacks as A

logger = logging.getLogger(__name__)

ATTACKS = ("relearn", "quantize", "rephrase")
RELEARN_SOURCES = ("forget", "related", "both")
CACHE_DIR = "attack_cache"
ATTACK_VERSION = 1  # bump when a cached result's layout changes


@dataclass
class AttackConfig:
    """Settings of ``llm-unlearn attack``.

    Attributes:
        attacks: comma-separated subset of ``relearn,quantize,rephrase`` (default all three).
        relearn_source: ``forget`` (default: a part of the forget split, evaluated on its untouched rest),
            ``related`` (retain items about entities that share an attribute value with a forget entity; evaluated on
            the whole forget split) or ``both``.
        relearn_fraction: share of each forget entity's items relearned (default 0.25, at least one per entity).
        relearn_steps, relearn_learning_rate, relearn_batch_size: the relearning budget (default 10 steps at
            1e-3, batch 4: the tiny embedded model; ~1e-5 for a 1B model), at a constant learning rate.
        relearn_lora, relearn_lora_r: relearn through fresh LoRA adapters (default off: all weights).
        quantize_bits: comma-separated weight bit widths (default ``8,4``; ``16`` = the no-rounding control).
        rephrase_shots: retain items put before each forget question in the few-shot probe (default 3; 0 = none).
        rephrase_templates: a text file of question templates, one per line with a ``{question}`` slot (for data
            whose generator gives no question variants).
        seed: seed of the relearning subset, the few-shot items and the training (default 0).
    """

    attacks: str = field(default=",".join(ATTACKS), metadata={"help": "Comma-separated: relearn,quantize,rephrase."})
    relearn_source: str = field(default="forget", metadata={"help": "forget, related or both."})
    relearn_fraction: float = field(default=0.25, metadata={"help": "Share of each forget entity's items relearned."})
    relearn_steps: int = field(default=10, metadata={"help": "Relearning steps."})
    relearn_learning_rate: float = field(default=1e-3, metadata={"help": "Relearning learning rate (constant)."})
    relearn_batch_size: int = field(default=4, metadata={"help": "Relearning batch size."})
    relearn_lora: bool = field(default=False, metadata={"help": "Relearn through fresh LoRA adapters."})
    relearn_lora_r: int = field(default=8, metadata={"help": "LoRA rank of relearning."})
    quantize_bits: str = field(default="8,4", metadata={"help": "Weight bit widths (16 = no-rounding control)."})
    rephrase_shots: int = field(default=3, metadata={"help": "Retain items before each question (few-shot probe)."})
    rephrase_templates: str | None = field(
        default=None, metadata={"help": "File of question templates with a {question} slot, one per line."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the relearning subset, few-shot items and training."})

    def __post_init__(self):
        chosen = [a.strip() for a in self.attacks.split(",") if a.strip()]
        unknown = [a for a in chosen if a not in ATTACKS]
        if unknown or not chosen:
            raise ValueError(f"--attacks {self.attacks!r}: choose from {', '.join(ATTACKS)}")
        self.attacks = ",".join(chosen)
        if self.relearn_source not in RELEARN_SOURCES:
            raise ValueError(
                f"--relearn_source must be one of {', '.join(RELEARN_SOURCES)}, got {self.relearn_source!r}"
            )
        if not 0 < self.relearn_fraction < 1:
            raise ValueError(f"--relearn_fraction must lie strictly between 0 and 1, got {self.relearn_fraction}")
        if (
            min(self.relearn_steps, self.relearn_batch_size, self.relearn_lora_r) < 1
            or self.relearn_learning_rate <= 0
        ):
            raise ValueError(
                "--relearn_steps, --relearn_batch_size, --relearn_lora_r and the learning rate must be > 0"
            )
        for b in self.bits:
            if b not in (*A.QUANTO_TYPES, A.NO_QUANTIZATION_BITS):
                raise ValueError(f"--quantize_bits {self.quantize_bits!r}: each must be one of 16, 8, 4, 2")
        if self.rephrase_shots < 0:
            raise ValueError(f"--rephrase_shots must be ≥ 0, got {self.rephrase_shots}")
        if self.rephrase_templates is not None and not Path(self.rephrase_templates).is_file():
            raise FileNotFoundError(f"--rephrase_templates {self.rephrase_templates}: no such file")

    @property
    def chosen(self) -> list[str]:
        return self.attacks.split(",")

    @property
    def bits(self) -> list[int]:
        try:
            return [int(b) for b in str(self.quantize_bits).split(",") if b.strip()]
        except ValueError:
            raise ValueError(f"--quantize_bits {self.quantize_bits!r}: comma-separated integers") from None

    def templates(self) -> list[str]:
        if self.rephrase_templates is None:
            return []
        return A.read_templates(Path(self.rephrase_templates).read_text(), self.rephrase_templates)


# --- what each subject (model, reference, target) is measured on -----------------------------------------------------


@dataclass
class AttackData:
    """The rows every subject is attacked and measured on (chosen once, the same for all)."""

    forget_eval: list[dict]
    retain_eval: list[dict]
    relearn: dict[str, dict]  # source -> {"train": rows, "eval": rows}
    probes: dict[str, dict]


def attack_data(data: str, forget_split: str, cfg: AttackConfig, eval_cfg) -> AttackData:
    """Load and choose the rows: relearning subsets, the untouched rest, the rephrase probes."""
    import random

    from ..data.loading import load_split
    from ..data.schema import BenchmarkSplits
    from ..evaluation.evaluator import load_eval_data

    splits = BenchmarkSplits.from_forget(forget_split)
    evaluation = load_eval_data(data, eval_cfg)
    forget_eval, retain_eval = evaluation["forget"], evaluation["retain"]
    relearn = {}
    if "relearn" in cfg.chosen:
        forget_train = load_split(data, splits.forget)
        if cfg.relearn_source in ("forget", "both"):
            train, rest = A.split_for_relearning(forget_train, forget_eval, cfg.relearn_fraction, cfg.seed)
            relearn["forget"] = {"train": train, "eval": rest}
        if cfg.relearn_source in ("related", "both"):
            retain_train = load_split(data, splits.retain)
            related = A.related_rows(forget_train, retain_train)
            if not related:
                raise ValueError(
                    f"--relearn_source related: no retain item of {data} is about an entity related to the forget "
                    "entities (needs the `entity` and `attribute` fields, and shared attribute values)"
                )
            relearn["related"] = {"train": related, "eval": forget_eval}
    probes = {}
    if "rephrase" in cfg.chosen:
        shots = random.Random(cfg.seed).sample(retain_eval, min(cfg.rephrase_shots, len(retain_eval)))
        probes = A.rephrase_probes(forget_eval, shots, cfg.templates())
    return AttackData(forget_eval, retain_eval, relearn, probes)


def _key(kind: str, settings: dict, subject: Path, rows) -> str:
    from ..runs import model_fingerprint

    ident = {"kind": kind, "settings": settings, "weights": model_fingerprint(subject), "v": ATTACK_VERSION}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode())
    h.update(json.dumps(rows, sort_keys=True, default=str).encode())
    return f"{kind}-{h.hexdigest()[:16]}"


def _cached(subject: Path, kind: str, settings: dict, rows, compute):
    """``compute()``, cached in ``subject/attack_cache/`` under a content key."""
    from ..runs import atomic_write_json, read_json_cache

    path = subject / CACHE_DIR / f"{_key(kind, settings, subject, rows)}.json"
    hit = read_json_cache(path)
    if hit is not None:
        logger.info("reusing cached attack result %s", path)
        return hit
    value = compute()
    atomic_write_json(path, value, indent=None)
    return value


class Subject:
    """One model folder under attack; loads a fresh copy for every attack (an attack changes the weights)."""

    def __init__(self, folder: str | Path, eval_cfg, cfg: AttackConfig):
        self.folder, self.eval_cfg, self.cfg = Path(folder), eval_cfg, cfg

    def _load(self):
        from ..modeling import load_causal_lm, load_tokenizer

        device, dtype = self.eval_cfg.runtime()  # the one resolver: --device / --torch_dtype of the command
        return load_causal_lm(self.folder, dtype=dtype, device=device), load_tokenizer(self.folder)

    def _formatter(self, tokenizer):
        return self.eval_cfg.formatter(tokenizer)

    def _eval_settings(self) -> dict:
        from ..devices import dtype_name

        skip = ("max_scoring_memory", "device", "torch_dtype")  # the last two enter as what they resolve to
        settings = {k: v for k, v in asdict(self.eval_cfg).items() if k not in skip}
        device, dtype = self.eval_cfg.runtime()
        if device.type != "cpu" or dtype_name(dtype) != "float32":
            settings["runtime"] = {"device_type": device.type, "dtype": dtype_name(dtype)}
        return settings

    def plain(self, rows: list[dict]) -> dict:
        """Unattacked forget measures of ``rows``."""

        def compute():
            model, tok = self._load()
            return A.summarize(A.evaluate_rows(model, self._formatter(tok), rows, self.eval_cfg))

        return _cached(self.folder, "plain", self._eval_settings(), rows, compute)

    def relearned(self, source: str, train: list[dict], rows: list[dict]) -> dict:
        c = self.cfg
        settings = {
            "steps": c.relearn_steps,
            "learning_rate": c.relearn_learning_rate,
            "batch_size": c.relearn_batch_size,
            "lora": c.relearn_lora,
            "lora_r": c.relearn_lora_r,
            "seed": c.seed,
            "max_length": self.eval_cfg.max_length,
            "chat_date": self.eval_cfg.chat_date,
            "system_prompt": self.eval_cfg.system_prompt,
        }

        def compute():
            model, tok = self._load()
            with tempfile.TemporaryDirectory() as tmp:
                model = A.relearn(model, tok, train, settings, tmp)
            return A.summarize(A.evaluate_rows(model, self._formatter(tok), rows, self.eval_cfg))

        return _cached(self.folder, f"relearn_{source}", {**settings, **self._eval_settings()}, [train, rows], compute)

    def quantized(self, bits: int, rows: list[dict], retain: list[dict]) -> dict:
        def compute():
            model, tok = self._load()
            model = A.quantize_weights(model, bits)
            formatter = self._formatter(tok)
            return {
                "forget": A.summarize(A.evaluate_rows(model, formatter, rows, self.eval_cfg)),
                "retain": A.summarize(A.evaluate_rows(model, formatter, retain, self.eval_cfg)),
            }

        return _cached(self.folder, f"quantize{bits}", self._eval_settings(), [rows, retain], compute)

    def probed(self, probes: dict[str, dict], rows: list[dict]) -> dict:
        def compute():
            model, tok = self._load()
            return {name: A.probe_measures(model, tok, rows, probe, self.eval_cfg) for name, probe in probes.items()}

        return _cached(self.folder, "rephrase", self._eval_settings(), [probes, rows], compute)


# --- the attack stage ---------------------------------------------------------------------------------------------

HIDDEN_SHARE = 0.25  # residual share after an attack above which the reading says "hidden, not removed"


def _attack_entry(before: dict, after: dict, ref_before: dict, ref_after: dict, target: dict) -> dict:
    """One attack's numbers: the measures before/after for the model and the reference, the target's, the
    recoveries and the residual knowledge share (model vs attacked reference, on the target's scale)."""
    return {
        "model": {
            "before": A.with_forget_quality(before, ref_before),
            "after": A.with_forget_quality(after, ref_before),
        },
        "reference": {
            "before": A.with_forget_quality(ref_before, ref_before),
            "after": A.with_forget_quality(ref_after, ref_before),
        },
        "target": A.with_forget_quality(target, ref_before),
        "recovery": A.recoveries(before, after, target, ref_before),
        "reference_recovery": A.recoveries(ref_before, ref_after, target, ref_before),
        "share_before": A.knowledge_share(before, target, ref_before),
        "share_after": A.knowledge_share(after, target, ref_after),
    }


def attack_results(model: Subject, reference: Subject, target: Subject, data: AttackData, cfg: AttackConfig) -> dict:
    """Every chosen attack on the model and the reference, measured against the untouched target."""
    from tqdm.auto import tqdm

    out: dict = {"settings": asdict(cfg)}
    fe, retain = data.forget_eval, data.retain_eval
    steps = [("relearn", s) for s in data.relearn] + [("quantize", b) for b in cfg.bits if "quantize" in cfg.chosen]
    steps += [("rephrase", None)] if data.probes else []
    for kind, arg in tqdm(steps, desc="attacks", leave=False):
        if kind == "relearn":
            d = data.relearn[arg]
            rows, train = d["eval"], d["train"]
            entry = _attack_entry(
                model.plain(rows),
                model.relearned(arg, train, rows),
                reference.plain(rows),
                reference.relearned(arg, train, rows),
                target.plain(rows),
            )
            entry.update({"relearn_items": len(train), "eval_items": len(rows)})
            out.setdefault("relearn", {})[arg] = entry
        elif kind == "quantize":
            qm, qr = model.quantized(arg, fe, retain), reference.quantized(arg, fe, retain)
            entry = _attack_entry(model.plain(fe), qm["forget"], reference.plain(fe), qr["forget"], target.plain(fe))
            before = model.plain(retain)
            entry["retain"] = {
                m: {"before": before[m], "after": qm["retain"][m]} for m in ("probability", "rouge_l_recall")
            }
            out.setdefault("quantize", {})[str(arg)] = entry
        else:
            pm, pr, pt = (
                model.probed(data.probes, fe),
                reference.probed(data.probes, fe),
                target.probed(data.probes, fe),
            )
            probes = {
                name: {
                    "model": pm[name],
                    "reference": pr[name],
                    "target": pt[name],
                    "share": A.knowledge_share(pm[name], pt[name], pr[name]),
                }
                for name in data.probes
            }
            out["rephrase"] = {"probes": probes}
    out["text"] = robustness_lines(out)
    return out


def _pct(x: float | None) -> str:
    return "undefined" if x is None else f"{100 * x:.0f} %"


def reading(share_before: dict, share_after: dict) -> tuple[str, str]:
    """(kind, sentence) of one attack: ``not removed`` where the model already holds ≥ ``HIDDEN_SHARE`` of the
    target's extra forget probability before the attack (nothing was hidden: it was never taken away), ``hidden``
    where it holds less before and ≥ that share after, ``removed`` where it holds less after too, ``unclear`` where
    the attacked target and reference cannot be told apart."""
    b, s = share_before.get("probability"), share_after.get("probability")
    if s is None:
        return "unclear", "the attacked target and reference cannot be told apart here"
    if b is not None and b >= HIDDEN_SHARE:
        return "not removed", (
            f"NOT REMOVED to begin with: before the attack the model holds {_pct(b)} of the target's extra forget "
            f"probability ({_pct(s)} after)"
        )
    if s >= HIDDEN_SHARE:
        return "hidden", (
            f"HIDDEN, not removed: the attack brings the model to {_pct(s)} of the target's extra forget probability "
            f"(from {_pct(b)})"
        )
    return "removed", f"no hidden knowledge found by this attack ({_pct(s)} of the target's extra forget probability)"


def _reading(share_before: dict, share_after: dict) -> str:
    return reading(share_before, share_after)[1]


def robustness_lines(rob: dict) -> list[str]:
    """The attacks in words (forget probability; recovery = share of the target − model gap regained)."""
    lines = []
    for source, e in (rob.get("relearn") or {}).items():
        m, r, t = e["model"], e["reference"], e["target"]
        lines.append(
            f"relearn on {source} ({e['relearn_items']} items, {rob['settings']['relearn_steps']} steps), measured on "
            f"{e['eval_items']} untouched forget items: forget probability {m['before']['probability']:.3f} → "
            f"{m['after']['probability']:.3f} (target {t['probability']:.3f}), recovery "
            f"{_pct(e['recovery']['probability'])}; the retrained reference {r['before']['probability']:.3f} → "
            f"{r['after']['probability']:.3f}, recovery {_pct(e['reference_recovery']['probability'])}. "
            + _reading(e["share_before"], e["share_after"])
        )
    for bits, e in (rob.get("quantize") or {}).items():
        m, t = e["model"], e["target"]
        lines.append(
            f"{bits}-bit weights: forget probability {m['before']['probability']:.3f} → "
            f"{m['after']['probability']:.3f} (target {t['probability']:.3f}), recovery "
            f"{_pct(e['recovery']['probability'])} (reference's own "
            f"{_pct(e['reference_recovery']['probability'])}); retain probability "
            f"{e['retain']['probability']['before']:.3f} → {e['retain']['probability']['after']:.3f}. "
            + _reading(e["share_before"], e["share_after"])
        )
    exact = ((rob.get("rephrase") or {}).get("probes") or {}).get("exact")
    for name, p in ((rob.get("rephrase") or {}).get("probes") or {}).items():
        lines.append(
            f"rephrase probe {name} ({p['model']['n_questions']} questions, e.g. {p['model']['example']!r}): forget "
            f"probability {p['model']['probability']:.3f}, ROUGE-L {p['model']['rouge_l_recall']:.2f} (target "
            f"{p['target']['probability']:.3f} / {p['target']['rouge_l_recall']:.2f}, reference "
            f"{p['reference']['probability']:.3f} / {p['reference']['rouge_l_recall']:.2f}). "
            + _reading(exact["share"] if exact else {}, p["share"])
        )
    return lines


def run_attacks(
    model: str,
    references: list[str],
    data: str,
    cfg: AttackConfig,
    eval_cfg,
    target: str | None = None,
    output: str | None = None,
) -> dict:
    """Evaluate ``model`` against the references (cached, as ``llm-unlearn eval``), attack it and the first
    reference, and write the evaluation JSON and Markdown report with a ``robustness`` section."""
    from ..evaluation.run import _model_folder, _target_of, run_eval, write_report

    if not references:
        raise ValueError("--reference is required: every attack is also run on the retrained reference")
    for ref in references:
        if not Path(ref).is_dir():
            raise FileNotFoundError(f"--reference {ref}: the attacks need the reference's model folder")
    target_folder, _ = _target_of(_model_folder(model, "--model"), target)
    if target_folder is None or not Path(target_folder).is_dir():
        raise ValueError(
            f"the attacks need the untouched target's model folder; for {model} it is "
            + (f"{target_folder}, not a folder" if target_folder else "unknown (no local base_model in its record)")
            + ": pass --target TARGET_MODEL_DIR"
        )
    attack_inputs = attack_data(data, eval_cfg.forget_split, cfg, eval_cfg)  # validated before any model is loaded
    compared = run_eval(model, references, data, eval_cfg, output, target=target_folder)
    subjects = [Subject(f, eval_cfg, cfg) for f in (compared["model"], references[0], target_folder)]
    compared["robustness"] = attack_results(*subjects, attack_inputs, cfg)
    compared["robustness"]["target"] = str(target_folder)
    compared["robustness"]["reference"] = str(references[0])
    out = Path(compared["report_files"][0]) if compared.get("report_files") else None
    if out is not None:
        written = write_report({k: v for k, v in compared.items() if k != "report_files"}, out, overwrite=True)
        compared["report_files"] = [str(p) for p in written]
    return compared
