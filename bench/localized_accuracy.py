"""Accuracy of localised prediction and of the sliding-window overlap, on held-out phantoms.

Issue "fast, low-resource prediction". Trains a light spacing-mode VNet (and, with
it, the run's organ localiser, as ``flare-train`` does) on phantoms for
``--minutes``, then predicts held-out phantoms of another seed family, as normal
scans and as 1.8× longer scans of the same anatomy, with each setting:

* the whole body crop at overlap 0.5 (today's default) and 0.25;
* the localiser's box at overlap 0.5 and 0.25;
* the localiser's box at overlap 0.5 in bfloat16, where the CPU computes it natively.

Each is scored on the phantoms' own grids (FLARE22 rules): mean DSC and NSD per
organ, windows run, and how many CTs' boxes passed the localiser's checks (organ
sides, plausible ml, fewer windows; a failed box predicts the whole crop). The
phantoms are CT-like (``--family ct``: bodies and organs of real sizes), since the
checks' organ volumes would reject every box of the tiny-organ ``simple`` family. For the whole-crop prediction it also counts the predicted
organ voxels outside the localiser's box and each organ's distance to the box's
faces (mm; negative = cut). Targets: localised DSC ≥ whole crop − 0.005 per organ;
no organ voxel outside the box; overlap 0.25 chosen only if it costs < 0.005 DSC.

    python bench/localized_accuracy.py                 # 8 minutes of training, appends
    python bench/localized_accuracy.py --minutes 0.5 --cases 6 --test-cases 2 \\
        --shape 96 96 40 --no-append                     # smoke (~4 min)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _report import bench_parser, dated_heading, environment, finish, scan_range_sets

from flare_helpers.config import load_config
from flare_helpers.data.cases import discover_cases, prediction_path
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.evaluate.evaluation import score_prediction_dir
from flare_helpers.infer.predict import load_predictor, locate_on_ct, predict_files
from flare_helpers.model.runtime import resolve_precision
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.workflows.training import train

HEADING = "## Localised prediction and overlap: accuracy (`bench/localized_accuracy.py`)"
INTRO = (
    "A light spacing-mode VNet and its localiser trained on phantoms, then held-out\n"
    "phantoms (normal and 1.8× longer scans) predicted over the whole body crop and over\n"
    "the localiser's box, at overlap 0.5 and 0.25 (Gaussian weights), and in bfloat16\n"
    "where native. Targets: localised DSC ≥ whole crop − 0.005; no organ voxel of the\n"
    "whole-crop prediction outside the box."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
LIGHT_VNET = [
    "model.base_filters=8",
    "model.depth=3",
    "model.convs_per_stage=[1,2,2,2]",
    "model.kernel_size=3",
    "model.normalization=instance",
    "preprocess.target_spacing=[1.5,1.5,3.0]",
    "preprocess.target_shape=[64,64,32]",
    "train.batch_size=2",
    "train.learning_rate=0.002",
    "train.lr_schedule=constant",
    "train.steps_per_epoch=16",  # 2 patches per case of 16, batch 2
    "train.epochs=10000",
    "train.seed=3",
    "preprocess.workers=2",
]
#: (label, infer overrides)
SETTINGS = [
    ("whole crop, overlap 0.5", {"localize": False, "overlap": 0.5, "precision": "float32"}),
    ("whole crop, overlap 0.25", {"localize": False, "overlap": 0.25, "precision": "float32"}),
    ("localised, overlap 0.5", {"localize": True, "overlap": 0.5, "precision": "float32"}),
    ("localised, overlap 0.25", {"localize": True, "overlap": 0.25, "precision": "float32"}),
    (
        "localised, overlap 0.5, bfloat16",
        {"localize": True, "overlap": 0.5, "precision": "bfloat16"},
    ),
]


def outside_box(model: Path, data: Path, pred_dir: Path) -> tuple[int, dict[str, float]]:
    """Predicted organ voxels outside the localiser's box, and each organ's least margin (mm)."""
    predictor = load_predictor(model, precision="float32")
    outside, margins = 0, {o: float("inf") for o in ORGANS}
    ids = dict(zip(ORGANS, predictor.organs.to_flare(np.arange(1, 5)), strict=True))
    for case in discover_cases(data).cases:
        image = load_image(case.image)
        _, region, _ = locate_on_ct(predictor, image)
        pred = load_label(prediction_path(pred_dir, case.case_id), image.geometry).data
        inside = np.zeros(pred.shape, dtype=bool)
        if region is not None and region.box is not None:
            inside[region.box] = True
        outside += int(np.count_nonzero((pred > 0) & ~inside))
        for organ, flare_id in ids.items():
            where = np.nonzero(pred == flare_id)
            if not where[0].size or region is None or region.box is None:
                continue
            gaps = []
            for axis, (coords, s) in enumerate(zip(where, image.spacing, strict=True)):
                box = region.box[axis]
                gaps += [(coords.min() - box.start) * s, (box.stop - 1 - coords.max()) * s]
            margins[organ] = min(margins[organ], float(min(gaps)))
    return outside, margins


def run(args, tmp: Path) -> tuple[list[dict], dict]:
    shape = tuple(args.shape)
    train_zip = write_synthetic_zip(
        tmp / "train", args.cases, seed=21, shape=shape, progress=False, family=args.family
    )
    train_data = extract_zip(train_zip, tmp / "train" / "data", progress=False)
    cfg = load_config(
        None,
        [
            f"data.data_dir={train_data}",
            f"data.cache_dir={tmp / 'cache'}",
            f"train.output_dir={tmp / 'run'}",
            "data.test_fraction=0.0",
            f"train.time_limit_minutes={args.minutes}",
            f"localizer.epochs={args.loc_epochs}",
            *LIGHT_VNET,
            *args.set,
        ],
    )
    start = time.perf_counter()
    result = train(cfg, progress=False)
    trained = {"minutes": (time.perf_counter() - start) / 60, "epochs": result.epochs_completed}
    native = resolve_precision("auto")[0] == "bfloat16"
    rows = []
    for name, data in scan_range_sets(tmp, args.test_cases, shape, args.family).items():
        pairs_of = {c.case_id: c.image for c in discover_cases(data).cases}
        for label, overrides in SETTINGS:
            if overrides["precision"] == "bfloat16" and not native:
                continue
            pred_dir = tmp / name / label.replace(" ", "_").replace(",", "")
            predictor = load_predictor(result.best_model, **overrides)
            reports: list = []
            pairs = [(img, prediction_path(pred_dir, cid)) for cid, img in pairs_of.items()]
            predict_files(predictor, pairs, overwrite=True, progress=False, reports=reports)
            scores = score_prediction_dir(pred_dir, data, list(pairs_of), progress=False).per_case
            row = {
                "scans": name,
                "setting": label,
                "dsc": scores.groupby("organ")["dsc"].mean().to_dict(),
                "nsd": scores.groupby("organ")["nsd"].mean().to_dict(),
                "windows": sum(r.windows_run for r in reports),
                "crop_windows": sum(r.windows_crop for r in reports),
                "grown": sum("grown" in r.note for r in reports),
                "boxes": sum(r.note.startswith("localised box") for r in reports),
            }
            if label == "whole crop, overlap 0.5":
                row["outside"], row["margins"] = outside_box(result.best_model, data, pred_dir)
            rows.append(row)
            print(name, label, row, flush=True)
    return rows, trained


def report(rows: list[dict], trained: dict, args) -> str:
    lines = [
        dated_heading(
            f"{args.cases} {args.family} training phantoms of {'×'.join(map(str, args.shape))}, "
            f"{trained['minutes']:.1f} min ({trained['epochs']} epochs), "
            f"{args.test_cases} held-out phantoms per scan type"
        ),
        "",
        environment(),
        "",
        "| scans | setting | windows (of crop's) | boxes used | CTs grown | "
        + " | ".join(f"DSC {o}" for o in ORGANS)
        + " | mean DSC | mean NSD |",
        "|---|---|---:|---:|---:|" + "---:|" * (len(ORGANS) + 2),
    ]
    for r in rows:
        mean_dsc = sum(r["dsc"][o] for o in ORGANS) / len(ORGANS)
        mean_nsd = sum(r["nsd"][o] for o in ORGANS) / len(ORGANS)
        cells = " | ".join(f"{r['dsc'][o]:.3f}" for o in ORGANS)
        lines.append(
            f"| {r['scans']} | {r['setting']} | {r['windows']} ({r['crop_windows']}) | "
            f"{r['boxes'] if 'localised' in r['setting'] else '–'} | {r['grown']} | {cells} | **{mean_dsc:.3f}** | {mean_nsd:.3f} |"
        )
    lines.append("")
    for r in rows:
        if "outside" in r:
            text = ", ".join(f"{o} {v:.0f}" for o, v in r["margins"].items())
            lines.append(
                f"- {r['scans']}: {r['outside']} organ voxels of the whole-crop prediction "
                f"outside the localiser's box; least margin per organ (mm): {text}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (128, 128, 48))
    parser.add_argument("--cases", type=int, default=16, help="training phantoms (val: 10%%)")
    parser.add_argument("--test-cases", type=int, default=4, help="held-out phantoms per scan type")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget (main VNet)")
    parser.add_argument("--loc-epochs", type=int, default=40, help="localiser epochs")
    parser.add_argument("--family", choices=["ct", "simple"], default="ct", help="phantoms")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-localized-accuracy-") as tmp:
        rows, trained = run(args, Path(tmp))
    finish(report(rows, trained, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
