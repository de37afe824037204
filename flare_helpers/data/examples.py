"""A real CT shipped with the package, so a notebook can always show one.

Case ``FLARE22_Tr_9001``: TotalSegmentator's example CT (abdomen and pelvis,
122×101×112 voxels at 3 mm, with TotalSegmentator's own segmentation remapped
to FLARE22 ids), from github.com/wasserth/TotalSegmentator under the Apache-2.0
licence (its text ships beside it), as package data in ``flare_helpers/data/real_ct``.
The folder also holds ``FLARE22_Tr_9002`` (30 slices of the same patient) for the tests
and benchmarks of a source checkout; wheels carry only 9001.
"""

from __future__ import annotations

from pathlib import Path

from flare_helpers.data.cases import image_name
from flare_helpers.errors import FlareError

REAL_CT_CASE = "FLARE22_Tr_9001"
REAL_CT_DIR = Path(__file__).resolve().parent / "real_ct"


def real_ct_folder() -> Path:
    """The FLARE22-layout folder holding the real CT ``FLARE22_Tr_9001`` (package data)."""
    folder = REAL_CT_DIR / "FLARE22Train"
    if not (folder / "images" / image_name(REAL_CT_CASE)).is_file():
        raise FlareError("the example real CT is missing from this installation", folder)
    return folder
