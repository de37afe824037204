"""`flare-predict` of a FLARE22-sized CT with and without the organ localiser, per precision.

Issue "fast, low-resource prediction". In a temporary folder:

* trains the localiser briefly (``--loc-epochs``) on ``--train-cases`` flare-synth
  phantoms of ``--shape`` (through ``workflows.training.train_localizer``, as ``flare-train`` does);
* saves beside it the default VNet (``ModelConfig()``, 128×128×64 windows of the
  1.2×1.2×2.5 mm grid) untrained, its 1×1×1 output convolution set to predict
  background everywhere: a window costs the same whatever its weights, and a
  constant output keeps random organ speckle from driving the growth guard and the
  largest-component step (a trained model's compact organs cost about as little);
* writes two held-out phantom CTs at exactly 0.8×0.8×2.5 mm: ``--shape`` and the same
  anatomy scanned 1.8× longer (``--fov 1.8``);
* times the real ``flare-predict`` command on each (fresh process: imports, model
  and localiser load, one CT) localised and with ``--no-localize``, in float32 and,
  where the CPU computes it natively, bfloat16: wall seconds, peak RSS
  (``resource.getrusage`` of the child), the windows run against the body crop's,
  and the seconds per stage that ``flare-predict`` prints.

It also reports how far each ground-truth organ lies inside the localiser's box
(mm to the nearest face; negative = cut). Targets: ≤ 60 s float32 on an idle
2-core CPU, ≤ 30 s where bfloat16 is native, the 1.8× scan ≤ 1.5× the normal
one, peak RSS ≤ 3 GB.

    python bench/predict_localized.py                       # appends to BENCHMARKS.md
    python bench/predict_localized.py --shape 160 160 40 --train-cases 4 --loc-epochs 2 \\
        --set model.base_filters=4 preprocess.target_shape=[32,32,16] --no-append   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import bench_parser, dated_heading, environment, finish, load_average, run_worker

from flare_helpers.model.runtime import cpu_bf16_flags

HEADING = "## Localised prediction end to end (`bench/predict_localized.py`)"
INTRO = (
    "`flare-predict` of one 512×512×110 phantom CT at 0.8×0.8×2.5 mm and of the same\n"
    "anatomy scanned 1.8× longer, default VNet (untrained, constant output) with a\n"
    "localiser trained briefly on phantoms, localised and over the whole body crop, per\n"
    "precision. Targets: ≤ 60 s float32 on an idle 2-core CPU, ≤ 30 s where bfloat16 is\n"
    "native, the long scan ≤ 1.5× the normal one, peak RSS ≤ 3 GB."
)
SPACING = (0.8, 0.8, 2.5)
REPORT = re.compile(r"(\d+) of (\d+) windows \((\w+)\); seconds: ([^;\n]*)")
MB = 1e6


def train_run(tmp: Path, args) -> Path:
    """The run folder: a localiser trained on phantoms, the untrained default VNet beside it."""
    from flare_helpers.config import load_config, save_config
    from flare_helpers.data.extract import extract_zip
    from flare_helpers.phantoms.synthetic import write_synthetic_zip
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism
    from flare_helpers.workflows.training import open_run, train_localizer

    zip_path = write_synthetic_zip(
        tmp / "zip", args.train_cases, 11, args.shape, progress=False, family="simple"
    )
    data = extract_zip(zip_path, tmp / "data", progress=False)
    run = tmp / "run"
    cfg = load_config(
        None,
        [
            f"data.data_dir={data}",
            f"data.cache_dir={tmp / 'cache'}",
            f"train.output_dir={run}",
            "data.val_fraction=0.2",
            "data.test_fraction=0.0",
            f"localizer.epochs={args.loc_epochs}",
            *args.set,
        ],
    )
    start = time.perf_counter()
    with open_run(cfg, progress=False) as folder:
        trained = train_localizer(cfg, folder.splits, progress=False)
    print(
        f"localiser: {trained.monitor} {trained.best_value:.3f} after "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )
    set_determinism(0, deterministic=False)
    net = build_and_compile(cfg, 5)
    logits = net.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.array([8.0, 0, 0, 0, 0], np.float32)])
    save_model_atomic(net, run / "best.keras")
    save_config(cfg, run / "config.yaml")
    return run


def write_ct(folder: Path, shape, fov: float) -> tuple[Path, Path]:
    """A held-out phantom (seed 5) at exactly 0.8×0.8×2.5 mm: image and label files."""
    import nibabel as nib

    from flare_helpers.phantoms.synthetic import make_phantom

    image, labels, _ = make_phantom(5, 1, shape, fov, family="simple")
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = -np.asarray(SPACING) * (np.asarray(image.shape) - 1) / 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"ct_fov{fov:g}_0000.nii.gz", folder / f"ct_fov{fov:g}_label.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), paths[0])
    nib.save(nib.Nifti1Image(labels, affine), paths[1])
    return paths


def organ_margins(run: Path, image_path: Path, label_path: Path) -> dict[str, float]:
    """Per organ: mm from its ground-truth bounding box to the nearest face of the box."""
    from flare_helpers.data.nifti import load_image, load_label
    from flare_helpers.infer.predict import load_predictor, locate_on_ct

    predictor = load_predictor(run / "best.keras")
    image = load_image(image_path)
    label = load_label(label_path, image.geometry).data
    _, region, _ = locate_on_ct(predictor, image)
    out = {}
    for organ, flare_id in zip(
        predictor.organs.organs, predictor.organs.to_flare(np.arange(1, 5)), strict=True
    ):
        where = np.nonzero(label == flare_id)
        if region is None or region.box is None or not where[0].size:
            out[organ] = float("nan")
            continue
        gaps = []
        for axis, (coords, s) in enumerate(zip(where, image.spacing, strict=True)):
            box = region.box[axis]
            gaps += [(coords.min() - box.start) * s, (box.stop - 1 - coords.max()) * s]
        out[organ] = float(min(gaps))
    return out


def run_cli(args: list[str], log: Path) -> dict:
    """Wall seconds, peak RSS and the printed report of one ``flare-predict`` run."""
    script = Path(sys.executable).with_name("flare-predict")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "flare_helpers", "predict"]
    )
    with log.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource.getrusage
        seconds = time.perf_counter() - start
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"flare-predict failed: {text[-800:]}")
    match = REPORT.search(text)
    stages = {
        name: float(value)
        for name, value in (part.rsplit(" ", 1) for part in match.group(4).split(", "))
    }
    return {
        "wall_s": seconds,
        "rss_mb": usage.ru_maxrss * 1024 / MB,  # Linux: KiB
        "windows": int(match.group(1)),
        "crop_windows": int(match.group(2)),
        "precision": match.group(3),
        "stages": stages,
    }


def prepare(cfg: dict) -> dict:
    """In a worker process: the trained run, the two CTs and the organs' margins in the box."""
    tmp = Path(cfg["tmp"])
    args = build_parser().parse_args(cfg["argv"])
    run = train_run(tmp, args)
    images, margins = {}, {}
    for fov in (1.0, 1.8):
        image, label = write_ct(tmp / "ct", args.shape, fov)
        images[str(fov)] = str(image)
        margins[str(fov)] = organ_margins(run, image, label)
    return {"run": str(run), "images": images, "margins": margins}


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--train-cases", type=int, default=8, help="phantoms for the localiser")
    parser.add_argument("--loc-epochs", type=int, default=30, help="localiser epochs")
    parser.add_argument("--repeats", type=int, default=1, help="flare-predict runs per setting")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--whole-crop",
        choices=("all", "first", "none"),
        default="all",
        help="whole-crop comparison runs: every scan and precision, only the normal scan in "
        "float32 (the slow ones otherwise dominate the bench's time), or none",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(prepare(json.loads(args.worker))), flush=True)
        return 0

    precisions = ["float32"]
    if cpu_bf16_flags():  # what infer.precision=auto picks on a CPU-only machine
        precisions.append("bfloat16")
    rows = []
    with tempfile.TemporaryDirectory(prefix="flare-bench-localized-") as tmp:
        tmp = Path(tmp)
        # Keras stays out of this process: a child's peak RSS would include it (fork).
        made = run_worker(__file__, {"tmp": str(tmp), "argv": argv or sys.argv[1:]})
        run = Path(made["run"])
        load_before = load_average()
        for fov in (1.0, 1.8):
            image = Path(made["images"][str(fov)])
            margins = made["margins"][str(fov)]
            print(f"fov {fov}: organ margins inside the box (mm) {margins}", flush=True)
            for precision in precisions:
                for localized in (True, False):
                    first = fov == 1.0 and precision == "float32"
                    if not localized and not (args.whole_crop == "all" or first):
                        continue
                    if not localized and args.whole_crop == "none":
                        continue
                    cli = ["--model-path", str(run / "best.keras"), "--input", str(image)]
                    cli += ["--output", str(tmp / "pred.nii.gz"), "--overwrite"]
                    cli += ["--precision", precision] + ([] if localized else ["--no-localize"])
                    runs = [run_cli(cli, tmp / "predict.log") for _ in range(args.repeats)]
                    best = min(runs, key=lambda r: r["wall_s"])
                    best["wall_median_s"] = statistics.median(r["wall_s"] for r in runs)
                    rows.append({"fov": fov, "localized": localized, **best, "margins": margins})
                    print(f"fov {fov} {precision} localised={localized}: {best}", flush=True)
    block = report(args, rows, load_before)
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)
    return 0


