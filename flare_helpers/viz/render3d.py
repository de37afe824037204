"""3D view of organ meshes: a rotating turntable video (the interactive view is in scene3d).

The video is drawn on matplotlib's Agg canvas (CPU; no display, no GPU). Each
frame projects the vertices orthographically for the camera (a few numpy
products), sorts the triangles far to near and hands them to Agg's
Gouraud-triangle rasteriser (the primitive behind ``tripcolor(shading=
"gouraud")``), so surfaces are smoothly shaded from the marching-cubes normals.
That is about twice as fast as ``Poly3DCollection`` (which builds a Path per
triangle per frame) and looks better. One figure is built once; per frame only
the triangle positions and colours change. Meshes are coarsened until each panel
has at most ``VIDEO_MAX_FACES`` triangles, which keeps a 10 s clip of a
512×512×110 CT well under a minute on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.std import tqdm

from flare_helpers.data.labels import DEFAULT_ORGANS
from flare_helpers.errors import FlareError
from flare_helpers.viz.mesh import MESH_MAX_VOXELS, Mesh, organ_meshes
from flare_helpers.viz.planes import legend_handles, organ_names
from flare_helpers.viz.video import write_video

#: Triangle budget per video panel (render time grows linearly with it).
VIDEO_MAX_FACES = 12_000
#: Default video (width, height) in pixels: two 480×480 panels side by side.
VIDEO_SIZE: tuple[int, int] = (960, 480)
#: Camera azimuth of the first frame, in degrees about the superior axis from the
#: patient's right (+R) toward anterior (+A): 90 looks at the patient's front, so the
#: patient's right is on the viewer's left, as when facing the patient.
FRONT_AZIMUTH = 90.0
_BACKGROUND = (0.0, 0.0, 0.0)
_DPI = 100
_LIGHT_OFFSET_DEG = (35.0, -35.0)  # key light above and to the viewer's left of the camera
_PANEL_BOTTOM, _PANEL_HEIGHT = 0.09, 0.84  # figure fractions left for the legend and titles


def video_meshes(
    volumes: Sequence[np.ndarray],
    spacing: Sequence[float],
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    max_faces: int = VIDEO_MAX_FACES,
) -> list[dict[str, Mesh]]:
    """Meshes of each label volume, coarsened alike until every set has ≤ ``max_faces`` faces."""
    budget = MESH_MAX_VOXELS * 2
    while True:
        sets = [organ_meshes(v, spacing, organs=organs, max_voxels=budget) for v in volumes]
        faces = max(sum(len(m.faces) for m in s.values()) for s in sets)
        if faces <= max_faces or budget <= 4096:
            return sets
        # Faces grow with the surface, i.e. with budget ** (2/3).
        budget = int(budget * min(0.7, (max_faces / faces) ** 1.5))


def camera_axes(elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, toward-camera) unit vectors of an orthographic camera, in R, A, S.

    The camera sits at ``elevation`` degrees above the axial plane and ``azimuth``
    degrees about the superior axis (0 = on the patient's right, 90 = in front);
    superior projects upward on screen.
    """
    e, a = np.radians(elevation), np.radians(azimuth)
    toward = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    up = np.cross(toward, right)
    return right, up, toward


class _GouraudTriangles(Artist):
    """Triangles in data coordinates with per-vertex RGBA, drawn in array order."""

    def __init__(self) -> None:
        super().__init__()
        self.triangles = np.zeros((0, 3, 2))
        self.colours = np.zeros((0, 3, 4))

    def draw(self, renderer) -> None:
        if len(self.triangles):
            gc = renderer.new_gc()
            renderer.draw_gouraud_triangles(
                gc, self.triangles, self.colours, self.axes.transData.frozen()
            )
            gc.restore()


