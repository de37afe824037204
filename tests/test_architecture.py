"""The house rules that lint-imports cannot see: where the package imports itself."""

from __future__ import annotations

import ast
from pathlib import Path

import flare_helpers

PACKAGE = Path(flare_helpers.__file__).parent
#: The console layer imports lazily so that `--help` and a bad config answer before Keras loads.
LAZY_ALLOWED = {"cli.py", "__main__.py"}


def _inner_package_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """``file:line`` of each import of flare_helpers that is not at the top of the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["flare_helpers"]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if id(node) not in top and any(n.split(".")[0] == "flare_helpers" for n in names):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_the_package_imports_itself_only_at_the_top_of_its_modules():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in LAZY_ALLOWED)
    assert len(modules) > 50
    assert [hit for p in modules for hit in _inner_package_imports(p)] == []


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\n\ndef f():\n    from flare_helpers import infer\n")
    assert _inner_package_imports(sample, tmp_path) == ["sample.py:5"]
    sample.write_text("import os\n\nfrom flare_helpers import infer\n")
    assert _inner_package_imports(sample, tmp_path) == []
