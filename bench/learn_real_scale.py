"""Learning at real physical scale: resize vs spacing on CT-sized phantoms, same CPU budget.

The phantoms span a real CT's field of view (bodies about 280–480 mm across,
200–400 mm long) in few voxels (``voxel_scale``), so a light VNet trains in
minutes. Spacing mode uses a 3×3×6 mm grid, where a 48×48×32 patch covers
144×144×192 mm, the physical size of the default 128×128×64 patch at
1.2×1.2×2.5 mm: most patches miss most organs, as on a real CT. Each recipe
trains for ``--minutes`` (scored after half of them too), then predicts the
held-out phantoms (another seed family) scored on their original grids.

    python bench/learn_real_scale.py                       # 10 min per recipe, appends
    python bench/learn_real_scale.py --recipes spacing --minutes 1 --no-append   # smoke
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish

from flare_helpers.config import load_config
from flare_helpers.data.extract import extract_zip
from flare_helpers.evaluate.evaluation import evaluate_model
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.workflows.training import train

HEADING = "## Learning at real physical scale (`bench/learn_real_scale.py`)"
INTRO = (
    "A light VNet (base 8, depth 3, kernel 3, batch 2, lr 0.002) trains for the same\n"
    "wall-clock budget per recipe on CT-sized phantoms (bodies about 280–480 mm across),\n"
    "then predicts held-out phantoms of another seed family, scored on their original grids.\n"
    "Spacing mode runs on a 3×3×6 mm grid, where one 48×48×32 patch covers 144×144×192 mm:\n"
    "the physical size of the default patch on a real CT. Targets: spacing mean DSC ≥ 0.92\n"
    "and ≥ resize; every organ ≥ 0.85; ≥ 0.85 already at half the budget."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
#: CT-like physical size: 128×128×40 voxels of 2.7–4.1 mm in-plane, 5–10 mm slices.
PHANTOM_SHAPE = (128, 128, 40)
VOXEL_SCALE = (4.5, 4.5, 2.0)
SETTINGS = [
    *LIGHT_VNET,
    "preprocess.workers=2",
    "data.val_fraction=0.15",
]
RECIPES = {
    "resize": ["preprocess.mode=resize", "preprocess.target_shape=[48,48,32]"],
    "spacing": [
        "preprocess.mode=spacing",
        "preprocess.target_spacing=[3.0,3.0,6.0]",
        "preprocess.target_shape=[48,48,32]",
    ],
}


def make_data(tmp: Path, cases: int, test_cases: int) -> tuple[Path, Path]:
    """Training and held-out phantoms (seed families 21 and 99) at CT-like physical size."""
    folders = []
    for name, n, seed in (("train", cases, 21), ("test", test_cases, 99)):
        archive = write_synthetic_zip(
            tmp / name,
            n,
            seed=seed,
            shape=PHANTOM_SHAPE,
            voxel_scale=VOXEL_SCALE,
            progress=False,
            family="simple",
        )
        folders.append(extract_zip(archive, tmp / name / "data", progress=False))
    return folders[0], folders[1]


def held_out_dsc(model: Path, data: Path, out: Path) -> dict[str, float]:
    scores = evaluate_model(model, data, out, which="all", progress=False).per_case
    return scores.groupby("organ")["dsc"].mean().to_dict()


def run(args, tmp: Path) -> list[dict]:
    train_data, test_data = make_data(tmp, args.cases, args.test_cases)
    rows = []
    for name in args.recipes:
        overrides = [
            f"data.data_dir={train_data}",
            f"data.cache_dir={tmp / name / 'cache'}",
            f"train.output_dir={tmp / name / 'run'}",
            "data.test_fraction=0.0",
            *SETTINGS,
            *RECIPES[name.split("+")[0]],
            *args.extra.get(name, []),
        ]
        row = {"recipe": name, "settings": args.extra.get(name, [])}
        spent = 0.0
        for half in ("half", "full"):
            cfg = load_config(None, [*overrides, f"train.time_limit_minutes={args.minutes / 2}"])
            start = time.perf_counter()
            result = train(cfg, progress=False)
            spent += time.perf_counter() - start
            row[half] = held_out_dsc(result.best_model, test_data, tmp / name / half)
            row[f"{half}_epochs"] = result.epochs_completed
            row[f"{half}_minutes"] = spent / 60
            print(name, half, row[f"{half}_epochs"], {k: round(v, 3) for k, v in row[half].items()})
        rows.append(row)
    return rows


def mean(dsc: dict[str, float]) -> float:
    return float(np.mean([dsc[o] for o in ORGANS]))


def report(rows: list[dict], args) -> str:
    lines = [
        dated_heading(
            f"{args.cases} training phantoms, {args.test_cases} held out, "
            f"{args.minutes:g} min per recipe"
        ),
        "",
        environment(),
        "",
        "| recipe | after (min, epochs) | liver | right kidney | left kidney | spleen | mean DSC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        label = row["recipe"] + (f" ({', '.join(row['settings'])})" if row["settings"] else "")
        for half in ("half", "full"):
            cells = " | ".join(f"{row[half][o]:.3f}" for o in ORGANS)
            lines.append(
                f"| {label} | {row[f'{half}_minutes']:.1f}, {row[f'{half}_epochs']} | {cells} | "
                f"**{mean(row[half]):.3f}** |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, PHANTOM_SHAPE)
    parser.add_argument("--cases", type=int, default=30, help="training phantoms (15%% to val)")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out phantoms")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per recipe")
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=list(RECIPES),
        help="recipes to run: resize, spacing, or NAME+TAG with --set NAME+TAG key=value",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="append",
        default=[],
        metavar="RECIPE KEY=VALUE",
        help="extra overrides for one recipe, e.g. --set spacing+none model.normalization=none",
    )
    args = parser.parse_args(argv)
    args.extra = {group[0]: group[1:] for group in args.set}
    with tempfile.TemporaryDirectory(prefix="flare-bench-real-scale-") as tmp:
        rows = run(args, Path(tmp))
    finish(report(rows, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
