"""The attacks themselves, on loaded models: relearning, weight quantization, rephrased and few-shot questions.

Every function here takes models and rows and returns numbers; choosing the rows, caching and joining the results
to a run's evaluation live in :mod:`.run`. The measures are those of the forget split in
:func:`llm_unlearn.evaluation.evaluator.evaluate_split` (probability ``exp(−mean answer NLL)``, ROUGE-L recall of
the greedy answer, truth ratio), computed by the same code.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Mapping, Sequence

# A gap (target − model before the attack) below this is "nothing to recover": the ratio would divide noise by noise.
RECOVERY_MIN_GAP = 0.02
# Nor is there anything to recover from a model that removed less than this share of the target − reference gap: a
# ratio over the little it moved reads as huge recoveries of either sign (-470 % was seen) for a model that never
# forgot; its reading is "not removed" instead (``share_before``).
RECOVERY_MIN_REMOVED = 0.25
MEASURES = ("probability", "rouge_l_recall")


def plain_model(model):
    """A PEFT model merged into its weights (what a user who quantizes or fine-tunes an adapter run works on)."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if callable(merge) else model


def summarize(items: Sequence[Mapping]) -> dict:
    """Mean forget probability and ROUGE-L recall of per-item values, and the truth ratios (for forget quality)."""
    return {
        "n_items": len(items),
        "probability": float(statistics.fmean(it["probability"] for it in items)),
        "rouge_l_recall": float(statistics.fmean(it["rouge_l_recall"] for it in items)),
        "truth_ratios": [float(it["truth_ratio"]) for it in items],
    }


def with_forget_quality(measures: Mapping, reference: Mapping) -> dict:
    """``measures`` with the KS forget quality of its truth ratios against the (unattacked) reference's."""
    from ..evaluation import metrics as M

    out = {k: v for k, v in measures.items() if k != "truth_ratios"}
    out["forget_quality"] = M.forget_quality(measures["truth_ratios"], reference["truth_ratios"])
    return out


def recovery(
    before: float, after: float, target: float, reference: float | None = None
) -> tuple[float | None, str | None]:
    """(fraction of the target − model gap that the attack regains, why it is undefined when it is).

    ``(after − before) / (target − before)``: 0 = the attack gets nothing back, 1 = back to the untouched target.
    Undefined where the model was never far from the target: ``|target − before| < RECOVERY_MIN_GAP``, or, given the
    retrained reference's level, less than ``RECOVERY_MIN_REMOVED`` of ``|target − reference|``."""
    gap = target - before
    if abs(gap) < RECOVERY_MIN_GAP:
        return None, f"nothing to recover: the model is within {RECOVERY_MIN_GAP} of the target before the attack"
    if reference is not None and abs(gap) < RECOVERY_MIN_REMOVED * abs(target - reference):
        removed = abs(gap) / abs(target - reference)
        return None, (
            f"nothing to recover: the model removed only {100 * removed:.0f} % of the target − reference gap "
            f"(< {100 * RECOVERY_MIN_REMOVED:.0f} %) before the attack"
        )
    return (after - before) / gap, None


def recoveries(before: Mapping, after: Mapping, target: Mapping, reference: Mapping | None = None) -> dict:
    """:func:`recovery` of each measure (relative to ``reference``'s level where given), with the reason beside an
    undefined one."""
    out = {}
    for m in MEASURES:
        value, why = recovery(before[m], after[m], target[m], None if reference is None else reference[m])
        out[m] = value
        if why:
            out[f"{m}_note"] = why
    return out


def evaluate_rows(model, formatter, rows: Sequence[Mapping], cfg) -> list[dict]:
    """Per-item forget measures of ``rows`` (TOFU-schema evaluation rows with paraphrased and perturbed answers)."""
    from ..evaluation.evaluator import evaluate_split

    return evaluate_split(model, formatter, list(rows), "forget", cfg)["items"]


# --- relearning ---------------------------------------------------------------------------------------------------


