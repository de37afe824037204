"""The notebook series as one batch job, through papermill.

``flare-series --profile ci|demo|colab`` runs 01 → 06 through papermill with
the profile's parameters (``notebooks/params/<profile>.yaml``), writes the
executed notebooks and the parameters used to ``<work_dir>/notebooks/``, and
stops at the first failing notebook with that cell's error. Beside them,
:data:`RUN_RECORD` says, per notebook, which profile ran it on which machine
(:func:`describe_machine`); publishing (:mod:`flare_helpers.series.docs`) opens
each notebook with it.

``--fresh-runtimes`` runs each notebook as Colab runs one opened from its badge:
in a new, empty ``data_root`` (removed afterwards), sharing only ``work_dir`` and
the zip with the others, so each notebook must bring back what it needs
(:mod:`flare_helpers.series.session`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path

import yaml

from flare_helpers.data.fileio import read_json, write_json_atomic, write_text_atomic
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


#: Beside the executed notebooks: per notebook, the profile, the machine and whether it ran
#: in a fresh runtime (what :func:`flare_helpers.series.docs.publish_notebooks` states).
RUN_RECORD = "series_run.json"


def profile_name(profile: str | Path) -> str:
    """How a profile is called: ``ci`` for ``ci`` and for ``…/ci.yaml``."""
    return Path(profile).stem if Path(profile).suffix else str(profile)


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :mod:`platform`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def _gpu_names() -> list[str]:
    """NVIDIA GPUs ``nvidia-smi`` lists (none without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def describe_machine() -> str:
    """One line: the GPU(s), else ``no GPU``, and the CPU model with its cores and system."""
    cpu = f"{_cpu_model()} ({os.cpu_count() or '?'} CPU cores, {platform.system()} "
    cpu += f"{platform.machine()})"
    gpus = _gpu_names()
    if not gpus:
        return f"{cpu}, no GPU"
    counts = {name: gpus.count(name) for name in dict.fromkeys(gpus)}
    listed = ", ".join(f"{n} × {name}" if n > 1 else name for name, n in counts.items())
    return f"GPU {listed}; CPU {cpu}"


def read_run_record(folder: str | Path) -> dict[str, dict]:
    """Per notebook (``01_extract`` …): the profile, machine and runtime it ran with ({} when
    the folder has no :data:`RUN_RECORD`)."""
    path = Path(folder) / RUN_RECORD
    return dict(read_json(path).get("notebooks", {})) if path.is_file() else {}


def record_run(
    out_dir: str | Path, notebook: str, *, profile: str, machine: str, fresh_runtime: bool = False
) -> Path:
    """Add (or replace) one notebook's entry of :data:`RUN_RECORD` in ``out_dir``."""
    record = read_run_record(out_dir)
    record[notebook] = {"profile": profile, "machine": machine, "fresh_runtime": fresh_runtime}
    return write_json_atomic(
        Path(out_dir) / RUN_RECORD, {"notebooks": dict(sorted(record.items()))}
    )


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
    fresh_runtimes: bool = False,
) -> Path:
    """Execute the notebooks in order with a profile; return the folder of executed copies.

    Args:
        fresh_runtimes: run each notebook with a new, empty ``data_root`` (removed after
            it), as Colab runs each notebook in its own runtime: only ``work_dir`` and the
            zip are shared, so each notebook must re-create what it needs.

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
    machine = describe_machine()
    # Kernels inherit the environment: headless viewers, and TensorFlow's C++ info lines hidden
    # (those that honour TF_CPP_MIN_LOG_LEVEL; KERNEL_ARGUMENTS keeps the rest out of the cells).
    env = {
        "FLARE_HEADLESS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    old_env = {k: os.environ.get(k) for k in [*env, "FLARE_DATA_ROOT"]}
    os.environ.update(env)
    try:
        for notebook in notebooks():
            if only and not any(notebook.stem.startswith(prefix) for prefix in only):
                continue
            params = parameters_for(notebook, settings)
            runtime = None
            if fresh_runtimes and "data_root" in params:
                runtime = Path(tempfile.mkdtemp(prefix=f"flare-runtime-{notebook.stem}-"))
                params["data_root"] = str(runtime)
                os.environ["FLARE_DATA_ROOT"] = str(runtime)  # wins over the parameter
            record[notebook.stem] = params
            write_text_atomic(out_dir / "parameters.yaml", yaml.safe_dump(record, sort_keys=False))
            record_run(
                out_dir,
                notebook.stem,
                profile=profile_name(profile),
                machine=machine,
                fresh_runtime=runtime is not None,
            )
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
                if runtime is not None:
                    shutil.rmtree(runtime, ignore_errors=True)
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out_dir
