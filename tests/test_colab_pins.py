"""Colab's pins (colab/pins.py): the constraints file and the checks ``make test-colab`` runs.

The slow half, a real install into a Python 3.13 venv with Colab's versions, is
``make test-colab``; these tests check the same rules on the files alone.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("colab_pins", ROOT / "colab" / "pins.py")
pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins)

FREEZE = """\
# Do not modify this file directly
absl-py==1.4.0
google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz
jupyter_kernel_gateway @ git+https://github.com/googlecolab/kernel_gateway@b134e99
PyYAML==6.0.3
torch==2.11.0+cu128

-e git+https://example.org/x.git#egg=x
"""


def test_constraints_keep_pins_drop_direct_references_and_local_labels():
    kept, skipped = pins.constraint_lines(FREEZE)
    assert kept == ["absl-py==1.4.0", "PyYAML==6.0.3", "torch==2.11.0"]
    assert [s.split(" ", 1)[0] for s in skipped] == [
        "google-colab",
        "jupyter_kernel_gateway",
        "-e",
    ]


def test_committed_constraints_are_generated_from_the_committed_freeze():
    committed = (ROOT / "colab" / "constraints-gpu.txt").read_text()
    commit, date = re.search(r"at commit (\w+) \((\d{4}-\d\d-\d\d)\)", committed).groups()
    freeze = (ROOT / "colab" / "pip-freeze.gpu.txt").read_text()
    assert committed == pins.render_constraints(freeze, commit, date), (
        "run `make colab-constraints COLAB_COMMIT=… COLAB_DATE=…`"
    )
    colab = pins.read_pins()
    assert colab["ipywidgets"] == "7.7.1" and colab["jupyter-client"] == "7.4.9"
    assert colab["pyyaml"] == "6.0.3" and colab["torch"] == "2.11.0"
    assert len(colab) == 697  # 703 packages in the freeze, 6 of them direct references


def test_every_base_dependency_admits_colabs_version():
    """What Colab has satisfies the bounds, so installing the project leaves it alone."""
    colab = pins.read_pins()
    base = [Requirement(r) for r in pins.project()["dependencies"]]
    present = {pins.canonical(r.name): r.specifier for r in base if pins.canonical(r.name) in colab}
    assert {n: s.contains(colab[n]) for n, s in present.items()} == dict.fromkeys(present, True)
    # Colab lacks exactly these two, so the install cell adds them (and the project)
    assert sorted(
        pins.canonical(r.name) for r in base if pins.canonical(r.name) not in present
    ) == [
        "isal",
        "surface-distance",
    ]


def test_batch_and_kernel_packages_stay_out_of_the_base_install():
    base = set(pins.base_requirements())
    assert not base & {"ipykernel", "papermill", "jupytext", "nbformat", "tensorflow"}


def test_report_lists_each_change_to_a_colab_package():
    report = {
        "install": [
            {"metadata": {"name": "isal", "version": "1.9.1"}},
            {"metadata": {"name": "jupyter_client", "version": "8.10.0"}},
            {"metadata": {"name": "ipywidgets", "version": "8.1.9"}},
        ]
    }
    changes, additions = pins.report_changes(report, pins.read_pins())
    assert changes == [
        "jupyter_client: Colab has 7.4.9, pip would install 8.10.0",
        "ipywidgets: Colab has 7.7.1, pip would install 8.1.9",
    ]
    assert additions == ["isal 1.9.1"]
