"""The benchmark scripts import only names that the package still has.

Benchmarks run by hand, rarely; a module split (``train.train`` moving to
``workflows.training``) must not leave one that fails on its first line.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _package_imports(script: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each ``from flare_helpers… import name`` in ``script``."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flare_helpers")
        for alias in node.names
    ]


def _resolves(module: str, name: str) -> bool:
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_bench_script_imports_resolve(script):
    missing = [
        f"{script.name}:{line}: {module}.{name}"
        for line, module, name in _package_imports(script)
        if not _resolves(module, name)
    ]
    assert missing == []


def test_a_stale_import_is_caught(tmp_path):
    stale = tmp_path / "stale.py"
    stale.write_text(
        "from flare_helpers.train.loop import train\nfrom flare_helpers import nifti, data\n"
    )
    assert _package_imports(stale) == [
        (1, "flare_helpers.train.loop", "train"),
        (2, "flare_helpers", "nifti"),
        (2, "flare_helpers", "data"),
    ]
    assert not _resolves("flare_helpers.train.loop", "train")
    assert not _resolves("flare_helpers", "nifti")
    assert _resolves("flare_helpers", "data")
