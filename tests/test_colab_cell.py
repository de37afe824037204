"""The notebooks' first cell: in Colab it installs flare-vnet once and mounts Drive; elsewhere nothing.

The cell runs here with a stand-in ``google.colab`` module and a stand-in for
pip, so what it would do in Colab is checked without Colab or a network.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))
PACKAGE = "flare-vnet @ git+https://github.com/flare-vnet/flare-vnet"


def _first_code_cell(source: Path) -> str:
    return next(c.source for c in jupytext.read(source).cells if c.cell_type == "code")


CELL = _first_code_cell(NOTEBOOKS[0])


def _report(*installs: tuple[str, str]) -> str:
    """The JSON that ``pip install --report -`` prints, reduced to what the cell reads."""
    return json.dumps({"install": [{"metadata": {"name": n, "version": v}} for n, v in installs]})


@pytest.fixture
def colab(monkeypatch) -> list[str]:
    """Pretend to be in Colab; returns the folders ``drive.mount`` was called with."""
    mounted: list[str] = []
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    return mounted


@pytest.fixture
def pip_calls(monkeypatch) -> list[list[str]]:
    """Record subprocess.run commands; answer like a pip that added three packages."""
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        out = _report(("isal", "1.9.1"), ("surface-distance", "0.1"), ("flare-vnet", "0.1.0"))
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def _hide_flare_helpers(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flare_helpers" else real(name, *a),
    )


def test_every_notebook_starts_with_the_same_cell():
    assert [_first_code_cell(p) for p in NOTEBOOKS] == [CELL] * 6


def test_outside_colab_the_cell_does_nothing(pip_calls, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    _hide_flare_helpers(monkeypatch)
    exec(CELL, {})
    assert pip_calls == [] and capsys.readouterr().out == ""


def test_in_a_new_colab_runtime_it_installs_the_project_and_prints_what_was_added(
    colab, pip_calls, capsys, monkeypatch
):
    _hide_flare_helpers(monkeypatch)
    exec(CELL, {})
    (cmd,) = pip_calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[-1] == PACKAGE
    # pip's default strategy keeps every installed package that satisfies the bounds:
    # nothing may ask it to upgrade or reinstall Colab's own packages
    assert not {"-U", "--upgrade", "--force-reinstall", "--ignore-installed"} & set(cmd)
    out = capsys.readouterr().out
    assert out == "installed: isal 1.9.1, surface-distance 0.1, flare-vnet 0.1.0\n"
    assert colab == ["/content/drive"]


def test_rerun_after_a_disconnect_only_mounts_drive(colab, pip_calls, capsys):
    exec(CELL, {})  # flare_helpers is importable here, as after a first run
    assert pip_calls == [] and capsys.readouterr().out == ""
    assert colab == ["/content/drive"]


def test_a_failed_install_stops_with_pips_error(colab, monkeypatch):
    _hide_flare_helpers(monkeypatch)
    error = "ERROR: No matching distribution found for isal>=1.6"
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", error)
    )
    with pytest.raises(RuntimeError, match="No matching distribution found for isal"):
        exec(CELL, {})
    assert colab == []
