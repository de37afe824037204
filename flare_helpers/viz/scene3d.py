"""Interactive 3D view of organ meshes: a plotly figure framed, lit and displayed for notebooks.

The camera is set from the meshes' bounds so the whole scene is in view at
first; the light sits behind the camera with a strong ambient term, so surfaces
facing the viewer show their legend colour (``labels.ORGAN_COLORS``) and only
grazing ones darken. The wheel scrolls the page instead of zooming (zoom with
the toolbar or by dragging with the right button).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from flare_helpers.data.labels import DEFAULT_ORGANS
from flare_helpers.errors import FlareError
from flare_helpers.viz.display import in_colab, missing_extension_note
from flare_helpers.viz.mesh import organ_meshes
from flare_helpers.viz.planes import display_name

if TYPE_CHECKING:
    import plotly.graph_objects as go

PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: plotly.js settings of every interactive view (scrollZoom off: the page scrolls).
PLOTLY_CONFIG: dict[str, object] = {"scrollZoom": False, "displaylogo": False, "responsive": True}
#: Mesh3d lighting: ambient + diffuse reach 1 on surfaces facing the light (the legend
#: colour), grazing surfaces keep the ambient share.
LIGHTING: dict[str, float] = {
    "ambient": 0.6,
    "diffuse": 0.5,
    "specular": 0.05,
    "roughness": 0.9,
    "fresnel": 0.05,
}
#: Camera direction (in front of the patient, a little above) and its distance from
#: the scene centre in units of the scene box's longest side; 2.2 keeps the box in
#: view from any direction.
CAMERA_DIRECTION = (0.0, 1.0, 0.35)
CAMERA_DISTANCE = 2.2
_HEIGHT_PX = 560


@dataclass
class Scene3D:
    """A plotly figure and how notebooks display it (plotly's renderer, else HTML).

    Attributes:
        figure: the ``plotly.graph_objects.Figure`` (one ``Mesh3d`` per organ).
        config: plotly.js settings used wherever the figure is shown.
    """

    figure: go.Figure
    config: dict[str, object] = field(default_factory=lambda: dict(PLOTLY_CONFIG))

    def html(self) -> str:
        """Standalone HTML (plotly.js from its CDN) with a note that stays if it cannot load."""
        note_id = f"flare-note-{id(self):x}"
        return (
            self.figure.to_html(
                full_html=False,
                include_plotlyjs="cdn",
                config=self.config,
                post_script=f"var n=document.getElementById('{note_id}');if(n)n.remove();",
            )
            + f"<div id='{note_id}'>"
            + missing_extension_note("3D view (plotly)", "plotly")
            + "</div>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, object]:
        import plotly.io as pio  # plotly takes ~1 s to import; only a shown scene needs it

        bundle: dict[str, object] = {
            "text/html": self.html(),
            "text/plain": "3D view: " + ", ".join(t.name for t in self.figure.data),
        }
        if not in_colab():  # Colab has no renderer for plotly's output type: HTML it is
            spec = json.loads(pio.to_json(self.figure, validate=False))
            bundle[PLOTLY_MIME] = {**spec, "config": self.config}
        return bundle


def interactive_3d(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
) -> Scene3D:
    """A rotatable 3D view with one plotly ``Mesh3d`` per organ (mm axes, organ colours).

    The camera starts in front of the patient with superior up, as in the video,
    far enough to show every organ. Display it as a cell's value; ``.figure`` is
    the plotly figure.
    """
    import plotly.graph_objects as go  # ~1 s to import; only the 3D view needs it

    meshes = organ_meshes(labels, spacing, organs=organs)
    if not meshes:
        raise FlareError(f"none of the organs {', '.join(organs)} is present to show in 3D")
    traces = []
    for name, mesh in meshes.items():
        (x, y, z), (i, j, k) = mesh.vertices.T, mesh.faces.T
        r, g, b = (round(255 * c) for c in mesh.color)
        traces.append(
            go.Mesh3d(
                x=x,
                y=y,
                z=z,
                i=i,
                j=j,
                k=k,
                color=f"rgb({r},{g},{b})",
                name=display_name(name),
                showlegend=True,
                flatshading=False,
                lighting=LIGHTING,
                lightposition=_light_position(),
            )
        )
    points = np.concatenate([m.vertices for m in meshes.values()])
    fig = go.Figure(traces)
    fig.update_layout(
        scene=_scene_layout(points.min(axis=0), points.max(axis=0)),
        height=_HEIGHT_PX,
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        legend={"itemsizing": "constant", "x": 0.0, "y": 1.0},
    )
    return Scene3D(fig)


def _scene_layout(low: np.ndarray, high: np.ndarray) -> dict[str, object]:
    """Axis ranges, a box with the data's proportions, and a camera that shows all of it."""
    pad = 0.05 * float((high - low).max())
    low, high = low - pad, high + pad
    extent = high - low
    aspect = extent / extent.max()
    direction = np.asarray(CAMERA_DIRECTION) / np.linalg.norm(CAMERA_DIRECTION)
    eye = direction * CAMERA_DISTANCE
    titles = ("→ patient right (mm)", "→ anterior (mm)", "→ superior (mm)")
    axes = {
        f"{axis}axis": {"range": [float(lo), float(hi)], "title": {"text": title}}
        for axis, lo, hi, title in zip("xyz", low, high, titles, strict=True)
    }
    return {
        **axes,
        "aspectmode": "manual",
        "aspectratio": dict(zip("xyz", (float(a) for a in aspect), strict=True)),
        "camera": {
            "eye": dict(zip("xyz", (float(e) for e in eye), strict=True)),
            "center": {"x": 0.0, "y": 0.0, "z": 0.0},
            "up": {"x": 0.0, "y": 0.0, "z": 1.0},
        },
    }


def _light_position() -> dict[str, float]:
    """A light far out along the camera's starting direction (plotly scene units)."""
    direction = np.asarray(CAMERA_DIRECTION) / np.linalg.norm(CAMERA_DIRECTION)
    return dict(zip("xyz", (float(v) for v in direction * 1e5), strict=True))
