"""Diagonal-Hessian scores of the answer-token NLL at the current weights (Malekmohammadi et al., arXiv 2504.06398).

Three estimators of ``diag H`` with ``H = ∇²_θ Σ_b ℓ_b(θ)`` and ``ℓ_b = nll_loss`` of microbatch ``b``:

* ``fisher``: ``Σ_b (∇ℓ_b)²`` (empirical Fisher over microbatches; one forward+backward per microbatch).
* ``ggn``: ``Σ_b (∇ℓ̂_b)²`` with ``ℓ̂_b`` the NLL of labels ``ŷ ~ p_θ`` sampled on the answer positions from the
  (detached) logits of the same forward: a Monte-Carlo Gauss–Newton diagonal, ``≥ 0`` by construction.
* ``hutchinson``: ``Σ_b mean_k z_k ⊙ (H_b z_k)`` with Rademacher ``z_k`` and ``H_b z`` by double backward.

All random draws come from a local ``torch.Generator`` seeded by ``seed``; the global RNG is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

ESTIMATORS = ("fisher", "ggn", "hutchinson")
_MODEL_INPUTS = ("input_ids", "attention_mask")
IGNORE_INDEX = -100


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``llm_unlearn.trainers.losses.nll_loss``, imported on use: ``llm_unlearn.trainers`` may import this package,
    and a module-level import would make the two packages import each other."""
    from ..trainers.losses import nll_loss as _nll_loss

    return _nll_loss(logits, labels)


class ParameterScores(dict):
    """``{parameter name: score tensor}`` (CPU float32, the parameter's shape) with the cost of computing it.

    Attributes:
        estimator: ``fisher``, ``ggn``, ``hutchinson`` (or ``grad_abs`` for retain saliency).
        seconds: wall-clock seconds of the scoring loop (of the cache load when ``from_cache``).
        microbatches: number of microbatches scored.
        probes: Hutchinson probes (1 for the other estimators).
        from_cache: whether the scores were read from disk.
    """

    estimator: str = ""
    seconds: float = 0.0
    microbatches: int = 0
    probes: int = 1
    from_cache: bool = False


def scored_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs that are scored: those with ``requires_grad=True``."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device) if device.type != "cpu" else torch.Generator()
    return gen.manual_seed(int(seed))


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if "input_ids" not in batch or "labels" not in batch:
        raise ValueError(f"scoring batches need input_ids and labels, got keys {sorted(batch)}")
    return {k: batch[k].to(device) for k in (*_MODEL_INPUTS, "labels") if batch.get(k) is not None}


def _logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in _MODEL_INPUTS if k in batch}
    return model(**inputs, use_cache=False).logits


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Scores are taken of the deterministic loss (no dropout); the training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _hf_model(model: nn.Module) -> nn.Module | None:
    """The first Hugging Face ``PreTrainedModel`` inside ``model`` (itself, or under a PEFT / DDP wrapper)."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


@contextlib.contextmanager
def double_backward_attention(model: nn.Module) -> Iterator[None]:
    """Make attention twice differentiable for the duration of the block.

    The fused CPU SDPA kernel (``_scaled_dot_product_flash_attention_for_cpu``) has no double backward. A Hugging
    Face model is switched to ``eager`` attention (``set_attn_implementation``) and switched back to its previous
    implementation on exit; any remaining SDPA call is pinned to the (twice differentiable) math backend.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    hf = _hf_model(model)
    previous = getattr(getattr(hf, "config", None), "_attn_implementation", None) if hf is not None else None
    switched = False
    if hf is not None and isinstance(previous, str) and previous != "eager":
        hf.set_attn_implementation("eager")
        switched = hf.config._attn_implementation == "eager"
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        if switched:
            hf.set_attn_implementation(previous)


def _rademacher(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, p.shape, generator=gen, device=p.device, dtype=p.dtype).mul_(2).sub_(1)


def _hutchinson_accumulate(
    grads: Sequence[torch.Tensor | None],
    params: Sequence[torch.Tensor],
    probes: int,
    gen: torch.Generator,
    out: Sequence[torch.Tensor],
) -> None:
    """``out_i += mean_k z_k,i ⊙ (H z_k)_i`` given ``grads = ∇loss`` built with ``create_graph=True``."""
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:  # the loss is at most linear in the parameters: H = 0
        return
    for k in range(probes):
        zs = [_rademacher(params[i], gen) for i in live]
        gz = sum((grads[i] * z).sum() for i, z in zip(live, zs))
        hzs = torch.autograd.grad(gz, [params[i] for i in live], retain_graph=k < probes - 1, allow_unused=True)
        for i, z, hz in zip(live, zs, hzs):
            if hz is not None:
                out[i].add_((z * hz).float(), alpha=1.0 / probes)


