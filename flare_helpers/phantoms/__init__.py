"""FLARE22-like phantom CTs for tests, CI and the demo (``flare-synth``).

Takes: a seed, a shape and a family (``ct``: CT-like anatomy and HU; ``simple``).
Gives: ``FLARE22Train.zip`` in FLARE22's layout, labelled or unlabelled. The shapes
(:mod:`.shapes`) and tissue HU (:mod:`.hu`) that draw the ``ct`` family are its own.
"""

from flare_helpers.phantoms.ct import make_ct_phantom
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
    "ORIENTATIONS",
    "ZIP_ROOT",
    "case_files",
    "make_ct_phantom",
    "make_phantom",
    "reorient",
    "write_synthetic_zip",
    "write_unlabelled",
]
