# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
# TORCH_INDEX picks the torch build: leave it empty on a machine whose pip already serves
# the CPU wheel (or for CUDA, PyPI's default on Linux); on a CPU-only machine use
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/mia-guard demo

test: setup
	$(BIN)/python -m pytest -m "not slow" -n 2 -q

clean:
	rm -rf $(VENV) mia_demo
