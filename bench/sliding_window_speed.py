"""Inference time of one CT-sized volume in both modes, at two overlaps, with and without TTA.

Saves an untrained default VNet (``ModelConfig()``, 128×128×64 input, 5 classes)
once, with a ``resize`` and a ``spacing`` run config beside two copies, writes
one 512×512×110 phantom CT (0.6–0.9 mm in-plane, LPS order) and times
``infer.predict_files`` for each setting in one process after a warm-up call
(graph tracing excluded: one network call first): load, preprocess, network, resample, write. The
network dominates and scales with the number of windows, so the table also
gives seconds per window and a GPU estimate from the VNet's multiply-adds.
Target for the default (spacing, overlap 0.5, no TTA): ≤ 60 s on the CPU.

    python bench/sliding_window_speed.py                     # appends to BENCHMARKS.md
    python bench/sliding_window_speed.py --shape 96 96 40 --set model.base_filters=4 \\
        --set preprocess.target_shape=[32,32,16] --no-append   # smoke
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import bench_parser, dated_heading, environment, finish

HEADING = "## Sliding-window inference time (`bench/sliding_window_speed.py`)"
INTRO = (
    "`infer.predict_files` of one 512×512×110 phantom CT with the default VNet (untrained,\n"
    "128×128×64 input), in one process after a warm-up call, per setting. The GPU column\n"
    "estimates the network time on a T4 from the VNet's multiply-adds at a sustained\n"
    "4 TFLOP/s (float32; about half of a T4's peak, typical for 3D convolutions), so it is\n"
    "a planning figure, not a measurement. Target: ≤ 60 s on the CPU for the default."
)
#: (label, mode, overlap, tta)
SETTINGS = [
    ("resize", "resize", 0.5, False),
    ("resize + TTA", "resize", 0.5, True),
    ("spacing, overlap 0.25", "spacing", 0.25, False),
    ("spacing, overlap 0.5 (default)", "spacing", 0.5, False),
    ("spacing, overlap 0.25 + TTA", "spacing", 0.25, True),
]
T4_FLOPS = 4e12


def conv_flops(model) -> float:
    """Floating-point operations (2 per multiply-add) of one forward pass of ``model``."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D | keras.layers.Conv3DTranspose):
            k = 1
            for n in layer.kernel_size:
                k *= n
            cin = layer.input.shape[-1]
            voxels = 1
            big = layer.output if isinstance(layer, keras.layers.Conv3D) else layer.input
            for n in big.shape[1:4]:
                voxels *= n
            total += 2.0 * k * cin * layer.filters * voxels
    return total


def make_runs(tmp: Path, overrides: list[str]) -> dict[str, Path]:
    from flare_helpers.callbacks import save_model_atomic
    from flare_helpers.config import load_config, save_config
    from flare_helpers.train import build_and_compile, set_determinism

    runs = {}
    for mode in ("resize", "spacing"):
        run = tmp / mode
        cfg = load_config(None, [f"preprocess.mode={mode}", *overrides, f"train.output_dir={run}"])
        if not runs:
            set_determinism(0, deterministic=False)
            model_file = save_model_atomic(build_and_compile(cfg, 5), run / "best.keras")
        else:
            run.mkdir(parents=True)
            shutil.copy(model_file, run / "best.keras")
        save_config(cfg, run / "config.yaml")
        runs[mode] = run / "best.keras"
    return runs


def run(args, tmp: Path) -> tuple[list[dict], float]:
    from flare_helpers.infer import StageTimer, load_predictor, predict_files
    from flare_helpers.nifti import load_image
    from flare_helpers.preprocess import prepare_image
    from flare_helpers.sliding_window import window_count
    from flare_helpers.synthetic import case_files

    name, payload = next(iter(case_files(0, 1, args.shape).items()))
    ct = tmp / Path(name).name
    ct.write_bytes(payload)
    models = make_runs(tmp, args.set)
    rows = []
    flops = None
    for label, mode, overlap, tta in SETTINGS:
        predictor = load_predictor(models[mode], overlap=overlap, tta=tta)
        flops = flops or conv_flops(predictor.model)
        x, _ = prepare_image(load_image(ct), predictor.params)
        patch = predictor.params.target_shape
        windows = 1 if mode == "resize" else window_count(x.shape, patch, overlap)
        passes = windows * (2 if tta else 1)
        predictor.model.predict_on_batch(np.zeros((1, *patch, 1), np.float32))  # trace once
        timer = StageTimer()
        start = time.perf_counter()
        predict_files(
            predictor, [(ct, tmp / "out.nii.gz")], overwrite=True, progress=False, timer=timer
        )
        total = time.perf_counter() - start
        rows.append(
            {
                "label": label,
                "grid": x.shape,
                "windows": windows,
                "passes": passes,
                "network": timer.seconds["network"],
                "total": total,
                "gpu": passes * flops / T4_FLOPS,
            }
        )
        print(rows[-1], flush=True)
    return rows, flops


def report(rows: list[dict], flops: float, args) -> str:
    lines = [
        dated_heading(
            f"one {'×'.join(map(str, args.shape))} CT, default VNet"
            + (f", overrides {' '.join(args.set)}" if args.set else "")
        ),
        "",
        environment(),
        f"Forward pass: {flops / 1e9:.0f} GFLOP per "
        f"{'×'.join(map(str, rows[0]['patch']))} network input.",
        "",
        "| setting | network grid | windows (passes) | network s | total s | s per pass | "
        "GPU estimate, network s | ≤ 60 s |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        grid = "×".join(map(str, r["grid"]))
        lines.append(
            f"| {r['label']} | {grid} | {r['windows']} ({r['passes']}) | {r['network']:.1f} | "
            f"**{r['total']:.1f}** | {r['network'] / r['passes']:.2f} | {r['gpu']:.2f} | "
            f"{'met' if r['total'] <= 60 else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-sw-") as tmp:
        rows, flops = run(args, Path(tmp))
    finish(report(rows, flops, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
