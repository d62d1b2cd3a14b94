"""The stages as one importable API: what the CLI, ``unlearn.py``, the demo and the ``eval/`` benchmarks call.

Data flows one way (data → finetune → unlearn → evaluate → report/push) and so do imports: this module imports the
stage modules, the CLI imports this module, and no stage imports the CLI. Each function imports its stage lazily so
that importing this module (and ``llm-unlearn --help``) stays fast. Every stage goes through the run layer
(:mod:`llm_unlearn.runs`): inputs checked before any model is loaded, outputs staged and committed only when
finished, reuse keyed on content.
"""

from __future__ import annotations

from pathlib import Path


def synth(cfg, out: str | Path, overwrite: bool = False) -> Path:
    """Write the embedded synthetic benchmark (:class:`llm_unlearn.data.synth.SynthConfig`) into ``out``."""
    from .data.synth import write_benchmark

    return write_benchmark(cfg, out, overwrite=overwrite)


def finetune(cfg) -> Path:
    """Train (or reuse) the model of a :class:`llm_unlearn.finetune.FinetuneConfig`; returns its folder."""
    from .finetune import finetune as _finetune

    return _finetune(cfg)


def unlearn(argv: list[str]) -> Path:
    """Unlearn with ``unlearn.py``'s arguments (``["--method", "npo", "--model_name_or_path", ...]``)."""
    from .unlearn import parse_args, run

    cfg, trainer_cls = parse_args(argv)
    return run(cfg, trainer_cls)


def evaluate(
    model, reference, data, cfg, output=None, use_cache: bool = True, overwrite: bool = False, target=None
) -> dict:
    """Evaluate ``model`` against the retrained ``reference`` (or a list of references: the first is the primary,
    the others give the noise floor); see :func:`llm_unlearn.evaluation.run.run_eval`."""
    from .evaluation.run import run_eval

    if reference is not None:
        reference = str(reference) if isinstance(reference, (str, Path)) else [str(r) for r in reference]
    return run_eval(
        str(model), reference, str(data), cfg, output, use_cache, overwrite, None if target is None else str(target)
    )


def report(run_dirs, out, overwrite: bool = False, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Runs side by side (see :func:`llm_unlearn.evaluation.report.write_runs_report`)."""
    from .evaluation.report import write_runs_report

    return write_runs_report(run_dirs, out, overwrite=overwrite, n_resamples=n_resamples, seed=seed)


def push(run_dir, repo_id: str, **kwargs) -> str:
    """Upload a run folder's allow-listed files with a model card (see :func:`llm_unlearn.hub.push_run`)."""
    from .hub import push_run

    return push_run(run_dir, repo_id, **kwargs)
