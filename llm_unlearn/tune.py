"""Recipe search (``llm-unlearn tune``): a method's learning rate, steps and loss weights chosen with Optuna on the
development benchmark family, never on the benchmark that results are reported on.

Protocol:

1. The development benchmark (``llm-unlearn data synth --family inventors``: fictitious inventors instead of
   authors, other templates, both answer phrasings trained, free-form paraphrases) is built in ``--workdir`` with
   its target and two retrained references per forget split (the embedded pipeline's stages; finished stages are
   reused).
2. Each trial draws a recipe from the method's search space (:data:`SEARCH_SPACES`, on top of the base recipe
   ``--config``), unlearns the development target with it on every forget split and tuning seed, and evaluates
   each run against its split's two references.
3. Two objectives, both maximised:

   - **forget score**: the mean over runs of ``min(0, log10(FQ / bar))``, with FQ the median forget quality over the
     references and ``bar`` the verdict's threshold (0.05 or the resampled noise floor). It is 0 when every run is not
     distinguishable from retraining, and counts orders of magnitude short of the bar otherwise (beyond the bar,
     a higher forget quality is noise, not a better recipe);
   - **retention**: the lowest minimum utility retention (unlearned / target, over the nine utility components)
     over runs.

   Constraint: retention ≥ ``--min_retention`` (default 0.95).
4. The Pareto front of the two objectives over all trials (each marked feasible or not: the whole trade-off) is
   written next to the study, and the chosen recipe (the feasible trial with the highest forget score; ties:
   higher retention) as a YAML that ``unlearn.py --config`` reads, with the search, the front and the chosen
   trial's numbers in its header.

The study lives in ``WORKDIR/tune/<method>/study.db`` (SQLite): an interrupted search continues where it stopped,
and ``--n_trials`` counts every finished trial of the same search.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .pipeline import NOT_FORGETTING, NOT_RECOMMENDED, is_recommended  # noqa: F401 (the recipe headers, re-exported)

ROOT = Path(__file__).resolve().parent.parent

# The chosen feasible trial must come this many orders of magnitude (forget score) closer to the bar than the
# untouched target, or it is a recipe that keeps the utility by leaving the model alone.
MIN_FORGET_GAIN = 1.0


# What the forget score measures. ``forget_quality``: TOFU's forget quality alone (the truth ratios' KS test
# against the verdict's bar). ``forget_quality+answers``: the mean of that and the same score of the evaluation's
# second opinion, the KS test on the forget answers' own loss, so that a recipe cannot pass by making every answer to
# a forget question equally unlikely (truth ratios like retraining, answers far less likely than under retraining).
# ``verdict``: what the evaluation's verdict reads: the mean, over the tests that discriminate on the run's split
# (the untouched target far below their bar against every reference), of each test's
# ``min(0, log10(min_k p_k / bar))``; forget quality alone where none does.
OBJECTIVES = ("forget_quality", "forget_quality+answers", "verdict")


def target_forget_score(chosen: dict, bench: dict, objective: str = "forget_quality") -> float | None:
    """The forget score the untouched target itself gets on the chosen trial's runs (its forget quality on each
    run's split against the same bar, and under ``forget_quality+answers`` its answers' test too; under ``verdict``
    the same tests the run is scored on); None where the benchmark does not record it."""
    scores = []
    for r in chosen["runs"]:
        info = bench.get("splits", {}).get(r["split"]) or {}
        fq = info.get("target_forget_quality_median")
        if fq is None or r.get("diverged"):
            return None
        if objective == "verdict":
            if not info.get("target_tests") or not r.get("tests"):
                return None
            as_target = {n: {**t, "p": info["target_tests"][n]} for n, t in r["tests"].items()}
            scores.append(verdict_score({**r, "tests": as_target}))
            continue
        score = forget_score(fq, _bar(r))
        if objective != "forget_quality":
            if info.get("target_answers_p") is None or r.get("answers_p") is None:
                return None
            score = (score + forget_score(info["target_answers_p"], r["answers_bar"])) / 2
        scores.append(score)
    return sum(scores) / len(scores) if scores else None


# name: (kind, low, high, log) for floats/ints; (kind, choices) for categoricals. Every method also searches COMMON.
COMMON = {
    "learning_rate": ("float", 1e-4, 5e-3, True),
    "max_steps": ("int", 20, 120, False),
}
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "regularized_ft": {
        "alpha_reg": ("float", 0.02, 1.0, True),
        "alpha_reg_schedule": ("categorical", ("constant", "linear_decay", "cosine_decay")),
        "forget_regularizer": ("categorical", ("wrong_answer", "kl_uniform")),
        # never the evaluation's perturbed answers (training on the test): another entity's answer
        "wrong_answer_source": ("categorical", ("random_other", "similar_other")),
        # the bound on the regularizer (none: unbounded); with it, longer runs stop pushing the forgotten items
        "forget_bound": ("categorical", ("none", "wrong_answer")),
        "forget_bound_margin": ("float", -1.0, 1.0, False),
        "max_steps": ("int", 20, 200, False),
    },
    "natural": {
        "n_hybrids": ("int", 1, 8, False),
        "delta": ("float", 0.0, 0.5, False),
        "partner_selection": ("categorical", ("likelihood", "similarity", "random")),
        "mix_space": ("categorical", ("token", "embedding", "context")),
        "hybrid_weight": ("float", 0.25, 4.0, True),
    },
    "hessian": {
        "learning_rate": ("float", 2e-4, 2e-2, True),  # only a fraction of the entries move: larger steps may pay
        "param_ratio": ("float", 0.01, 0.3, True),
        "gamma": ("float", 0.05, 1.0, True),
    },
    "grad_ascent": {"learning_rate": ("float", 1e-5, 1e-3, True)},
    "grad_diff": {"gamma": ("float", 0.05, 1.0, True)},
    "npo": {"beta": ("float", 0.05, 1.0, True), "gamma": ("float", 0.1, 1.0, True)},
    "simnpo": {"beta": ("float", 0.5, 8.0, True), "gamma": ("float", 0.02, 1.0, True)},
    "idk_nll": {"gamma": ("float", 0.1, 1.0, True)},
    "idk_dpo": {"beta": ("float", 0.05, 1.0, True), "gamma": ("float", 0.1, 1.0, True)},
    "relabel": {},
}
# ``tune --dosing``: every trial unlearns with self-dosing (llm_unlearn.trainers.dosing); the search chooses how
# often to check and when to stop instead of a step count, and max_steps is only the cap.
DOSING_SPACE = {
    "dose_every": ("int", 2, 10, False),
    "dose_tolerance": ("float", 0.02, 0.5, True),
    # the retain probe (training items) dips early in a run and recovers as the retain term acts: the search chooses
    # how far it may dip; the evaluation's utility retention (the constraint) judges the end
    "dose_retain_guard": ("float", 0.03, 0.4, True),
}
DOSE_MAX_STEPS = 300
FQ_BAR = 0.05
INFEASIBLE = -10.0  # the forget score of a run that diverged


@dataclass
class TuneConfig:
    """What ``llm-unlearn tune`` searches, on what, and where it writes."""

    method: str
    config: str | None = None
    workdir: str = "runs/dev"
    family: str = "inventors"
    family_seed: int = 0
    forget_splits: tuple[str, ...] = ("forget01", "forget05", "forget10")
    seeds: tuple[int, ...] = (0,)
    n_trials: int = 20
    min_retention: float = 0.95
    study_seed: int = 0
    output: str | None = None
    overwrite: bool = False
    objective: str = "forget_quality"
    dosing: bool = False
    space: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in SEARCH_SPACES:
            raise ValueError(f"--method {self.method!r}: tune knows {', '.join(sorted(SEARCH_SPACES))}")
        if self.family == "authors":
            raise ValueError(
                "--family authors is the benchmark results are reported on: recipes are tuned on the development "
                "family (--family inventors), so that no reported number comes from data it was tuned on"
            )
        if self.family == "ships":
            raise ValueError(
                "--family ships is the checking benchmark (the verdict and the recipes are checked there, never tuned "
                "there): tune on --family inventors"
            )
        if self.n_trials < 1:
            raise ValueError(f"--n_trials must be at least 1, got {self.n_trials}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0.0 < self.min_retention <= 1.0:
            raise ValueError(f"--min_retention must be in (0, 1], got {self.min_retention}")
        if not self.seeds:
            raise ValueError("--seeds must name at least one seed")
        if self.config is None:
            default = ROOT / "configs" / f"embedded_{self.method}.yaml"
            self.config = str(default) if default.is_file() else None
        if self.config is not None and not Path(self.config).is_file():
            raise FileNotFoundError(f"--config {self.config}: no such file")
        if self.config is not None:
            from .validation import load_yaml_recipe

            load_yaml_recipe(self.config)  # a syntax error or a key given twice is said before any trial
        self.space = {**COMMON, **SEARCH_SPACES[self.method], **self.space}
        if self.dosing:  # the dose is chosen by the stopping rule's settings, not by a step count
            self.space.pop("max_steps", None)
            self.space = {**self.space, **DOSING_SPACE}
        if self.output is None:
            self.output = f"configs/tuned_{self.method}.yaml"
        out = Path(self.output)
        if out.exists() and not self.overwrite:
            raise FileExistsError(f"--output {out} exists: pass --overwrite to replace it, or choose another path")

    @property
    def study_dir(self) -> Path:
        return Path(self.workdir) / "tune" / self.method

    def identity(self, bench: dict) -> str:
        """What makes two searches the same one (a resumed study must match it): the search's settings and the
        content of the benchmark it runs on (data files, target and reference weights), so that a rebuilt or edited
        development benchmark starts a new study instead of mixing its trials with the old ones."""
        from .runs import data_fingerprint, model_fingerprint

        base = Path(self.config).read_text() if self.config else ""
        models = [bench["target"], *(r for info in bench["splits"].values() for r in info["references"])]
        key = {
            "data": data_fingerprint(bench["data"]),
            "models": [model_fingerprint(m) for m in models],
            "method": self.method,
            "base_recipe": base,
            "family": self.family,
            "family_seed": self.family_seed,
            "forget_splits": list(self.forget_splits),
            "seeds": list(self.seeds),
            "min_retention": self.min_retention,
            "study_seed": self.study_seed,
            **({} if self.objective == "forget_quality" else {"objective": self.objective}),
            **({"dosing": DOSE_MAX_STEPS} if self.dosing else {}),
            "space": {k: list(v) if isinstance(v, tuple) else v for k, v in self.space.items()},
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]


def suggest(trial, space: dict) -> dict:
    """One recipe drawn from ``space`` for an Optuna trial."""
    params = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            raise ValueError(f"search space entry {name}: unknown kind {kind!r}")
    return params


def forget_score(fq_median: float, floor: float | None) -> float:
    """``min(0, log10(FQ / bar))``: 0 when not distinguishable from retraining, else orders of magnitude short;
    ``bar = max(0.05, floor)``."""
    bar = FQ_BAR if floor is None else max(FQ_BAR, floor)
    return min(0.0, math.log10(max(fq_median, 1e-300) / bar))


def _bar(run: dict) -> float:
    """The verdict's bar of one run: recorded since the resampled floor; ``max(0.05, noise floor)`` before."""
    return run["bar"] if run.get("bar") is not None else max(FQ_BAR, run["noise_floor"] or 0)


