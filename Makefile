# flare-vnet: `make setup` and `make test` set up and test a fresh machine (see README.md);
# `make test-colab` checks the install against Colab's runtime.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= demo
# The Colab-runtime check: a Python 3.13 venv with Colab's published package versions.
COLAB_PYTHON ?= $(firstword $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null) \
	$(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13))
COLAB_VENV   ?= .venv-colab
COLAB_BIN    := $(COLAB_VENV)/bin
COLAB_PINS   := colab/constraints-gpu.txt
COLAB_WHEELS ?= $(HOME)/.cache/flare-vnet/colab-wheels
COLAB_PIP    := $(COLAB_BIN)/python -m pip
COLAB_OFFLINE := --no-index --find-links $(COLAB_WHEELS) --constraint $(COLAB_PINS)

.PHONY: setup test test-slow-cpu test-colab test-browser browser-deps test-widgets7 colab-constraints lint format notebooks demo docs bench clean

setup: $(BIN)/flare-synth

$(BIN)/flare-synth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,lab,browser]"
	$(BIN)/python -m ipykernel install --user --name flare-vnet --display-name "Python (flare-vnet)"
	@touch $@

# Two pytest-xdist workers: much of the suite is single-threaded Python and process starts
# (tests/conftest.py keeps the tests of the one notebook-series run on one worker).
test: lint
	$(BIN)/python -m pytest -q -n 2

# The suite as a slow 2-core CPU runs it (Linux): TensorFlow without oneDNN on one core reads
# about 700 ms a reference step, as such a machine does with both. An upper bound: the two
# pytest workers share that core, so Python runs at half the speed it would there.
test-slow-cpu:
	TF_ENABLE_ONEDNN_OPTS=0 taskset -c 0 $(BIN)/python bench/reference_step.py
	TF_ENABLE_ONEDNN_OPTS=0 PYTEST_ADDOPTS=--durations=10 taskset -c 0 $(MAKE) test

# Installs into a Colab-like Python 3.13 venv: (a) the base install, as the notebooks'
# first cell runs it in Colab, must change none of Colab's packages; (b) with the
# `series` extra (constrained to Colab's versions) the CI series runs there, and the
# slice viewer's widget tests run on Colab's ipywidgets.
test-colab: $(COLAB_VENV)/.colab-pins
	$(COLAB_BIN)/python colab/pins.py prune
	$(COLAB_PIP) install --quiet --dry-run --report $(COLAB_VENV)/report.json .
	$(COLAB_BIN)/python colab/pins.py check-report $(COLAB_VENV)/report.json
	$(COLAB_PIP) install --quiet $(COLAB_OFFLINE) -e ".[series]" pytest
	$(COLAB_BIN)/python colab/pins.py versions
	$(COLAB_BIN)/python -m pytest -q -p no:cacheprovider tests/test_runner.py tests/test_viz.py \
		-k "executed_notebooks or model_metrics or viewer"

# Colab's versions come from a wheel folder outside the clone, so a fresh clone or
# venv installs offline; `pip download` fetches only the wheels not there yet.
$(COLAB_VENV)/.colab-pins: $(COLAB_PINS) pyproject.toml colab/pins.py
	@test -n "$(COLAB_PYTHON)" || { echo "make test-colab needs python3.13 (or set COLAB_PYTHON)"; exit 1; }
	$(COLAB_PYTHON) -m venv --clear $(COLAB_VENV)
	$(COLAB_PIP) download --quiet --dest $(COLAB_WHEELS) --constraint $(COLAB_PINS) \
		$$($(COLAB_BIN)/python colab/pins.py runtime-packages) ".[series]" pytest
	$(COLAB_PIP) download --quiet --dest $(COLAB_WHEELS) "setuptools>=77" wheel
	$(COLAB_PIP) install --quiet $(COLAB_OFFLINE) $$($(COLAB_BIN)/python colab/pins.py runtime-packages)
	@touch $@

# After dropping a new pip-freeze.gpu.txt from googlecolab/backend-info into colab/.
colab-constraints:
	@test -n "$(COLAB_COMMIT)" -a -n "$(COLAB_DATE)" || \
		{ echo "usage: make colab-constraints COLAB_COMMIT=<sha> COLAB_DATE=<yyyy-mm-dd>"; exit 1; }
	$(BIN)/python colab/pins.py constraints colab/pip-freeze.gpu.txt \
		--commit $(COLAB_COMMIT) --date $(COLAB_DATE) > $(COLAB_PINS)

# Notebook 05 in JupyterLab and Notebook 7 in headless Chromium (not part of `make test`).
# Needs Debian's chromium (/usr/bin/chromium) and playwright, jupyterlab and notebook.
# Screenshots: runs/browser/.
test-browser: browser-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests_browser

# Debian's Chromium (playwright drives it; it cannot download its own browser here).
browser-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "make test-browser needs Debian's chromium: apt-get install chromium"; exit 1; }

# The viewer's widget tests under ipywidgets 7.7.1 (Colab's pin); the venv keeps 8.x.
WIDGETS7 := runs/ipywidgets-7.7.1
test-widgets7:
	$(BIN)/python -m pip install --quiet --no-deps --target $(WIDGETS7) ipywidgets==7.7.1 ipython_genutils==0.2.0
	PYTHONPATH=$(WIDGETS7):$(CURDIR) $(BIN)/python -c "import ipywidgets; assert ipywidgets.__version__ == '7.7.1', ipywidgets.__file__"
	PYTHONPATH=$(WIDGETS7):$(CURDIR) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_viz.py -k viewer

lint:
	$(BIN)/lint-imports
	$(BIN)/ruff check flare_helpers tests tests_browser bench notebooks colab
	$(BIN)/ruff format --check flare_helpers tests tests_browser bench notebooks colab

format:
	$(BIN)/ruff check --fix flare_helpers tests tests_browser bench notebooks colab
	$(BIN)/ruff format flare_helpers tests tests_browser bench notebooks colab

# Regenerate every .ipynb from its reviewed jupytext source (no outputs). The .py sources
# carry no metadata; the kernel is set here, and no pairing is written (notebooks/jupytext.toml).
KERNELSPEC := {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "jupytext": null}
notebooks:
	$(BIN)/jupytext --update --to ipynb --update-metadata '$(KERNELSPEC)' notebooks/[0-9][0-9]_*.py

demo:
	$(BIN)/flare-series --profile $(PROFILE)

# The notebooks as the demo profile executes them, each in a fresh runtime as Colab's badges
# open them, outputs kept and pictures compressed (<= 10 MB in all), in docs/notebooks/ for
# readers on GitHub (about 15 CPU minutes), each opened by a cell that says its profile,
# machine, date and wall time: paths relative to this folder, no TensorFlow log lines,
# progress bars as they ended. Rerun it after changing a notebook: a test compares their
# code cells with notebooks/*.py.
docs:
	rm -rf runs/demo  # a run from scratch: a finished demo run would only report "already trained"
	$(BIN)/flare-series --profile demo --fresh-runtimes
	$(BIN)/python -m flare_helpers.series.docs runs/demo/notebooks docs/notebooks

bench:
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
