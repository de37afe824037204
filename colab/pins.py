"""Colab's published package pins: derive the constraints file, and check an install against it.

Colab publishes the exact packages of its runtime as a ``pip freeze``
(googlecolab/backend-info, ``pip-freeze.gpu.txt``). This script turns a copy of
that freeze into a pip constraints file and, inside a venv built with those
constraints (``make test-colab``), checks that installing flare-vnet changes
none of Colab's packages. Standard library only: it runs in a bare Python 3.13 venv.

    python colab/pins.py constraints FREEZE --commit SHA --date YYYY-MM-DD > CONSTRAINTS
    python colab/pins.py runtime-packages     # what the Colab-like venv must hold
    python colab/pins.py prune                # uninstall what Colab does not have
    python colab/pins.py check-report REPORT  # a `pip install --dry-run --report` changes no pin
    python colab/pins.py versions             # every installed package Colab has is at its version
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints-gpu.txt"
PYPROJECT = HERE.parent / "pyproject.toml"

#: Packages Colab's runtime depends on: upgrading them can crash the runtime (the kernel
#: stack) or break its widgets and GPU set-up. The Colab-like venv holds exactly these.
COLAB_CRITICAL = (
    "ipykernel",
    "ipython",
    "ipywidgets",
    "jupyter-client",
    "tornado",
    "pyzmq",
    "traitlets",
    "widgetsnbextension",
    "keras",
    "tensorflow",
    "numpy",
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (``PyYAML`` → ``pyyaml``, ``jupyter_client`` → ``jupyter-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_lines(freeze: str) -> tuple[list[str], list[str]]:
    """Pip-usable ``name==version`` lines of a ``pip freeze``, and the lines left out.

    Left out: direct references (``name @ URL``, ``@ file://``, VCS), editables and
    comments, which pip does not accept as constraints. A local version label
    (``torch==2.11.0+cu128``) is dropped: ``==2.11.0`` still admits the CUDA build
    and, unlike ``+cu128``, the CPU wheels on PyPI.
    """
    kept, skipped = [], []
    for raw in freeze.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pin = _PIN.match(line)
        if pin is None:
            skipped.append(line)
            continue
        kept.append(f"{pin.group(1)}=={pin.group(2).split('+', 1)[0]}")
    return kept, skipped


def render_constraints(freeze: str, commit: str, date: str) -> str:
    """The constraints file: a header naming the source, then one pin per line."""
    kept, skipped = constraint_lines(freeze)
    header = [
        "# Colab's GPU runtime packages as pip constraints (generated: do not edit).",
        f"# Source: googlecolab/backend-info, pip-freeze.gpu.txt at commit {commit} ({date}).",
        "# Regenerate: make colab-constraints COLAB_COMMIT=<sha> COLAB_DATE=<yyyy-mm-dd>",
        "# Left out (pip cannot use direct references as constraints):",
        *(f"#   {line.split(' @ ', 1)[0]}" for line in skipped),
    ]
    return "\n".join([*header, *kept]) + "\n"


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``{canonical name: version}`` from a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            pins[canonical(pin.group(1))] = pin.group(2)
    return pins


def project(pyproject: Path = PYPROJECT) -> dict:
    """The ``[project]`` table of pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    return tomllib.loads(pyproject.read_text())["project"]


def base_requirements() -> list[str]:
    """Canonical names of the project's base dependencies (``[project] dependencies``)."""
    return [canonical(_NAME.match(req).group(1)) for req in project()["dependencies"]]


def runtime_packages(pins: dict[str, str]) -> list[str]:
    """What the Colab-like venv holds: the critical packages and every base dependency Colab has.

    Installed with the constraints, they come at Colab's versions together with
    their own dependencies, so a dry run of the project sees what Colab would;
    pip too, since Colab's own pip resolves the notebooks' install.
    """
    wanted = ["pip", *COLAB_CRITICAL, *(n for n in base_requirements() if n in pins)]
    missing = sorted(n for n in COLAB_CRITICAL if n not in pins)
    if missing:
        raise SystemExit(f"{CONSTRAINTS}: no pin for {', '.join(missing)}")
    return list(dict.fromkeys(wanted))


def report_changes(report: dict, pins: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split a pip ``--report``'s installs into changes to Colab's packages and additions."""
    changes, additions = [], []
    for item in report.get("install", []):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonical(name) in pins:
            changes.append(
                f"{name}: Colab has {pins[canonical(name)]}, pip would install {version}"
            )
        else:
            additions.append(f"{name} {version}")
    return changes, additions


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of this interpreter's installed distributions."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("constraints", help="constraints file from a pip freeze (to stdout)")
    derive.add_argument("freeze", type=Path)
    derive.add_argument("--commit", required=True, help="backend-info commit of the freeze")
    derive.add_argument("--date", required=True, help="date of that commit, YYYY-MM-DD")
    sub.add_parser("runtime-packages", help="names to install into the Colab-like venv")
    sub.add_parser("prune", help="uninstall every package Colab does not have (except pip)")
    check = sub.add_parser("check-report", help="fail if a pip report changes a Colab package")
    check.add_argument("report", type=Path)
    sub.add_parser(
        "versions", help="fail unless every installed package Colab has is at its version"
    )
    args = parser.parse_args(argv)

    if args.command == "constraints":
        sys.stdout.write(render_constraints(args.freeze.read_text(), args.commit, args.date))
        return 0
    pins = read_pins()
    if args.command == "runtime-packages":
        print(" ".join(runtime_packages(pins)))
    elif args.command == "prune":
        extra = sorted(n for n in installed() if n not in pins and n != "pip")
        if extra:
            print("removing what Colab does not have:", " ".join(extra))
            subprocess.run(
                [sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True
            )
    elif args.command == "check-report":
        changes, additions = report_changes(json.loads(args.report.read_text()), pins)
        print("the project's install would add:", ", ".join(additions) or "nothing")
        if changes:
            print("and change Colab's packages:", *changes, sep="\n  ")
            return 1
        print("and change none of Colab's packages")
    elif args.command == "versions":
        have = installed()
        for name in COLAB_CRITICAL:
            print(f"  {name:20} {have.get(name, 'missing'):10} (Colab {pins[name]})")
        wrong = sorted(n for n in pins.keys() & have.keys() if have[n] != pins[n])
        missing = [n for n in COLAB_CRITICAL if n not in have]
        if wrong or missing:
            print(
                "not as in Colab:", *(f"{n} {have[n]} (Colab {pins[n]})" for n in wrong), *missing
            )
            return 1
        print(
            f"all {len(pins.keys() & have.keys())} installed packages that Colab has are at its versions"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
