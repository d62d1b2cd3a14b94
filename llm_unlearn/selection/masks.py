"""Selection of the trained entries from scores, and the masked update that trains only them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

import torch
from torch import nn

from .scoring import gradient_magnitudes

DEFAULT_EXCLUDE: tuple[str, ...] = ("embed", "lm_head", "norm")
GRANULARITIES = ("per_module", "global")


def _fragments(exclude: str | Iterable[str] | None) -> tuple[str, ...]:
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        exclude = exclude.split(",")
    return tuple(f.strip() for f in exclude if f.strip())


def is_excluded(name: str, exclude: str | Iterable[str] | None = DEFAULT_EXCLUDE) -> bool:
    """Whether ``name`` contains any of the ``exclude`` fragments (a sequence, or a comma-separated string)."""
    return any(f in name for f in _fragments(exclude))


def selected_count(ratio: float, numel: int) -> int:
    """``k = clamp(⌈ratio · numel⌉, 1, numel)``, with ``ratio`` read as the decimal it was written as
    (``0.05 · 100 = 5``, not ``⌈5.000000000000001⌉ = 6``)."""
    return max(1, min(numel, math.ceil(Fraction(repr(float(ratio))) * numel)))


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")


def _flat(score: torch.Tensor) -> torch.Tensor:
    # NaN would rank first in topk: rank it last.
    return torch.nan_to_num(score.detach().reshape(-1).float().cpu(), nan=-math.inf)


def select_masks(
    scores: Mapping[str, torch.Tensor],
    ratio: float = 0.05,
    granularity: str = "per_module",
    exclude: str | Iterable[str] | None = DEFAULT_EXCLUDE,
) -> dict[str, torch.Tensor]:
    """Boolean masks of the entries with the largest scores: ``M = 1[s ∈ top_k(s)]``.

    * ``per_module``: within every tensor ``θ_m``, the ``k_m = ⌈ratio · |θ_m|⌉`` (≥ 1) largest entries of ``s_m``;
    * ``global``: the ``k = ⌈ratio · Σ_m |θ_m|⌉`` largest entries of all non-excluded scores together.

    Exactly ``k`` entries are chosen (``torch.topk`` on the flattened scores breaks ties). Tensors whose name
    contains a fragment of ``exclude`` get an all-False mask. Masks are CPU bool tensors of the scores' shapes.
    """
    _check_ratio(ratio)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    masks = {name: torch.zeros(s.shape, dtype=torch.bool) for name, s in scores.items()}
    eligible = [name for name in scores if not is_excluded(name, exclude) and scores[name].numel() > 0]
    if not eligible:
        return masks
    if granularity == "per_module":
        for name in eligible:
            flat = _flat(scores[name])
            idx = torch.topk(flat, selected_count(ratio, flat.numel()), sorted=False).indices
            masks[name].view(-1)[idx] = True
        return masks
    flats = [_flat(scores[name]) for name in eligible]
    cat = torch.cat(flats)
    idx = torch.topk(cat, selected_count(ratio, cat.numel()), sorted=False).indices
    chosen = torch.zeros(cat.numel(), dtype=torch.bool)
    chosen[idx] = True
    for name, part in zip(eligible, chosen.split([f.numel() for f in flats])):
        masks[name] = part.view(scores[name].shape).clone()
    return masks


def retention_masks(
    model: nn.Module | None,
    retain_batches: Iterable[Mapping[str, torch.Tensor]] | None,
    ratio: float,
    exclude: str | Iterable[str] | None = DEFAULT_EXCLUDE,
    granularity: str = "per_module",
    saliency: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Retention-based masking: train only the entries that matter least to the retain data.

    Saliency ``r = Σ_b |∇_θ ℓ_b(retain)|`` at the current weights; the mask selects the ``ratio`` fraction of
    entries with the *smallest* ``r`` per tensor (``per_module``) or overall (``global``), i.e.
    ``M = 1[−r ∈ top_k(−r)]``; the top ``1 − ratio`` by retain saliency are protected. Excluded names: all False.
    ``saliency``: ``r`` computed already (a cached :func:`gradient_magnitudes`); ``model`` and ``retain_batches``
    are then not used.
    """
    if saliency is None:
        saliency = gradient_magnitudes(model, retain_batches)
    return select_masks({n: -s for n, s in saliency.items()}, ratio, granularity, exclude)


