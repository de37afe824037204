"""Clean-up of a predicted class map: one connected piece per organ.

A network's label map can hold small islands far from an organ (a bright bowel
loop called spleen). Each organ is one connected piece of tissue, so keeping
its largest 26-connected component removes them; the prediction
(``infer.largest_component``) and the localiser's organ boxes both use it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Keep, for each class 1..n_classes-1, only its largest 26-connected component (in place)."""
    structure = np.ones((3, 3, 3), dtype=bool)
    # One pass finds every class's bounding box; each class is then labelled inside its box.
    boxes = ndimage.find_objects(classes, max_label=n_classes - 1)
    for cls, box in enumerate(boxes, start=1):
        if box is None:
            continue
        components, count = ndimage.label(classes[box] == cls, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        drop = (components != int(np.argmax(sizes))) & (components > 0)
        classes[box][drop] = 0
    return classes
