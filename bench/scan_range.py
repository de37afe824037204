"""Scan-range robustness: both preprocessing modes trained for the same CPU time, scored on
held-out phantoms of normal and 1.8× longer scans.

Trains a light VNet in ``resize`` mode and in ``spacing`` mode on the same
phantoms (``train.time_limit_minutes`` each, the same wall-clock budget), then
predicts held-out phantoms of another seed family twice: as normal scans, and
as ``--fov 1.8`` scans of the very same anatomy (more body above and below).
Every prediction is scored on the phantom's original grid (FLARE22 rules).
Resize mode squeezes the longer scan into the same grid, so every organ is
flatter along z than in training; spacing mode sees organs at their size.
Targets: spacing ≥ resize on normal scans; spacing's DSC on 1.8× scans within
0.02 of its normal-scan DSC.

    python bench/scan_range.py                      # 8 minutes per mode, appends
    python bench/scan_range.py --minutes 1 --cases 6 --test-cases 2 --no-append   # smoke
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish, scan_range_sets

from flare_helpers.config import load_config
from flare_helpers.data.extract import extract_zip
from flare_helpers.evaluate.evaluation import evaluate_model
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.workflows.training import train

HEADING = "## Scan-range robustness, resize vs spacing (`bench/scan_range.py`)"
INTRO = (
    "Both modes train the same light VNet (base 8, depth 3, kernel 3, today's augmentation)\n"
    "on the same phantoms for the same wall-clock budget, then predict held-out phantoms of\n"
    "another seed family as normal scans and as 1.8× longer scans of the same anatomy\n"
    "(`flare-synth --fov 1.8`), scored on their original grids. Targets: spacing ≥ resize on\n"
    "normal scans; spacing's mean DSC on the longer scans within 0.02 of its normal-scan DSC."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
SETTINGS = [
    *LIGHT_VNET,
    "preprocess.workers=2",
]
MODES = {
    "resize": ["preprocess.mode=resize", "preprocess.target_shape=[64,64,32]"],
    "spacing": [
        "preprocess.mode=spacing",
        "preprocess.target_spacing=[1.5,1.5,5.0]",
        "preprocess.target_shape=[48,48,24]",
        "train.steps_per_epoch=16",  # 2 patches per case of 16, batch 2
    ],
}


def run(args, tmp: Path) -> list[dict]:
    shape = tuple(args.shape)
    train_zip = write_synthetic_zip(
        tmp / "train", args.cases, seed=21, shape=shape, progress=False, family="simple"
    )
    train_data = extract_zip(train_zip, tmp / "train" / "data", progress=False)
    tests = scan_range_sets(tmp, args.test_cases, shape)
    rows = []
    for mode, settings in MODES.items():
        cfg = load_config(
            None,
            [
                f"data.data_dir={train_data}",
                f"data.cache_dir={tmp / mode / 'cache'}",
                f"train.output_dir={tmp / mode / 'run'}",
                "data.test_fraction=0.0",
                f"train.time_limit_minutes={args.minutes}",
                *SETTINGS,
                *settings,
            ],
        )
        start = time.perf_counter()
        result = train(cfg, progress=False)
        row = {
            "mode": mode,
            "minutes": (time.perf_counter() - start) / 60,
            "epochs": result.epochs_completed,
        }
        for name, data in tests.items():
            scores = evaluate_model(
                result.best_model, data, tmp / mode / name, which="all", progress=False
            ).per_case
            row[name] = scores.groupby("organ")["dsc"].mean().to_dict()
        rows.append(row)
    return rows


def report(rows: list[dict], args) -> str:
    lines = [
        dated_heading(
            f"{args.cases} training phantoms of {'×'.join(map(str, args.shape))}, "
            f"{args.minutes:g} min per mode, {args.test_cases} held-out phantoms"
        ),
        "",
        environment(),
        "",
        "| mode | training (min, epochs) | scans | liver | right kidney | left kidney | spleen | "
        "mean DSC |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for name in ("normal", "fov 1.8"):
            dsc = row[name]
            mean = sum(dsc[o] for o in ORGANS) / len(ORGANS)
            cells = " | ".join(f"{dsc[o]:.3f}" for o in ORGANS)
            lines.append(
                f"| {row['mode']} | {row['minutes']:.1f}, {row['epochs']} | {name} | {cells} | "
                f"**{mean:.3f}** |"
            )
    lines.append("")
    for row in rows:
        normal = sum(row["normal"][o] for o in ORGANS) / len(ORGANS)
        longer = sum(row["fov 1.8"][o] for o in ORGANS) / len(ORGANS)
        lines.append(f"- {row['mode']}: longer scans change mean DSC by {longer - normal:+.3f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (128, 128, 48))
    parser.add_argument("--cases", type=int, default=16, help="training phantoms (2 go to val)")
    parser.add_argument("--test-cases", type=int, default=4, help="held-out phantoms per scan type")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per mode")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-scan-range-") as tmp:
        rows = run(args, Path(tmp))
    finish(report(rows, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
