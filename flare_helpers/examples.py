"""A real CT shipped with the package, so a notebook can always show one.

Case ``FLARE22_Tr_9001``: TotalSegmentator's example CT (abdomen and pelvis,
122×101×112 voxels at 3 mm, with TotalSegmentator's own segmentation remapped
to FLARE22 ids), from github.com/wasserth/TotalSegmentator under the Apache-2.0
licence (its text ships beside it). A wheel carries it as package data
(``flare_helpers/real_ct``); a source checkout reads ``tests/data/real_ct``.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from flare_helpers.errors import FlareError

REAL_CT_CASE = "FLARE22_Tr_9001"


def real_ct_folder() -> Path:
    """The FLARE22-layout folder holding the real CT ``FLARE22_Tr_9001``."""
    try:
        spec = find_spec("flare_helpers.real_ct")
    except ModuleNotFoundError:
        spec = None
    candidates = (
        [Path(p) / "FLARE22Train" for p in (spec.submodule_search_locations or [])] if spec else []
    )
    candidates.append(
        Path(__file__).resolve().parent.parent / "tests" / "data" / "real_ct" / "FLARE22Train"
    )
    for folder in candidates:
        if (folder / "images" / f"{REAL_CT_CASE}_0000.nii.gz").is_file():
            return folder
    raise FlareError("the example real CT is missing from this installation", candidates[-1])
