"""Input-pipeline throughput: training patches/s that FlareDataset delivers, with augmentation.

Builds a spacing-mode cache from flare-synth phantoms at a realistic size (default
256×256×96 CT, resampled to the default 1.2×1.2×2.5 mm grid), times each per-sample
stage of the default recipe on one core (a 128×128×64 patch cut from the memory-mapped
case, or resampled from it by nnU-Net's rotation/zoom; each intensity transform;
one-hot), then runs epochs through Keras' own epoch loop (what ``fit`` runs, with
nothing training) for 1 and 2 workers as threads and as processes. The need it is
compared with is the default run's on a Colab T4 (:func:`flare_helpers.train.budget.plan_training`).
Prints a table and appends it to the "Input pipeline" section of BENCHMARKS.md.

    python bench/input_pipeline.py                  # defaults, appends to BENCHMARKS.md
    python bench/input_pipeline.py --cases 4 --steps 5 --no-append
"""

from __future__ import annotations

import dataclasses
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

from flare_helpers.config import AugmentConfig, Config, load_config
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.labels import DEFAULT_ORGANS, one_hot
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.preprocess.pipeline import preprocess_dataset
from flare_helpers.train.augment import (
    adjust_intensity,
    augment_patch,
    draw_params,
    sampling_matrix,
    transformed_patch,
)
from flare_helpers.train.batches import FlareDataset
from flare_helpers.train.budget import plan_training
from flare_helpers.train.patches import cut_patch

HEADING = "## Input pipeline (`bench/input_pipeline.py`)"
INTRO = (
    "Training patches/s delivered by `flare_helpers.train.batches.FlareDataset` with the default\n"
    "augmentation (`AugmentConfig()`), iterated through Keras' epoch loop with no model,\n"
    "so this is the most the pipeline can feed. Per-stage costs are medians on one core."
)
VOXEL_MM = Config().preprocess.target_spacing
INTENSITY = ("noise", "blur", "brightness", "contrast", "low_resolution", "gamma_inverted", "gamma")


def build_cache(work: Path, n_cases: int, shape: list[int], target: list[int]) -> list[str]:
    """Phantoms → zip → extracted set → spacing-mode cache; return the case ids."""
    zip_path = write_synthetic_zip(
        work, n_cases, seed=11, shape=shape, progress=False, family="simple"
    )
    data_dir = extract_zip(zip_path, work / "data", progress=False)
    cfg = load_config(None, [f"preprocess.target_shape={list(target)}"])
    summary = preprocess_dataset(data_dir, work / "cache", cfg, workers=1, progress=False)
    return sorted(c for ids in summary.splits.values() for c in ids)


def only(name: str) -> AugmentConfig:
    """The default config with every transform off but ``name`` (always on)."""
    off = {f"{k}_probability": 0.0 for k in AugmentConfig().probabilities()}
    return AugmentConfig(**{**off, f"{name}_probability": 1.0})


def stage_costs(cache: Path, ids: list[str], target, repeats: int) -> list[tuple[str, float]]:
    """Seconds per sample of each stage, single-threaded."""
    ds = FlareDataset(cache, ids, len(DEFAULT_ORGANS) + 1, 1, patch_shape=target)
    image, label = ds._array(ds._files[0][0]), ds._array(ds._files[0][1])
    start = ds.start(label, 0)
    patch = cut_patch(np.asarray(image, np.float32), start, target)
    rng = np.random.default_rng
    matrix = sampling_matrix((12.0, -8.0, 20.0), 1.15, VOXEL_MM)
    default = AugmentConfig()
    every = AugmentConfig(**{f"{k}_probability": 1.0 for k in default.probabilities()})
    every = dataclasses.replace(every, lr_flip_probability=0.0)
    rows = [
        (
            "cut patch from the memory map",
            median_seconds(lambda i: cut_patch(image, start, target), repeats),
        ),
        (
            "rotate 3 axes + zoom, from the case",
            median_seconds(
                lambda i: transformed_patch(image, label, start, target, matrix), repeats
            ),
        ),
    ]
    for name in INTENSITY:
        cfg = only(name)
        params = draw_params(rng(1), cfg)
        rows.append(
            (
                f"  {name}",
                median_seconds(lambda i, p=params, c=cfg: adjust_intensity(patch, p, c), repeats),
            )
        )
    rows += [
        (
            "augment_patch, every transform",
            median_seconds(
                lambda i: augment_patch(image, label, start, target, rng(i), every, (), VOXEL_MM),
                repeats,
            ),
        ),
        (
            "augment_patch, default chances",
            median_seconds(
                lambda i: augment_patch(image, label, start, target, rng(i), default, (), VOXEL_MM),
                4 * repeats,
            ),
        ),
        (
            "one-hot",
            median_seconds(
                lambda i: one_hot(cut_patch(label, start, target), ds.n_classes), repeats
            ),
        ),
    ]
    augmented = FlareDataset(
        cache,
        ids,
        ds.n_classes,
        1,
        augment=default,
        shuffle=True,
        patch_shape=target,
        voxel_mm=VOXEL_MM,
        steps_per_epoch=10_000,
    )
    rows.append(
        ("whole sample (__getitem__, B=1)", median_seconds(lambda i: augmented[i], 4 * repeats))
    )
    return rows


