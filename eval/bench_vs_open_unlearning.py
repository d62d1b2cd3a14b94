"""Our TOFU evaluation against open-unlearning's, side by side: wall time and agreement of the metrics.

    python eval/bench_vs_open_unlearning.py --open_unlearning PATH --open_unlearning_python PYTHON \
        [--run_dir runs/embedded] [--repeats 3] [--write_docs]

PATH is a checkout of locuslab/open-unlearning and PYTHON an interpreter of a separate environment where its
requirements are installed (never this package's environment). Nothing of theirs is copied here: their own entry
point (``src/eval.py``, Hydra) is driven with command-line overrides and a data folder this script writes.

Both tools evaluate the same models of ``llm-unlearn demo`` (``RUN/target`` against ``RUN/reference``, data
``RUN/data``) on the CPU, on the TOFU splits both support: forget10_perturbed, retain_perturbed,
real_authors_perturbed, world_facts_perturbed, and holdout10 for membership inference; same batch size, same
``max_new_tokens``, float32, greedy decoding, the same prompt tokens (checked item by item before timing).

What is timed, each run a fresh process, ``--repeats`` times, the two tools interleaved (the first to go alternates
per repeat), after one untimed warm-up of every command:

* whole command, reference warm: ``llm-unlearn eval --model target --reference reference`` with the reference's
  evaluation already in its cache (only the target is evaluated), against ``python src/eval.py`` on the target
  with ``retain_logs_path`` set to the reference's logs of an earlier run (their equivalent of the cache);
* whole command, reference cold: the same command of ours with both caches removed (it evaluates the reference,
  then the target) against their two commands (reference, then target), summed;
* metric work, target only, model loading and imports excluded: ours, ``evaluate_qa`` (data loading, tokenization,
  scoring, generation, metrics) after ``load_causal_lm``; theirs, ``Evaluator.evaluate`` (the same, for their
  metrics) timed around the call in a wrapper process that runs their ``src/eval.py`` unchanged.

Their settings are those of ``experiment=eval/tofu/default`` with: ``model=phi-1_5`` (a non-chat Question/Answer
template) pointed at the local model, ``asst_start_tag="Answer:"`` and answers written with a leading space (so
that their prompt is our ``"Question: {q}\\nAnswer:"`` and their answer tokens our ``" {a}"`` + EOS),
``device_map=cpu``, every dataset's ``hf_args.path`` pointed at a local folder of JSONL files (a README.md with
``configs:`` maps their split names to files; no Hub), ``eval.tofu.batch_size`` and each ROUGE metric's
``max_new_tokens``, the metric list (``--their_metrics``), ``retain_logs_path`` and the output folder. Their
``transformers`` pin cannot read the tokenizer class name written by ours, so their copy of each model folder links
the same files and has a ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``.

``--their_metrics matched`` (default) asks them for what our command reports: their default TOFU suite
(forget truth ratio, forget quality, forget probability and ROUGE, model utility, PrivLeak, extraction strength)
plus exact memorization and the loss, zlib and Min-K%++ attacks (ours also computes these in its one pass);
``default`` runs their default suite only.

Timings share the machine with whatever else runs: the load average before and after is printed; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks" / "eval_vs_open_unlearning.md"
FORGET_SPLIT = "forget10"
# role -> (TOFU split, their probability / truth ratio / ROUGE metric names)
ROLES = {
    "forget": ("forget10_perturbed", "forget_Q_A_Prob", "forget_truth_ratio", "forget_Q_A_ROUGE"),
    "retain": ("retain_perturbed", "retain_Q_A_Prob", "retain_Truth_Ratio", "retain_Q_A_ROUGE"),
    "real_authors": ("real_authors_perturbed", "ra_Q_A_Prob_normalised", "ra_Truth_Ratio", "ra_Q_A_ROUGE"),
    "world_facts": ("world_facts_perturbed", "wf_Q_A_Prob_normalised", "wf_Truth_Ratio", "wf_Q_A_ROUGE"),
}
HOLDOUT_SPLIT = "holdout10"
THEIR_DEFAULT_METRICS = [
    "forget_Truth_Ratio",
    "forget_quality",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "model_utility",
    "privleak",
    "extraction_strength",
]
THEIR_MATCHED_EXTRA = ["exact_memorization", "mia_loss", "mia_zlib", "mia_min_k_plus_plus"]
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
ANSWER_KEYS = ("answer", "paraphrased_answer", "perturbed_answer")
TOLERANCE = 1e-5

# --- code run by THEIR interpreter, in their checkout (drives their modules; nothing of theirs is copied) -----------

THEIR_COMPOSE = r"""
import json, os
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
with initialize_config_dir(config_dir=os.path.join(os.getcwd(), "configs"), version_base=None):
    cfg = compose("eval.yaml", overrides=json.loads(os.environ["BENCH_ARGS"]))
