"""The default recipe and the one before nnU-Net's augmentation, over seeds, at one CPU budget.

One run says little: two runs of one recipe on two machines scored a real liver at
0.32 and 0.65. This trains the light VNet (base 8, depth 3) on CT-like phantoms in
spacing mode (3×3×6 mm grid, 48×48×32 patches, no localiser) for ``--minutes`` of
wall-clock time per run (the time limit holds, so a slower machine takes fewer
steps), for each recipe and each of ``--seeds``, and scores every run on the real
patient 9001 (trained on phantoms only) and on held-out phantoms: mean and spread
(min–max) per organ.

- default: the library's defaults (nnU-Net's augmentation, epochs of 250 steps,
  Adam 1e-3 with poly decay over 100 epochs).
- old: the recipe before nnU-Net's augmentation came in (``recipe_vs_seed.OLD``:
  constant lr 0.002, an epoch of one patch per case, milder augmentation).

    python bench/recipe_spread.py --minutes 10 --seeds 1 2 3    # appends to BENCHMARKS.md
    python bench/recipe_spread.py --minutes 0.5 --seeds 1 --cases 6 --no-append   # smoke
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish, run_config
from recipe_vs_seed import COMMON, OLD, PHANTOM_SHAPE, dsc, make_data

from flare_helpers.data.examples import REAL_CT_CASE, real_ct_folder
from flare_helpers.data.fileio import read_history
from flare_helpers.data.splits import read_splits
from flare_helpers.workflows.training import train

HEADING = "## Recipes over seeds at a CPU budget (`bench/recipe_spread.py`)"
INTRO = (
    "The light VNet trained for a fixed wall-clock budget per run on CT-like phantoms\n"
    "(spacing mode, 3×3×6 mm grid, 48×48×32 patches, no localiser), three seeds per recipe,\n"
    "scored on the real patient 9001 and on held-out phantoms: mean and min–max per organ."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
ARCHITECTURE = [s for s in LIGHT_VNET if s.startswith("model.")]
#: recipe_vs_seed's spacing-mode grid, patches and split, without its training recipe.
SPACING = [s for s in COMMON if s not in LIGHT_VNET]
RECIPES = {
    "default": [],
    "old": [
        "train.learning_rate=0.002",
        "train.lr_schedule=constant",
        "train.steps_per_epoch=0",
        "train.epochs=10000",
        *OLD,
    ],
}


def train_run(recipe: str, seed: int, data: Path, tmp: Path, minutes: float) -> dict:
    """One recipe, one seed: time, steps, and the run's best model."""
    folder = tmp / f"{recipe}-{seed}"
    cfg = run_config(
        data,
        tmp / "cache",
        folder,
        *ARCHITECTURE,
        *SPACING,
        *RECIPES[recipe],
        f"train.seed={seed}",
        f"train.time_limit_minutes={minutes}",
    )
    start = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    epochs = len(read_history(result.history_csv))
    n_train = len(read_splits(folder / "splits.json")["train"])
    steps_per_epoch = cfg.train.steps_per_epoch or -(-n_train // cfg.train.batch_size)
    return {
        "recipe": recipe,
        "seed": seed,
        "seconds": seconds,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "model": result.best_model,
        "folder": folder,
    }


def spread(values: list[float]) -> str:
    """``mean (min–max)`` of a list of scores."""
    return f"{np.mean(values):.3f} ({min(values):.2f}–{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, PHANTOM_SHAPE)
    parser.add_argument("--cases", type=int, default=20, help="training phantoms (15%% to val)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["default", "old"])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flare-bench-spread-") as tmp_name:
        tmp = Path(tmp_name)
        train_data, test_data = make_data(tmp, args.cases, 6, args.shape)
        for recipe in args.recipes:
            for seed in args.seeds:
                run = train_run(recipe, seed, train_data, tmp, args.minutes)
                run["real"] = dsc(
                    run["model"], real_ct_folder(), run["folder"] / "real", which=[REAL_CT_CASE]
                )
                run["phantoms"] = dsc(run["model"], test_data, run["folder"] / "test")
                print(
                    recipe,
                    seed,
                    f"{run['seconds']:.0f} s, {run['steps']} steps",
                    "real",
                    {k: round(v, 3) for k, v in run["real"].items()},
                    "phantoms",
                    {k: round(v, 3) for k, v in run["phantoms"].items()},
                    flush=True,
                )
                rows.append(run)
    lines = [
        dated_heading(
            f"{args.cases} CT-like training phantoms, {args.minutes:g} min per run, "
            f"seeds {' '.join(map(str, args.seeds))}"
        ),
        "",
        environment(),
        "",
        "| recipe | scored on | steps per run | s per step | liver | right kidney "
        "| left kidney | spleen | mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe in args.recipes:
        runs = [r for r in rows if r["recipe"] == recipe]
        steps = [r["steps"] for r in runs]
        per_step = np.mean([r["seconds"] / max(r["steps"], 1) for r in runs])
        for where, label in (("real", "real CT 9001"), ("phantoms", "6 held-out phantoms")):
            cells = [spread([r[where].get(o, 0.0) for r in runs]) for o in ORGANS]
            means = [np.mean([r[where].get(o, 0.0) for o in ORGANS]) for r in runs]
            lines.append(
                f"| {recipe} | {label} | {min(steps)}–{max(steps)} | {per_step:.2f} | "
                + " | ".join(cells)
                + f" | **{spread(means)}** |"
            )
    finish("\n".join(lines) + "\n", args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
