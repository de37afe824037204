# flare-vnet: two commands set up and test a fresh machine (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= demo

.PHONY: setup test lint format notebooks demo bench clean

setup: $(BIN)/flare-synth

$(BIN)/flare-synth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --user --name flare-vnet --display-name "Python (flare-vnet)"
	@touch $@

# Two pytest-xdist workers: much of the suite is single-threaded Python and process starts
# (tests/conftest.py keeps the tests of the one notebook-series run on one worker).
test: lint
	$(BIN)/python -m pytest -q -n 2

lint:
	$(BIN)/ruff check flare_helpers tests bench notebooks
	$(BIN)/ruff format --check flare_helpers tests bench notebooks

format:
	$(BIN)/ruff check --fix flare_helpers tests bench notebooks
	$(BIN)/ruff format flare_helpers tests bench notebooks

# Regenerate every paired .ipynb from its reviewed jupytext source (no outputs).
notebooks:
	$(BIN)/jupytext --update --to ipynb --update-metadata '{"jupytext": null}' notebooks/[0-9][0-9]_*.py

demo:
	$(BIN)/flare-series --profile $(PROFILE)

bench:
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
