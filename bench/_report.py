"""Shared by the benchmark scripts: the environment line and appending to BENCHMARKS.md.

Nothing here imports keras or a backend, so a script can still pick its
Keras backend after importing this module (keras' version is read from the
installed package's metadata).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from flare_helpers.config import Config, load_config
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.phantoms.synthetic import write_synthetic_zip

#: The light VNet the learning benchmarks train in CPU minutes (base 8, depth 3, 3×3×3
#: kernels, batch 2, lr 0.002, seed 3, no epoch limit: each bench sets a time limit).
LIGHT_VNET = [
    "model.base_filters=8",
    "model.depth=3",
    "model.convs_per_stage=[1,2,2,2]",
    "model.kernel_size=3",
    "train.batch_size=2",
    "train.learning_rate=0.002",
    "train.lr_schedule=constant",
    "train.steps_per_epoch=0",
    "train.epochs=10000",
    "train.seed=3",
]


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (the machine type where that is missing)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.9, 1.2, 0.8"`` (``"?"`` if unknown)."""
    if not hasattr(os, "getloadavg"):
        return "?"
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def keras_backend() -> str:
    """The Keras backend in use (or that ``import keras`` would pick) in this process."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


REFERENCE_STEP = Path(__file__).with_name("reference_step.py")


def reference_step() -> str:
    """``"reference step 58 ms"``: :mod:`reference_step`'s reading now, in a subprocess (this
    module imports no backend), or why there is none (no TensorFlow installed)."""
    done = subprocess.run(
        [sys.executable, str(REFERENCE_STEP)], capture_output=True, text=True, check=False
    )
    said = [line for line in done.stdout.splitlines() if line.startswith("reference step:")]
    if done.returncode or not said:
        return "reference step not measured (it needs TensorFlow)"
    return "reference step " + said[0].split(":", 1)[1].split("(")[0].strip()


def cpu_settings() -> str:
    """The environment settings that change CPU speed, where set (empty otherwise)."""
    keys = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "TF_NUM_INTRAOP_THREADS")
    return ", ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ)


def environment(*extra: str, backend: str | None = None, gpu: str = "no GPU") -> str:
    """One line: CPU model, cores, GPU, load average now, the reference step now (and
    the settings that change it), Python/numpy/keras/backend versions.

    Args:
        extra: further items appended after the versions (e.g. ``"scipy 1.17.1"``).
        backend: the Keras backend the measured code used; default: this process's.
        gpu: what accelerator the numbers ran on.
    """
    backend = backend or keras_backend()
    items = [
        f"Python {platform.python_version()}",
        f"numpy {package_version('numpy')}",
        f"keras {package_version('keras')} ({backend} backend)",
        *extra,
        platform.system(),
    ]
    speed = ", ".join(x for x in (reference_step(), cpu_settings()) if x)
    return (
        f"{cpu_model()}, {cpu_cores()} cores, {gpu} (load average at the end {load_average()}; "
        f"{speed}); " + ", ".join(items)
    )


def median_seconds(fn: Callable[[int], object], repeats: int) -> float:
    """Median wall seconds of ``fn(i)`` over ``repeats`` calls (``i`` = 0, 1, …)."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cumulative_seconds(stats: dict, fragment: str, func: str, caller: str | None) -> float | None:
    """Seconds spent in ``func`` (callees included) by ``pstats.Stats(profile).stats``.

    Counts functions named ``func`` in files whose path contains ``fragment``;
    with ``caller``, only their calls from a function of that name. None when
    no such function was called.
    """
    total, found = 0.0, False
    for (filename, _, name), (_, _, _, cumulative, callers) in stats.items():
        if name != func or fragment not in filename.replace(os.sep, "/"):
            continue
        found = True
        if caller is None:
            total += cumulative
        else:
            total += sum(c[3] for key, c in callers.items() if key[2] == caller)
    return total if found else None


def run_worker(script: str | Path, cfg: dict, env: dict[str, str] | None = None) -> dict:
    """Run ``script --worker JSON(cfg)`` in a fresh interpreter; return the JSON it prints last.

    Raises:
        RuntimeError: the worker failed or printed no JSON line (with its stderr's end).
    """
    done = subprocess.run(
        [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{Path(script).name} worker failed: {done.stderr.strip()[-800:]}")
    return json.loads(lines[-1])


def dated_heading(title: str) -> str:
    """``### YYYY-MM-DD: title`` for one run's block."""
    return f"### {datetime.date.today().isoformat()}: {title}"


def append_section(path: Path, heading: str, intro: str, block: str) -> None:
    """Add ``block`` at the end of the ``heading`` section of ``path`` (created if absent).

    The section is found by its heading, or by a ``## `` heading ending in the
    same ``(`bench/<script>.py`)`` (so a retitled section still collects its
    script's runs). Other sections are kept as they are; the file is replaced
    atomically.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    suffix = heading[heading.rfind(" (") :] if heading.endswith(")") else heading
    found = [line for line in text.splitlines() if line.startswith("## ") and line.endswith(suffix)]
    if heading not in text and found:
        heading = found[0]
    if heading not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{intro}\n"
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end + 1
    before = text[:end].rstrip("\n") + "\n\n"
    write_text_atomic(path, before + block + ("\n" + text[end:] if end < len(text) else ""))


def scan_range_sets(
    tmp: Path, n_cases: int, shape: Sequence[int], family: str = "simple"
) -> dict[str, Path]:
    """Held-out phantoms of ``family`` (seed 99) scanned as usual and 1.8× longer, extracted
    under ``tmp``: ``{"normal": data folder, "fov 1.8": data folder}``."""
    sets = {}
    for name, fov in (("normal", 1.0), ("fov 1.8", 1.8)):
        archive = write_synthetic_zip(
            tmp / name, n_cases, seed=99, shape=shape, fov=fov, progress=False, family=family
        )
        sets[name] = extract_zip(archive, tmp / name / "data", progress=False)
    return sets


def bench_parser(doc: str, shape: Sequence[int]) -> argparse.ArgumentParser:
    """The options every benchmark script shares: ``--shape X Y Z``, ``--output``, ``--no-append``.

    ``doc`` is the script's module docstring (its first line is the description);
    ``shape`` the default volume size in voxels.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=list(shape), metavar="N")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-append", action="store_true", help="print only")
    return parser


def finish(block: str, output: Path, heading: str, intro: str, *, append: bool) -> None:
    """Print ``block`` and, if ``append``, add it to the benchmark's section of ``output``."""
    print(block)
    if append:
        append_section(output, heading, intro, block)
        print(f"appended to {output}")


def run_config(data: Path | None, cache: Path, output: Path, *settings: str) -> Config:
    """A benchmark run's settings: its data, cache and run folders, then ``settings``."""
    folders = [f"data.cache_dir={cache}", f"train.output_dir={output}"]
    return load_config(None, [*([f"data.data_dir={data}"] if data else []), *folders, *settings])
