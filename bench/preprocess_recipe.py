"""Preprocessing one CT-sized case: ours (the training cache build) against the Colab recipe.

Issue "data speed and memory": seconds and peak memory per case of

* ours: ``flare_helpers.preprocess.pipeline.build_entry``, the cache-entry build that
  ``preprocess_dataset`` / ``flare-preprocess`` / training run, with
  ``nifti.load_case`` inside it (ISA-L gunzip, int16 → float32 HU, RAS
  reorientation by views, body crop, separable trilinear resize, HU window,
  nearest label resize, SHA-256 fingerprints, .npy + meta.json written);
* the original Colab notebook's recipe: ``nib.load(p).get_fdata()`` for the
  image and the label (float64), ``scipy.ndimage.zoom`` of each to the
  target grid with zoom's default order 3 (the label too, as the notebook
  did), then ``keras.utils.to_categorical`` of the label into 14 classes
  (FLARE22 ids 0..13; the cubic spline overshoots, so the zoomed label is
  rounded and clipped into 0..13 first, or to_categorical would fail).

Seconds: median of ``--repeats`` runs after one warm-up, ours and the recipe
alternating in one process (files in the page cache). Memory: each recipe
in a fresh subprocess after all imports; peak RSS above the RSS then (VmHWM
reset through /proc/self/clear_refs), and, in another fresh subprocess, the
tracemalloc peak (Python objects and numpy arrays). Our time per stage comes
from cProfile of ``build_entry`` itself. Last, ``preprocess_dataset(...,
workers=0)`` (one process per core) on ``--set-cases`` CT-sized cases,
extrapolated linearly to FLARE22's 50 training cases.

    python bench/preprocess_recipe.py          # 512×512×110 → 128×128×64, appends
    python bench/preprocess_recipe.py --shape 96 96 40 --target 32 32 16 \\
        --repeats 1 --set-cases 2 --no-append
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy
from _report import (
    bench_parser,
    cumulative_seconds,
    dated_heading,
    environment,
    finish,
    load_average,
    run_worker,
)
from scipy import ndimage

from flare_helpers.config import Config, load_config
from flare_helpers.data.cases import Case, discover_cases
from flare_helpers.infer.predict import StageTimer
from flare_helpers.phantoms.synthetic import ORIENTATIONS, ZIP_ROOT, case_files
from flare_helpers.preprocess.pipeline import PreprocessParams, build_entry, preprocess_dataset

HEADING = "## Preprocessing: ours vs the Colab recipe (`bench/preprocess_recipe.py`)"
INTRO = (
    "Seconds and peak memory to preprocess one CT-sized phantom case (image + label):\n"
    "ours is `preprocess.build_entry` (the cache entry training reads, `load_case` inside);\n"
    "the recipe is the original Colab notebook's `get_fdata()` + `scipy.ndimage.zoom`\n"
    "(order 3, image and label) + `to_categorical`. Targets: ours ≥ 5× faster per case and\n"
    "at most half the recipe's peak memory."
)
MB = 1e6
FLARE22_TRAIN_CASES = 50
RECIPE_CLASSES = 14  # FLARE22 ids 0..13: the notebook one-hot encoded the ids as stored
SPEED_TARGET, MEMORY_TARGET = 5.0, 0.5

#: Rows of our per-stage table: (row, source file fragment, function, only calls from).
STAGES: tuple[tuple[str, str, str, str | None], ...] = (
    ("read both .nii.gz files", "pathlib.py", "read_bytes", None),
    ("gunzip both (ISA-L)", "isal/igzip.py", "decompress", None),
    ("NIfTI headers + array proxies", "nibabel/filebasedimages.py", "from_bytes", None),
    ("image int16 → float32 HU", "flare_helpers/nifti.py", "_float32_voxels", None),
    ("label value check (np.unique, all voxels)", "_arraysetops_impl.py", "unique", "load_label"),
    ("reorientation to RAS (views)", "nibabel/orientations.py", "apply_orientation", None),
    ("body crop (body_box)", "flare_helpers/preprocess.py", "body_box", None),
    ("image resize, trilinear", "flare_helpers/resample.py", "resize_linear", None),
    ("HU window → [0, 1]", "flare_helpers/preprocess.py", "window_to_unit", None),
    ("label → classes, nearest resize", "flare_helpers/preprocess.py", "prepare_label", None),
    ("SHA-256 fingerprints of both files", "flare_helpers/preprocess.py", "file_fingerprint", None),
    ("write image.npy + label.npy", "numpy/lib/_npyio_impl.py", "save", None),
    ("write meta.json", "flare_helpers/fileio.py", "write_json_atomic", None),
)


def write_cases(data_dir: Path, n_cases: int, shape: Sequence[int], seed: int) -> list[Case]:
    """Write ``n_cases`` phantom cases as flare-synth + flare-extract would; return them."""
    for number in range(1, n_cases + 1):
        for name, payload in case_files(seed, number, shape, family="simple").items():
            path = data_dir / Path(name).relative_to(ZIP_ROOT)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
    return list(discover_cases(data_dir).labelled)


def cache_params(target: Sequence[int]) -> PreprocessParams:
    """The parameters ``preprocess_dataset`` derives from the default config at ``target``."""
    return PreprocessParams.from_config(config_for(target))


def config_for(target: Sequence[int]) -> Config:
    """Default config with ``preprocess.target_shape = target``."""
    return load_config(None, [f"preprocess.target_shape={list(target)}"])


def colab_recipe(
    case: Case, target: Sequence[int], timer: StageTimer | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The original notebook's preprocessing of one case: (float64 image, float64 one-hot)."""
    import keras

    timer = timer or StageTimer()
    with timer.stage("image: nib.load().get_fdata()"):
        image = nib.load(case.image).get_fdata()
    with timer.stage("label: nib.load().get_fdata()"):
        label = nib.load(case.label).get_fdata()
    factors = [t / n for t, n in zip(target, image.shape, strict=True)]
    with timer.stage("image: ndimage.zoom, order 3"):
        image = ndimage.zoom(image, factors)
    with timer.stage("label: ndimage.zoom, order 3"):
        label = ndimage.zoom(label, factors)
    with timer.stage(f"label: to_categorical, {RECIPE_CLASSES} classes"):
        ids = np.clip(np.rint(label), 0, RECIPE_CLASSES - 1)
        one_hot = keras.utils.to_categorical(ids, RECIPE_CLASSES)
    return image, one_hot


