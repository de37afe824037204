"""Resolution ceiling of both preprocessing modes on a real abdominal CT.

The ceiling is what a perfect network could score with given settings: the
ground truth goes to the network grid as training labels do, back through the
inference mapping, and is scored against itself with the FLARE22 rules
(:mod:`flare_helpers.workflows.ceiling`). The real CT is ``flare_helpers/data/real_ct`` case 9002
(30 slices of TotalSegmentator's 3 mm test CT with its organ masks), first
resampled to FLARE22-like 0.8×0.8×2.5 mm voxels (image linear, labels nearest),
as a FLARE22 scan would be. Target: spacing mode at its default settings
reaches a mean ceiling ≥ 0.985.

    python bench/ceiling_real_ct.py                 # appends to BENCHMARKS.md
    python bench/ceiling_real_ct.py --no-append
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from _report import bench_parser, dated_heading, environment, finish

from flare_helpers.config import Config, load_config
from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.preprocess.resample import resize_linear, resize_nearest, shape_for_spacing
from flare_helpers.workflows.ceiling import resolution_ceiling

HEADING = "## Resolution ceiling on a real CT (`bench/ceiling_real_ct.py`)"
INTRO = (
    "What a perfect network could reach with each setting: ground truth → network grid →\n"
    "back through the inference mapping (largest component kept), scored with the FLARE22\n"
    "rules on the CT's own grid. Case 9002 of `flare_helpers/data/real_ct` (122×101×30 at 3 mm,\n"
    "TotalSegmentator masks) resampled to 0.8×0.8×2.5 mm first. The crop covers only 30\n"
    "slices (90 mm), so resize mode's voxels here are smaller than on a full abdominal scan\n"
    "and its ceiling is higher than it would be there. Target: spacing mode at its default\n"
    "settings ≥ 0.985 mean DSC."
)
REAL_CT = REAL_CT_DIR / "FLARE22Train"
CASE = "FLARE22_Tr_9002"
FLARE_LIKE_MM = (0.8, 0.8, 2.5)
SETTINGS: list[tuple[str, list[str]]] = [
    ("resize 128×128×64", ["preprocess.mode=resize", "preprocess.target_shape=[128,128,64]"]),
    ("resize 160×160×96", ["preprocess.mode=resize", "preprocess.target_shape=[160,160,96]"]),
    ("resize 192×192×128", ["preprocess.mode=resize", "preprocess.target_shape=[192,192,128]"]),
    ("spacing 2.0×2.0×3.0 mm", ["preprocess.mode=spacing", "preprocess.target_spacing=[2,2,3]"]),
    (
        "spacing 1.6×1.6×2.5 mm",
        ["preprocess.mode=spacing", "preprocess.target_spacing=[1.6,1.6,2.5]"],
    ),
    (
        "spacing 1.5×1.5×2.5 mm",
        ["preprocess.mode=spacing", "preprocess.target_spacing=[1.5,1.5,2.5]"],
    ),
    (
        "spacing 1.25×1.25×2.5 mm",
        ["preprocess.mode=spacing", "preprocess.target_spacing=[1.25,1.25,2.5]"],
    ),
    ("spacing 1.2×1.2×2.5 mm (default)", ["preprocess.mode=spacing"]),
    ("spacing 1.0×1.0×2.5 mm", ["preprocess.mode=spacing", "preprocess.target_spacing=[1,1,2.5]"]),
]


def flare_like_copy(out_dir: Path) -> Path:
    """Write case 9002 resampled to 0.8×0.8×2.5 mm (RAS) in the FLARE22 layout; return the folder."""
    image = load_image(REAL_CT / "images" / f"{CASE}_0000.nii.gz")
    label = load_label(REAL_CT / "labels" / f"{CASE}.nii.gz")
    if image.geometry.axcodes != "RAS":
        raise SystemExit(f"expected a RAS file, got {image.geometry.axcodes}")
    shape = shape_for_spacing(image.data.shape, image.spacing, FLARE_LIKE_MM)
    # edge-aligned grids (as resample.py): new voxel i sits at old voxel (i + 0.5) * r - 0.5
    ratio = np.array(image.data.shape) / np.array(shape)
    step = np.diag([*ratio, 1.0])
    step[:3, 3] = 0.5 * ratio - 0.5
    affine = image.geometry.affine @ step
    for sub, data in (
        ("images", np.rint(resize_linear(image.data, shape)).astype(np.int16)),
        ("labels", resize_nearest(label.data, shape).astype(np.uint8)),
    ):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        name = f"{CASE}_0000.nii.gz" if sub == "images" else f"{CASE}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), out_dir / sub / name)
    return out_dir


def run(data: Path) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for name, overrides in SETTINGS:
        cfg: Config = load_config(None, overrides)
        table = resolution_ceiling(data, cfg, progress=False).per_case
        dsc = dict(zip(table["organ"], table["dsc"], strict=True))
        rows.append((name, {**dsc, "mean": float(np.mean(list(dsc.values())))}))
    return rows


def report(rows: list[tuple[str, dict[str, float]]], shape: tuple[int, ...]) -> str:
    organs = ["liver", "right_kidney", "left_kidney", "spleen"]
    lines = [
        dated_heading(f"case 9002 at 0.8×0.8×2.5 mm ({'×'.join(map(str, shape))} voxels)"),
        "",
        environment(),
        "",
        "| setting | liver | right kidney | left kidney | spleen | mean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, dsc in rows:
        cells = " | ".join(f"{dsc[o]:.3f}" for o in organs)
        lines.append(f"| {name} | {cells} | **{dsc['mean']:.3f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (0, 0, 0))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-ceiling-") as tmp:
        data = flare_like_copy(Path(tmp) / "FLARE22Train")
        shape = nib.load(data / "labels" / f"{CASE}.nii.gz").shape
        rows = run(data)
    finish(report(rows, shape), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
