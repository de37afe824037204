"""Benchmark: organ meshes and a rotating 3D video of a CT-sized label volume.

Times ``organ_meshes`` and ``render_rotation_video`` (ground truth and a
prediction side by side) for a 512×512×110 phantom label volume, the prediction
being the ground truth with every organ eroded by one voxel. Target: a 10 s
video in well under a minute on a 2-core CPU. Prints a table and appends it to
the "3D rendering" section of BENCHMARKS.md.

    python bench/render_video.py                    # defaults, appends to BENCHMARKS.md
    python bench/render_video.py --seconds 2 --no-append --keep out.mp4
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import matplotlib
import numpy as np
import skimage
from _report import bench_parser, dated_heading, environment, finish
from scipy import ndimage

from flare_helpers.data.labels import DEFAULT_ORGANS
from flare_helpers.phantoms.synthetic import make_phantom
from flare_helpers.viz import organ_meshes, plot_case, render_rotation_video, save_figure
from flare_helpers.viz.render3d import video_meshes

HEADING = "## 3D rendering (`bench/render_video.py`)"
INTRO = (
    "Meshes (scikit-image marching cubes on block-averaged, Gaussian-smoothed organ masks) and a "
    "rotating ground-truth | prediction video (matplotlib Agg Gouraud triangles, H.264 through "
    "imageio-ffmpeg's bundled ffmpeg) of a phantom label volume; the prediction is the ground "
    "truth eroded by one voxel. Target: a 10 s clip of a 512×512×110 volume well under a minute "
    "on a 2-core CPU."
)


def eroded(labels: np.ndarray) -> np.ndarray:
    """Every organ eroded by one voxel (a plausible, slightly-too-small prediction)."""
    out = np.zeros_like(labels)
    for flare_id, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            out[box][ndimage.binary_erosion(labels[box] == flare_id)] = flare_id
    return out


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start


def run(args, work: Path) -> tuple[list[tuple[str, str]], str]:
    image, gt, affine = make_phantom(0, 1, args.shape, family="simple")
    spacing = tuple(float(s) for s in np.abs(np.diag(affine)[:3]))
    pred = eroded(gt)
    image = image.astype(np.float32)

    meshes, mesh_s = timed(organ_meshes, gt, spacing)
    video_sets, video_mesh_s = timed(video_meshes, [gt, pred], spacing, organs=DEFAULT_ORGANS)
    out = work / f"turntable.{args.format}"
    path, video_s = timed(
        render_rotation_video,
        gt,
        pred,
        spacing,
        out,
        seconds=args.seconds,
        fps=args.fps,
        size=tuple(args.size),
        progress=False,
    )
    fig, figure_s = timed(plot_case, image, spacing, gt, pred)
    _, save_s = timed(save_figure, fig, work / "case.png")
    if args.keep:
        shutil.copyfile(path, args.keep)

    n_frames = round(args.seconds * args.fps)
    faces = sum(len(m.faces) for m in meshes.values())
    video_faces = max(sum(len(m.faces) for m in s.values()) for s in video_sets)
    rows = [
        (
            "label volume",
            f"{'×'.join(map(str, args.shape))}, spacing "
            f"{' × '.join(f'{s:.2f}' for s in spacing)} mm",
        ),
        ("organ_meshes (default, ≤1 M voxels)", f"{mesh_s:.2f} s, {faces} faces"),
        (
            "meshes for the video (both volumes)",
            f"{video_mesh_s:.2f} s, ≤{video_faces} faces/panel",
        ),
        (
            f"render_rotation_video {args.seconds:g} s × {args.fps} fps, "
            f"{args.size[0]}×{args.size[1]}",
            f"**{video_s:.1f} s** ({1000 * video_s / n_frames:.0f} ms/frame incl. meshing "
            f"and encoding), {path.stat().st_size / 1e6:.1f} MB {path.suffix[1:]}",
        ),
        ("plot_case + save_figure (3 planes × 3 columns)", f"{figure_s + save_s:.2f} s"),
    ]
    verdict = "meets" if video_s < 30 else "misses"
    return rows, f"{verdict} the target (well under a minute; 30 s taken as the bar)"


def report(rows: list[tuple[str, str]], verdict: str) -> str:
    lines = [
        dated_heading("phantom label volume, rotating video"),
        "",
        environment(
            f"matplotlib {matplotlib.__version__}",
            f"scikit-image {skimage.__version__}",
            f"imageio-ffmpeg {imageio_ffmpeg.__version__} "
            f"(ffmpeg {imageio_ffmpeg.get_ffmpeg_version()})",
        ),
        "",
        "| step | result |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        f"Video time {verdict}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, default=[960, 480], metavar=("W", "H"))
    parser.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    parser.add_argument("--keep", type=Path, help="copy the video here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="flare-bench-render-") as tmp:
        rows, verdict = run(args, Path(tmp))
    finish(report(rows, verdict), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
