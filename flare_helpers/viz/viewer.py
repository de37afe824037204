"""Interactive slice viewer (ipywidgets) with a static fallback for headless runs.

The picture is a PNG in an ``ipywidgets.Image`` drawn with numpy + Pillow, not
a matplotlib widget backend: core ipywidgets work in Jupyter and in Colab
without enabling a custom widget manager, and a slider step costs milliseconds.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from flare_helpers.errors import FlareError
from flare_helpers.labels import DEFAULT_ORGANS, ORGAN_COLORS
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
_TRUE = {"1", "true", "yes", "on"}


def is_headless() -> bool:
    """True when widgets cannot be used: ``FLARE_HEADLESS=1``, no IPython kernel, or papermill.

    Papermill is recognised by its process being the kernel's parent; CI should
    still set ``FLARE_HEADLESS=1`` (kernels inherit it) to be explicit.
    """
    if os.environ.get("FLARE_HEADLESS", "").strip().lower() in _TRUE:
        return True
    try:
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
            ``"gt"``, ``"pred"`` or ``"none"``; ``index`` is 0-based along ``plane``'s axis).
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
        width_px: int = 512,
    ) -> None:
        self.case_ids = [str(c) for c in case_ids]
        if not self.case_ids:
            raise FlareError("slice_viewer needs at least one case id")
        self.load_case = load_case
        self.organs = organ_names(organs)
        self.hu_window = tuple(hu_window)
        self.width_px = int(width_px)
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

    def render(self) -> np.ndarray:
        """The current view as (H, W, 3) uint8 RGB, resized to its physical aspect."""
        index = int(np.clip(self.index, 0, self.n_slices - 1))
        grey = plane_slice(self.case.image, self.plane, index)
        labels = getattr(self.case, self.source) if self.source != "none" else None
        labels2d = plane_slice(labels, self.plane, index) if labels is not None else None
        rgb = overlay_rgb(grey, labels2d, self.organs, hu_window=self.hu_window, alpha=self.opacity)
        height_mm, width_mm = plane_extent_mm(self.case.image.shape, self.case.spacing, self.plane)
        scale = self.width_px / max(height_mm, width_mm)
        size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
        picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
        upscale = size[0] > 1.5 * picture.width
        resample = Image.Resampling.NEAREST if upscale else Image.Resampling.BILINEAR
        return np.asarray(picture.resize(size, resample))

    def png(self) -> bytes:
        """The current view as PNG bytes."""
        buffer = io.BytesIO()
        Image.fromarray(self.render()).save(buffer, format="PNG")
        return buffer.getvalue()

    def caption(self) -> str:
        """One line naming the case, plane, slice and the image edges' directions."""
        left, right, top, bottom = ORIENTATION_LETTERS[self.plane]
        return (
            f"{self.case_id} · {self.plane} {self.index + 1}/{self.n_slices} · "
            f"image edges: left {left}, right {right}, top {top}, bottom {bottom}"
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
        import ipywidgets as w

        sources = self._available_sources()
        c = {
            "case": w.Dropdown(options=self.case_ids, value=self.case_id, description="case"),
            "plane": w.ToggleButtons(options=list(PLANES), value=self.plane, description="plane"),
            "slice": w.IntSlider(
                min=0,
                max=self.n_slices - 1,
                value=self.index,
                description="slice",
                continuous_update=True,
            ),
            "source": w.ToggleButtons(
                options=sources, value=self._source_label(), description="overlay"
            ),
            "opacity": w.FloatSlider(
                min=0.0, max=1.0, step=0.05, value=self.opacity, description="opacity"
            ),
        }
        self.image = w.Image(value=self.png(), format="png")
        self.label = w.HTML(self.caption())
        self._controls = c
        c["case"].observe(self._on_case, names="value")
        c["plane"].observe(self._on_plane, names="value")
        c["slice"].observe(self._on_change, names="value")
        c["source"].observe(self._on_change, names="value")
        c["opacity"].observe(self._on_change, names="value")
        legend = w.HTML(_legend_html(self.organs))
        self.widget = w.VBox(
            [c["case"], c["plane"], c["source"], c["slice"], c["opacity"], self.image, self.label]
            + [legend]
        )
        return self.widget

    def update(self, *_) -> None:
        """Read the controls (if any) and redraw the picture and caption."""
        c = self._controls
        if c:
            self.index = int(c["slice"].value)
            self.source = SOURCES[c["source"].value]
            self.opacity = float(c["opacity"].value)
            self.image.value = self.png()
            self.label.value = self.caption()

    @property
    def controls(self) -> dict[str, ipywidgets.Widget]:
        """The control widgets by name: case, plane, slice, source, opacity."""
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
            c["slice"].max = self.n_slices - 1
            c["slice"].value = self.index
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
    items = []
    for organ in organs:
        r, g, b = (round(255 * c) for c in ORGAN_COLORS[organ])
        swatch = (
            f"<span style='display:inline-block;width:12px;height:12px;"
            f"background:rgb({r},{g},{b});margin-right:4px'></span>"
        )
        items.append(f"<span style='margin-right:12px'>{swatch}{display_name(organ)}</span>")
    return "<div>" + "".join(items) + "</div>"


def slice_viewer(
    load_case: CaseLoader,
    case_ids: Sequence[str],
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    static: bool | None = None,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    width_px: int = 512,
) -> SliceViewer:
    """Browse cases slice by slice with organ overlays, in Jupyter or Colab.

    Controls: case, plane (axial/coronal/sagittal), slice, overlay (ground truth /
    prediction / none) and opacity. Views follow the radiological convention of
    :func:`plot_case` and keep their physical aspect.

    Args:
        load_case: ``load_case(case_id)`` → :class:`CaseArrays` (or the tuple
            ``(image, spacing, gt_or_None, pred_or_None)``), arrays in RAS order.
            Called again whenever another case is chosen; only one case is held.
        case_ids: the ids offered in the case selector (the first is shown).
        organs: organs to tint.
        static: True shows a static figure instead of widgets; None decides by
            :func:`is_headless` (``FLARE_HEADLESS=1``, no IPython kernel, papermill).
        hu_window: (lowest, highest) HU shown.
        width_px: size of the picture's longer side in pixels.

    Returns:
        The :class:`SliceViewer`. Interactive: its ``widget`` has been displayed.
        Static: its ``figure`` holds a :func:`plot_case` figure of the first case
        (displayed when running under IPython, e.g. papermill) and ``widget`` is None.
    """
    viewer = SliceViewer(load_case, case_ids, organs=organs, hu_window=hu_window, width_px=width_px)
    if static is None:
        static = is_headless()
    shown = viewer.static_figure() if static else viewer.build_widgets()
    if static:
        viewer.figure = shown
    _display(shown)
    return viewer


def _display(obj) -> None:
    """Show ``obj`` when an IPython shell exists; plain Python has nowhere to show it."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(obj)
