"""The paired .ipynb notebooks are generated from their .py sources and carry no outputs."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
from tiny_settings import NOTEBOOK_NAMES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
#: Executed copies for readers (``make docs``); generated at release time, so checked if present.
DOCS_NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"


def _cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ())))
        for cell in notebook.cells
    ]


def test_series_has_six_numbered_notebooks():
    assert [p.stem for p in SOURCES] == NOTEBOOK_NAMES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_matches_its_py_source(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"run `make notebooks` to generate {paired.name}"
    expected = jupytext.read(source)
    actual = nbformat.read(paired, as_version=4)
    assert _cells(actual) == _cells(expected), f"{paired.name} is out of date: run `make notebooks`"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_has_no_outputs(source):
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_one_parameters_cell_of_literals(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1
    params = papermill.inspect_notebook(str(source.with_suffix(".ipynb")))
    names = []
    for line in tagged[0].source.splitlines():
        code = line.split("#", 1)[0].strip()
        if code:
            name, _, value = code.partition("=")
            assert name.strip().isidentifier() and value.strip(), line
            # literals only: evaluable without any names in scope
            eval(value.strip(), {"__builtins__": {}}, {})  # noqa: S307
            names.append(name.strip())
    # papermill must see every parameter (it silently skips lines it cannot parse)
    assert list(params) == names


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebooks_define_no_functions(source):
    """Notebooks orchestrate; flare_helpers computes (no function defined in a cell)."""
    text = source.read_text()
    assert "\ndef " not in text and "\nclass " not in text


def test_no_pairing_is_configured():
    """Saving a notebook in JupyterLab writes only that .ipynb, never a tracked .py source."""
    from jupytext.config import load_jupytext_configuration_file

    config = load_jupytext_configuration_file(str(NOTEBOOKS / "jupytext.toml"))
    assert not any(config.formats)  # "" or nothing: no paired formats
    assert config.notebook_metadata_filter == "-all"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_sources_and_notebooks_carry_no_local_metadata(source):
    assert not source.read_text().startswith("# ---")  # no kernel or pairing header
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert "jupytext" not in notebook.metadata
    assert notebook.metadata.kernelspec.name == "python3"


def _code_cells(notebook) -> list[str]:
    """Code cells' sources, without papermill's cell of injected parameters."""
    return [
        cell.source.strip()
        for cell in notebook.cells
        if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", ())
    ]


def test_docs_notebooks_run_the_current_code():
    """docs/notebooks/ (``make docs``) shows outputs of today's notebooks: same code cells.

    Compares the notebooks that are there; the next test says which must be.
    """
    for published in sorted(DOCS_NOTEBOOKS.glob("*.ipynb")):
        source = NOTEBOOKS / f"{published.stem}.py"
        assert source.exists(), f"{published.name} has no source notebook; run `make docs`"
        notebook = nbformat.read(published, as_version=4)
        assert _code_cells(notebook) == _code_cells(jupytext.read(source)), (
            f"docs/notebooks/{published.name} is out of date: run `make docs`"
        )
        outputs = [c for c in notebook.cells if c.cell_type == "code" and c.get("outputs")]
        assert outputs, f"{published.name} was not executed"


def test_docs_notebooks_are_all_there():
    """``make docs`` has published every notebook of the series (the README links them)."""
    published = sorted(p.stem for p in DOCS_NOTEBOOKS.glob("*.ipynb"))
    assert published == [p.stem for p in SOURCES], "run `make docs`"
