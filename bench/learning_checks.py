"""The learning checks that were once unit tests, at the size that proves them.

Two recipes of a light VNet (base 8, depth 3) trained to a fixed number of epochs:
resize mode on 20 phantoms of 96×96×40 (18 epochs), and spacing mode at a real
CT's physical size (20 phantoms of 96×96×32 voxels of 3.6–5.4 mm in-plane and
7.5–15 mm slices; 4×4×8 mm grid, 32×32×16 patches, 60 epochs of 14 steps).
Targets: held-out mean DSC ≥ 0.80 for both, and spacing's best model finds every
organ in every validation case. `make test` keeps a 140-step version of each
(``tests/test_learning.py``); these took 1–3 min each on a fast 2-core CPU and
about 13 min for spacing on a slow one, too long for CI.

    python bench/learning_checks.py                 # both recipes, appends to BENCHMARKS.md
    python bench/learning_checks.py --no-append --recipes resize
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _report import bench_parser, dated_heading, environment, finish, run_config

from flare_helpers.data.extract import extract_zip
from flare_helpers.data.splits import read_splits
from flare_helpers.evaluate.evaluation import evaluate_model
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.workflows.training import train

HEADING = "## Learning checks at full size (`bench/learning_checks.py`)"
INTRO = (
    "The learning tests that left `make test`: a light VNet (base 8, depth 3, batch 2,\n"
    "lr 0.002, no augmentation) in resize mode on 96×96×40 phantoms (18 epochs) and in\n"
    "spacing mode on CT-sized phantoms (4×4×8 mm grid, 32×32×16 patches, 60 epochs of 14\n"
    "steps, no localiser). Target: held-out mean DSC ≥ 0.80 for each."
)
LIGHT = [
    "preprocess.workers=1",
    "model.base_filters=8",
    "model.depth=3",
    "model.convs_per_stage=[1,2,2,2]",
    "model.kernel_size=3",
    "augment.enabled=false",
    "train.batch_size=2",
    "train.learning_rate=0.002",
    "train.lr_schedule=constant",
    "train.seed=3",
]
RECIPES = {
    "resize": (
        {"shape": (96, 96, 40), "voxel_scale": None},
        [
            *LIGHT,
            "preprocess.mode=resize",
            "preprocess.target_shape=[48,48,32]",
            "train.steps_per_epoch=0",
            "train.epochs=18",
        ],
    ),
    "spacing": (
        {"shape": (96, 96, 32), "voxel_scale": (6, 6, 3)},
        [
            *LIGHT,
            "preprocess.mode=spacing",
            "preprocess.target_spacing=[4.0,4.0,8.0]",
            "preprocess.target_shape=[32,32,16]",
            "train.steps_per_epoch=14",
            "train.epochs=60",
            "localizer.enabled=false",
        ],
    ),
}


def run_recipe(name: str, folder: Path) -> dict:
    """Train one recipe; held-out DSC per organ, the validation cases' minimum, the time."""
    phantoms, settings = RECIPES[name]
    given = {key: value for key, value in phantoms.items() if value is not None}
    zip_path = write_synthetic_zip(folder, 20, seed=11, progress=False, family="simple", **given)
    data = extract_zip(zip_path, folder / "data", progress=False)
    cfg = run_config(data, folder / "cache", folder / "run", *settings)
    start = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    held_out = evaluate_model(result.best_model, data, folder / "eval", progress=False)
    val_ids = read_splits(folder / "run" / "splits.json")["val"]
    validation = evaluate_model(
        result.best_model, data, folder / "val", which=val_ids, progress=False
    ).per_case
    per_organ = held_out.per_case.groupby("organ")["dsc"].mean().to_dict()
    return {
        "recipe": name,
        "per_organ": per_organ,
        "mean": float(np.mean(list(per_organ.values()))),
        "val_min": float(validation["dsc"].min()),
        "seconds": seconds,
    }


def main() -> None:
    parser = bench_parser(__doc__, (96, 96, 40))  # --shape is fixed per recipe here
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    args = parser.parse_args()
    rows = []
    for name in args.recipes:
        with tempfile.TemporaryDirectory() as tmp:
            row = run_recipe(name, Path(tmp))
        rows.append(
            f"| {row['recipe']} | "
            + " | ".join(f"{row['per_organ'][o]:.3f}" for o in sorted(row["per_organ"]))
            + f" | {row['mean']:.3f} | {row['val_min']:.3f} | {row['seconds']:.0f} s |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| recipe | left kidney | liver | right kidney | spleen | mean | min val DSC | train |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    block = "\n".join([dated_heading("learning checks"), "", environment(), "", table])
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)


if __name__ == "__main__":
    main()
