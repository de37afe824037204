"""The pictures shipped in docs/ are RGB and show the organs in their legend colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from flare_helpers.data.labels import DEFAULT_ORGANS, ORGAN_COLORS

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("name", ["slices.png", "video_frame.png"])
def test_docs_picture_is_rgb_with_legend_colours(name):
    with Image.open(DOCS / name) as picture:
        assert picture.mode == "RGB"  # a palette would merge organ colours
        rgb = np.asarray(picture).astype(int)
    for organ in DEFAULT_ORGANS:
        target = np.round(np.asarray(ORGAN_COLORS[organ]) * 255)
        exact = np.abs(rgb - target).max(axis=-1) <= 2
        blocks, count = ndimage.label(exact)
        largest = np.bincount(blocks.ravel())[1:].max() if count else 0
        assert largest >= 40, f"{organ}: no legend swatch of {target} in {name}"