c = OmegaConf.to_container(cfg, resolve=False)
found = {"dataset_paths": [], "generation_args": []}
def walk(node, key):
    if isinstance(node, dict):
        h = node.get("hf_args")
        if isinstance(h, dict) and "path" in h:
            found["dataset_paths"].append(key + ".hf_args.path")
        if isinstance(node.get("generation_args"), dict):
            found["generation_args"].append(key + ".generation_args")
        for k, v in node.items():
            walk(v, f"{key}.{k}" if key else k)
walk(c, "")
found["template_args"] = OmegaConf.to_container(cfg.model.template_args, resolve=True)
found["metrics"] = list(c["eval"]["tofu"]["metrics"])
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(found, f)
"""

THEIR_TOKENIZE = r"""
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "src"))
from omegaconf import OmegaConf
from model import get_tokenizer
from data.utils import preprocess_chat_instance
spec = json.loads(open(os.environ["BENCH_ARGS"]).read())
tok = get_tokenizer(OmegaConf.create({"pretrained_model_name_or_path": spec["tokenizer"]}))
out = []
for q, a in spec["pairs"]:
    s = preprocess_chat_instance(tok, spec["template_args"], [q], [a], 512, False)
    g = preprocess_chat_instance(tok, spec["template_args"], [q], [a], 512, True)
    out.append([s["input_ids"].tolist(), s["labels"].tolist(), g["input_ids"].tolist()])
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(out, f)
"""

THEIR_TIMED = r"""
import json, os, runpy, sys, time
src = os.path.join(os.getcwd(), "src")
sys.path.insert(0, src)
import evals.base as _base
_evaluate, _times, _cpu = _base.Evaluator.evaluate, [], []
def _timed(self, *args, **kwargs):
    t, c = time.perf_counter(), time.process_time()
    out = _evaluate(self, *args, **kwargs)
    _times.append(time.perf_counter() - t)
    _cpu.append(time.process_time() - c)
    return out
_base.Evaluator.evaluate = _timed
sys.argv = [os.path.join(src, "eval.py")] + json.loads(os.environ["BENCH_ARGS"])
try:
    runpy.run_path(os.path.join(src, "eval.py"), run_name="__main__")
finally:
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump({"metric_s": sum(_times), "cpu_s": sum(_cpu), "calls": len(_times)}, f)
"""

# --- code run by OUR interpreter: the metric work of one model, timed around evaluate_qa ---------------------------

OURS_TIMED = r"""
import importlib, json, os, time
# what evaluate_qa imports on first use: imported before timing (their modules import all of it at import time)
for name in ("rouge_score.rouge_scorer", "sklearn.metrics", "scipy.stats", "tqdm.auto", "llm_unlearn.data.loading",
             "llm_unlearn.evaluation.sharding", "llm_unlearn.evaluation.scoring", "llm_unlearn.evaluation.privacy"):
    importlib.import_module(name)
from llm_unlearn.data.formatting import QAFormatter
from llm_unlearn.evaluation.evaluator import EvalConfig, evaluate_qa, load_eval_data
from llm_unlearn.modeling import load_causal_lm, load_tokenizer
a = json.loads(os.environ["BENCH_ARGS"])
cfg = EvalConfig(forget_split=a["forget_split"], batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"],
                 device="cpu")
device, dtype = cfg.runtime()
t0 = time.perf_counter()
tok = load_tokenizer(a["model"])
model = load_causal_lm(a["model"], dtype=dtype, device=device)
t1, c1 = time.perf_counter(), time.process_time()
data = load_eval_data(a["data"], cfg)
body = evaluate_qa(model, QAFormatter(tok, max_length=cfg.max_length), data, cfg, "target")
t2, c2 = time.perf_counter(), time.process_time()
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump({"load_s": t1 - t0, "metric_s": t2 - t1, "cpu_s": c2 - c1, "model_utility": body["model_utility"]}, f)
"""

OURS_PROFILE = r"""
import cProfile, io, json, os, pstats
from llm_unlearn.evaluation.evaluator import EvalConfig, evaluate_model
a = json.loads(os.environ["BENCH_ARGS"])
cfg = EvalConfig(forget_split=a["forget_split"], batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"],
                 device="cpu")
evaluate_model(a["model"], a["data"], cfg, use_cache=False)  # warm: imports and lazy set-up
prof = cProfile.Profile()
prof.enable()
evaluate_model(a["model"], a["data"], cfg, use_cache=False)
prof.disable()
s = io.StringIO()
pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
with open(os.environ["BENCH_OUT"], "w") as f:
    f.write(s.getvalue())
