"""llm_unlearn: unlearning for causal language models, evaluated against a retrained reference."""

__version__ = "0.1.0"