def runner(recipe: str, case: Case, cache: Path, target: Sequence[int]) -> Callable[[], object]:
    """A no-argument call preprocessing ``case`` the ``recipe`` way ("ours" or "recipe")."""
    if recipe == "ours":
        params = cache_params(target)
        return lambda: build_entry(case, cache, params)
    return lambda: colab_recipe(case, target)


def time_both(
    case: Case, cache: Path, target: Sequence[int], repeats: int
) -> tuple[list[float], list[float], dict[str, float]]:
    """Seconds per run of ours and of the recipe (alternating) and the recipe's mean stages."""
    ours = runner("ours", case, cache, target)
    timer = StageTimer()
    ours(), colab_recipe(case, target)  # warm-up: page cache, lazy imports
    ours_s, recipe_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        colab_recipe(case, target, timer)
        recipe_s.append(time.perf_counter() - start)
    return ours_s, recipe_s, {name: s / repeats for name, s in timer.seconds.items()}


def our_stages(run: Callable[[], object], repeats: int) -> tuple[float, list[tuple[str, float]]]:
    """Median profiled total and median seconds per stage of ``run`` (ours), 'other' last."""
    totals: list[float] = []
    per_stage: dict[str, list[float]] = {row: [] for row, *_ in STAGES}
    for _ in range(repeats):
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.runcall(run)
        totals.append(time.perf_counter() - start)
        stats = pstats.Stats(profile).stats
        for row, fragment, func, caller in STAGES:
            seconds = cumulative_seconds(stats, fragment, func, caller)
            if seconds is not None:
                per_stage[row].append(seconds)
    rows = [(row, statistics.median(s)) for row, s in per_stage.items() if s]
    total = statistics.median(totals)
    rows.append(
        ("other (float16 cast, geometry, folder rename …)", total - sum(s for _, s in rows))
    )
    return total, rows


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def memory_worker(cfg: dict) -> dict:
    """In a fresh interpreter: peak bytes of one preprocessing run above the post-import state."""
    import keras  # noqa: F401  (both recipes start from the same imports)

    case = discover_cases(cfg["data"]).labelled[0]
    run = runner(cfg["recipe"], case, Path(cfg["cache"]), cfg["target"])
    if cfg["memory"] == "tracemalloc":
        tracemalloc.start()
        run()
        return {"peak": tracemalloc.get_traced_memory()[1]}
    baseline = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        run()
        return {"peak": _status_bytes("VmHWM") - baseline}
    except OSError:
        run()
        return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline}


def measure_memory(recipe: str, memory: str, data: Path, cache: Path, target) -> float:
    """Peak MB of ``recipe`` measured the ``memory`` way ("rss" or "tracemalloc"), fresh process."""
    cfg = {"recipe": recipe, "memory": memory, "data": str(data), "cache": str(cache)}
    cfg["target"] = list(target)
    return run_worker(__file__, cfg)["peak"] / MB


def time_set(data_dir: Path, cache_dir: Path, target: Sequence[int], workers: int) -> float:
    """Wall seconds of ``preprocess_dataset(..., workers=workers)`` filling an empty cache."""
    start = time.perf_counter()
    preprocess_dataset(data_dir, cache_dir, config_for(target), workers=workers, progress=False)
    return time.perf_counter() - start


