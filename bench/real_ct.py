"""Real CT: does a model trained only on phantoms find a real patient's organs? And learning on
any FLARE-layout folder, with its generalisation gap.

``sim2real``: the ``make demo`` recipe (``notebooks/params/demo.yaml``: spacing mode at
3×3×6 mm with the organ localiser, the light VNet, its epochs, batch and learning rate)
trains on ``--phantoms`` ``flare-synth`` phantoms only, then predicts the real CT
``flare_helpers/data/real_ct`` case 9001 (a whole abdomen-pelvis scan, 3 mm) and scores it:
DSC and NSD per organ, predicted against true volume, and the side (patient right or
left of the body's midline) where each predicted organ landed.

``folder``: train the same recipe on the first ``--train-cases`` cases of any FLARE22-layout
folder (``--data``, e.g. a FLARE22 subset, or ``flare-synth`` output) for ``--minutes``,
score the rest (held out) and the training cases themselves: the gap between the two is
the generalisation gap. Cases of one patient must not straddle the split: order them so.

Training and scoring go through the console commands (``flare-train``, ``flare-predict``,
``flare-evaluate``), as a user would run them.

    python bench/real_ct.py calibrate --phantoms 40 --shape 128 128 48   # 9001 vs the family
    python bench/real_ct.py sim2real                          # 16 phantoms, the demo budget
    python bench/real_ct.py sim2real --jitter 0 --no-append   # calibrated HU only
    python bench/real_ct.py sim2real --model runs/demo/model/best.keras   # make demo's model
    python bench/real_ct.py folder --synth 34 --train-cases 30 --minutes 10
    python bench/real_ct.py folder --data path/to/FLARE22Train --train-cases 10 --minutes 30
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from _report import bench_parser, dated_heading, environment, finish
from scipy import ndimage

from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.phantoms.ct import DEFAULT_JITTER, make_ct_phantom
from flare_helpers.phantoms.synthetic import ORIENTATIONS, _nifti_bytes, reorient

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = REAL_CT_DIR / "FLARE22Train"
CASE = "FLARE22_Tr_9001"
HEADING = "## Real CT: phantoms to a real patient, and learning on a folder (`bench/real_ct.py`)"
INTRO = (
    "*sim2real*: the `make demo` recipe (spacing mode at 3×3×6 mm with the localiser, light\n"
    "VNet, demo.yaml's epochs) trained only on phantoms, scored on the real CT 9001 of\n"
    "`flare_helpers/data/real_ct` (TotalSegmentator's example CT, model-made labels). Targets: liver\n"
    "≥ 0.85, spleen and each kidney ≥ 0.70, no organ on the wrong side. *folder*: the same\n"
    "recipe on K cases of a folder for a time budget, held-out and training DSC. Targets on\n"
    "the ct phantom family: 4 cases, 5 min → held-out mean ≤ 0.90 (room for pseudo-labels);\n"
    "30 cases, 10 min → every organ ≥ 0.85."
)
ORGANS = {"liver": 1, "right_kidney": 2, "left_kidney": 13, "spleen": 3}
DEMO_SHAPE = (256, 256, 96)


def demo_recipe() -> list[str]:
    """The ``make demo`` training settings, read from ``notebooks/params/demo.yaml``."""
    demo = yaml.safe_load((ROOT / "notebooks" / "params" / "demo.yaml").read_text())
    train = demo["03_train"]
    return [
        *demo["common"]["overrides"],
        f"train.epochs={train['epochs']}",
        f"train.batch_size={train['batch_size']}",
        f"train.learning_rate={train['learning_rate']}",
    ]


def _cli(name: str, *args: str) -> None:
    """Run a console command of this package (``flare-train`` …) with this interpreter."""
    module = name.replace("flare-", "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flare_helpers", module, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{name} failed: {(done.stderr or done.stdout).strip()[-1500:]}")


def write_phantoms(folder: Path, n: int, seed: int, shape, jitter: float) -> Path:
    """``n`` ct-family phantoms in the FLARE22 layout (as flare-synth + flare-extract)."""
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for k in range(1, n + 1):
        image, labels, affine, _ = make_ct_phantom(seed, k, shape, jitter=jitter)
        codes = ORIENTATIONS[(k - 1) % len(ORIENTATIONS)]
        for data, path in (
            (image, folder / "images" / f"FLARE22_Tr_{k:04d}_0000.nii.gz"),
            (labels, folder / "labels" / f"FLARE22_Tr_{k:04d}.nii.gz"),
        ):
            stored, stored_affine = reorient(data, affine, codes)
            path.write_bytes(_nifti_bytes(stored, stored_affine))
    return folder


def train(data: Path, work: Path, extra: list[str]) -> tuple[Path, float]:
    start = time.perf_counter()
    _cli(
        "flare-train",
        f"data.data_dir={data}",
        f"data.cache_dir={work / 'cache'}",
        f"train.output_dir={work / 'run'}",
        *demo_recipe(),
        *extra,
    )
    return work / "run" / "best.keras", (time.perf_counter() - start) / 60


def _scores(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv)
    return table.groupby("organ")[["dsc", "nsd"]].mean()


def side_and_volume(pred: Path, truth: Path) -> dict[str, dict]:
    """Predicted vs true volume (ml) and the side (R/L of the body midline) of each organ."""
    p_img, t_img = (
        nib.as_closest_canonical(nib.load(pred)),
        nib.as_closest_canonical(nib.load(truth)),
    )
    p, t = np.asarray(p_img.dataobj), np.asarray(t_img.dataobj)
    image = np.asarray(nib.as_closest_canonical(nib.load(_image_of(truth))).dataobj)
    body_x = np.flatnonzero((image > -400).any(axis=(1, 2)))
    midline = (body_x.min() + body_x.max()) / 2.0
    ml = abs(np.linalg.det(p_img.affine[:3, :3])) / 1000.0
    out = {}
    for organ, label in ORGANS.items():
        where = np.argwhere(p == label)
        side = "-" if where.size == 0 else ("R" if where[:, 0].mean() > midline else "L")
        out[organ] = {
            "pred_ml": float((p == label).sum() * ml),
            "true_ml": float((t == label).sum() * ml),
            "side": side,
            "true_side": "R" if np.argwhere(t == label)[:, 0].mean() > midline else "L",
        }
    return out


def _image_of(label: Path) -> Path:
    return label.parent.parent / "images" / label.name.replace(".nii.gz", "_0000.nii.gz")


def _epochs(run: Path) -> str:
    """``main (localiser)`` epochs completed in a run folder, from its history files."""
    counts = []
    for name in ("history.csv", "localizer_history.csv"):
        path = run / name
        counts.append(len(pd.read_csv(path)) if path.exists() else 0)
    return f"{counts[0]} epochs ({counts[1]} localiser)"


def sim2real(args, tmp: Path) -> str:
    if args.model:
        model = args.model
        trained = f"the model {args.model} ({_epochs(args.model.parent)})"
    else:
        phantoms = write_phantoms(
            tmp / "phantoms", args.phantoms, args.seed, args.shape, args.jitter
        )
        extra = [f"train.time_limit_minutes={args.minutes}"] if args.minutes else []
        model, minutes = train(phantoms, tmp / "work", [*extra, *args.overrides])
        trained = (
            f"{args.phantoms} ct phantoms {'×'.join(map(str, args.shape))} (seed {args.seed}, "
            f"HU jitter {args.jitter:g})"
            + (f", {' '.join(args.overrides)}" if args.overrides else "")
            + f", trained {minutes:.1f} min, {_epochs(model.parent)}"
        )
    real = tmp / "real"
    for kind, suffix in (("images", "_0000"), ("labels", "")):
        (real / kind).mkdir(parents=True)
        shutil.copyfile(
            REAL_CT / kind / f"{CASE}{suffix}.nii.gz", real / kind / f"{CASE}{suffix}.nii.gz"
        )
    pred_dir = tmp / "pred"
    pred_dir.mkdir()
    start = time.perf_counter()
    _cli(
        "flare-predict",
        "--model-path",
        str(model),
        "--input",
        str(real / "images" / f"{CASE}_0000.nii.gz"),
        "--output",
        str(pred_dir / f"{CASE}.nii.gz"),
    )
    predict_s = time.perf_counter() - start
    _cli(
        "flare-evaluate",
        "--pred-dir",
        str(pred_dir),
        "--data-path",
        str(real),
        "--output",
        str(tmp / "s.csv"),
    )
    scores = _scores(tmp / "s.csv")
    geo = side_and_volume(pred_dir / f"{CASE}.nii.gz", real / "labels" / f"{CASE}.nii.gz")
    lines = [
        dated_heading(f"sim2real: {trained} → real CT 9001, predicted in {predict_s:.0f} s"),
        "",
        environment(),
        "",
        "| organ | DSC | NSD | predicted ml | true ml | side (true) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for organ in ORGANS:
        g = geo[organ]
        lines.append(
            f"| {organ} | {scores.loc[organ, 'dsc']:.3f} | {scores.loc[organ, 'nsd']:.3f} | "
            f"{g['pred_ml']:.0f} | {g['true_ml']:.0f} | {g['side']} ({g['true_side']}) |"
        )
    return "\n".join(lines) + "\n"


def folder(args, tmp: Path) -> str:
    if args.synth:
        data = write_phantoms(tmp / "synth", args.synth, args.seed, args.shape, args.jitter)
        source = f"{args.synth} ct phantoms {'×'.join(map(str, args.shape))} (seed {args.seed})"
    else:
        data, source = args.data, str(args.data)
    stems = sorted(p.name[: -len(".nii.gz")] for p in (data / "labels").glob("*.nii.gz"))
    if len(stems) <= args.train_cases:
        raise SystemExit(f"{data} has {len(stems)} labelled cases: nothing left to hold out")
    parts = {"train": stems[: args.train_cases], "held_out": stems[args.train_cases :]}
    for part, names in parts.items():
        for kind in ("images", "labels"):
            (tmp / part / kind).mkdir(parents=True)
        for name in names:
            os.symlink(
                data / "images" / f"{name}_0000.nii.gz",
                tmp / part / "images" / f"{name}_0000.nii.gz",
            )
            os.symlink(data / "labels" / f"{name}.nii.gz", tmp / part / "labels" / f"{name}.nii.gz")
    val = max(1, round(args.train_cases * 0.15)) / args.train_cases
    model, minutes = train(
        tmp / "train",
        tmp / "work",
        [
            f"train.time_limit_minutes={args.minutes}",
            "train.epochs=10000",
            f"data.val_fraction={val:.4f}",
            "data.test_fraction=0.0",
            *args.overrides,
        ],
    )
    # Training DSC on at most --score-train of the training cases (scoring costs a prediction each).
    shutil.rmtree(tmp / "train_scored", ignore_errors=True)
    for kind in ("images", "labels"):
        (tmp / "train_scored" / kind).mkdir(parents=True)
    for name in parts["train"][: args.score_train]:
        for kind, suffix in (("images", "_0000"), ("labels", "")):
            os.symlink(
                data / kind / f"{name}{suffix}.nii.gz",
                tmp / "train_scored" / kind / f"{name}{suffix}.nii.gz",
            )
    rows = {}
    for part, folder_name in (("train", "train_scored"), ("held_out", "held_out")):
        csv = tmp / f"{part}.csv"
        _cli(
            "flare-evaluate",
            "--model-path",
            str(model),
            "--data-path",
            str(tmp / folder_name),
            "--cases",
            "all",
            "--output",
            str(csv),
        )
        rows[part] = _scores(csv)["dsc"]
    lines = [
        dated_heading(
            f"folder: {source}, trained on {args.train_cases} ({minutes:.1f} min incl. "
            f"preprocessing, budget {args.minutes:g} min, {_epochs(model.parent)}), "
            f"{len(parts['held_out'])} held out"
            + (f", {' '.join(args.overrides)}" if args.overrides else "")
        ),
        "",
        environment(),
        "",
        "| cases | liver | right kidney | left kidney | spleen | mean DSC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part, dsc in rows.items():
        cells = " | ".join(f"{dsc[o]:.3f}" for o in ORGANS)
        label = "train" if part == "train" else "held out"
        n = min(args.score_train, args.train_cases) if part == "train" else len(parts[part])
        lines.append(f"| {label} ({n}) | {cells} | **{np.mean([dsc[o] for o in ORGANS]):.3f}** |")
    gap = np.mean([rows["train"][o] for o in ORGANS]) - np.mean(
        [rows["held_out"][o] for o in ORGANS]
    )
    lines += ["", f"Generalisation gap (training − held-out mean DSC): {gap:+.3f}."]
    return "\n".join(lines) + "\n"


def _organ_stats(image, labels, affine, spine_x: float) -> dict[str, dict]:
    """Per organ: mean HU inside (eroded by a voxel), volume (ml), centre right of the spine (mm)."""
    ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    out = {}
    for organ, label in ORGANS.items():
        mask = labels == label
        core = ndimage.binary_erosion(mask)
        centre = nib.affines.apply_affine(affine, np.argwhere(mask).mean(0))
        out[organ] = {
            "hu": float(image[core].mean()),
            "ml": float(mask.sum() * ml),
            "right_of_spine": float(centre[0] - spine_x),
            "z": float(centre[2]),
        }
    return out


def _spine_x(image, affine) -> float:
    """World x (mm) of the vertebrae: the centre of bone (> 250 HU) near the body's midline."""
    bone = np.argwhere(image > 250)
    body = np.flatnonzero((image > -400).any(axis=(1, 2)))
    mid = (body.min() + body.max()) / 2
    near = bone[np.abs(bone[:, 0] - mid) < 0.08 * image.shape[0]]
    return float(nib.affines.apply_affine(affine, [near[:, 0].mean(), 0, 0])[0])