def hutchinson_diagonal(
    loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], probes: int = 8, seed: int = 0
) -> list[torch.Tensor]:
    """Hutchinson estimate of the Hessian diagonal of a scalar ``loss_fn()`` w.r.t. ``params``:

    ``diag(H) ≈ (1/K) Σ_k z_k ⊙ (H z_k)``, ``z_k`` Rademacher, ``H z = ∇_θ (∇_θ L · z)`` (double backward).
    Unbiased: ``E[z_i (Hz)_i] = H_ii`` with variance ``Σ_{j≠i} H_ij² / K``. Returns float32 tensors shaped like
    ``params`` (on their device).
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    params = list(params)
    gen = _generator(params[0].device, seed)
    out = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    _hutchinson_accumulate(grads, params, probes, gen, out)
    return out


def _sample_labels(logits: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Labels with every answer position (``labels != -100``) replaced by ``ŷ ~ softmax(logits)`` of the position
    that predicts it (HF alignment: logits at ``t`` predict label ``t+1``)."""
    with torch.no_grad():
        answer = labels[:, 1:] != IGNORE_INDEX
        sampled = labels.clone()
        if answer.any():
            probs = torch.softmax(logits[:, :-1].detach().float()[answer], dim=-1)
            sampled[:, 1:][answer] = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return sampled


def _accumulate_scores(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], kind: str, probes: int, seed: int
) -> ParameterScores:
    named = scored_parameters(model)
    if not named:
        raise ValueError("the model has no parameter with requires_grad=True to score")
    names = [n for n, _ in named]
    params = [p for _, p in named]
    device = _device(model)
    gen = _generator(device, seed)
    acc = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    n = 0
    attention = double_backward_attention(model) if kind == "hutchinson" else contextlib.nullcontext()
    with _eval_mode(model), attention:
        _sync(device)
        start = time.perf_counter()
        for raw in batches:
            batch = _to_device(raw, device)
            logits = _logits(model, batch)
            labels = batch["labels"]
            if kind == "ggn":
                labels = _sample_labels(logits, labels, gen)
            loss = nll_loss(logits, labels)
            if kind == "hutchinson":
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                _hutchinson_accumulate(grads, params, probes, gen, acc)
            else:
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, g in zip(acc, grads):
                    if g is None:
                        continue
                    g = g.float()
                    if kind == "grad_abs":
                        a.add_(g.abs_())
                    else:
                        a.addcmul_(g, g)
            del grads, loss, logits
            n += 1
        _sync(device)
        seconds = time.perf_counter() - start
    if n == 0:
        raise ValueError("no scoring batches")
    scores = ParameterScores((name, a.detach().cpu()) for name, a in zip(names, acc))
    scores.estimator, scores.seconds, scores.microbatches = kind, seconds, n
    scores.probes = probes if kind == "hutchinson" else 1
    logger.info("%s scores of %d tensors over %d microbatches in %.2fs", kind, len(scores), n, seconds)
    return scores