"""


class Bench:
    def __init__(self, args):
        self.args = args
        self.ou = Path(args.open_unlearning).resolve()
        self.ou_python = args.open_unlearning_python
        self.run_dir = Path(args.run_dir).resolve()
        self.work = Path(args.workdir).resolve()
        self.logs = self.work / "logs"
        self.data = self.run_dir / "data"
        self.env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(self.work / "hf_home"),
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.ours_cli = self._ours_cli()
        self.n_run = 0

    # -- set-up (untimed) ----------------------------------------------------------------------------------------

    @staticmethod
    def _ours_cli() -> str:
        beside = Path(sys.executable).with_name("llm-unlearn")
        found = str(beside) if beside.exists() else shutil.which("llm-unlearn")
        if not found:
            sys.exit("llm-unlearn is not installed in this environment: run this script with the package's Python")
        return found

    def setup(self):
        for name in ("target", "reference"):
            if not (self.run_dir / name / "model.safetensors").is_file():
                sys.exit(f"{self.run_dir / name} is missing: run `llm-unlearn demo --workdir {self.run_dir}` first")
        if not (self.ou / "src" / "eval.py").is_file():
            sys.exit(f"--open_unlearning {self.ou}: no src/eval.py (not a checkout of locuslab/open-unlearning)")
        marker = self.work / ".bench_vs_open_unlearning"
        if self.work.exists():
            if any(self.work.iterdir()) and not marker.exists():
                sys.exit(f"--workdir {self.work} exists and was not made by this script: give another folder")
            shutil.rmtree(self.work)
        self.logs.mkdir(parents=True)
        marker.touch()
        # Ours: copies of the model folders (the evaluation cache and reports are written beside the model).
        self.ours_models = {}
        for name in ("target", "reference"):
            dst = self.work / "ours" / name
            dst.mkdir(parents=True)
            for f in MODEL_FILES:
                shutil.copy2(self.run_dir / name / f, dst / f)
            self.ours_models[name] = dst
        # Theirs: the same files linked, and a tokenizer_config.json that their transformers pin can read.
        self.their_models = {}
        for name in ("target", "reference"):
            dst = self.work / "theirs" / "models" / name
            dst.mkdir(parents=True)
            for f in MODEL_FILES:
                if f != "tokenizer_config.json":
                    (dst / f).symlink_to(self.ours_models[name] / f)
            tok_cfg = json.loads((self.ours_models[name] / "tokenizer_config.json").read_text())
            tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            (dst / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
            self.their_models[name] = dst
        self.write_their_data()
        metrics = THEIR_DEFAULT_METRICS + (THEIR_MATCHED_EXTRA if self.args.their_metrics == "matched" else [])
        self.their_metrics = metrics
        base = [
            "experiment=eval/tofu/default",
            "model=phi-1_5",
            "task_name=bench_vs_llm_unlearn",
            f"eval/tofu_metrics@eval.tofu.tofu_metrics=[{','.join(metrics)}]",
            "model.model_args.device_map=cpu",
            'model.template_args.user_start_tag="Question: "',
            'model.template_args.user_end_tag="\n"',
            'model.template_args.asst_start_tag="Answer:"',
            f"eval.tofu.batch_size={self.args.batch_size}",
        ]
        found = self.their_python_json(THEIR_COMPOSE, base + ["model.model_args.pretrained_model_name_or_path=x"])
        self.their_template = found["template_args"]
        self.their_overrides = base + [f"{p}={self.their_data}" for p in found["dataset_paths"]]
        self.their_overrides += [f"{g}.max_new_tokens={self.args.max_new_tokens}" for g in found["generation_args"]]
        self.n_dataset_overrides, self.n_generation_overrides = (
            len(found["dataset_paths"]),
            len(found["generation_args"]),
        )
        self.their_metric_nodes = found["metrics"]
        self.prompt_check = self.check_prompts()

    def write_their_data(self):
        """Their loader is ``datasets.load_dataset(path, name=SPLIT, split="train")``: a local folder whose README.md
        maps each config name to a JSONL file. Answers get the leading space that our formatter puts before them."""
        self.their_data = self.work / "theirs" / "TOFU"
        self.their_data.mkdir(parents=True)
        card = ["---", "configs:"]
        for split in [r[0] for r in ROLES.values()] + [HOLDOUT_SPLIT]:
            rows = self.rows(split)
            with open(self.their_data / f"{split}.jsonl", "w") as f:
                for row in rows:
                    row = dict(row)
                    for k in ANSWER_KEYS:
                        if isinstance(row.get(k), list):
                            row[k] = [" " + a for a in row[k]]
                        elif isinstance(row.get(k), str):
                            row[k] = " " + row[k]
                    f.write(json.dumps(row) + "\n")
            card += [f"- config_name: {split}", "  data_files:", "  - split: train", f"    path: {split}.jsonl"]
        (self.their_data / "README.md").write_text("\n".join(card + ["---", ""]))

    def rows(self, split: str) -> list[dict]:
        return [json.loads(line) for line in open(self.data / f"{split}.jsonl") if line.strip()]

    def their_python_json(self, code: str, args, name: str = "helper"):
        out = self.work / f"{name}.json"
        arg_file = None
        if not isinstance(args, list):  # a large spec travels in a file
            arg_file = self.work / f"{name}_args.json"
            arg_file.write_text(json.dumps(args))
        env = {**self.env, "BENCH_OUT": str(out), "BENCH_ARGS": str(arg_file) if arg_file else json.dumps(args)}
        log = self.logs / f"{name}.log"
        with open(log, "w") as f:
            rc = subprocess.run([self.ou_python, "-c", code], cwd=self.ou, env=env, stdout=f, stderr=subprocess.STDOUT)
        if rc.returncode:
            sys.exit(f"{name} failed in open-unlearning's environment (see {log}):\n{tail(log)}")
        return json.loads(out.read_text())

    def check_prompts(self) -> dict:
        """Every scored (question, answer) pair and every generation prompt, tokenized by our QAFormatter and by their
        ``preprocess_chat_instance``: the token ids and labels must be identical."""
        from llm_unlearn.data.formatting import QAFormatter
        from llm_unlearn.modeling import load_tokenizer

        fmt = QAFormatter(load_tokenizer(self.ours_models["target"]), max_length=256)
        pairs = []
        for split in [r[0] for r in ROLES.values()] + [HOLDOUT_SPLIT]:
            for row in self.rows(split):
                for k in ANSWER_KEYS:
                    for a in [row[k]] if isinstance(row.get(k), str) else row.get(k) or []:
                        pairs.append((row["question"], a))
        spec = {
            "tokenizer": str(self.their_models["target"]),
            "template_args": self.their_template,
            "pairs": [(q, " " + a) for q, a in pairs],
        }
        theirs = self.their_python_json(THEIR_TOKENIZE, spec, "prompt_check")
        same = same_prompt = 0
        first_diff = None
        for (q, a), (ids, labels, prompt_ids) in zip(pairs, theirs):
            enc = fmt.encode(q, a)
            ok = enc["input_ids"] == ids and enc["labels"] == labels
            ok_prompt = fmt.prompt_ids(q) == prompt_ids
            same += ok
            same_prompt += ok_prompt
            if (not ok or not ok_prompt) and first_diff is None:
                first_diff = {"question": q, "answer": a, "ours": enc, "theirs": {"input_ids": ids, "labels": labels}}
        q0 = pairs[0][0]
        t = self.their_template
        return {
            "pairs": len(pairs),
            "identical_scored": same,
            "identical_prompts": same_prompt,
            "our_prompt": fmt.prompt_text(q0),
            "their_prompt": t["user_start_tag"] + q0 + t["user_end_tag"] + t["asst_start_tag"],
            "first_diff": first_diff,
        }

    # -- the commands ----------------------------------------------------------------------------------------------

    def ours_cmd(self) -> list[str]:
        m = self.ours_models
        return [
            self.ours_cli, "eval", "--model", str(m["target"]), "--reference", str(m["reference"]),
            "--data", str(self.data), "--forget_split", FORGET_SPLIT, "--device", "cpu",
            "--batch_size", str(self.args.batch_size), "--max_new_tokens", str(self.args.max_new_tokens),
        ]  # fmt: skip

    def their_args(self, model: str) -> list[str]:
        out = self.work / "theirs" / "out" / model
        args = list(self.their_overrides)
        args += [
            f"model.model_args.pretrained_model_name_or_path={self.their_models[model]}",
            f"model.tokenizer_args.pretrained_model_name_or_path={self.their_models[model]}",
            f"paths.output_dir={out}",
        ]
        if model == "target":
            args.append(f"retain_logs_path={self.work / 'theirs' / 'reference_logs.json'}")
        return args

    def their_cmd(self, model: str) -> list[str]:
        return [self.ou_python, "src/eval.py", *self.their_args(model)]

    def run(self, cmd: list[str], cwd: Path, name: str, env=None) -> float:
        self.n_run += 1
        log = self.logs / f"{self.n_run:03d}_{name}.log"
        with open(log, "w") as f:
            r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            rc = subprocess.run(cmd, cwd=cwd, env=env or self.env, stdout=f, stderr=subprocess.STDOUT)
            dt, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
        if rc.returncode:
            sys.exit(f"{name} failed (exit {rc.returncode}, see {log}):\n{tail(log)}")
        return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    def ours_whole(self, reference_cache: str) -> float:
        shutil.rmtree(self.ours_models["target"] / "eval_cache", ignore_errors=True)
        if reference_cache == "cold":
            shutil.rmtree(self.ours_models["reference"] / "eval_cache", ignore_errors=True)
        return self.run(self.ours_cmd(), self.work / "ours", f"ours_whole_{reference_cache}")

    def theirs_whole(self, model: str) -> float:
        shutil.rmtree(self.work / "theirs" / "out" / model, ignore_errors=True)  # a fresh run: no logs to reuse
        return self.run(self.their_cmd(model), self.ou, f"theirs_whole_{model}")

    def ours_metric(self) -> float:
        out = self.work / "ours_metric.json"
        args = {
            "model": str(self.ours_models["target"]), "data": str(self.data), "forget_split": FORGET_SPLIT,
            "batch_size": self.args.batch_size, "max_new_tokens": self.args.max_new_tokens,
        }  # fmt: skip
        env = {**self.env, "BENCH_ARGS": json.dumps(args), "BENCH_OUT": str(out)}
        self.run([sys.executable, "-c", OURS_TIMED], self.work / "ours", "ours_metric", env)
        result = json.loads(out.read_text())
        return result["metric_s"], result["cpu_s"]

    def theirs_metric(self) -> float:
        out = self.work / "theirs_metric.json"
        shutil.rmtree(self.work / "theirs" / "out" / "target", ignore_errors=True)
        env = {**self.env, "BENCH_ARGS": json.dumps(self.their_args("target")), "BENCH_OUT": str(out)}
        self.run([self.ou_python, "-c", THEIR_TIMED], self.ou, "theirs_metric", env)
        result = json.loads(out.read_text())
        if result["calls"] != 1:
            sys.exit(f"expected one Evaluator.evaluate call in their run, got {result['calls']}")
        return result["metric_s"], result["cpu_s"]

    def their_reference_logs(self):
        shutil.copy2(
            self.work / "theirs" / "out" / "reference" / "TOFU_EVAL.json",
            self.work / "theirs" / "reference_logs.json",
        )

    # -- measurement -----------------------------------------------------------------------------------------------

    def measure(self) -> dict:
        print("warm-up (untimed): every command once", flush=True)
        self.theirs_whole("reference")
        self.their_reference_logs()
        self.theirs_whole("target")
        self.ours_whole("cold")
        self.ours_whole("warm")
        self.ours_metric()
        self.theirs_metric()
        t = {
            k: []
            for k in ("ours_warm", "ours_cold", "theirs_target", "theirs_reference", "ours_metric", "theirs_metric")
        }
        for i in range(self.args.repeats):
            ours_first = i % 2 == 0
            print(f"repeat {i + 1}/{self.args.repeats} ({'ours' if ours_first else 'theirs'} first)", flush=True)
            steps = [
                (("ours_cold", lambda: self.ours_whole("cold")),
                 ("theirs_reference", lambda: self.theirs_whole("reference"))),
                (("ours_warm", lambda: self.ours_whole("warm")),
                 ("theirs_target", lambda: self.theirs_whole("target"))),
                (("ours_metric", self.ours_metric), ("theirs_metric", self.theirs_metric)),
            ]  # fmt: skip
            for ours, theirs in steps:
                for key, fn in (ours, theirs) if ours_first else (theirs, ours):
                    t[key].append(fn())
                    print(f"  {key}: {t[key][-1][0]:.2f} s wall, {t[key][-1][1]:.2f} s CPU", flush=True)
        # the last runs' outputs are checked: ours target/eval_forget10.json (warm run), theirs the logs of the
        # reference run and of the target (the metric wrapper runs their unchanged eval.py: the same logs)
        t["theirs_cold"] = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(t["theirs_reference"], t["theirs_target"])]
        return t

    def agreement(self) -> list[dict]:
        ours = json.loads((self.ours_models["target"] / f"eval_{FORGET_SPLIT}.json").read_text())
        rows = []
        for model, our_res in (("target", ours), ("reference", ours["reference_result"])):
            theirs = json.loads((self.work / "theirs" / "out" / model / "TOFU_EVAL.json").read_text())
            for role, (_, prob, tr, rouge) in ROLES.items():
                split = our_res["splits"][role]
                items = split["items"]
                for metric, their_name, item_key, their_item_key in (
                    ("probability", prob, "probability", "prob"),
                    ("truth_ratio", tr, "truth_ratio", "score"),
                    ("rouge_l_recall", rouge, "rouge_l_recall", "rougeL_recall"),
                ):
                    their_items = theirs[their_name]["value_by_index"]
                    diffs = [abs(it[item_key] - their_items[str(i)][their_item_key]) for i, it in enumerate(items)]
                    rows.append(
                        row(model, f"{role} {metric}", split["aggregate"][metric], theirs[their_name]["agg_value"],
                            max(diffs), shared=True)
                    )  # fmt: skip
            rows.append(row(model, "model utility", our_res["model_utility"], theirs["model_utility"]["agg_value"],
                            None, shared=True))  # fmt: skip
            if model == "target":
                rows.append(row(model, "forget quality (KS p)", ours["forget_quality"],
                                theirs["forget_quality"]["agg_value"], None, shared=True))  # fmt: skip
            priv = our_res.get("privacy") or {}
            extra = [("extraction strength", priv.get("extraction_strength"), "extraction_strength")]
            extra += [("exact memorization", priv.get("exact_memorization"), "exact_memorization")]
            extra += [(f"MIA AUC {a}", (priv.get("auc") or {}).get(a), f"mia_{a}") for a in
                      ("loss", "zlib", "min_k", "min_k_plus_plus")]  # fmt: skip
            for label, value, name in extra:
                if value is not None and name in theirs and theirs[name].get("agg_value") is not None:
                    rows.append(row(model, label, value, theirs[name]["agg_value"], None, shared=False))
        return rows


def row(model, metric, ours, theirs, item_diff, shared):
    diff = abs(float(ours) - float(theirs))
    ok = diff <= TOLERANCE or diff <= TOLERANCE * abs(float(theirs))
    return {"model": model, "metric": metric, "ours": float(ours), "theirs": float(theirs), "diff": diff,
            "item_diff": item_diff, "shared": shared, "ok": ok}  # fmt: skip


def tail(path: Path, n: int = 30) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])


def cpu_counters() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...), in ticks."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def stats(xs):
    return min(xs), statistics.median(xs), max(xs)


def timing_table(t: dict) -> str:
    def cell(xs):
        lo, med, hi = stats(xs)
        return f"{lo:.2f} / **{med:.2f}** / {hi:.2f}"

    lines = [
        "| measurement (seconds: min / **median** / max) | clock | ours | open-unlearning | ratio theirs / ours "
        "(medians) |",
        "|---|---|---:|---:|---:|",
    ]
    spec = [
        ("whole command, target; reference evaluation reused (ours: warm cache; theirs: `retain_logs_path`)",
         "ours_warm", "theirs_target"),
        ("whole command, target and reference both evaluated (ours: cold cache, one command; theirs: two commands)",
         "ours_cold", "theirs_cold"),
        ("metric work, target only (scoring + generation + metrics; imports and model loading excluded)",
         "ours_metric", "theirs_metric"),
    ]  # fmt: skip
    for j, clock in enumerate(("wall", "CPU (user+sys)")):
        for label, o, th in spec:
            ours, theirs = [x[j] for x in t[o]], [x[j] for x in t[th]]
            ratio = statistics.median(theirs) / statistics.median(ours)
            lines.append(f"| {label} | {clock} | {cell(ours)} | {cell(theirs)} | **{ratio:.2f}×** |")
    return "\n".join(lines)


def agreement_table(rows: list[dict]) -> str:
    lines = [
        "| model | metric | ours | open-unlearning | abs diff | max per-item diff | agrees (1e-5) |",
        "|---|---|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        item = "" if r["item_diff"] is None else f"{r['item_diff']:.2e}"
        mark = ("yes" if r["ok"] else "**no**") if r["shared"] else ("yes" if r["ok"] else "differs (definition)")
        lines.append(
            f"| {r['model']} | {r['metric']} | {r['ours']:.6g} | {r['theirs']:.6g} | {r['diff']:.2e} | {item} "
            f"| {mark} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable){mem}, {platform.system()} {platform.release()}, no GPU used"
    )


def git(path: Path, *args) -> str:
    r = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def versions(python: str) -> str:
    code = (
        "import importlib.metadata as m, platform\n"
        "names = ['torch', 'transformers', 'tokenizers', 'datasets', 'rouge_score', 'scipy', 'numpy', 'hydra-core']\n"
        "out = []\n"
        "for n in names:\n"
        "    try: out.append(f'{n} {m.version(n)}')\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(f'Python {platform.python_version()}, ' + ', '.join(out))\n"
    )
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return r.stdout.strip()


def pin_deviations(ou: Path, python: str) -> str:
    """Their requirements.txt pins that their environment does not hold exactly."""
    code = (
        "import importlib.metadata as m, sys\n"
        "out = []\n"
        "for line in open(sys.argv[1]):\n"
        "    name, sep, want = line.strip().partition('==')\n"
        "    if not sep: continue\n"
        "    try: have = m.version(name)\n"
        "    except m.PackageNotFoundError: have = 'not installed'\n"
        "    norm = lambda v: v.split('+')[0].removesuffix('.0')\n"
        "    if norm(have) != norm(want): out.append(f'{name} {have} (pin {want})')\n"
        "print(', '.join(out) or 'none')\n"
    )
    r = subprocess.run([python, "-c", code, str(ou / "requirements.txt")], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def profile_ours(bench: Bench) -> str:
    out = bench.work / "ours_profile.txt"
    args = {
        "model": str(bench.ours_models["target"]), "data": str(bench.data), "forget_split": FORGET_SPLIT,
        "batch_size": bench.args.batch_size, "max_new_tokens": bench.args.max_new_tokens,
    }  # fmt: skip
    env = {**bench.env, "BENCH_ARGS": json.dumps(args), "BENCH_OUT": str(out)}
    bench.run([sys.executable, "-c", OURS_PROFILE], bench.work / "ours", "ours_profile", env)
    return out.read_text()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--open_unlearning", required=True, help="Checkout of locuslab/open-unlearning.")
    p.add_argument("--open_unlearning_python", required=True, help="Python of an environment with their requirements.")
    p.add_argument("--run_dir", default=str(ROOT / "runs" / "embedded"),
                   help="Folder of `llm-unlearn demo` (data, target, reference; default runs/embedded)")  # fmt: skip
    p.add_argument("--workdir", default="/tmp/bench_vs_open_unlearning", help="Scratch folder (replaced).")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--their_metrics", choices=("matched", "default"), default="matched",
                   help="matched: their default TOFU suite plus the memorization and MIA metrics ours reports; "
                   "default: their default suite only.")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="Also print a cProfile of our evaluate_model (target).")
    p.add_argument("--write_docs", action="store_true", help=f"Write the results to {DOC.relative_to(ROOT)}.")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    bench = Bench(args)
    bench.setup()
    pc = bench.prompt_check
    print(f"prompt check: {pc['identical_scored']}/{pc['pairs']} scored pairs and {pc['identical_prompts']}/"
          f"{pc['pairs']} generation prompts tokenize identically; prompt {pc['our_prompt']!r}",
          flush=True)  # fmt: skip
    if pc["identical_scored"] != pc["pairs"] or pc["identical_prompts"] != pc["pairs"]:
        print(f"first difference: {json.dumps(pc['first_diff'])}")
    load_before, cpu_before = os.getloadavg(), cpu_counters()
    t0 = time.perf_counter()
    times = bench.measure()
    elapsed = time.perf_counter() - t0
    load_after, cpu_after = os.getloadavg(), cpu_counters()
    steal = ""
    if cpu_before and cpu_after:
        d = [b - a for a, b in zip(cpu_before, cpu_after)]
        steal = (f"; CPU time stolen by the hypervisor (other guests) {100 * d[7] / max(1, sum(d)):.0f} %, idle "
                 f"{100 * d[3] / max(1, sum(d)):.0f} %")  # fmt: skip
    rows = bench.agreement()
    profile = profile_ours(bench) if args.profile else None

    shared = [r for r in rows if r["shared"]]
    n_ok = sum(r["ok"] for r in shared)
    timing = timing_table(times)
    agree = agreement_table(rows)
    load = (f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after "
            f"the {elapsed:.0f} s of measurement on {os.cpu_count()} cores{steal}")  # fmt: skip
    print()
    print(timing)
    print()
    print(agree)
    print()
    print(f"shared metrics agreeing to {TOLERANCE:g}: {n_ok}/{len(shared)}; {load}")
    if profile:
        print()
        print(profile)
    (bench.work / "results.json").write_text(
        json.dumps(
            {"times": times, "agreement": rows, "prompt_check": pc, "load": [load_before, load_after]}, indent=1
        )
    )
    if args.write_docs:
        argv = argv if argv is not None else sys.argv[1:]
        write_docs(bench, argv, date, timing, agree, n_ok, len(shared), load, profile)
        print(f"written: {DOC}")


def write_docs(bench: Bench, argv, date, timing, agree, n_ok, n_shared, load, profile=None):
    args = bench.args
    ours_commit = git(ROOT, "rev-parse", "--short=12", "HEAD")
    dirty = " (with uncommitted changes)" if git(ROOT, "status", "--porcelain", "--untracked-files=no") else ""
    their_commit = git(bench.ou, "rev-parse", "HEAD")
    their_date = git(bench.ou, "log", "-1", "--format=%cd", "--date=short")
    pc = bench.prompt_check
    from llm_unlearn import __version__

    command = "python eval/bench_vs_open_unlearning.py " + shlex.join(argv)
    overrides = [
        o.replace("\n", "\\n") + ("    (a newline character)" if "\n" in o else "")
        for o in bench.their_overrides
        if ".hf_args.path=" not in o and "max_new_tokens=" not in o
    ]
    text = f"""# Our TOFU evaluation against open-unlearning's