def calibrate(args, tmp: Path) -> str:
    """The real CT 9001's numbers beside the ct family's spread (no training)."""
    img = nib.load(REAL_CT / "images" / f"{CASE}_0000.nii.gz")
    image = np.asarray(img.dataobj).astype(np.float32)
    labels = np.asarray(nib.load(REAL_CT / "labels" / f"{CASE}.nii.gz").dataobj)
    real = _organ_stats(image, labels, img.affine, _spine_x(image, img.affine))
    drawn, phases = [], []
    for k in range(1, args.phantoms + 1):
        p_img, p_lab, p_aff, info = make_ct_phantom(args.seed, k, args.shape, jitter=args.jitter)
        drawn.append(_organ_stats(p_img.astype(np.float32), p_lab, p_aff, info["spine"][0]))
        phases.append(info["phase"])
    lines = [
        dated_heading(
            f"calibration: real CT 9001 vs {args.phantoms} ct phantoms "
            f"{'×'.join(map(str, args.shape))} (seed {args.seed}, HU jitter {args.jitter:g}; "
            f"phases: {', '.join(f'{p} {phases.count(p)}' for p in sorted(set(phases)))})"
        ),
        "",
        "Mean HU inside each organ (eroded by a voxel), volume, centre right (+) or left (−)",
        "of the spine; phantoms as median [min–max]; the phantoms' non-contrast cases apart,",
        "as 9001 is unenhanced. The right kidney's centre below the left's: `R−L z`.",
        "",
        "| organ | 9001 HU | phantoms HU (non-contrast) | phantoms HU (all) | 9001 ml | "
        "phantoms ml | 9001 mm from spine | phantoms mm from spine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def spread(values) -> str:
        if not values:
            return "–"
        return f"{np.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]"

    for organ in ORGANS:
        nc = [d[organ]["hu"] for d, p in zip(drawn, phases, strict=True) if p == "non-contrast"]
        lines.append(
            f"| {organ} | {real[organ]['hu']:.0f} | {spread(nc)} | "
            f"{spread([d[organ]['hu'] for d in drawn])} | {real[organ]['ml']:.0f} | "
            f"{spread([d[organ]['ml'] for d in drawn])} | {real[organ]['right_of_spine']:+.0f} | "
            f"{spread([d[organ]['right_of_spine'] for d in drawn])} |"
        )
    drop = [d["left_kidney"]["z"] - d["right_kidney"]["z"] for d in drawn]
    real_drop = real["left_kidney"]["z"] - real["right_kidney"]["z"]
    lines += [
        "",
        f"Right kidney lower than the left by {real_drop:.0f} mm in 9001; {spread(drop)} mm in the phantoms.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, DEMO_SHAPE)
    parser.add_argument("mode", choices=("sim2real", "folder", "calibrate"))
    parser.add_argument("--phantoms", type=int, default=16, help="sim2real: training phantoms")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jitter", type=float, default=DEFAULT_JITTER, help="HU randomisation sd")
    parser.add_argument("--minutes", type=float, default=0.0, help="training time limit (0: none)")
    parser.add_argument("--data", type=Path, help="folder: a FLARE22-layout folder")
    parser.add_argument(
        "--model", type=Path, help="sim2real: score this trained model (e.g. make demo's)"
    )
    parser.add_argument("--synth", type=int, default=0, help="folder: generate N phantoms instead")
    parser.add_argument("--train-cases", type=int, default=4)
    parser.add_argument(
        "--score-train", type=int, default=6, help="folder: training cases scored for the gap"
    )
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], help="extra key=value")
    args = parser.parse_args(argv)
    if args.mode == "folder" and not (args.data or args.synth):
        parser.error("folder needs --data DIR or --synth N")
    with tempfile.TemporaryDirectory(prefix="flare-bench-real-ct-") as tmp:
        mode = {"sim2real": sim2real, "folder": folder, "calibrate": calibrate}[args.mode]
        block = mode(args, Path(tmp))
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