def test_score(p: float, bar: float) -> float:
    """``min(0, log10(p / bar))`` of one test against its own bar."""
    return min(0.0, math.log10(max(p, 1e-300) / bar))


def verdict_score(run: dict) -> float:
    """The mean :func:`test_score` over the tests that discriminate on the run's split (forget quality alone where
    none does; see :data:`OBJECTIVES`)."""
    tests = run.get("tests")
    if not tests:
        raise ValueError(f"--objective verdict: the run on {run['split']} records no tests")
    counting = [t for t in tests.values() if t["counts"]] or [tests["forget_quality"]]
    return sum(test_score(t["p"], t["bar"]) for t in counting) / len(counting)


def run_score(run: dict, objective: str = "forget_quality") -> float:
    """One run's forget score: forget quality's, its mean with the answers' test, or the verdict's tests' (see
    :data:`OBJECTIVES`)."""
    if objective == "verdict":
        return verdict_score(run)
    score = forget_score(run["forget_quality_median"], _bar(run))
    if objective == "forget_quality":
        return score
    if run.get("answers_p") is None:
        raise ValueError(f"--objective {objective}: the run on {run['split']} has no answers' test to score")
    return (score + forget_score(run["answers_p"], run["answers_bar"])) / 2


def score_runs(runs: list[dict], objective: str = "forget_quality") -> tuple[float, float]:
    """(forget score, retention) of a trial from its runs' numbers (see the module docstring)."""
    if any(r.get("diverged") for r in runs):
        return INFEASIBLE, 0.0
    fs = sum(run_score(r, objective) for r in runs) / len(runs)
    return fs, min(r["min_retention"] for r in runs)


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both ``forget_score`` and ``retention`` (both maximised), best forget
    score first."""
    front = []
    for p in points:
        dominated = any(
            q["forget_score"] >= p["forget_score"]
            and q["retention"] >= p["retention"]
            and (q["forget_score"] > p["forget_score"] or q["retention"] > p["retention"])
            for q in points
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (-p["forget_score"], -p["retention"]))


def choose(points: list[dict], min_retention: float) -> tuple[dict | None, bool]:
    """(chosen trial, whether it meets the constraint): the feasible trial with the highest forget score (ties:
    higher retention); with no feasible trial, the one with the highest retention."""
    feasible = [p for p in points if p["retention"] >= min_retention]
    if feasible:
        return max(feasible, key=lambda p: (p["forget_score"], p["retention"])), True
    if not points:
        return None, False
    return max(points, key=lambda p: (p["retention"], p["forget_score"])), False


# --- running ------------------------------------------------------------------------------------------------------


def build_development_benchmark(cfg: TuneConfig) -> dict:
    """Data, target and two references per forget split of the development family (reused when finished), and
    the discrimination check of each split: where the untouched target is not far below the bar, forget quality
    cannot guide the search on that split, and the search says so."""
    from .pipeline import reference_folders, run_embedded_pipeline

    work = Path(cfg.workdir)
    splits = {}
    for split in cfg.forget_splits:
        compared = run_embedded_pipeline(work, forget_split=split, seed=cfg.family_seed, family=cfg.family)["compared"]
        cal = compared["calibration"]
        splits[split] = {
            "references": [str(p) for p in reference_folders(work, split)],
            "noise_floor": cal["noise_floor"],
            "target_forget_quality": compared["forget_quality"],
            "target_forget_quality_median": cal["forget_quality_median"],
            "target_answers_p": (cal.get("answer_probability") or {}).get("p_median"),
            "target_tests": {n: min(t["p_per_reference"]) for n, t in (cal.get("tests") or {}).items()},
            "informative": bool(cal["discrimination"] and cal["discrimination"]["informative"]),
        }
        if not splits[split]["informative"]:
            print(f"WARNING: {split}: {cal['discrimination']['text']}; its forget score guides the search little")
    return {"data": str(work / "data"), "target": str(work / "target"), "splits": splits}


def run_trial(cfg: TuneConfig, bench: dict, params: dict, trial_dir: Path) -> list[dict]:
    """Unlearn the development target with ``params`` on every split and seed and evaluate each run."""
    from .evaluation.evaluator import EvalConfig
    from .stages import evaluate, unlearn
    from .trainers.base import DivergenceError

    runs = []
    for split, info in bench["splits"].items():
        for seed in cfg.seeds:
            out = trial_dir / f"{split}_seed{seed}"
            argv = ["--config", cfg.config] if cfg.config else []
            argv += ["--method", cfg.method, "--model_name_or_path", bench["target"], "--data", bench["data"]]
            argv += ["--forget_split", split, "--seed", str(seed), "--output_dir", str(out)]
            argv += ["--overwrite_output", "true", "--disable_tqdm", "true", "--save_strategy", "no"]
            if cfg.dosing:
                argv += ["--max_steps", str(DOSE_MAX_STEPS)]
            for k, v in params.items():
                argv += [f"--{k}", str(v)]
            try:
                unlearn(argv)
            except DivergenceError as e:
                runs.append({"split": split, "seed": seed, "diverged": str(e)})
                continue
            c = evaluate(out, info["references"], bench["data"], EvalConfig(forget_split=split), overwrite=True)
            cal = c["calibration"]
            retention = cal["utility_retention"]
            runs.append(
                {
                    "split": split,
                    "seed": seed,
                    "forget_quality_median": cal["forget_quality_median"],
                    "noise_floor": cal["noise_floor"],
                    "bar": cal["verdict"]["threshold"],
                    "distinguishable": cal["verdict"]["distinguishable"],
                    "answers_p": (cal.get("answer_probability") or {}).get("p_median"),
                    "answers_bar": (cal.get("answer_probability") or {}).get("threshold"),
                    "model_utility": c["model_utility"],
                    "min_retention": retention["minimum"],
                    "worst_component": retention["worst"],
                    "tests": {
                        name: {"p": min(t["p_per_reference"]), "bar": t["bar"], "counts": bool(t["discriminates"])}
                        for name, t in (cal.get("tests") or {}).items()
                    },
                    **_dose_of(out),
                }
            )
            shutil.rmtree(out, ignore_errors=True)  # the numbers are kept in the study; the weights are not needed
    shutil.rmtree(trial_dir, ignore_errors=True)
    return runs


def _dose_of(out: Path) -> dict:
    """How a self-dosed run ended (steps taken, stop reason), from its record; {} for a fixed step count."""
    try:
        record = json.loads((out / "unlearn_record.json").read_text())
    except (OSError, ValueError):
        return {}
    dose = record.get("dosing")
    return {"steps": record.get("global_steps"), "stop_reason": dose["stop_reason"]} if dose else {}


def tune(cfg: TuneConfig, bench: dict | None = None) -> dict:
    """Run (or continue) the search and write the chosen recipe; returns the chosen trial, the front and paths.

    ``bench`` (data, target, references per split; see :func:`build_development_benchmark`) replaces building the
    development benchmark, for a search on models the caller already has."""
    try:
        import optuna
    except ImportError:
        raise ImportError("llm-unlearn tune needs Optuna: pip install 'llm_unlearn[tune]' (or optuna)") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if bench is None:
        bench = build_development_benchmark(cfg)
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(cfg.study_dir / 'study.db').resolve()}"
    name = f"{cfg.method}-{cfg.identity(bench)}"

    def sampler(offset: int):
        # A continued search reseeds by the trials already stored: the same seed would draw the random start-up
        # trials of the first session again.
        return optuna.samplers.TPESampler(
            seed=cfg.study_seed + offset, n_startup_trials=max(1, min(10, cfg.n_trials // 2)), multivariate=True
        )

    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "maximize"], sampler=sampler(0), load_if_exists=True
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if study.trials:
        study.sampler = sampler(len(study.trials))
    if done:
        print(f"continuing the search {name}: {len(done)} of {cfg.n_trials} trials finished")

    def objective(trial):
        params = suggest(trial, cfg.space)
        runs = run_trial(cfg, bench, params, cfg.study_dir / f"trial_{trial.number}")
        fs, retention = score_runs(runs, cfg.objective)
        trial.set_user_attr("runs", runs)
        trial.set_constraint("min_retention", cfg.min_retention - retention)  # feasible when <= 0
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        per = "; ".join(
            f"{r['split']}: diverged"
            if r.get("diverged")
            else f"{r['split']} FQ {r['forget_quality_median']:.3g} (bar {_bar(r):.3g})"
            + ("" if r.get("answers_p") is None else f" answers {r['answers_p']:.3g} (bar {r['answers_bar']:.3g})")
            + f" ret {r['min_retention']:.3f}"
            for r in runs
        )
        print(
            f"[trial {trial.number}] {shown} -> forget score {fs:.2f}, retention {retention:.3f} | {per}", flush=True
        )
        return fs, retention

    remaining = cfg.n_trials - len(done)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    points = [
        {
            "number": t.number,
            "params": t.params,
            "forget_score": t.values[0],
            "retention": t.values[1],
            "runs": t.user_attrs.get("runs", []),
        }
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ][: max(cfg.n_trials, 1)]
    front = pareto_front(points)
    chosen, ok = choose(points, cfg.min_retention)
    files = write_outputs(cfg, bench, points, front, chosen, ok)
    return {"chosen": chosen, "feasible": ok, "front": front, "trials": len(points), "files": files, "bench": bench}


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# --- outputs ------------------------------------------------------------------------------------------------------


def front_table(front: list[dict], space: dict, min_retention: float) -> list[str]:
    names = list(space)
    lines = [
        "| trial | "
        + " | ".join(names)
        + " | forget score | min retention | feasible | per split: FQ / bar, retention |",
        "|---:|" + "---:|" * len(names) + "---:|---:|:-:|---|",
    ]
    for p in front:
        per = "; ".join(
            f"{r['split']}: diverged"
            if r.get("diverged")
            else f"{r['split']} {r['forget_quality_median']:.3g} / {_bar(r):.3g}, {r['min_retention']:.3f}"
            for r in p["runs"]
        )
        values = " | ".join(_fmt(p["params"].get(n)) for n in names)
        ok = "yes" if p["retention"] >= min_retention else "no"
        lines.append(f"| {p['number']} | {values} | {p['forget_score']:.2f} | {p['retention']:.3f} | {ok} | {per} |")
    return lines


def write_outputs(cfg: TuneConfig, bench: dict, points, front, chosen, ok) -> list[str]:
    import yaml

    from .runs import atomic_write_text

    table = front_table(front, cfg.space, cfg.min_retention)
    n_feasible = len([p for p in points if p["retention"] >= cfg.min_retention])
    front_md = cfg.study_dir / "pareto.md"
    front_text = (
        f"# Pareto front of `llm-unlearn tune --method {cfg.method}`\n\n"
        f"{len(points)} trials on the {cfg.family} family (seed {cfg.family_seed}), splits "
        f"{', '.join(cfg.forget_splits)}, unlearning seeds {', '.join(map(str, cfg.seeds))}; {n_feasible} of them "
        f"feasible (minimum utility retention ≥ {cfg.min_retention}). The front holds the trials that no other "
        "trial beats on both forget score and retention.\n\n" + "\n".join(table) + "\n"
    )
    atomic_write_text(front_md, front_text)
    atomic_write_text(cfg.study_dir / "trials.json", json.dumps(points, indent=1) + "\n")
    files = [str(front_md), str(cfg.study_dir / "trials.json")]
    if chosen is None:
        return files
    base = yaml.safe_load(Path(cfg.config).read_text()) if cfg.config else {"method": cfg.method}
    recipe = {**base, "method": cfg.method, **chosen["params"]}
    if cfg.dosing:
        recipe["max_steps"] = DOSE_MAX_STEPS  # the cap every trial ran under; the dose is the stopping rule's
    for k, v in recipe.items():
        if isinstance(v, float):
            recipe[k] = float(f"{v:.4g}")
    untouched = target_forget_score(chosen, bench, cfg.objective) if ok else None
    if not ok:
        status = (
            f"{NOT_RECOMMENDED} ≥ {cfg.min_retention}; this is the trial with the "
            "highest retention, not a recommended recipe."
        )
    elif untouched is not None and chosen["forget_score"] < untouched + MIN_FORGET_GAIN:
        status = (
            f"{NOT_FORGETTING}: the best feasible trial's forget score {chosen['forget_score']:.2f} is within "
            f"{MIN_FORGET_GAIN:g} of the untouched target's {untouched:.2f}; it keeps the utility by barely "
            "changing the model, not a recommended recipe."
        )
    else:
        status = (
            f"chosen: the trial with the highest forget score among those with min retention ≥ {cfg.min_retention}."
        )
    per = [
        f"#   {r['split']} seed {r['seed']}: diverged"
        if r.get("diverged")
        else f"#   {r['split']} seed {r['seed']}: forget quality {r['forget_quality_median']:.3g} (noise floor "
        f"{r['noise_floor']:.3g}, bar {_bar(r):.3g}), "
        + ("" if r.get("answers_p") is None else f"answers' test {r['answers_p']:.3g} (bar {r['answers_bar']:.3g}), ")
        + f"min retention {r['min_retention']:.3f} ({r['worst_component']})"
        for r in chosen["runs"]
    ]
    header = [
        f"# {cfg.method}: recipe chosen by `llm-unlearn tune` on the development benchmark family ({cfg.family}, "
        f"seed {cfg.family_seed}),",
        "# never on the embedded authors benchmark that results are reported on.",
        f"# Search: {len(points)} Optuna TPE trials (study seed {cfg.study_seed}) over "
        + ", ".join(f"{k} {_space_text(v)}" for k, v in cfg.space.items())
        + ";",
        f"# each trial unlearned on {', '.join(cfg.forget_splits)} with seeds {', '.join(map(str, cfg.seeds))}; base "
        f"recipe {Path(cfg.config).name if cfg.config else '(method defaults)'}.",
        {
            "forget_quality": "# Objectives: forget score = mean of min(0, log10(FQ / 0.05)) (0: not distinguishable "
            "on every run);",
            "forget_quality+answers": "# Objectives: forget score = mean of min(0, log10(FQ / 0.05)), averaged with "
            "the same score of the answers' test (--objective forget_quality+answers);",
            "verdict": "# Objectives: forget score = mean over runs and over the tests the verdict reads (those that "
            "tell the untouched target from retraining) of min(0, log10(p / the test's bar)) (--objective verdict);",
        }[cfg.objective]
        + (f" self-dosing (--dosing), max_steps {DOSE_MAX_STEPS} as the cap;" if cfg.dosing else ""),
        "# retention = lowest minimum utility retention over the runs.",
        f"# {status}",
        f"# Trial {chosen['number']}: forget score {chosen['forget_score']:.2f}, retention {chosen['retention']:.3f}:",
        *per,
        f"# Pareto front: {Path(cfg.output).with_suffix('.pareto.md').name} beside this file",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    # the front travels with the recipe (the study folder is a local working folder)
    atomic_write_text(out.with_suffix(".pareto.md"), front_text)
    return [str(out), str(out.with_suffix(".pareto.md")), *files]


def _space_text(spec: tuple) -> str:
    if spec[0] == "categorical":
        return "{" + ", ".join(spec[1]) + "}"
    return f"[{_fmt(spec[1])}, {_fmt(spec[2])}]" + (" (log)" if spec[3] else "")