class _Surface:
    """All organ meshes of one panel, merged so triangles are depth-sorted across organs."""

    def __init__(self, meshes: dict[str, Mesh], centre: np.ndarray) -> None:
        starts = np.cumsum([0] + [len(m.vertices) for m in meshes.values()])[:-1]
        self.vertices = np.concatenate([m.vertices for m in meshes.values()]) - centre
        self.normals = np.concatenate([m.normals for m in meshes.values()])
        self.faces = np.concatenate(
            [m.faces + s for m, s in zip(meshes.values(), starts, strict=True)]
        )
        self.colours = np.concatenate(
            [
                np.tile(np.asarray(m.color, dtype=np.float32), (len(m.vertices), 1))
                for m in meshes.values()
            ]
        )

    def project(self, elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
        """Screen triangles (M, 3, 2) in mm and their vertex RGBA (M, 3, 4), far to near."""
        right, up, toward = camera_axes(elevation, azimuth)
        light = camera_axes(elevation + _LIGHT_OFFSET_DEG[0], azimuth + _LIGHT_OFFSET_DEG[1])[2]
        # Two-sided diffuse key light plus a weak headlight; a grey scale keeps each organ's hue.
        shade = 0.22 + 0.58 * np.abs(self.normals @ light) + 0.2 * np.abs(self.normals @ toward)
        rgba = np.empty((len(self.vertices), 4), dtype=np.float32)
        rgba[:, :3] = np.clip(self.colours * shade[:, None], 0.0, 1.0)
        rgba[:, 3] = 1.0
        screen = np.stack([self.vertices @ right, self.vertices @ up], axis=-1)
        order = np.argsort((self.vertices @ toward)[self.faces].sum(axis=1))
        faces = self.faces[order]
        return screen[faces], rgba[faces]


class Turntable:
    """One matplotlib figure with a panel per mesh set; :meth:`frame` renders one view.

    All panels share the same centre and scale (mm per pixel), chosen so the
    organs stay inside the panel through a full turn; superior is up.
    """

    def __init__(
        self,
        panels: Sequence[tuple[str, dict[str, Mesh]]],
        *,
        organs: Sequence[str],
        size: tuple[int, int],
        elevation: float,
    ) -> None:
        width, height = size
        self.size = (int(width), int(height))
        self.elevation = float(elevation)
        self.fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor=_BACKGROUND)
        self.canvas = FigureCanvasAgg(self.fig)
        points = np.concatenate([m.vertices for _, meshes in panels for m in meshes.values()])
        low, high = points.min(axis=0), points.max(axis=0)
        centre = (low + high) / 2.0
        radius = float(np.sqrt(((points[:, :2] - centre[:2]) ** 2).sum(axis=1)).max())
        font = max(6.0, 0.032 * height * 72 / _DPI)
        panel_px = (width / len(panels), height * _PANEL_HEIGHT)
        self._panels = []
        for k, (title, meshes) in enumerate(panels):
            ax = self.fig.add_axes(
                (k / len(panels), _PANEL_BOTTOM, 1 / len(panels), _PANEL_HEIGHT),
                facecolor=_BACKGROUND,
            )
            _set_limits(ax, panel_px, radius, float(high[2] - low[2]) / 2.0, self.elevation)
            ax.set_axis_off()
            self.fig.text(
                (k + 0.5) / len(panels),
                0.97,
                title,
                color="white",
                ha="center",
                va="top",
                fontsize=font,
            )
            artist = _GouraudTriangles()
            ax.add_artist(artist)
            surface = _Surface(meshes, centre) if meshes else None
            if surface is None:
                ax.text(0.5, 0.5, "no organs", color="white", ha="center", transform=ax.transAxes)
            self._panels.append((artist, surface))
        present = [o for o in organs if any(o in meshes for _, meshes in panels)]
        handles = legend_handles(present)
        self.fig.legend(
            handles=handles,
            loc="lower center",
            ncol=max(1, len(handles)),
            frameon=False,
            labelcolor="white",
            fontsize=font * 0.85,
            borderaxespad=0.2,
        )

    def frame(self, azimuth: float) -> np.ndarray:
        """Render the view from ``azimuth`` degrees (see :func:`camera_axes`) as (H, W, 3) uint8."""
        for artist, surface in self._panels:
            if surface is not None:
                artist.triangles, artist.colours = surface.project(self.elevation, azimuth)
        self.canvas.draw()
        rgb = np.asarray(self.canvas.buffer_rgba())[..., :3]
        return _fit(rgb, self.size)


