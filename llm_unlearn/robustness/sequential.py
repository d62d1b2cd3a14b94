"""Sequential unlearning requests: ``unlearn.py --forget_split forget01,forget05,forget10 ...``.

Requests arrive one after another (MUSE's sustainability criterion). Each request ``k`` unlearns, from the previous
request's output, the items of its split that no earlier request covered; the retain data is the retain split of
the union forgotten so far. On TOFU-schema data the forget splits are nested (forget01 ⊂ forget05 ⊂ forget10), so
the union after request ``k`` is split ``k`` itself, and it is evaluated against the references of that split
(``--eval_reference`` takes one entry per request, comma-separated; ``a+b`` gives a request two references, whose
forget quality between them is the noise floor). The untouched model of the first request is the target of every
evaluation (utility retention, discrimination).

Layout of ``--output_dir ROOT``: ``ROOT/requests/stepK_<split>/`` (the request's training data: the new forget
items and the union's retain split), ``ROOT/stepK_<split>/`` (the model after request ``K``, with its evaluation),
``ROOT/sequential.json`` and ``ROOT/sequential.md`` (forget quality and utility retention after each request).
Finished steps are reused, so an interrupted chain continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

SUMMARY = "sequential.json"


def _pop(argv: list[str], name: str) -> str | None:
    from ..unlearn import _pop_flag

    return _pop_flag(argv, name)


def parse_requests(value: str) -> list[str]:
    splits = [s.strip() for s in value.split(",") if s.strip()]
    if len(splits) < 2:
        raise ValueError(f"--forget_split {value!r}: a sequence of requests needs at least two splits")
    if len(set(splits)) != len(splits):
        raise ValueError(f"--forget_split {value!r} names a split twice")
    return splits


def parse_references(value: str | None, n: int) -> list[list[str]]:
    if not value:
        raise ValueError(
            "sequential requests are each evaluated against the reference of the union forgotten so far: pass "
            f"--eval_reference with {n} comma-separated entries (one per request; REF_A+REF_B for replicas)"
        )
    refs = [[r for r in entry.split("+") if r] for entry in value.split(",")]
    if len(refs) != n or any(not r for r in refs):
        raise ValueError(f"--eval_reference has {len(refs)} entries for {n} requests: give one per request")
    for entry in refs:
        for r in entry:
            if not Path(r).exists():
                raise FileNotFoundError(f"--eval_reference {r}: neither a model folder nor an evaluation JSON file")
    return refs


def plan_requests(data: str, splits: list[str]) -> list[dict]:
    """Each request's new forget rows and the union's retain split; raises unless every split contains the previous
    one (then the union is the split itself) and adds at least one item."""
    from ..data.loading import load_split
    from ..data.schema import BenchmarkSplits

    plan, seen = [], set()
    for k, split in enumerate(splits, 1):
        names = BenchmarkSplits.from_forget(split)
        rows = load_split(data, split)
        questions = {r["question"] for r in rows}
        if not seen <= questions:
            raise ValueError(
                f"request {k} ({split}) does not contain request {k - 1} ({splits[k - 2]}): sequential requests need "
                "nested forget splits (as TOFU's forget01 ⊂ forget05 ⊂ forget10), so that the union forgotten so far "
                "is a split with its own retrained reference"
            )
        new = [r for r in rows if r["question"] not in seen]
        if not new:
            raise ValueError(f"request {k} ({split}) adds no item to request {k - 1} ({splits[k - 2]})")
        plan.append({"split": split, "retain": names.retain, "new_rows": new, "n_union": len(rows)})
        seen |= questions
    return plan


def write_request_data(data: str, folder: Path, request: dict) -> Path:
    """The request's training data: its split's name holding only its new items (and their ``_perturbed`` rows
    where the data has them), and the union's retain split."""
    from ..data.loading import load_split
    from ..data.schema import DataValidationError
    from ..runs import atomic_write_text

    def jsonl(rows):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    split, new = request["split"], request["new_rows"]
    questions = {r["question"] for r in new}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{split}.jsonl", jsonl(new))
    atomic_write_text(folder / f"{request['retain']}.jsonl", jsonl(load_split(data, request["retain"])))
    try:
        perturbed = [r for r in load_split(data, f"{split}_perturbed") if r["question"] in questions]
    except DataValidationError:
        perturbed = []
    if perturbed:
        atomic_write_text(folder / f"{split}_perturbed.jsonl", jsonl(perturbed))
    return folder