def report(args, rows: list[dict], load_before: str) -> str:
    """Markdown block of one run."""
    stages = ("load", "preprocess", "localize", "network", "resample", "write")
    lines = [
        dated_heading(
            f"{'×'.join(map(str, args.shape))} CT at 0.8×0.8×2.5 mm and 1.8× longer"
            + (f", overrides {' '.join(args.set)}" if args.set else "")
        ),
        "",
        environment(),
        f"(load average before the runs {load_before}); localiser trained "
        f"{args.loc_epochs} epochs on {args.train_cases} phantoms",
        "",
        "| scan | precision | windows | wall s (median) | peak RSS MB | "
        + " | ".join(stages)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(stages),
    ]
    for r in rows:
        where = "localised" if r["localized"] else "whole crop"
        cells = [f"{r['stages'].get(s, 0.0):.1f}" for s in stages]
        lines.append(
            f"| fov {r['fov']:g}, {where} | {r['precision']} | {r['windows']} of "
            f"{r['crop_windows']} | **{r['wall_median_s']:.1f}** | {r['rss_mb']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Ground-truth organs inside the localiser's box (mm to the nearest face):", ""]
    for fov in sorted({r["fov"] for r in rows}):
        margins = next(r["margins"] for r in rows if r["fov"] == fov)
        text = ", ".join(f"{k} {v:.0f}" for k, v in margins.items())
        lines.append(f"- fov {fov:g}: {text}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