def _x(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def report(args, r: dict) -> str:
    """Markdown block of one run."""
    ours, recipe = statistics.median(r["ours_s"]), statistics.median(r["recipe_s"])
    speed = recipe / ours
    rss, tm = r["memory"]["rss"], r["memory"]["tracemalloc"]
    lines = [
        dated_heading(
            f"one {_x(args.shape)} int16 case ({r['orientation']}) → {_x(args.target)}, "
            f"median of {args.repeats}"
        ),
        "",
        environment(f"scipy {scipy.__version__}", f"nibabel {nib.__version__}"),
        f"(load average before the timings {r['load_before']})",
        "",
        "| per case | ours (`build_entry`) | Colab recipe | recipe / ours | target |",
        "|---|---:|---:|---:|---|",
        f"| wall seconds, median | **{ours:.2f}** | **{recipe:.2f}** | **{speed:.1f}×** "
        f"| ≥ {SPEED_TARGET:g}×: {'met' if speed >= SPEED_TARGET else 'missed'} |",
        f"| wall seconds, all runs | {', '.join(f'{s:.2f}' for s in r['ours_s'])} "
        f"| {', '.join(f'{s:.2f}' for s in r['recipe_s'])} | | |",
        f"| peak RSS above post-import RSS, MB | **{rss['ours']:.0f}** | **{rss['recipe']:.0f}** "
        f"| **{rss['recipe'] / rss['ours']:.1f}×** | ≤ {MEMORY_TARGET:g}× recipe: "
        f"{'met' if rss['ours'] <= MEMORY_TARGET * rss['recipe'] else 'missed'} |",
        f"| tracemalloc peak (Python + numpy), MB | {tm['ours']:.0f} | {tm['recipe']:.0f} "
        f"| {tm['recipe'] / tm['ours']:.1f}× | |",
        "",
        f"Where our {r['profiled']:.2f} s go (cProfile of `build_entry`, median of "
        f"{args.repeats}; profiling adds little, the calls are few and long):",
        "",
        "| our stage | ms | share |",
        "|---|---:|---:|",
        *(
            f"| {name} | {1000 * s:.0f} | {100 * s / r['profiled']:.0f} % |"
            for name, s in r["stages"]
        ),
        "",
        "| recipe stage (mean) | ms | share |",
        "|---|---:|---:|",
        *(
            f"| {name} | {1000 * s:.0f} | {100 * s / recipe:.0f} % |"
            for name, s in r["recipe_stages"].items()
        ),
        "",
    ]
    if r.get("set_s"):
        n, cores = args.set_cases, r["cores"]
        scale = FLARE22_TRAIN_CASES / n
        set_rows = []
        for workers, t in r["set_s"].items():
            procs = cores if workers == 0 else workers
            name = f"ours, `preprocess_dataset(workers={workers})`, {procs} process"
            set_rows.append((name + ("es" if procs > 1 else ""), t))
        set_rows.append(
            ("Colab recipe, one process as in the notebook (median × cases)", recipe * n)
        )
        lines += [
            f"| whole set, {cores} cores | measured: {n} cases | s/case "
            f"| estimate: {FLARE22_TRAIN_CASES} cases |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {t:.1f} s | {t / n:.2f} | **{t * scale:.0f} s** |"
                for name, t in set_rows
            ),
            "",
            f"The {FLARE22_TRAIN_CASES}-case figures extrapolate linearly from {n} phantoms of "
            f"{_x(args.shape)} (a worker pool's start-up is counted once per run, so its estimate "
            "is a little high); the recipe's set figure is its per-case median times the cases. "
            "Real FLARE22 CTs vary in slice count: scale by their total voxels. Each worker "
            f"process peaks at about our per-case RSS above, {cores} of them at once.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--target", type=int, nargs=3, default=[128, 128, 64], metavar="N")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per recipe (≥ 1)")
    parser.add_argument(
        "--set-cases", type=int, default=8, help="cases for the whole-set timing (0: skip it)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="keep the phantoms and caches here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(json.loads(args.worker))), flush=True)
        return 0

    with tempfile.TemporaryDirectory(prefix="flare-bench-prep-") as tmp:
        work = args.work_dir or Path(tmp)
        data = work / ZIP_ROOT
        start = time.perf_counter()
        cases = write_cases(data, max(1, args.set_cases), args.shape, args.seed)
        print(f"{len(cases)} cases written in {time.perf_counter() - start:.0f} s", flush=True)
        case, cache = cases[0], work / "cache"
        result: dict = {"orientation": ORIENTATIONS[0], "load_before": load_average()}
        result["ours_s"], result["recipe_s"], result["recipe_stages"] = time_both(
            case, cache, args.target, args.repeats
        )
        print(f"ours {result['ours_s']} s, recipe {result['recipe_s']} s", flush=True)
        run = runner("ours", case, cache, args.target)
        result["profiled"], result["stages"] = our_stages(run, args.repeats)
        result["memory"] = {
            memory: {
                recipe: measure_memory(recipe, memory, data, cache, args.target)
                for recipe in ("ours", "recipe")
            }
            for memory in ("rss", "tracemalloc")
        }
        print(f"peak MB {result['memory']}", flush=True)
        result["cores"] = os.cpu_count() or 1
        if args.set_cases > 0:
            result["set_s"] = {
                workers: time_set(data, work / f"set-cache-{workers}", args.target, workers)
                for workers in (1, 0)
            }
    finish(report(args, result), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
