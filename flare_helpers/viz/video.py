"""Write RGB frames to MP4 (H.264, bundled ffmpeg) or GIF, atomically; embed for notebooks."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from flare_helpers.data.fileio import atomic_path
from flare_helpers.errors import FlareError

if TYPE_CHECKING:
    from IPython.display import HTML

#: ffmpeg's libx264 quality on imageio-ffmpeg's 1..10 scale (6 ≈ CRF 20).
MP4_QUALITY = 6.0


def write_video(
    frames: Callable[[], Iterable[np.ndarray]],
    out_path: str | Path,
    *,
    fps: float,
    size: tuple[int, int],
) -> Path:
    """Write the frames to ``out_path`` (MP4, or GIF for a ``.gif`` path) and return the path.

    MP4 is H.264 / yuv420p from the ffmpeg bundled with ``imageio-ffmpeg`` (no
    system ffmpeg), playable in browsers and Colab. If MP4 writing fails, a GIF
    (Pillow) is written beside it instead (``.gif`` suffix) with a warning.

    Args:
        frames: a callable returning a fresh iterable of (H, W, 3) uint8 frames;
            called again for the GIF fallback.
        out_path: destination; written under a temporary name and renamed.
        fps: frames per second.
        size: (width, height) of every frame, even numbers (yuv420p needs them).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() == ".gif":
        return _write_gif(frames(), out_path, fps, size)
    try:
        return _write_mp4(frames(), out_path, fps, size)
    except (OSError, RuntimeError, ImportError, FlareError) as exc:
        gif_path = out_path.with_suffix(".gif")
        warnings.warn(f"MP4 writing failed ({exc}); writing {gif_path} instead", stacklevel=2)
        return _write_gif(frames(), gif_path, fps, size)


def _check_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.shape != (size[1], size[0], 3):
        raise ValueError(f"frame shape {frame.shape} is not (height, width, 3) for size {size}")
    return frame


def _write_mp4(frames: Iterable[np.ndarray], out_path: Path, fps: float, size) -> Path:
    import imageio_ffmpeg  # finds the ffmpeg binary on import: only when a video is written

    with atomic_path(out_path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            size,
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=MP4_QUALITY,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-f", "mp4", "-movflags", "+faststart"],
        )
        writer.send(None)
        try:
            for frame in frames:
                writer.send(_check_frame(frame, size))
        finally:
            writer.close()
    return out_path


def _write_gif(frames: Iterable[np.ndarray], out_path: Path, fps: float, size) -> Path:
    pictures = [
        Image.fromarray(_check_frame(f, size)).quantize(
            colors=255, method=Image.Quantize.FASTOCTREE
        )
        for f in frames
    ]
    if not pictures:
        raise FlareError("no frames to write", out_path)
    with atomic_path(out_path) as tmp:
        pictures[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=pictures[1:],
            duration=round(1000.0 / fps),
            loop=0,
            disposal=1,
        )
    return out_path


def video_html(path: str | Path, *, width: int | None = None) -> HTML:
    """Inline HTML for a notebook (Jupyter, Colab): ``<video controls>`` for MP4, ``<img>`` for GIF.

    The file is embedded as base64, so the output survives downloading the notebook
    and plays in untrusted (e.g. papermill-executed) notebooks too.
    """
    from IPython.display import HTML  # IPython only where a notebook shows the video

    path = Path(path)
    if not path.is_file():
        raise FlareError("video not found", path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    if path.suffix.lower() == ".gif":
        return HTML(f'<img src="data:image/gif;base64,{data}"{size} alt="{path.name}"/>')
    # The data URI goes in the <video> tag's own src: JupyterLab's sanitizer (untrusted
    # notebooks, e.g. papermill's executed copies) keeps <video src> but strips <source src>.
    return HTML(
        f'<video src="data:video/mp4;base64,{data}" controls loop autoplay muted{size}></video>'
    )
