"""Unlearn a forget split from a causal LM.

    accelerate launch unlearn.py --config configs/embedded_regularized_ft.yaml [--flag value ...]
    python unlearn.py --method npo --model_name_or_path runs/embedded/target --data runs/embedded/data \
        --output_dir runs/npo

`--help` (optionally with `--method NAME`) lists every argument of that method.
"""

import sys

from llm_unlearn.unlearn import main

if __name__ == "__main__":
    sys.exit(main())
