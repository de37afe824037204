"""What a training patch sees on a CT-sized volume: body share and organs per 1,000 patches.

For the default spacing-mode settings (1.2×1.2×2.5 mm grid, 128×128×64 patches)
on the real CT of ``flare_helpers/data/real_ct`` and on a CT-size phantom (512×512×110,
the physical size of a FLARE22 scan), this reports:

- the body crop's size in mm and the share of it one patch covers, per axis
  and by volume;
- per 1,000 training patches drawn as :class:`~flare_helpers.train.batches.FlareDataset`
  draws them (:func:`~flare_helpers.train.patches.patch_start`), how many hold each
  organ (≥ 1 % of the organ's voxels, or ≥ 500 voxels), both kidneys at once,
  and no organ at all, for several ``train.foreground_fraction`` values.

    python bench/patch_coverage.py                # appends to BENCHMARKS.md
    python bench/patch_coverage.py --no-append
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _report import bench_parser, dated_heading, environment, finish

from flare_helpers.config import load_config
from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.data.extract import extract_zip
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.preprocess.pipeline import entry_dir, preprocess_dataset
from flare_helpers.train.patches import patch_start

HEADING = "## What a training patch sees (`bench/patch_coverage.py`)"
INTRO = (
    "Default spacing mode (1.2×1.2×2.5 mm grid, 128×128×64 patches). Per 1,000 training\n"
    "patches drawn as training draws them: how many hold each organ (≥ 1 % of its voxels or\n"
    "≥ 500 voxels), both kidneys, or no organ, by `train.foreground_fraction`."
)
REAL_CT = REAL_CT_DIR / "FLARE22Train"
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
FRACTIONS = (0.0, 0.33, 0.5, 0.67, 1.0)


def cached_cases(data: Path, cache: Path) -> list[tuple[str, np.ndarray, list[float]]]:
    """Preprocess ``data`` with the defaults; (case, label on the grid, crop size in mm)."""
    cfg = load_config(None, ["data.val_fraction=0", "data.test_fraction=0"])
    summary = preprocess_dataset(data, cache, cfg, workers=1, progress=False)
    spacing = np.array(cfg.preprocess.target_spacing)
    out = []
    for case in summary.splits["train"]:
        label = np.load(entry_dir(cache, case) / "label.npy")
        out.append((case, label, list(np.array(label.shape) * spacing)))
    return out


def organ_counts(label: np.ndarray, patch: tuple[int, ...], fraction: float, n: int) -> dict:
    """Patches (of ``n``) holding each organ, both kidneys, and none."""
    volume = np.bincount(label.ravel(), minlength=len(ORGANS) + 1)
    need = np.maximum(np.minimum(0.01 * volume, 500), 1)
    counts = {name: 0 for name in (*ORGANS, "both kidneys", "no organ")}
    for k in range(n):
        rng = np.random.default_rng([7, k])
        start = patch_start(label, patch, rng, fraction)
        box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        seen = np.bincount(label[box].ravel(), minlength=len(ORGANS) + 1)
        held = [volume[c] > 0 and seen[c] >= need[c] for c in range(1, len(ORGANS) + 1)]
        for name, hit in zip(ORGANS, held, strict=True):
            counts[name] += int(hit)
        counts["both kidneys"] += int(held[1] and held[2])
        counts["no organ"] += int(not any(held))
    return {name: round(1000 * c / n) for name, c in counts.items()}


def run(args, tmp: Path) -> list[dict]:
    phantom = extract_zip(
        write_synthetic_zip(
            tmp / "phantom", 1, seed=5, shape=(512, 512, 110), progress=False, family="simple"
        ),
        tmp / "phantom" / "data",
        progress=False,
    )
    patch = tuple(load_config().preprocess.target_shape)
    spacing = np.array(load_config().preprocess.target_spacing)
    rows = []
    for name, data in (("real CT 9002", REAL_CT), ("phantom 512×512×110", phantom)):
        for case, label, crop_mm in cached_cases(data, tmp / name.replace(" ", "_")):
            patch_mm = np.array(patch) * spacing
            share = np.minimum(patch_mm / np.array(crop_mm), 1.0)
            row = {"data": name, "case": case, "crop_mm": crop_mm, "share": share}
            row["counts"] = {f: organ_counts(label, patch, f, args.samples) for f in FRACTIONS}
            rows.append(row)
    return rows


def report(rows: list[dict], args) -> str:
    patch = load_config().preprocess.target_shape
    lines = [
        dated_heading(f"{args.samples} patches of {'×'.join(map(str, patch))} per setting"),
        "",
        environment(),
        "",
        "| data | body crop (mm) | patch share per axis | patch share of the crop's volume |",
        "|---|---|---|---:|",
    ]
    for row in rows:
        crop = "×".join(f"{v:.0f}" for v in row["crop_mm"])
        share = " / ".join(f"{v:.2f}" for v in row["share"])
        lines.append(f"| {row['data']} | {crop} | {share} | {np.prod(row['share']):.2f} |")
    lines += [
        "",
        "| data | foreground_fraction | liver | right kidney | left kidney | spleen | "
        "both kidneys | no organ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for fraction, counts in row["counts"].items():
            cells = " | ".join(str(counts[n]) for n in (*ORGANS, "both kidneys", "no organ"))
            lines.append(f"| {row['data']} | {fraction:g} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--samples", type=int, default=1000, help="patches per setting")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-patches-") as tmp:
        rows = run(args, Path(tmp))
    finish(report(rows, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
