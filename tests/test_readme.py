"""The README starts where users start; the longer pages it links exist and name real files."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from tiny_settings import NOTEBOOK_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as a package (pip and setuptools vendor it too)
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
#: A link in Markdown: ``[text](target)`` (pictures included).
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(path: Path) -> list[str]:
    return LINK.findall(path.read_text(encoding="utf-8"))


def test_the_first_screen_is_what_it_is_a_picture_the_badges_and_the_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    first_page = next(
        k for k, line in enumerate(lines) if re.search(r"\]\(docs/[\w-]+\.md[)#]", line)
    )
    assert first_page < 80, f"the first link to a longer page is on line {first_page + 1}"
    screen = "\n".join(lines[:first_page])
    assert screen.count("](docs/slices.png)") == 1 and screen.count("![") == 1 + 6
    badges = re.findall(r"colab\.research\.google\.com/github/\S+/notebooks/(\w+)\.ipynb", screen)
    assert badges == NOTEBOOK_NAMES
    commands = re.findall(r"^make (\w[\w-]*)", screen, re.M)
    assert commands[:3] == ["setup", "test", "demo"]
    assert lines[0] == "# flare-vnet" and "abdominal CT" in screen


def test_ci_runs_exactly_the_readmes_set_up_commands():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ran = re.findall(r"^make ([\w-]+)$", ci, re.M)
    assert ran == ["setup", "test", "test-colab", "test-browser"]
    text = README.read_text(encoding="utf-8")
    block = re.search(
        r"CI \(`\.ci/run`\) runs exactly these four commands.*?```bash\n(.*?)```", text, re.S
    )
    assert block is not None
    assert re.findall(r"^make ([\w-]+)", block.group(1), re.M) == ran


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_and_named_file_exists(page):
    """Links between the pages, and every ``flare_helpers/…`` path or ``flare_helpers.…``
    module they name (no module path left from before the stage packages)."""
    text = page.read_text(encoding="utf-8")
    for target in _links(page):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: broken link {target}"
    for named in re.findall(r"\bflare_helpers/[\w./-]*\w", text):
        assert (ROOT / named).exists(), f"{page.name}: {named} does not exist"
    for dotted in re.findall(r"\bflare_helpers(?:\.\w+)+", text):
        parts = dotted.split(".")
        found = [".".join(parts[:k]) for k in range(len(parts), 0, -1)]
        assert any(importlib.util.find_spec(name) for name in found[:2]), f"{page.name}: {dotted}"


def test_the_readme_links_every_page_and_the_licence():
    links = set(_links(README))
    assert {f"docs/{p.name}" for p in PAGES} <= {link.split("#")[0] for link in links}
    assert "LICENSE" in links and "BENCHMARKS.md" in links
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert len(licence.splitlines()) == 202  # the full text, appendix included
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    text = README.read_text(encoding="utf-8")
    assert "FLARE22 data keep their\nown terms" in text and "TotalSegmentator" in text


def test_the_architecture_page_lists_the_package_and_its_layers():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = re.search(r"```\nflare_helpers/\n(.*?)```", page, re.S).group(1)
    listed = [line.split()[0].rstrip("/") for line in tree.splitlines()]
    real = sorted(
        p.name
        for p in (ROOT / "flare_helpers").iterdir()
        if not p.name.startswith((".", "__pycache__"))
        and (p.suffix in (".py", ".yaml") or (p / "__init__.py").is_file())
    )
    assert sorted(listed) == real and len(listed) == len(set(listed))
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [
        c["layers"] for c in contract["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    shown = re.findall(r"^\d+\. (.+)$", page, re.M)
    expected = [
        " | ".join(f"`{name.strip().removeprefix('flare_helpers.')}`" for name in layer.split("|"))
        for layer in layers
    ]
    assert shown == expected