def throughput(
    cache: Path,
    ids: list[str],
    target,
    workers: int,
    processes: bool,
    batch_size: int,
    steps: int,
    epochs: int,
) -> float:
    """Patches/s over ``epochs`` epochs of ``steps`` steps (pool start-up included, as in fit)."""
    ds = FlareDataset(
        cache,
        ids,
        len(DEFAULT_ORGANS) + 1,
        batch_size,
        augment=AugmentConfig(),
        shuffle=True,
        workers=workers,
        use_multiprocessing=processes,
        patch_shape=target,
        voxel_mm=VOXEL_MM,
        steps_per_epoch=steps,
    )
    iterator = EpochIterator(x=ds, shuffle=False)
    volumes = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for _, _, data in iterator:
            volumes += sum(len(x) for x, _ in data)
    return volumes / (time.perf_counter() - start)


def report(args, stages, rows, n_cases: int) -> str:
    plan = plan_training(Config(), n_train_cases=35)
    need = plan.samples_per_second
    voxels = int(np.prod(args.target))
    target_mb = voxels * (len(DEFAULT_ORGANS) + 1) * 4 / 1e6
    batch_mb = target_mb + voxels * 4 / 1e6
    lines = [
        dated_heading(
            f"{n_cases} phantoms {'×'.join(map(str, args.shape))} → "
            f"{'×'.join(map(str, args.target))} patches, batch {args.batch_size}, "
            f"{args.epochs} epochs of {args.steps} steps"
        ),
        "",
        environment(
            f"scipy {scipy.__version__}",
            f"multiprocessing start method {multiprocessing.get_start_method()}",
        ),
        "",
        "| stage (one 128×128×64 patch, one core) | ms |",
        "|---|---:|",
        *(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in stages),
        "",
        "| workers | kind | patches/s | ms/patch | × a T4's need |",
        "|---:|---|---:|---:|---:|",
        *(f"| {w} | {kind} | {v:.1f} | {1000 / v:.0f} | {v / need:.1f}× |" for w, kind, v in rows),
        "",
        f"A T4 training the default run consumes ≈ {need:.1f} patches/s (batch "
        f"{plan.batch_size}, {plan.seconds_per_step:.2f} s per step, estimated from FLOPs: "
        "`flare_helpers.train.budget`). Worker processes send every batch back pickled through "
        f"one pipe: {batch_mb:.0f} MB per patch, of which the float32 one-hot target is "
        f"{target_mb:.0f} MB; threads share memory and send nothing.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (256, 256, 96))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--target", type=int, nargs=3, default=[128, 128, 64], metavar="N")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15, help="timings per stage")
    parser.add_argument("--work-dir", type=Path, help="keep the phantoms and cache here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="flare-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        start = time.perf_counter()
        ids = build_cache(work, args.cases, args.shape, args.target)
        print(f"cache of {len(ids)} cases built in {time.perf_counter() - start:.0f} s", flush=True)
        stages = stage_costs(work / "cache", ids, args.target, args.repeats)
        rows = []
        for workers in args.workers:
            for processes in (False, True):
                if processes and workers == 1:
                    continue
                rate = throughput(
                    work / "cache",
                    ids,
                    args.target,
                    workers,
                    processes,
                    args.batch_size,
                    args.steps,
                    args.epochs,
                )
                kind = "processes" if processes else "threads" if workers > 1 else "main thread"
                rows.append((workers, kind, rate))
                print(f"  {workers} {rows[-1][1]}: {rate:.1f} patches/s", flush=True)
    block = report(args, stages, rows, len(ids))
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
