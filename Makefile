# flare-vnet: two commands set up and test a fresh machine (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= demo

.PHONY: setup test test-browser test-widgets7 lint format notebooks demo bench clean

setup: $(BIN)/flare-synth

$(BIN)/flare-synth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --user --name flare-vnet --display-name "Python (flare-vnet)"
	@touch $@

test: lint
	$(BIN)/python -m pytest -q

# Notebook 05 in JupyterLab and Notebook 7 in headless Chromium (not part of `make test`).
# Needs Debian's chromium (/usr/bin/chromium) and playwright, jupyterlab and notebook.
# Screenshots: runs/browser/.
test-browser:
	$(BIN)/python -m pytest -q -p no:cacheprovider tests_browser

# The viewer's widget tests under ipywidgets 7.7.1 (Colab's pin); the venv keeps 8.x.
WIDGETS7 := runs/ipywidgets-7.7.1
test-widgets7:
	$(BIN)/python -m pip install --quiet --no-deps --target $(WIDGETS7) ipywidgets==7.7.1 ipython_genutils==0.2.0
	PYTHONPATH=$(WIDGETS7):$(CURDIR) $(BIN)/python -c "import ipywidgets; assert ipywidgets.__version__ == '7.7.1', ipywidgets.__file__"
	PYTHONPATH=$(WIDGETS7):$(CURDIR) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_viz.py -k viewer

lint:
	$(BIN)/ruff check flare_helpers tests tests_browser bench notebooks
	$(BIN)/ruff format --check flare_helpers tests tests_browser bench notebooks

format:
	$(BIN)/ruff check --fix flare_helpers tests tests_browser bench notebooks
	$(BIN)/ruff format flare_helpers tests tests_browser bench notebooks

# Regenerate every .ipynb from its reviewed jupytext source (no outputs). The .py sources
# carry no metadata; the kernel is set here, and no pairing is written (notebooks/jupytext.toml).
KERNELSPEC := {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "jupytext": null}
notebooks:
	$(BIN)/jupytext --update --to ipynb --update-metadata '$(KERNELSPEC)' notebooks/[0-9][0-9]_*.py

demo:
	$(BIN)/flare-series --profile $(PROFILE)

bench:
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