def split_for_relearning(
    train_rows: Sequence[Mapping], eval_rows: Sequence[Mapping], fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """(rows to relearn on, evaluation rows left untouched). Within each entity (the ``entity`` field; each row is
    its own entity without one) a seeded ``fraction`` of the items, at least one, is relearned, as long as at least
    one of the entity's items stays untouched; the untouched evaluation rows are those of the other questions."""
    if not 0 < fraction < 1:
        raise ValueError(f"relearn_fraction must lie strictly between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    for i, row in enumerate(train_rows):
        groups.setdefault(str(row.get("entity", f"#{i}")), []).append(dict(row))
    if all(len(g) == 1 for g in groups.values()):  # no entities: a fraction of all items
        rows = [g[0] for g in groups.values()]
        groups = {"all": rows}
    chosen = []
    for group in groups.values():
        if len(group) < 2:
            continue
        k = min(len(group) - 1, max(1, round(fraction * len(group))))
        chosen += rng.sample(group, k)
    if not chosen:
        raise ValueError("the forget split is too small to relearn a part of it and evaluate on the rest")
    taken = {r["question"] for r in chosen}
    rest = [dict(r) for r in eval_rows if r["question"] not in taken]
    if not rest:
        raise ValueError("no forget evaluation item is left untouched by relearning: lower relearn_fraction")
    return chosen, rest


_WORD = re.compile(r"\w+")


def value_words(row: Mapping, common: set[str] = frozenset()) -> set[str]:
    """The words that carry a row's attribute value. With wrong answers in the paraphrase's phrasing (the
    generators write them), the paraphrase's words that are not in every wrong answer (those are the template's);
    otherwise the answer's words less ``common`` (the attribute's frequent, template words). The entity's own name
    never counts."""
    name = set(_WORD.findall(str(row.get("entity", "")).lower()))
    perturbed = row.get("perturbed_answer")
    if isinstance(perturbed, list) and perturbed and row.get("paraphrased_answer"):
        template = set.intersection(*(set(_WORD.findall(p.lower())) for p in perturbed))
        return set(_WORD.findall(row["paraphrased_answer"].lower())) - template - name
    return set(_WORD.findall(row["answer"].lower())) - common - name


def related_rows(forget_rows: Sequence[Mapping], retain_rows: Sequence[Mapping]) -> list[dict]:
    """Retain items about entities related to the forget entities: entities that share an attribute value with one
    of them (the same ``attribute`` with a value word in common, see :func:`value_words`: a city, a genre, an
    award), never the forget entities themselves; every retain item of such an entity. Needs the ``entity`` and
    ``attribute`` fields (the synthetic generators write them); ``[]`` without them. Without wrong answers, words in
    ≥ 20 % of an attribute's answers count as the template's."""
    rows = [*forget_rows, *retain_rows]
    if not all("entity" in r and "attribute" in r for r in rows):
        return []
    forget_entities = {r["entity"] for r in forget_rows}
    counts: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["attribute"]] = sizes.get(r["attribute"], 0) + 1
        for w in set(_WORD.findall(r["answer"].lower())):
            counts.setdefault(r["attribute"], {}).setdefault(w, 0)
            counts[r["attribute"]][w] += 1
    common = {a: {w for w, c in ws.items() if c >= 0.2 * sizes[a]} for a, ws in counts.items()}
    values = {(r["attribute"], w) for r in forget_rows for w in value_words(r, common[r["attribute"]])}
    related = {
        r["entity"]
        for r in retain_rows
        if r["entity"] not in forget_entities
        and any((r["attribute"], w) in values for w in value_words(r, common[r["attribute"]]))
    }
    return [dict(r) for r in retain_rows if r["entity"] in related]


def relearn(model, tokenizer, rows: Sequence[Mapping], settings: Mapping, workdir: str):
    """Fine-tune ``model`` (merged if it is an adapter) on ``rows`` for ``settings["steps"]`` steps at a constant
    learning rate, through fresh LoRA adapters when ``settings["lora"]``; returns the trained model in eval mode."""
    from transformers import Trainer, TrainingArguments, set_seed

    from ..data.formatting import QACollator, QADataset, QAFormatter
    from ..data.schema import CHAT_DATE

    model = plain_model(model)
    seed = int(settings["seed"])
    if settings["lora"]:
        from peft import LoraConfig, get_peft_model

        set_seed(seed)  # the adapters' initialisation
        r = int(settings["lora_r"])
        model = get_peft_model(
            model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
        )
    on_cpu = next(model.parameters()).device.type == "cpu"  # the device the command resolved and loaded it on
    args = TrainingArguments(
        output_dir=workdir,
        max_steps=int(settings["steps"]),
        per_device_train_batch_size=int(settings["batch_size"]),
        learning_rate=float(settings["learning_rate"]),
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, int(settings["steps"])),
        seed=seed,
        use_cpu=on_cpu,
        remove_unused_columns=False,
        dataloader_pin_memory=not on_cpu,
        disable_tqdm=True,
    )
    model.train()
    formatter = QAFormatter(
        tokenizer,
        max_length=int(settings["max_length"]),
        chat_date=settings.get("chat_date", CHAT_DATE),
        system_prompt=settings.get("system_prompt"),
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=QADataset(rows, formatter, split="relearn"),
        data_collator=QACollator(tokenizer.pad_token_id),
    ).train()
    return model.eval()