def top_modules(
    scores: Mapping[str, torch.Tensor],
    k: int,
    exclude: str | Iterable[str] | None = DEFAULT_EXCLUDE,
    model: nn.Module | None = None,
) -> list[str]:
    """The ``k`` modules with the largest mean score ``mean(s_m)`` over their 2-D ``.weight`` (Linear weights),
    highest first, excluding names with a fragment of ``exclude``. Names are module names (the parameter name
    without ``.weight``), usable as PEFT ``target_modules`` (PEFT matches a module whose name equals an entry or
    ends with ``.`` + entry). With ``model``, only ``nn.Linear`` modules of ``model`` are candidates.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    linear = None
    if model is not None:
        linear = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    ranked = []
    for name, s in scores.items():
        if s.dim() != 2 or not name.endswith(".weight") or is_excluded(name, exclude):
            continue
        module = name[: -len(".weight")]
        if linear is not None and module not in linear:
            continue
        ranked.append((float(s.float().mean()), module))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [module for _, module in ranked[:k]]


def _canonical(name: str) -> str:
    """Drop the components that wrappers insert inside a name (PEFT's ``base_layer``)."""
    return ".".join(part for part in name.split(".") if part != "base_layer")


def match_parameter_names(names: Iterable[str], model: nn.Module) -> dict[str, str]:
    """Map mask names onto ``model.named_parameters()`` names.

    An exact name wins; otherwise the names match when one is a dotted suffix of the other, after dropping PEFT's
    ``base_layer`` component: masks computed on a bare model fit the same model under a DDP (``module.``) or PEFT
    (``base_model.model.``) wrapper, and vice versa. Raises ``ValueError`` if a name matches no parameter, matches
    several, or two names match the same parameter.
    """
    model_names = [n for n, _ in model.named_parameters()]
    exact = set(model_names)
    canonical = [(_canonical(n), n) for n in model_names]
    mapping: dict[str, str] = {}
    for name in names:
        if name in exact:
            mapping[name] = name
            continue
        c = _canonical(name)
        hits = [n for cn, n in canonical if cn == c or cn.endswith("." + c) or c.endswith("." + cn)]
        if not hits:
            raise ValueError(
                f"mask name {name!r} matches no parameter of {type(model).__name__} "
                f"(e.g. {', '.join(model_names[:3])}, ...)"
            )
        if len(hits) > 1:
            raise ValueError(f"mask name {name!r} is ambiguous: it matches {hits}")
        mapping[name] = hits[0]
    targets = list(mapping.values())
    if len(set(targets)) != len(targets):
        dup = sorted({t for t in targets if targets.count(t) > 1})
        raise ValueError(f"several mask names match the same parameters: {dup}")
    return mapping


class ParameterSelection:
    """Train only the selected entries: ``θ ← M ⊙ θ' + (1 − M) ⊙ θ₀`` after every optimizer step.

    ``attach`` masks the gradients (``∇ ← M ⊙ ∇``, so clipping and the optimizer see masked gradients), freezes
    tensors with no selected entry, and keeps ``θ₀``; ``restore`` (run by :meth:`callback` after each optimizer
    step) writes ``θ₀`` back into the unselected entries, so weight decay and optimizer state cannot move them:
    they stay bit-identical.

    Args:
        masks: ``{parameter name: bool tensor of its shape}``; True = trained. Parameters of the model without a
            mask are left alone.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks: dict[str, torch.Tensor] = {n: m.detach().to(torch.bool).cpu() for n, m in masks.items()}
        self._params: dict[str, nn.Parameter] = {}
        self._device_masks: dict[str, torch.Tensor] = {}
        self._originals: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._frozen: list[str] = []

    @property
    def attached(self) -> bool:
        return bool(self._params)

    def attach(self, model: nn.Module) -> ParameterSelection:
        """Register the gradient masks on ``model``'s parameters and keep their current values (see class doc)."""
        if self.attached:
            self.detach()
        mapping = match_parameter_names(self.masks, model)
        params = dict(model.named_parameters())
        for name, target in mapping.items():
            p, mask = params[target], self.masks[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, parameter {target!r} {tuple(p.shape)}")
            mask = mask.to(p.device)
            self._params[name] = p
            self._device_masks[name] = mask
            self._originals[name] = p.detach().clone()
            if not bool(mask.any()):
                if p.requires_grad:
                    p.requires_grad_(False)
                    self._frozen.append(name)
                continue
            if p.requires_grad:
                self._handles.append(p.register_hook(_GradMask(mask.to(p.dtype))))
        return self

    def detach(self) -> None:
        """Remove the gradient hooks, unfreeze what ``attach`` froze and drop the kept values."""
        for h in self._handles:
            h.remove()
        for name in self._frozen:
            self._params[name].requires_grad_(True)
        self._handles, self._frozen = [], []
        self._params, self._device_masks, self._originals = {}, {}, {}

    @torch.no_grad()
    def restore(self) -> None:
        """``θ ← where(M, θ, θ₀)``: put the kept values back into the unselected entries."""
        for name, p in self._params.items():
            mask, original = self._device_masks[name], self._originals[name]
            p.data.copy_(torch.where(mask, p.data, original))

    def callback(self):
        """A ``transformers.TrainerCallback`` that calls :meth:`restore` in ``on_optimizer_step`` (right after
        ``optimizer.step()`` in ``Trainer``)."""
        from transformers import TrainerCallback

        selection = self

        class ParameterSelectionCallback(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kwargs):
                selection.restore()

        return ParameterSelectionCallback()

    @property
    def selected_fraction(self) -> float:
        """Selected entries / entries of all masked parameters: ``Σ_m |M_m|₁ / Σ_m |θ_m|``."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int(m.sum()) for m in self.masks.values()) / total if total else 0.0

    def summary(self) -> dict:
        """``{"selected", "total", "selected_fraction", "modules": {name: {"selected", "numel"}}}``."""
        modules = {n: {"selected": int(m.sum()), "numel": m.numel()} for n, m in self.masks.items()}
        return {
            "selected": sum(v["selected"] for v in modules.values()),
            "total": sum(v["numel"] for v in modules.values()),
            "selected_fraction": self.selected_fraction,
            "modules": modules,
        }


class _GradMask:
    """Gradient hook ``g ↦ M ⊙ g`` (a class rather than a lambda so that the mask is not captured by a loop)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.mask.to(grad.dtype)