def run_sequential(argv: list[str]) -> dict:
    """Run the chain of requests named by ``--forget_split A,B,...`` (see the module docstring)."""
    import os

    from ..evaluation.evaluator import EvalConfig
    from ..evaluation.run import run_eval
    from ..runs import atomic_write_json, atomic_write_text
    from ..unlearn import SEQUENTIAL_KEYS, check_inputs, parse_args, run

    argv = list(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "sequential requests run in one process (each request is evaluated before the next one trains): launch "
            "without several processes, or unlearn each request with its own launch"
        )
    splits = parse_requests(_pop(argv, "--forget_split"))
    references = parse_references(_pop(argv, "--eval_reference"), len(splits))
    root, model, data = (_pop(argv, f) for f in ("--output_dir", "--model_name_or_path", "--data"))
    if not (root and model and data):
        raise ValueError("sequential requests need --output_dir, --model_name_or_path and --data")
    if _pop(argv, "--push_to_hub") not in (None, "false", "False"):
        raise ValueError("--push_to_hub is not supported with sequential requests: push the last step's folder")
    plan = plan_requests(data, splits)  # every request checked before any training
    root = Path(root)
    configs = []
    for k, request in enumerate(plan, 1):  # every step's settings parsed (and checked) before the first one trains
        step = f"step{k}_{request['split']}"
        request["data"], request["out"] = root / "requests" / step, root / step
        configs.append(
            ["--data", str(request["data"]), "--forget_split", request["split"], "--output_dir", str(request["out"])]
        )
        step_model = model if k == 1 else str(plan[k - 2]["out"])
        check_inputs(*parse_args([*argv, "--model_name_or_path", step_model, *configs[-1]], SEQUENTIAL_KEYS))
    steps, previous = [], model
    for k, (request, flags) in enumerate(zip(plan, configs), 1):
        write_request_data(data, request["data"], request)
        cfg, trainer_cls = parse_args([*argv, "--model_name_or_path", previous, *flags], SEQUENTIAL_KEYS)
        print(f"[request {k}/{len(plan)}] {request['split']}: {len(request['new_rows'])} new items", flush=True)
        out = run(cfg, trainer_cls)
        compared = run_eval(
            str(out), references[k - 1], data, EvalConfig(forget_split=request["split"]), target=str(model)
        )
        steps.append(step_summary(k, request, out, compared))
        previous = str(out)
    summary = {"kind": "llm_unlearn.sequential", "model": model, "data": data, "steps": steps}
    atomic_write_json(root / SUMMARY, summary, indent=2)
    atomic_write_text(root / "sequential.md", sequential_markdown(summary) + "\n")
    print(sequential_markdown(summary))
    return summary


def step_summary(k: int, request: dict, out: Path, compared: dict) -> dict:
    cal = compared.get("calibration") or {}
    retention = cal.get("utility_retention") or {}
    return {
        "request": k,
        "forget_split": request["split"],
        "new_items": len(request["new_rows"]),
        "union_items": request["n_union"],
        "model": str(out),
        "references": cal.get("references") or [compared.get("reference")],
        "forget_quality": cal.get("forget_quality_median", compared.get("forget_quality")),
        "noise_floor": cal.get("noise_floor"),
        "bar": (cal.get("verdict") or {}).get("threshold"),
        "distinguishable": (cal.get("verdict") or {}).get("distinguishable"),
        "verdict": (cal.get("verdict") or {}).get("text"),
        "status": (cal.get("verdict") or {}).get("status"),
        "model_utility": compared["model_utility"],
        "min_utility_retention": retention.get("minimum"),
        "worst_component": retention.get("worst"),
        "forget_probability": compared["summary"]["forget/probability"],
        "forget_rouge_l_recall": compared["summary"]["forget/rouge_l_recall"],
    }


def sequential_markdown(summary: dict) -> str:
    def num(x):
        return "–" if x is None else f"{x:.3g}"

    def verdict(s):
        if s.get("status"):
            return s["status"]
        d = s.get("distinguishable")
        return "–" if d is None else ("distinguishable" if d else "not distinguishable")

    lines = [
        "| request | split (new / union items) | forget quality | noise floor (verdict's bar) | verdict | "
        "model utility | min retention (component) | forget prob. | forget ROUGE-L |",
        "|---:|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for s in summary["steps"]:
        lines.append(
            f"| {s['request']} | {s['forget_split']} ({s['new_items']} / {s['union_items']}) | "
            f"{num(s['forget_quality'])} | {num(s['noise_floor'])} ({num(s.get('bar'))}) | {verdict(s)} | "
            f"{num(s['model_utility'])} | "
            f"{num(s['min_utility_retention'])} ({s['worst_component'] or '–'}) | {num(s['forget_probability'])} | "
            f"{num(s['forget_rouge_l_recall'])} |"
        )
    return "\n".join(lines)