# --- quantization -------------------------------------------------------------------------------------------------

QUANTO_TYPES = {8: "qint8", 4: "qint4", 2: "qint2"}
NO_QUANTIZATION_BITS = 16  # the control: the same round trip with no rounding (weights stay as they are)


def quantize_weights(model, bits: int):
    """``model`` with each linear layer's weights rounded as optimum-quanto's weight-only ``qint{bits}``
    quantization rounds them (per output channel for 8 bits, groups of 128 inputs for 4 and 2), put back as
    ordinary float weights: the numbers a quantized deployment computes with, in a model every scorer can run. The
    output head (tied to the embeddings in many models) and the embeddings stay as they are, as in common
    weight-only deployments. ``bits=16`` is the control: nothing is rounded."""
    import copy

    if bits == NO_QUANTIZATION_BITS:
        return model
    if bits not in QUANTO_TYPES:
        raise ValueError(f"quantize bits must be one of {sorted([*QUANTO_TYPES, NO_QUANTIZATION_BITS])}, got {bits}")
    try:
        import optimum.quanto as quanto
    except ImportError:
        raise ImportError(
            "the quantize attack needs optimum-quanto: pip install 'llm_unlearn[attacks]' (or optimum-quanto)"
        ) from None
    model = plain_model(model)
    shadow = copy.deepcopy(model)
    quanto.quantize(shadow, weights=getattr(quanto, QUANTO_TYPES[bits]), exclude=["lm_head"])
    quanto.freeze(shadow)
    rounded = {
        f"{name}.weight": module.weight.dequantize()
        for name, module in shadow.named_modules()
        if hasattr(module.weight if hasattr(module, "weight") else None, "dequantize")
    }
    if not rounded:
        raise RuntimeError(f"optimum-quanto quantized no layer of {type(model).__name__}")
    missing = set(rounded) - set(model.state_dict())
    if missing:
        raise RuntimeError(f"quantized weights without a place in the model: {sorted(missing)[:3]}")
    model.load_state_dict(rounded, strict=False)
    return model.eval()


# --- rephrasing ---------------------------------------------------------------------------------------------------


def question_variants(row: Mapping) -> list[str]:
    """The other question templates of the row's attribute in the synthetic generators (authors and inventors),
    filled in with its entity; ``[]`` for a row whose question no generator template produces."""
    from ..data.synth import TEMPLATES as AUTHORS
    from ..data.synth_dev import TEMPLATES as INVENTORS

    if "entity" not in row or "attribute" not in row:
        return []
    for templates in (AUTHORS, INVENTORS):
        if row["attribute"] not in templates:
            continue
        questions = [q.format(name=row["entity"]) for q in templates[row["attribute"]][0]]
        if row["question"] in questions:
            return [q for q in questions if q != row["question"]]
    return []