def _set_limits(ax, panel_px, radius: float, half_height: float, elevation: float) -> None:
    """Equal-aspect limits (mm) holding the vertical cylinder around the organs at any azimuth."""
    e = np.radians(elevation)
    half_w = max(radius, 1.0)
    half_h = max(half_height * np.cos(e) + radius * abs(np.sin(e)), 1.0)
    mm_per_px = max(half_w / panel_px[0], half_h / panel_px[1]) * 2.0 / 0.94
    ax.set_xlim(-panel_px[0] * mm_per_px / 2.0, panel_px[0] * mm_per_px / 2.0)
    ax.set_ylim(-panel_px[1] * mm_per_px / 2.0, panel_px[1] * mm_per_px / 2.0)


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop or pad (black) a rendered buffer to exactly (height, width) of ``size``."""
    width, height = size
    out = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def render_rotation_video(
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    spacing: Sequence[float],
    out_path: str | Path,
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    seconds: float = 10.0,
    fps: int = 12,
    size: tuple[int, int] = VIDEO_SIZE,
    elevation: float = 15.0,
    progress: bool = True,
) -> Path:
    """Render a 360° turntable of the organ surfaces, ground truth and prediction side by side.

    The camera circles the superior axis once over the clip, starting in front of
    the patient (patient's right on the viewer's left) at ``elevation`` degrees
    above the axial plane; superior is up. Organ colours are those of the 2D
    overlays (``labels.ORGAN_COLORS``); both panels share one scale.

    Args:
        gt: (X, Y, Z) ground-truth FLARE22 ids (RAS order), or None.
        pred: predicted FLARE22 ids on the same grid, or None (one of them is needed).
        spacing: voxel size in mm along R, A, S.
        out_path: ``.mp4`` (H.264, yuv420p) or ``.gif``; written atomically. If MP4
            writing fails a GIF is written beside it instead (with a warning).
        organs: organs to draw.
        seconds, fps: clip length and frame rate (``round(seconds * fps)`` frames).
        size: (width, height) in pixels, rounded down to even numbers.
        elevation: camera height in degrees above the axial plane.
        progress: show a progress bar over the frames.

    Returns:
        The path written (``out_path``, or its ``.gif`` sibling after a fallback).
    """
    panels = [(t, v) for t, v in (("Ground truth", gt), ("Prediction", pred)) if v is not None]
    if not panels:
        raise FlareError("nothing to render: give a ground truth, a prediction or both")
    shapes = {np.shape(v) for _, v in panels}
    if len(shapes) != 1:
        raise FlareError(f"ground truth and prediction shapes differ: {sorted(shapes)}")
    size = (int(size[0]) // 2 * 2, int(size[1]) // 2 * 2)
    if min(size) < 16:
        raise FlareError(f"video size must be at least 16×16 pixels, got {size}")
    n_frames = max(1, round(float(seconds) * float(fps)))
    organs = organ_names(organs)
    mesh_sets = video_meshes([v for _, v in panels], spacing, organs=organs)
    if not any(mesh_sets):
        raise FlareError(f"none of the organs {', '.join(organs)} is present to render")
    scene = Turntable(
        [(t, m) for (t, _), m in zip(panels, mesh_sets, strict=True)],
        organs=organs,
        size=size,
        elevation=elevation,
    )

    def frames() -> Iterator[np.ndarray]:
        # A text bar, not tqdm.auto's widget: an executed notebook keeps a widget bar's
        # first state ("render: 0%") as its saved output, a text bar its last (100%).
        for i in tqdm(range(n_frames), desc="render", unit="frame", disable=not progress):
            yield scene.frame(FRONT_AZIMUTH + 360.0 * i / n_frames)

    return write_video(frames, out_path, fps=fps, size=size)
