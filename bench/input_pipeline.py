"""Input-pipeline throughput: volumes/s that FlareDataset delivers, with augmentation.

Builds a cache from flare-synth phantoms at a realistic size (default
256×256×96 CT, preprocessed to 128×128×64), times each per-sample stage on one
core, then runs whole epochs through Keras' own epoch loop (what ``fit`` runs,
with nothing training) for 1, 2 and 4 workers as threads and as processes.
Prints a table and appends it to the "Input pipeline" section of BENCHMARKS.md.

    python bench/input_pipeline.py                  # defaults, appends to BENCHMARKS.md
    python bench/input_pipeline.py --cases 4 --epochs 1 --no-append
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
from _report import bench_parser, dated_heading, environment, finish, median_seconds

# Keras' private epoch loop is the public fit() loop minus the model.
from keras.src.trainers.epoch_iterator import EpochIterator

from flare_helpers.augment import (
    adjust_intensity,
    augment_pair,
    flip_lr,
    lr_swap_pairs,
    rotate_scale,
)
from flare_helpers.batches import FlareDataset
from flare_helpers.config import AugmentConfig, load_config
from flare_helpers.extract import extract_zip
from flare_helpers.labels import DEFAULT_ORGANS, one_hot
from flare_helpers.preprocess import preprocess_dataset
from flare_helpers.synthetic import write_synthetic_zip

HEADING = "## Input pipeline (`bench/input_pipeline.py`)"
INTRO = (
    "Volumes/s delivered by `flare_helpers.batches.FlareDataset` with the default\n"
    "augmentation (`AugmentConfig()`), iterated through Keras' epoch loop with no model,\n"
    "so this is the most the pipeline can feed. Per-stage costs are medians on one core."
)
TRAIN_STEP_S_PER_VOLUME = 13.0  # default VNet, 128×128×64, TF CPU on the 2-core CI machine


def build_cache(work: Path, n_cases: int, shape: list[int], target: list[int]) -> list[str]:
    """Phantoms → zip → extracted set → cache at ``target``; return the case ids."""
    zip_path = write_synthetic_zip(
        work, n_cases, seed=11, shape=shape, progress=False, family="simple"
    )
    data_dir = extract_zip(zip_path, work / "data", progress=False)
    cfg = load_config(None, [f"preprocess.target_shape={list(target)}"])
    summary = preprocess_dataset(data_dir, work / "cache", cfg, workers=1, progress=False)
    return sorted(c for ids in summary.splits.values() for c in ids)


def stage_costs(cache: Path, ids: list[str], repeats: int) -> list[tuple[str, float]]:
    """Seconds per volume of each stage, single-threaded."""
    ds = FlareDataset(cache, ids, len(DEFAULT_ORGANS) + 1, 1)
    image, label = ds.read(0)
    swap = lr_swap_pairs(DEFAULT_ORGANS)
    forced = AugmentConfig(
        spatial_probability=1.0, intensity_probability=1.0, lr_flip_probability=1.0
    )
    default = AugmentConfig()
    rng = np.random.default_rng
    augmented = FlareDataset(cache, ids, ds.n_classes, 1, augment=default, shuffle=True)
    return [
        ("read cache (mmap → float32)", median_seconds(lambda i: ds.read(i % len(ids)), repeats)),
        (
            "rotate + scale",
            median_seconds(lambda i: rotate_scale(image, label, 7.0, 1.05), repeats),
        ),
        ("left-right flip + swap", median_seconds(lambda i: flip_lr(image, label, swap), repeats)),
        (
            "intensity (gamma, gain, noise)",
            median_seconds(
                lambda i: adjust_intensity(image, 1.05, 0.02, 1.2, 0.03, rng(i)), repeats
            ),
        ),
        (
            "augment_pair, every transform",
            median_seconds(lambda i: augment_pair(image, label, rng(i), forced, swap), repeats),
        ),
        (
            "augment_pair, default config",
            median_seconds(lambda i: augment_pair(image, label, rng(i), default, swap), repeats),
        ),
        ("one-hot", median_seconds(lambda i: one_hot(label, ds.n_classes), repeats)),
        (
            "whole sample (__getitem__, B=1)",
            median_seconds(lambda i: augmented[i % len(ids)], repeats),
        ),
    ]


def throughput(
    cache: Path, ids: list[str], workers: int, processes: bool, batch_size: int, epochs: int
) -> float:
    """Volumes/s over ``epochs`` epochs (pool start-up included, as in fit)."""
    ds = FlareDataset(
        cache,
        ids,
        len(DEFAULT_ORGANS) + 1,
        batch_size,
        augment=AugmentConfig(),
        shuffle=True,
        workers=workers,
        use_multiprocessing=processes,
    )
    iterator = EpochIterator(x=ds, shuffle=False)
    volumes = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for _, _, data in iterator:
            volumes += sum(len(x) for x, _ in data)
    return volumes / (time.perf_counter() - start)


def report(args, stages, rows, n_cases: int) -> str:
    voxels = int(np.prod(args.target))
    target_mb = voxels * (len(DEFAULT_ORGANS) + 1) * 4 / 1e6
    batch_mb = target_mb + voxels * 4 / 1e6
    lines = [
        dated_heading(
            f"{n_cases} phantoms {'×'.join(map(str, args.shape))} → "
            f"{'×'.join(map(str, args.target))}, batch {args.batch_size}, {args.epochs} epochs"
        ),
        "",
        environment(
            f"scipy {scipy.__version__}",
            f"multiprocessing start method {multiprocessing.get_start_method()}",
        ),
        "",
        "| stage (one volume, one core) | ms |",
        "|---|---:|",
        *(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in stages),
        "",
        "| workers | kind | volumes/s | ms/volume | × CPU training need |",
        "|---:|---|---:|---:|---:|",
        *(
            f"| {w} | {kind} | {v:.1f} | {1000 / v:.0f} | {v * TRAIN_STEP_S_PER_VOLUME:.0f}× |"
            for w, kind, v in rows
        ),
        "",
        f"CPU training consumes 1 volume per ~{TRAIN_STEP_S_PER_VOLUME:.0f} s (default VNet), "
        "so even one worker feeds it with a wide margin. Worker processes send every batch "
        f"back pickled through one pipe: {batch_mb:.0f} MB per volume, of which the float32 "
        f"one-hot target is {target_mb:.0f} MB; threads share memory and send nothing.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (256, 256, 96))
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--target", type=int, nargs=3, default=[128, 128, 64], metavar="N")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=15, help="timings per stage")
    parser.add_argument("--work-dir", type=Path, help="keep the phantoms and cache here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="flare-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        start = time.perf_counter()
        ids = build_cache(work, args.cases, args.shape, args.target)
        print(f"cache of {len(ids)} cases built in {time.perf_counter() - start:.0f} s", flush=True)
        stages = stage_costs(work / "cache", ids, args.repeats)
        rows = []
        for workers in args.workers:
            for processes in (False, True):
                rate = throughput(
                    work / "cache", ids, workers, processes, args.batch_size, args.epochs
                )
                kind = "processes" if processes else "threads" if workers > 1 else "main thread"
                rows.append((workers, kind, rate))
                print(f"  {workers} {rows[-1][1]}: {rate:.1f} volumes/s", flush=True)
    block = report(args, stages, rows, len(ids))
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
