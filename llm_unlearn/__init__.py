"""llm_unlearn: unlearning for causal language models, evaluated against a retrained reference."""

__version__ = "0.1.0"

# The method `unlearn.py` and `llm-unlearn demo` run when none is named (here, not in llm_unlearn.trainers, so that
# the command line can show it without importing the trainers and the Trainer behind them).
DEFAULT_METHOD = "regularized_ft"
