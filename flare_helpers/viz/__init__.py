"""Figures and videos: slice overlays, a slice viewer, training curves, 3D meshes and renders.

Every function takes volumes in canonical RAS voxel order (axis 0 → patient's
right, 1 → anterior, 2 → superior), spacing in mm, CT in HU and labels as
FLARE22 ids, and colours organs with ``labels.ORGAN_COLORS`` in 2D and 3D alike.
:func:`flare_helpers.workflows.report.visualize_cases` (``flare-visualize``)
predicts cases with a trained model and writes both pictures of each.
"""

from flare_helpers.data.cases import predicted_cases
from flare_helpers.viz.curves import plot_training_curves
from flare_helpers.viz.loaders import cached_case, case_loader
from flare_helpers.viz.mesh import Mesh, organ_meshes
from flare_helpers.viz.planes import CaseArrays
from flare_helpers.viz.render3d import render_rotation_video
from flare_helpers.viz.scene3d import Scene3D, interactive_3d
from flare_helpers.viz.slices import plot_case, save_figure
from flare_helpers.viz.steps import plot_batch, plot_localizer_box, plot_preprocessing
from flare_helpers.viz.video import video_html
from flare_helpers.viz.viewer import SliceViewer, is_headless, slice_viewer

__all__ = [
    "CaseArrays",
    "cached_case",
    "case_loader",
    "predicted_cases",
    "Mesh",
    "Scene3D",
    "SliceViewer",
    "interactive_3d",
    "is_headless",
    "organ_meshes",
    "plot_batch",
    "plot_case",
    "plot_localizer_box",
    "plot_preprocessing",
    "plot_training_curves",
    "render_rotation_video",
    "save_figure",
    "slice_viewer",
    "video_html",
]
