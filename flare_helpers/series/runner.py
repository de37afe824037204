"""The notebook series as one batch job, through papermill.

``flare-series --profile ci|demo|colab`` runs 01 → 06 through papermill with
the profile's parameters (``notebooks/params/<profile>.yaml``), writes the
executed notebooks and the parameters used to ``<work_dir>/notebooks/``, and
stops at the first failing notebook with that cell's error.
"""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from pathlib import Path

import yaml

from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.errors import FlareError


def _notebook_dir() -> Path:
    """The series' notebooks: the installed package's copy, else the source checkout's.

    A wheel carries them as ``flare_helpers/notebooks`` (package data); a source
    checkout (or ``PYTHONPATH`` pointing at one) has them in ``notebooks/`` beside
    the package.
    """
    from importlib.util import find_spec

    try:
        spec = find_spec("flare_helpers.notebooks")
    except ModuleNotFoundError:
        spec = None
    locations = spec.submodule_search_locations if spec is not None else None
    for folder in locations or []:
        if any(Path(folder).glob("[0-9][0-9]_*.ipynb")):
            return Path(folder)
    return Path(__file__).resolve().parents[2] / "notebooks"


NOTEBOOK_DIR = _notebook_dir()
PROFILE_DIR = NOTEBOOK_DIR / "params"


def notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered ``.ipynb`` notebooks of the series, in order."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FlareError("no numbered notebooks here", folder)
    return found


def load_profile(profile: str | Path) -> dict:
    """A profile: a name in ``notebooks/params/`` or a path to a YAML file.

    Shape: ``common:`` parameters for every notebook, then optional sections
    named after notebooks (``03_train:``) that add or replace parameters.
    """
    path = Path(profile)
    if not path.suffix:
        path = PROFILE_DIR / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise FlareError(f"no such profile (known: {known})", path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FlareError(f"not valid YAML ({exc})", path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("common", {}), dict):
        raise FlareError("a profile maps 'common' and notebook names to parameters", path)
    return data


def _work_dir(profile: dict, base: Path) -> Path:
    """The series' working folder: the profile's ``work_dir``, relative to ``base``."""
    work_dir = Path(str((profile.get("common") or {}).get("work_dir") or "runs")).expanduser()
    return work_dir if work_dir.is_absolute() else base / work_dir


#: Kernel options: C-level output (TensorFlow's absl start-up lines, which TensorFlow 2.21
#: prints whatever TF_CPP_MIN_LOG_LEVEL says) goes to flare-series' terminal, not into the
#: notebooks; Python's own prints, warnings and tracebacks still land in the cells.
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]


def _papermill() -> types.ModuleType:
    """papermill, imported on first use: only batch runs need it (the ``series`` extra)."""
    try:
        import papermill
    except ImportError as exc:
        raise FlareError(
            'running the notebooks in batch needs papermill: pip install "flare-vnet[series]"'
        ) from exc
    return papermill


def parameters_for(notebook: Path, profile: dict) -> dict:
    """Profile parameters that ``notebook`` declares in its ``parameters`` cell, as written.

    Relative paths stay relative: the kernel runs in ``base`` (papermill's ``cwd``), so
    they mean the same there, and the executed notebooks show them as the profile has
    them rather than this machine's absolute folders.
    """
    papermill = _papermill()
    declared = set(papermill.inspect_notebook(str(notebook)))
    merged = {**profile.get("common", {}), **(profile.get(notebook.stem) or {})}
    unknown = sorted(set(profile.get(notebook.stem) or {}) - declared)
    if unknown:
        raise FlareError(f"{notebook.stem} has no parameter(s) {', '.join(unknown)}", notebook)
    return {k: v for k, v in merged.items() if k in declared}


def run_series(
    profile: str | Path,
    *,
    only: Sequence[str] = (),
    base: Path | None = None,
    progress: bool = True,
) -> Path:
    """Execute the notebooks in order with a profile; return the folder of executed copies.

    Raises:
        FlareError: unknown profile, or a notebook failed (naming the notebook
            and the failing cell's error), or papermill is not installed.
    """
    papermill = _papermill()
    base = Path(base or Path.cwd()).resolve()
    settings = load_profile(profile)
    work_dir = _work_dir(settings, base)
    out_dir = work_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {}
    # Kernels inherit the environment: headless viewers, and TensorFlow's C++ info lines hidden
    # (those that honour TF_CPP_MIN_LOG_LEVEL; KERNEL_ARGUMENTS keeps the rest out of the cells).
    env = {
        "FLARE_HEADLESS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for notebook in notebooks():
            if only and not any(notebook.stem.startswith(prefix) for prefix in only):
                continue
            params = parameters_for(notebook, settings)
            record[notebook.stem] = params
            write_text_atomic(out_dir / "parameters.yaml", yaml.safe_dump(record, sort_keys=False))
            target = out_dir / notebook.name
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(target),
                    parameters=params,
                    cwd=str(base),
                    kernel_name="python3",
                    progress_bar=progress,
                    extra_arguments=KERNEL_ARGUMENTS,
                )
            except papermill.PapermillExecutionError as exc:
                message = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}".strip()
                raise FlareError(
                    f"failed at {message} (executed copy: {target})", notebook
                ) from exc
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out_dir
