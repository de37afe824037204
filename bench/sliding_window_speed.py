"""Inference time of one CT-sized volume in both modes, at two overlaps, with and without TTA.

Saves an untrained default VNet (``ModelConfig()``, 128×128×64 input, 5 classes)
once, with a ``resize`` and a ``spacing`` run config beside two copies, writes
one 512×512×110 phantom CT (LPS order) and times ``infer.predict_files`` in one
process after one network call (graph tracing excluded): load, preprocess,
network, resample, write. The network time is the number of windows times a
constant per window, so on the CPU only resize (with and without TTA) and the
cheapest spacing setting (overlap 0.25) are run end to end; the other rows are
that run's non-network seconds plus their window count times its measured
seconds per window, and say so. Window counts are also given for a typical
FLARE22 CT geometry (0.8×0.8×2.5 mm, 512×512×110). The GPU column estimates the
network time on a T4 from the VNet's FLOPs. Target for the default (spacing,
overlap 0.5, no TTA): ≤ 60 s on the CPU.

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
#: (label, mode, overlap, tta, run end to end on the CPU)
SETTINGS = [
    ("resize", "resize", 0.5, False, True),
    ("resize + TTA", "resize", 0.5, True, True),
    ("spacing, overlap 0.25", "spacing", 0.25, False, True),
    ("spacing, overlap 0.5 (default)", "spacing", 0.5, False, False),
    ("spacing, overlap 0.25 + TTA", "spacing", 0.25, True, False),
    ("spacing, overlap 0.5 + TTA", "spacing", 0.5, True, False),
]
#: A typical FLARE22 CT: 512×512×110 at 0.8×0.8×2.5 mm, body crop about 350×260×275 mm.
TYPICAL_CROP_MM = (350.0, 260.0, 275.0)
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
    from flare_helpers.config import load_config, save_config
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism

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
    from flare_helpers.data.nifti import load_image
    from flare_helpers.infer.predict import StageTimer, load_predictor, predict_files
    from flare_helpers.model.sliding_window import window_count
    from flare_helpers.phantoms.synthetic import case_files
    from flare_helpers.preprocess.pipeline import prepare_image

    name, payload = next(iter(case_files(0, 1, args.shape, family="simple").items()))
    ct = tmp / Path(name).name
    ct.write_bytes(payload)
    models = make_runs(tmp, args.set)
    rows = []
    flops = None
    measured: dict[str, dict] = {}
    for label, mode, overlap, tta, run_it in SETTINGS:
        predictor = load_predictor(models[mode], overlap=overlap, tta=tta)
        flops = flops or conv_flops(predictor.model)
        x, _ = prepare_image(load_image(ct), predictor.params)
        patch = predictor.params.target_shape
        windows = 1 if mode == "resize" else window_count(x.shape, patch, overlap)
        typical = 1
        if mode == "spacing":
            grid = [
                round(mm / s)
                for mm, s in zip(TYPICAL_CROP_MM, predictor.params.target_spacing, strict=True)
            ]
            typical = window_count(grid, patch, overlap)
        passes = windows * (2 if tta else 1)
        row = {
            "label": label,
            "grid": x.shape,
            "patch": patch,
            "windows": windows,
            "passes": passes,
            "typical": typical,
            "gpu": passes * flops / T4_FLOPS,
        }
        if run_it:
            predictor.model.predict_on_batch(np.zeros((1, *patch, 1), np.float32))  # trace once
            timer = StageTimer()
            start = time.perf_counter()
            predict_files(
                predictor, [(ct, tmp / "out.nii.gz")], overwrite=True, progress=False, timer=timer
            )
            row |= {
                "network": timer.seconds["network"],
                "total": time.perf_counter() - start,
                "measured": True,
            }
            measured[mode] = row
        else:
            base = measured[mode]
            per_pass = base["network"] / base["passes"]
            row |= {
                "network": passes * per_pass,
                "total": base["total"] - base["network"] + passes * per_pass,
                "measured": False,
            }
        rows.append(row)
        print(row, flush=True)
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
        "GPU estimate, network s | ≤ 60 s | windows, typical FLARE22 CT |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        grid = "×".join(map(str, r["grid"]))
        how = "" if r["measured"] else " (est.)"
        lines.append(
            f"| {r['label']} | {grid} | {r['windows']} ({r['passes']}) | {r['network']:.0f}{how} | "
            f"**{r['total']:.0f}**{how} | {r['network'] / r['passes']:.1f} | {r['gpu']:.2f} | "
            f"{'met' if r['total'] <= 60 else 'missed'} | {r['typical']} |"
        )
    lines.append("")
    lines.append(
        "(est.): the measured spacing run's other stages plus passes × its seconds per pass."
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