Measured {date} with

```bash
{command}
```

- Machine: {machine()}; {load}.
- Ours: llm_unlearn {__version__}, commit `{ours_commit}`{dirty}; {versions(sys.executable)}.
- open-unlearning: commit `{their_commit}` ({their_date}); {versions(bench.ou_python)} (their own environment;
  where it departs from their requirements.txt pins: {pin_deviations(bench.ou, bench.ou_python)}).
  Their `src/eval.py` imports `lm_eval` (their `lm-eval` extra, 0.4.8) and `deepspeed` at start-up, so both are
  installed there (deepspeed 0.15.4 builds without a GPU with `DS_BUILD_OPS=0 pip install --no-build-isolation`).
- Models and data: `llm-unlearn demo`'s tiny Llama target and retrained reference (`{bench.run_dir}`), TOFU
  splits forget10_perturbed, retain_perturbed, real_authors_perturbed, world_facts_perturbed and holdout10, on the
  CPU in float32; batch size {args.batch_size}, greedy generation with max_new_tokens {args.max_new_tokens}, for
  both tools. Their metrics: `{args.their_metrics}` ({", ".join(bench.their_metrics)}).
- Prompt: `{pc["our_prompt"]!r}` for both; {pc["identical_scored"]}/{pc["pairs"]} scored (question, answer) pairs
  have identical token ids and labels in both tools, and {pc["identical_prompts"]}/{pc["pairs"]} generation
  prompts identical token ids.