def score_parameters(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    estimator: str = "fisher",
    probes: int = 8,
    seed: int = 0,
) -> ParameterScores:
    r"""Diagonal-Hessian score of every parameter with ``requires_grad=True`` at the current weights.

    With ``ℓ_b = nll_loss(logits_b, labels_b)`` the mean answer-token NLL of microbatch ``b``:

    * ``fisher``: ``s = Σ_b (∇_θ ℓ_b)²``;
    * ``ggn``: ``s = Σ_b (∇_θ ℓ_b(ŷ_b))²``, ``ŷ_b ~ p_θ(· | x_b)`` on the answer positions (Gauss–Newton, ≥ 0);
    * ``hutchinson``: ``s = Σ_b (1/K) Σ_k z_k ⊙ (∇²_θ ℓ_b · z_k)``, ``z_k ∈ {±1}`` Rademacher, ``K = probes``.

    ``fisher`` and ``ggn`` cost one forward+backward per microbatch, ``hutchinson`` one forward, one backward with
    ``create_graph`` and ``K`` double backwards (attention is switched to ``eager`` meanwhile, see
    :func:`double_backward_attention`). The model is scored in eval mode and its ``.grad`` are not touched.

    Returns:
        :class:`ParameterScores`: a ``dict`` name → CPU float32 tensor of the parameter's shape, with the scoring
        wall time in ``.seconds`` (compare with :func:`forward_backward_seconds`).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "hutchinson" and probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    return _accumulate_scores(model, batches, estimator, probes, seed)


def gradient_magnitudes(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> ParameterScores:
    """Accumulated absolute gradient ``s = Σ_b |∇_θ ℓ_b|`` of the answer-token NLL (saliency for retention masks)."""
    return _accumulate_scores(model, batches, "grad_abs", 1, 0)


def forward_backward_seconds(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], warmup: bool = True
) -> float:
    """Seconds of one plain pass ``Σ_b [forward, ∇_θ ℓ_b]`` over ``batches`` (same loss and parameters as
    :func:`score_parameters`, eval mode, ``.grad`` untouched): the unit in which scoring cost is reported,
    ``cost = scores.seconds / forward_backward_seconds(model, batches)``. ``warmup`` runs the first microbatch once,
    untimed, so that one-off allocation does not count."""
    batches = list(batches)
    if not batches:
        raise ValueError("no batches")
    params = [p for _, p in scored_parameters(model)]
    device = _device(model)

    def step(raw: Mapping[str, torch.Tensor]) -> None:
        batch = _to_device(raw, device)
        torch.autograd.grad(nll_loss(_logits(model, batch), batch["labels"]), params, allow_unused=True)

    with _eval_mode(model):
        if warmup:
            step(batches[0])
        _sync(device)
        start = time.perf_counter()
        for raw in batches:
            step(raw)
        _sync(device)
        return time.perf_counter() - start


def random_scores(model: nn.Module, seed: int) -> ParameterScores:
    """Uniform random scores for every trainable entry (a seeded local generator): ``select_masks`` on them picks
    the same number of entries as Hessian selection, at random. The control that Hessian selection must beat."""
    gen = torch.Generator().manual_seed(int(seed))
    scores = ParameterScores({n: torch.rand(tuple(p.shape), generator=gen) for n, p in scored_parameters(model)})
    scores.estimator = "random"
    return scores


def cache_key(key_parts: Mapping[str, object], estimator: str, probes: int, seed: int) -> str:
    """``sha256(json({**key_parts, estimator, probes, seed}))[:16]`` (keys sorted, non-JSON values via ``str``)."""
    payload = {**key_parts, "estimator": estimator, "probes": int(probes), "seed": int(seed)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_path(
    cache_dir: str | os.PathLike, key_parts: Mapping[str, object], estimator: str, probes: int = 8, seed: int = 0
) -> Path:
    """The cache file of :func:`score_parameters_cached`: ``hessian_<key>.pt`` (``saliency_<key>.pt`` for
    ``grad_abs``)."""
    prefix = "saliency" if estimator == "grad_abs" else "hessian"
    return Path(cache_dir) / f"{prefix}_{cache_key(key_parts, estimator, probes, seed)}.pt"


def score_parameters_cached(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    estimator: str,
    *,
    cache_dir: str | os.PathLike,
    key_parts: Mapping[str, object],
    probes: int = 8,
    seed: int = 0,
) -> ParameterScores:
    """:func:`score_parameters` (or, for ``estimator="grad_abs"``, :func:`gradient_magnitudes`) memoised on disk at
    ``cache_dir/hessian_<cache_key>.pt`` (``torch.save`` of the
    dict of CPU float32 tensors), ``cache_key = sha256(json(key_parts + estimator + probes + seed))[:16]``.

    The key is all that is checked: the caller must put in ``key_parts`` whatever determines the scores (model path
    and a fingerprint of its weights, a fingerprint of the scoring data, the number of samples). A cached file whose
    names or shapes no longer fit the model's trainable parameters is recomputed and overwritten.
    """
    if estimator not in (*ESTIMATORS, "grad_abs"):
        raise ValueError(f"estimator must be one of {ESTIMATORS} (or grad_abs), got {estimator!r}")
    path = cache_path(cache_dir, key_parts, estimator, probes, seed)
    if path.exists():
        start = time.perf_counter()
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: recompute (and overwrite it atomically)
            logger.warning("Hessian cache %s is corrupt (%s): recomputing it", path, type(e).__name__)
            loaded = {}
        expected = {n: tuple(p.shape) for n, p in scored_parameters(model)}
        if loaded and {n: tuple(t.shape) for n, t in loaded.items()} == expected:
            scores = ParameterScores(loaded)
            scores.estimator, scores.from_cache = estimator, True
            scores.probes = probes if estimator == "hutchinson" else 1
            scores.seconds = time.perf_counter() - start
            logger.info("Hessian scores loaded from %s", path)
            return scores
        elif loaded:
            logger.warning("Hessian cache %s does not fit the model's trainable parameters: recomputing", path)
    if estimator == "grad_abs":
        scores = gradient_magnitudes(model, batches)
    else:
        scores = score_parameters(model, batches, estimator, probes=probes, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(dict(scores), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("Hessian scores saved to %s", path)
    return scores
