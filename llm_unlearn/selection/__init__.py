"""Hessian-selected parameter unlearning (Malekmohammadi et al., arXiv 2504.06398).

Update only the entries of the weights with the largest diagonal of the loss Hessian at the learned parameters;
a selection layer that composes with any unlearning method::

    scores = score_parameters(model, batches, estimator="fisher")   # s ≈ diag ∇²_θ Σ_b ℓ_b
    selection = ParameterSelection(select_masks(scores, ratio=0.05))  # M = top-5% of s per tensor
    trainer = Trainer(...); selection.attach(trainer.model); trainer.add_callback(selection.callback())

``retention_masks`` is the opposite selection by retain-gradient magnitude (train the least retain-salient
entries), ``top_modules`` ranks Linear modules for LoRA targets.
"""

from .masks import (
    DEFAULT_EXCLUDE,
    ParameterSelection,
    is_excluded,
    match_parameter_names,
    retention_masks,
    select_masks,
    selected_count,
    top_modules,
)
from .scoring import (
    ESTIMATORS,
    ParameterScores,
    cache_key,
    double_backward_attention,
    forward_backward_seconds,
    gradient_magnitudes,
    hutchinson_diagonal,
    random_scores,
    score_parameters,
    score_parameters_cached,
)

__all__ = [
    "DEFAULT_EXCLUDE",
    "ESTIMATORS",
    "ParameterScores",
    "ParameterSelection",
    "cache_key",
    "double_backward_attention",
    "forward_backward_seconds",
    "gradient_magnitudes",
    "hutchinson_diagonal",
    "is_excluded",
    "match_parameter_names",
    "random_scores",
    "retention_masks",
    "score_parameters",
    "score_parameters_cached",
    "select_masks",
    "selected_count",
    "top_modules",
]
