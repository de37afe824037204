"""FLARE22-like phantom CTs for tests, CI and the demo (``flare-synth``).

Takes: a seed, a shape and a family (``ct``: CT-like anatomy and HU; ``simple``).
Gives: ``FLARE22Train.zip`` in FLARE22's layout, labelled or unlabelled.
"""

from flare_helpers.phantoms.ct import AIR_HU, DEFAULT_JITTER, make_ct_phantom
from flare_helpers.phantoms.hu import HU, PHASE_WEIGHTS, PHASES, TUMOUR_DROP, draw_hu
from flare_helpers.phantoms.shapes import (
    Grid,
    Wobble,
    axes_grid,
    box_union,
    ellipsoid_distance,
    rotation,
    smooth_min,
    tube_distance,
)
from flare_helpers.phantoms.synthetic import (
    ORIENTATIONS,
    ZIP_ROOT,
    case_files,
    make_phantom,
    reorient,
    write_synthetic_zip,
    write_unlabelled,
)

__all__ = [
    "AIR_HU",
    "DEFAULT_JITTER",
    "Grid",
    "HU",
    "ORIENTATIONS",
    "PHASES",
    "PHASE_WEIGHTS",
    "TUMOUR_DROP",
    "Wobble",
    "ZIP_ROOT",
    "axes_grid",
    "box_union",
    "case_files",
    "draw_hu",
    "ellipsoid_distance",
    "make_ct_phantom",
    "make_phantom",
    "reorient",
    "rotation",
    "smooth_min",
    "tube_distance",
    "write_synthetic_zip",
    "write_unlabelled",
]
