"""The new training recipe against the old one, same CPU budget: held-out phantoms and a real CT.

Both recipes train the light VNet (base 8, depth 3, kernel 3, batch 2) in spacing mode
on CT-sized phantoms (3×3×6 mm grid, 48×48×32 patches: the physical size of the
default patch) for the same wall-clock budget, then predict held-out phantoms of
another seed family and, if ``--real`` names a FLARE22-layout folder holding case
9001 (one real patient), that real CT: a model trained only on phantoms (sim to real).

- old: what the benches trained before (constant lr 0.002, an epoch of one patch per
  case) with the former augmentation expressed in the new transforms: rotation about
  the long axis ±10° and zoom 0.9–1.1 (each 0.5), brightness ±10 %, gamma 0.7–1.5 and
  noise up to 0.03 (each 0.5); no blur, contrast, low resolution or inverted gamma.
  (The former code rotated the patch alone, zeros at its corners; here every recipe
  samples from the whole case.)
- new: nnU-Net's augmentation (``AugmentConfig()``), epochs of ``--steps`` steps and
  poly decay from lr 0.002 over as many epochs as the old recipe's measured pace fits
  in the wall-clock time the old recipe took (its time limit ends at an epoch's end).

    python bench/recipe_vs_seed.py --real flare_helpers/data/real_ct/FLARE22Train   # appends
    python bench/recipe_vs_seed.py --minutes 1 --cases 6 --no-append        # smoke
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish, run_config

from flare_helpers.data.extract import extract_zip
from flare_helpers.data.fileio import read_history
from flare_helpers.data.splits import read_splits
from flare_helpers.evaluate.evaluation import evaluate_model
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.workflows.training import train

HEADING = "## New recipe vs old at the same CPU budget (`bench/recipe_vs_seed.py`)"
INTRO = (
    "The light VNet trained for the same wall-clock budget per recipe in spacing mode\n"
    "(3×3×6 mm grid, 48×48×32 patches) on CT-sized phantoms, then scored on held-out\n"
    "phantoms of another seed family and on the real patient 9001 (trained on phantoms only).\n"
    "Target: new ≥ old on both, every organ reported."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
#: Phantoms of flare-synth's default ct family: CT-sized bodies whatever the shape.
PHANTOM_SHAPE = (128, 128, 40)
COMMON = [
    *(s for s in LIGHT_VNET if not s.startswith(("train.lr_schedule", "train.steps_per_epoch"))),
    "preprocess.workers=2",
    "preprocess.mode=spacing",
    "preprocess.target_spacing=[3.0,3.0,6.0]",
    "preprocess.target_shape=[48,48,32]",
    "data.val_fraction=0.15",
    "data.test_fraction=0.0",
    "train.workers=2",
    "localizer.enabled=false",  # the same sliding windows for both recipes; saves CPU
]
OLD = [
    "train.lr_schedule=constant",
    "train.steps_per_epoch=0",
    "augment.rotation_probability=0.5",
    "augment.rotation_deg=[0,0,10]",
    "augment.scale_probability=0.5",
    "augment.scale_range=[0.9,1.1]",
    "augment.brightness_probability=0.5",
    "augment.brightness_range=[0.9,1.1]",
    "augment.gamma_probability=0.5",
    "augment.noise_probability=0.5",
    "augment.noise_sigma=[0.0,0.57]",  # ≤ 0.03 on the [0, 1] scale
    "augment.blur_probability=0",
    "augment.contrast_probability=0",
    "augment.low_resolution_probability=0",
    "augment.gamma_inverted_probability=0",
]


def make_data(tmp: Path, cases: int, test_cases: int, shape) -> tuple[Path, Path]:
    """Training and held-out ct phantoms (seed families 21 and 99), CT-sized."""
    folders = []
    for name, n, seed in (("train", cases, 21), ("test", test_cases, 99)):
        archive = write_synthetic_zip(tmp / name, n, seed=seed, shape=tuple(shape), progress=False)
        folders.append(extract_zip(archive, tmp / name / "data", progress=False))
    return folders[0], folders[1]


def dsc(model: Path, data: Path, out: Path, which="all") -> dict[str, float]:
    scores = evaluate_model(model, data, out, which=which, progress=False).per_case
    return scores.groupby("organ")["dsc"].mean().to_dict()


def train_recipe(name: str, overrides: list[str], tmp: Path, minutes: float):
    cfg = run_config(
        None,
        tmp / name / "cache",
        tmp / name / "run",
        *overrides,
        f"train.time_limit_minutes={minutes}",
    )
    start = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    return result, seconds


def run(args, tmp: Path) -> list[dict]:
    train_data, test_data = (
        (args.train_data, args.test_data)
        if args.train_data
        else make_data(tmp, args.cases, 6, args.shape)
    )
    base = [f"data.data_dir={train_data}", *COMMON]
    rows = []
    old, old_s = train_recipe("old", [*base, *OLD, "train.epochs=10000"], tmp, args.minutes)
    history = read_history(old.history_csv)
    n_train = len(read_splits(old.run_dir / "splits.json")["train"])
    steps_done = len(history) * math.ceil(n_train / 2)
    # The old recipe stops at the first epoch end past the limit: the new one gets the
    # same wall-clock time, its poly decay spread over the epochs the old pace fits in it.
    per_step = old_s / max(steps_done, 1)
    epochs = max(1, math.ceil(old_s / (per_step * args.steps)))
    new_overrides = [*base, f"train.steps_per_epoch={args.steps}", f"train.epochs={epochs}"]
    new, new_s = train_recipe("new", new_overrides, tmp, old_s / 60)
    for name, result, seconds, steps in (
        ("old", old, old_s, steps_done),
        ("new", new, new_s, new.epochs_completed * args.steps),
    ):
        row = {"recipe": name, "minutes": seconds / 60, "epochs": result.epochs_completed}
        row["steps"] = steps
        row["phantoms"] = dsc(result.best_model, test_data, tmp / name / "test")
        if args.real:
            row["real"] = dsc(
                result.best_model, args.real, tmp / name / "real", which=["FLARE22_Tr_9001"]
            )
        print(name, {k: v for k, v in row.items() if k not in ("phantoms", "real")}, flush=True)
        print("  phantoms", {k: round(v, 3) for k, v in row["phantoms"].items()}, flush=True)
        if "real" in row:
            print("  real 9001", {k: round(v, 3) for k, v in row["real"].items()}, flush=True)
        rows.append(row)
    return rows


def report(rows: list[dict], args) -> str:
    lines = [
        dated_heading(
            f"{args.cases} training phantoms, 6 held out, real case 9001, "
            f"{args.minutes:g} min per recipe"
        ),
        "",
        environment(),
        "",
        "| recipe | minutes, epochs, steps | scored on | liver | right kidney | left kidney "
        "| spleen | mean DSC |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for where in ("phantoms", "real"):
            if where not in row:
                continue
            scores = row[where]
            cells = " | ".join(f"{scores.get(o, float('nan')):.3f}" for o in ORGANS)
            mean = np.mean([scores.get(o, float("nan")) for o in ORGANS])
            label = "held-out phantoms" if where == "phantoms" else "real CT 9001"
            lines.append(
                f"| {row['recipe']} | {row['minutes']:.1f}, {row['epochs']}, {row['steps']} "
                f"| {label} | {cells} | **{mean:.3f}** |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, PHANTOM_SHAPE)
    parser.add_argument("--cases", type=int, default=20, help="training phantoms (15%% to val)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per recipe")
    parser.add_argument("--steps", type=int, default=20, help="new recipe's steps per epoch")
    parser.add_argument("--real", type=Path, help="FLARE22-layout folder holding case 9001")
    parser.add_argument("--train-data", type=Path, help="extracted training phantoms to use")
    parser.add_argument("--test-data", type=Path, help="extracted held-out phantoms to use")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-recipe-") as tmp:
        rows = run(args, Path(tmp))
    finish(report(rows, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
