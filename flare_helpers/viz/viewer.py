"""Interactive slice viewer (ipywidgets) with a static fallback for headless runs.

The picture is a PNG in an ``ipywidgets.Image`` drawn with numpy + Pillow, not
a matplotlib widget backend: core ipywidgets work in Jupyter and in Colab
without enabling a custom widget manager, and a slider step costs milliseconds.
Only API common to ipywidgets 7.7 (Colab) and 8.x (JupyterLab 4) is used.

On screen the picture fits a fixed square (``box_px``, at most 640 px) with its
physical aspect and the orientation letters drawn on it; the caption and the
organ legend sit beside it, so controls, picture and legend fit one screen.
Slice numbers are 1-based everywhere the user sees them (slider, caption).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from flare_helpers.data.labels import DEFAULT_ORGANS, ORGAN_COLORS
from flare_helpers.errors import FlareError
from flare_helpers.viz.display import missing_extension_note, png_data_uri, show, widget_bundle
from flare_helpers.viz.planes import (
    DEFAULT_ALPHA,
    DEFAULT_HU_WINDOW,
    ORIENTATION_LETTERS,
    PLANE_AXIS,
    PLANES,
    CaseArrays,
    display_name,
    organ_centre,
    organ_names,
    overlay_rgb,
    plane_extent_mm,
    plane_slice,
)
from flare_helpers.viz.slices import plot_case

if TYPE_CHECKING:
    import ipywidgets

#: ``load_case(case_id)`` returns a CaseArrays or ``(image, spacing, gt, pred)``.
CaseLoader = Callable[[str], "CaseArrays | tuple"]
#: Overlay sources offered by the viewer's toggle.
SOURCES: dict[str, str] = {"ground truth": "gt", "prediction": "pred", "none": "none"}
#: Largest on-screen picture (CSS pixels per side): with the controls above it, the
#: picture, slider and legend stay on one laptop screen.
MAX_BOX_PX = 640
DEFAULT_BOX_PX = 512
_TRUE = {"1", "true", "yes", "on"}


def is_headless() -> bool:
    """True when widgets cannot be used: ``FLARE_HEADLESS=1``, no IPython kernel, or papermill.

    Papermill is recognised by its process being the kernel's parent; CI should
    still set ``FLARE_HEADLESS=1`` (kernels inherit it) to be explicit.
    """
    if os.environ.get("FLARE_HEADLESS", "").strip().lower() in _TRUE:
        return True
    try:  # IPython is optional outside notebooks
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return True
    return _parent_is_papermill()


def _parent_is_papermill() -> bool:
    try:
        cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return False
    return b"papermill" in cmdline


class SliceViewer:
    """State and widgets of one slice viewer (made by :func:`slice_viewer`).

    Attributes:
        case_id, plane, index, source, opacity: the current selection (``source`` is
            ``"gt"``, ``"pred"`` or ``"none"``; ``index`` is the 0-based array index along
            ``plane``'s axis; slider and caption show ``index + 1``).
        case: the loaded :class:`CaseArrays` of ``case_id``.
        widget: the ipywidgets box (None in static mode).
        image: its picture widget (PNG bytes in ``image.value``), None in static mode.
        figure: the static matplotlib figure (static mode only, else None).
    """

    def __init__(
        self,
        load_case: CaseLoader,
        case_ids: Sequence[str],
        *,
        organs: Sequence[str] = DEFAULT_ORGANS,
        hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
        box_px: int = DEFAULT_BOX_PX,
    ) -> None:
        if not 64 <= int(box_px) <= MAX_BOX_PX:
            raise FlareError(f"box_px must be 64..{MAX_BOX_PX} pixels, got {box_px}")
        self.case_ids = [str(c) for c in case_ids]
        if not self.case_ids:
            raise FlareError("slice_viewer needs at least one case id")
        self.load_case = load_case
        self.organs = organ_names(organs)
        self.hu_window = tuple(hu_window)
        self.box_px = int(box_px)
        self.plane = "axial"
        self.opacity = DEFAULT_ALPHA
        self.widget: ipywidgets.Box | None = None
        self.figure: Figure | None = None
        self.image: ipywidgets.Image | None = None
        self.label: ipywidgets.HTML | None = None
        self._controls: dict[str, ipywidgets.Widget] = {}
        self._syncing = False
        self.select_case(self.case_ids[0])

    # ------------------------------------------------------------------ selection

    def select_case(self, case_id: str) -> None:
        """Load ``case_id`` and move to the centre of its organs in the current plane."""
        loaded = self.load_case(case_id)
        self.case = loaded if isinstance(loaded, CaseArrays) else CaseArrays(*loaded)
        self.case_id = str(case_id)
        if self.case.gt is not None:
            self.source = "gt"
        elif self.case.pred is not None:
            self.source = "pred"
        else:
            self.source = "none"
        self.select_plane(self.plane)

    def select_plane(self, plane: str) -> None:
        """Show ``plane`` at the slice through the organs' centre."""
        if plane not in PLANE_AXIS:
            raise FlareError(f"unknown plane '{plane}'; choose one of {', '.join(PLANES)}")
        self.plane = plane
        self.index = self._centre()[PLANE_AXIS[plane]]

    @property
    def n_slices(self) -> int:
        """Number of slices along the current plane's axis."""
        return int(self.case.image.shape[PLANE_AXIS[self.plane]])

    def _centre(self) -> tuple[int, int, int]:
        return organ_centre(self.case.labels, self.organs, self.case.image.shape)

    # ------------------------------------------------------------------ drawing

    def picture_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the current plane: physical aspect, longer side ``box_px``."""
        height_mm, width_mm = plane_extent_mm(self.case.image.shape, self.case.spacing, self.plane)
        scale = self.box_px / max(height_mm, width_mm)
        return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))

    def render(self) -> np.ndarray:
        """The current view as (H, W, 3) uint8 RGB at :meth:`picture_size`, edge letters drawn."""
        index = int(np.clip(self.index, 0, self.n_slices - 1))
        grey = plane_slice(self.case.image, self.plane, index)
        labels = getattr(self.case, self.source) if self.source != "none" else None
        labels2d = plane_slice(labels, self.plane, index) if labels is not None else None
        rgb = overlay_rgb(grey, labels2d, self.organs, hu_window=self.hu_window, alpha=self.opacity)
        size = self.picture_size()
        picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
        upscale = size[0] > 1.5 * picture.width
        resample = Image.Resampling.NEAREST if upscale else Image.Resampling.BILINEAR
        picture = picture.resize(size, resample)
        _draw_letters(picture, ORIENTATION_LETTERS[self.plane])
        return np.asarray(picture)

    def png(self) -> bytes:
        """The current view as PNG bytes."""
        buffer = io.BytesIO()
        Image.fromarray(self.render()).save(buffer, format="PNG")
        return buffer.getvalue()

    def caption(self) -> str:
        """HTML naming the case, the plane, the 1-based slice and the image edges' directions."""
        left, right, top, bottom = ORIENTATION_LETTERS[self.plane]
        return (
            f"<b>{self.case_id}</b><br>{self.plane} slice {self.index + 1}/{self.n_slices}<br>"
            f"image edges: left {left}, right {right},<br>top {top}, bottom {bottom}"
        )

    def static_figure(self) -> Figure:
        """A :func:`plot_case` figure through the current slice (all three planes)."""
        position = list(self._centre())
        position[PLANE_AXIS[self.plane]] = int(self.index)
        return plot_case(
            self.case.image,
            self.case.spacing,
            self.case.gt,
            self.case.pred,
            organs=self.organs,
            slices=position,
            hu_window=self.hu_window,
            alpha=self.opacity,
            title=self.case_id,
        )

    # ------------------------------------------------------------------ widgets

    def build_widgets(self) -> ipywidgets.Box:
        """Create the controls and picture; they call :meth:`update` when changed."""
        import ipywidgets as w  # widgets only when a viewer is shown (not headless)

        sources = self._available_sources()
        width, height = self.picture_size()
        c = {
            "case": w.Dropdown(options=self.case_ids, value=self.case_id, description="case"),
            "plane": w.ToggleButtons(options=list(PLANES), value=self.plane, description="plane"),
            "slice": w.IntSlider(
                min=1,
                max=self.n_slices,
                value=self.index + 1,
                description="slice",
                continuous_update=True,
                readout=False,
                layout=w.Layout(width=f"{max(self.box_px, 360)}px"),
            ),
            # The slice number, editable: a number box steps with the arrow keys in every
            # front end, while Notebook 7 takes arrow keys on a focused slider handle to
            # move between cells.
            "slice_box": w.BoundedIntText(
                min=1,
                max=self.n_slices,
                value=self.index + 1,
                continuous_update=True,
                layout=w.Layout(width="80px"),
            ),
            "source": w.ToggleButtons(
                options=sources, value=self._source_label(), description="overlay"
            ),
            "opacity": w.FloatSlider(
                min=0.0, max=1.0, step=0.05, value=self.opacity, description="opacity"
            ),
        }
        # Fixed pixel size: without it a flex box stretches the picture to the page's width.
        self.image = w.Image(
            value=self.png(),
            format="png",
            layout=w.Layout(
                width=f"{width}px", height=f"{height}px", object_fit="contain", flex="0 0 auto"
            ),
        )
        self.label = w.HTML(self.caption())
        self._controls = c
        w.link((c["slice"], "max"), (c["slice_box"], "max"))
        w.link((c["slice"], "value"), (c["slice_box"], "value"))
        c["case"].observe(self._on_case, names="value")
        c["plane"].observe(self._on_plane, names="value")
        c["slice"].observe(self._on_change, names="value")
        c["source"].observe(self._on_change, names="value")
        c["opacity"].observe(self._on_change, names="value")
        side = w.VBox(
            [self.label, w.HTML(_legend_html(self.organs))],
            layout=w.Layout(margin="0 0 0 12px", min_width="150px"),
        )
        picture_row = w.HBox([self.image, side], layout=w.Layout(align_items="flex-start"))
        self.widget = w.VBox(
            [
                c["case"],
                c["plane"],
                c["source"],
                w.HBox([c["slice"], c["slice_box"]]),
                c["opacity"],
                picture_row,
            ]
        )
        return self.widget

    def display_data(self) -> dict[str, object]:
        """The widget's display bundle, with a still picture for front ends without widgets."""
        if self.widget is None:
            raise FlareError("the viewer has no widgets (static mode)")
        width, height = self.picture_size()
        fallback = (
            f"<div><img src='{png_data_uri(self.png())}' width='{width}' height='{height}' "
            f"alt='slice viewer picture'/><div>{self.caption()}</div>"
            f"{_legend_html(self.organs)}"
            f"{missing_extension_note('slice viewer (Jupyter widgets)', 'jupyterlab_widgets')}"
            "</div>"
        )
        return widget_bundle(self.widget, fallback)

    def update(self, *_) -> None:
        """Read the controls (if any) and redraw the picture and caption."""
        c = self._controls
        if c:
            self.index = int(c["slice"].value) - 1
            self.source = SOURCES[c["source"].value]
            self.opacity = float(c["opacity"].value)
            width, height = self.picture_size()
            self.image.layout.width, self.image.layout.height = f"{width}px", f"{height}px"
            self.image.value = self.png()
            self.label.value = self.caption()

    @property
    def controls(self) -> dict[str, ipywidgets.Widget]:
        """The control widgets by name: case, plane, slice (+ its number box slice_box), source, opacity."""
        return dict(self._controls)

    def _on_case(self, change) -> None:
        self.select_case(change["new"])
        self._sync_controls()

    def _on_plane(self, change) -> None:
        self.select_plane(change["new"])
        self._sync_controls()

    def _on_change(self, _change) -> None:
        if not self._syncing:
            self.update()

    def _sync_controls(self) -> None:
        """Push a new case/plane's slice range and overlay choices into the controls."""
        c = self._controls
        self._syncing = True
        try:
            c["slice"].max = self.n_slices
            c["slice"].value = self.index + 1
            c["source"].options = self._available_sources()
            c["source"].value = self._source_label()
        finally:
            self._syncing = False
        self.update()

    def _available_sources(self) -> list[str]:
        return [
            label
            for label, key in SOURCES.items()
            if key == "none" or getattr(self.case, key) is not None
        ]

    def _source_label(self) -> str:
        return next(label for label, key in SOURCES.items() if key == self.source)


def _legend_html(organs: Sequence[str]) -> str:
    """One line per organ: a colour swatch and the name (a column beside the picture)."""
    items = []
    for organ in organs:
        r, g, b = (round(255 * c) for c in ORGAN_COLORS[organ])
        swatch = (
            f"<span style='display:inline-block;width:14px;height:14px;vertical-align:middle;"
            f"background:rgb({r},{g},{b});margin-right:6px'></span>"
        )
        items.append(f"<div style='margin:4px 0'>{swatch}{display_name(organ)}</div>")
    return "<div style='margin-top:10px'>" + "".join(items) + "</div>"


def _draw_letters(picture: Image.Image, letters: Sequence[str]) -> None:
    """Write the (left, right, top, bottom) orientation letters inside the picture's edges."""
    size = max(11, round(min(picture.size) / 22))
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), size)
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    pad = max(3, size // 4)
    anchors = (
        ((pad, height / 2), "lm"),
        ((width - pad, height / 2), "rm"),
        ((width / 2, pad), "mt"),
        ((width / 2, height - pad), "mb"),
    )
    for letter, (xy, anchor) in zip(letters, anchors, strict=True):
        draw.text(
            xy,
            letter,
            fill=(255, 255, 255),
            font=font,
            anchor=anchor,
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )


def slice_viewer(
    load_case: CaseLoader,
    case_ids: Sequence[str],
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    static: bool | None = None,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    box_px: int = DEFAULT_BOX_PX,
) -> SliceViewer:
    """Browse cases slice by slice with organ overlays, in Jupyter or Colab.

    Controls: case, plane (axial/coronal/sagittal), slice (1-based; a slider and a
    number box: arrow keys step the box when it has focus), overlay (ground truth / prediction / none) and
    opacity. Views follow the radiological convention of :func:`plot_case`, keep
    their physical aspect inside a ``box_px`` square and carry the edge letters
    (R/L/A/P or S/I); the caption and the legend sit beside the picture.

    Args:
        load_case: ``load_case(case_id)`` → :class:`CaseArrays` (or the tuple
            ``(image, spacing, gt_or_None, pred_or_None)``), arrays in RAS order.
            Called again whenever another case is chosen; only one case is held.
        case_ids: the ids offered in the case selector (the first is shown).
        organs: organs to tint.
        static: True shows a static figure instead of widgets; None decides by
            :func:`is_headless` (``FLARE_HEADLESS=1``, no IPython kernel, papermill).
        hu_window: (lowest, highest) HU shown.
        box_px: size in pixels of the square the picture fits (64..640).

    Returns:
        The :class:`SliceViewer`. Interactive: its ``widget`` has been displayed.
        Static: its ``figure`` holds a :func:`plot_case` figure of the first case
        (displayed when running under IPython, e.g. papermill) and ``widget`` is None.
    """
    viewer = SliceViewer(load_case, case_ids, organs=organs, hu_window=hu_window, box_px=box_px)
    if static is None:
        static = is_headless()
    if static:
        viewer.figure = viewer.static_figure()
        show(viewer.figure)
    else:
        viewer.build_widgets()
        show(viewer.display_data(), raw=True)
    return viewer
