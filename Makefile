# mltrain: `make demo` and `make test` are all a fresh machine needs (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 is what CI and the CPU machines use; on a GPU machine
# `make install TORCH_SPEC=torch` (or any CUDA build) works the same.
TORCH_SPEC ?= torch==2.13.0
# The other packages at the versions the suite last passed with (constraints.txt); with another
# torch build whose own requirements differ, `make install PIP_CONSTRAINTS=` installs the newest.
PIP_CONSTRAINTS ?= -c constraints.txt
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` / `make test-all` (the suite is CPU-bound: one per core;
# e.g. `make test TEST_WORKERS=8` on a larger machine, `TEST_WORKERS=0` for one process)
TEST_WORKERS ?= 2

.PHONY: help install install-extras demo test test-all test-extras lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install mltrain (editable) with its dev extras

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]" $(PIP_CONSTRAINTS)
	touch $(STAMP)

demo: install  ## the main job: the third edition's best scheme (growth 1 -> 2 blocks) vs the best single-level size at the same FLOPs on the embedded corpus, then mltrain-compare
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install  ## the fast test suite (W&B disabled, no network; timings: docs/operations.md)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-all: install  ## every test, the slow ones included (GPU and extras tests skip without them)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

install-extras: install  ## the optional Hydra plugins: Optuna sweeper, submitit (SLURM) launcher
	$(BIN)/python -m pip install -q -e ".[dev,optuna,slurm]"

test-extras: install-extras  ## the tests of the optional plugins
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m extras

lint: install  ## ruff, and import-linter's architecture contracts (pyproject.toml)
	$(BIN)/ruff check mltrain tests scripts
	$(BIN)/ruff format --check mltrain tests scripts
	$(BIN)/lint-imports

clean:  ## remove the virtual environment, build artefacts and caches (not outputs/)
	rm -rf $(VENV) build dist *.egg-info .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