## Time

Each number is one fresh process (the whole command: process start to exit; metric work: timed inside a wrapper
process around our `evaluate_qa` and their `Evaluator.evaluate`), {args.repeats} repeat(s) after one untimed
warm-up of every command, the two tools interleaved. Wall time is what a user waits; CPU time (user + system, of
the process and its threads; for the whole command from `getrusage` of the child) is less sensitive to other load
on the machine. Our metric work is timed after importing what `evaluate_qa` imports on first use (`rouge_score`,
`sklearn.metrics`, `scipy.stats`, the evaluation modules): their modules import all of it before `evaluate`.

{timing}

Our command does more than score: it also bootstraps the 95 % intervals, calibrates the verdict and writes a
Markdown report and a plot. Theirs writes its JSON logs.

## Agreement of the metrics (last runs)

{agree}

Shared metrics (probability, truth ratio and ROUGE-L recall per split, model utility, forget quality) agreeing to
{TOLERANCE:g}: **{n_ok}/{n_shared}**; the per-item column is the largest difference over the split's items.
The other rows are metrics both tools report under definitions that differ in detail, so they agree only where
the details do not matter (the target's, at 1 or 0): their extraction strength, exact memorization, Min-K% and
Min-K%++ leave the EOS token out of the answer (ours scores it, as it does for the loss), their extraction
strength is 1/|y| rather than 0 when even the last token is missed, and their zlib attack compresses the decoded
answer tokens rather than the answer string.

## How their run was set up

Their entry point `src/eval.py` unchanged, with these overrides:

```
{chr(10).join(overrides)}
retain_logs_path=<their reference run's TOFU_EVAL.json>    (target runs only)
paths.output_dir=<a fresh folder per run>
model.model_args.pretrained_model_name_or_path=<model>  model.tokenizer_args.pretrained_model_name_or_path=<model>
```

plus {bench.n_dataset_overrides} `...hf_args.path=<local folder>` overrides (every dataset of the metric list,
found by composing their config) and {bench.n_generation_overrides} `...generation_args.max_new_tokens=N`
overrides. The local folder holds the same JSONL rows with a leading space on every answer, paraphrase and
perturbed answer (their template joins prompt and answer with nothing between; our formatter puts a space), and
a README.md whose `configs:` maps each TOFU split name to its file. Their model folders link the same weights and
tokenizer; only `tokenizer_config.json` differs (`tokenizer_class: PreTrainedTokenizerFast`: their pinned
transformers does not know the class name written by ours).

Differences that stay: each tool runs on its own pinned stack (transformers and tokenizers versions above); our
generation also stops at a blank line, theirs only at EOS or the token budget; their default `overwrite: false`
reuses nothing because every run gets an empty output folder.
"""
    if profile:
        text += f"""
## Where our metric work goes

`cProfile` of a second `evaluate_model(target, use_cache=False)` in one process (the first call, unprofiled,
pays the imports), top 25 by cumulative time:

```
{profile.strip()}
```
"""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