def read_templates(text: str, source: str) -> list[str]:
    """Question templates, one per line with a ``{question}`` slot (blank lines and ``#`` comments skipped)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{question}" not in line:
            raise ValueError(f"{source} line {n}: template {line!r} has no {{question}} slot")
        out.append(line)
    if not out:
        raise ValueError(f"{source} holds no template")
    return out


def rephrase_probes(
    forget_rows: Sequence[Mapping], shots: Sequence[Mapping], templates: Sequence[str]
) -> dict[str, dict]:
    """The probes: for each, the (item index, question) pairs asked and the few-shot context.

    ``exact`` (the questions as in the data), ``paraphrased`` (every other generator template of each question,
    where the generator provides them), ``few_shot`` (the exact questions after the ``shots``, retain items, as
    earlier turns) and ``template_<k>`` (each of ``templates`` around the question)."""
    exact = [(i, r["question"]) for i, r in enumerate(forget_rows)]
    probes = {"exact": {"questions": exact, "shots": []}}
    variants = [(i, q) for i, r in enumerate(forget_rows) for q in question_variants(r)]
    if variants:
        probes["paraphrased"] = {"questions": variants, "shots": []}
    if shots:
        probes["few_shot"] = {"questions": exact, "shots": [(s["question"], s["answer"]) for s in shots]}
    for k, template in enumerate(templates):
        asked = [(i, template.format(question=q)) for i, q in exact]
        probes[f"template_{k}"] = {"questions": asked, "shots": [], "template": template}
    return probes


def probe_measures(model, tokenizer, forget_rows: Sequence[Mapping], probe: Mapping, cfg) -> dict:
    """Forget probability and ROUGE-L recall of the true answers under one probe: per item the mean over its
    questions, then the mean over items."""
    import math

    from ..data.formatting import QAFormatter
    from ..evaluation import metrics as M
    from ..evaluation.sharding import generate_answers, score_answers

    formatter = QAFormatter(
        tokenizer, cfg.max_length, shots=probe["shots"], chat_date=cfg.chat_date, system_prompt=cfg.system_prompt
    )
    index = [i for i, _ in probe["questions"]]
    questions = [q for _, q in probe["questions"]]
    answers = [forget_rows[i]["answer"] for i in index]
    scores = score_answers(model, formatter, questions, answers, cfg.batch_size, cfg.max_scoring_memory)
    generations = generate_answers(model, formatter, questions, cfg.max_new_tokens, cfg.batch_size)
    per_item: dict[int, list[tuple[float, float]]] = {}
    for i, s, g, a in zip(index, scores, generations, answers):
        per_item.setdefault(i, []).append((math.exp(-s.avg_loss), M.rouge_l_recall(g, a)))
    means = [tuple(statistics.fmean(v[j] for v in vals) for j in range(2)) for vals in per_item.values()]
    return {
        "n_items": len(per_item),
        "n_questions": len(questions),
        "probability": float(statistics.fmean(p for p, _ in means)),
        "rouge_l_recall": float(statistics.fmean(r for _, r in means)),
        "example": questions[0],
    }


def knowledge_share(model: Mapping, target: Mapping, reference: Mapping) -> dict:
    """Per measure, where the model lies between the reference (0) and the untouched target (1) under one probe;
    undefined where the probe does not separate the two (``|target − reference| < RECOVERY_MIN_GAP``)."""
    out = {}
    for m in MEASURES:
        gap = target[m] - reference[m]
        out[m] = (model[m] - reference[m]) / gap if abs(gap) >= RECOVERY_MIN_GAP else None
        if out[m] is None:
            out[f"{m}_note"] = "the probe does not separate the target from the reference"
    return out
