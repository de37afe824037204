"""FLARE22 label table and the remapping to training classes.

FLARE22 label files hold ids 0..13 (0 background). The network is trained on a
subset of organs, renumbered 1..K in the order given (0 stays background);
every other organ becomes background. Predictions are mapped back to FLARE22
ids before they are written, so files on disk always use the FLARE22 ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flare_helpers.errors import FlareError

#: FLARE22 label id → organ name (snake_case, the names used in configs and tables).
FLARE22_LABELS: dict[int, str] = {
    1: "liver",
    2: "right_kidney",
    3: "spleen",
    4: "pancreas",
    5: "aorta",
    6: "ivc",
    7: "right_adrenal",
    8: "left_adrenal",
    9: "gallbladder",
    10: "esophagus",
    11: "stomach",
    12: "duodenum",
    13: "left_kidney",
}
FLARE22_IDS: dict[str, int] = {name: label for label, name in FLARE22_LABELS.items()}

#: The four organs this series segments, in class order (class 1 liver … class 4 spleen);
#: the default of ``data.organs`` in :mod:`flare_helpers.config`.
DEFAULT_ORGANS: tuple[str, ...] = ("liver", "right_kidney", "left_kidney", "spleen")

#: NSD tolerances in mm, per organ, as in the official FLARE22 evaluation
#: (JunMa11/FLARE, FLARE22_DSC_NSD_Eval.py): liver 5, kidneys 3, spleen 3, and so on.
NSD_TOLERANCE_MM: dict[str, float] = {
    "liver": 5.0,
    "right_kidney": 3.0,
    "left_kidney": 3.0,
    "spleen": 3.0,
    "pancreas": 5.0,
    "aorta": 2.0,
    "ivc": 2.0,
    "right_adrenal": 2.0,
    "left_adrenal": 2.0,
    "gallbladder": 2.0,
    "esophagus": 3.0,
    "stomach": 5.0,
    "duodenum": 7.0,
}

#: Display colours (RGB 0..1) shared by the 2D overlays and the 3D renders.
ORGAN_COLORS: dict[str, tuple[float, float, float]] = {
    "liver": (0.80, 0.33, 0.20),
    "right_kidney": (0.95, 0.80, 0.15),
    "left_kidney": (0.20, 0.75, 0.30),
    "spleen": (0.35, 0.45, 0.95),
    "pancreas": (0.95, 0.55, 0.75),
    "aorta": (0.85, 0.10, 0.10),
    "ivc": (0.20, 0.30, 0.60),
    "right_adrenal": (0.60, 0.40, 0.10),
    "left_adrenal": (0.40, 0.60, 0.10),
    "gallbladder": (0.10, 0.60, 0.50),
    "esophagus": (0.70, 0.50, 0.90),
    "stomach": (0.90, 0.70, 0.50),
    "duodenum": (0.50, 0.80, 0.90),
}


#: A voxel no loss may learn from: written into pseudo-labels where the teacher contradicts
#: itself (``pseudo.ignore_disagreement``); kept as is from FLARE22 ids to training classes
#: and back, one-hot encoded as all zeros, which :class:`flare_helpers.model.losses.DiceCELoss` skips.
IGNORE = 255


@dataclass(frozen=True)
class OrganSet:
    """An ordered subset of FLARE22 organs that become training classes 1..K.

    Attributes:
        organs: organ names in class order (class ``i + 1`` is ``organs[i]``).
    """

    organs: tuple[str, ...] = DEFAULT_ORGANS

    def __post_init__(self) -> None:
        if not self.organs:
            raise FlareError("the organ list is empty: name at least one FLARE22 organ")
        unknown = [name for name in self.organs if name not in FLARE22_IDS]
        if unknown:
            known = ", ".join(FLARE22_IDS)
            raise FlareError(f"unknown organ(s) {', '.join(unknown)}; known organs: {known}")
        if len(set(self.organs)) != len(self.organs):
            raise FlareError(f"organ listed twice in {list(self.organs)}")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> OrganSet:
        """Build from any sequence of organ names (case and spaces forgiven)."""
        return cls(tuple(str(n).strip().lower().replace(" ", "_") for n in names))

    @property
    def n_classes(self) -> int:
        """Number of network output channels: background + one per organ."""
        return len(self.organs) + 1

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of all classes, ``("background", *organs)``."""
        return ("background", *self.organs)

    @property
    def flare_ids(self) -> tuple[int, ...]:
        """FLARE22 label id of each organ, in class order."""
        return tuple(FLARE22_IDS[name] for name in self.organs)

    def to_classes(self, flare_labels: np.ndarray) -> np.ndarray:
        """Map a FLARE22 id volume to training classes (uint8, other organs → 0, IGNORE kept)."""
        lut = np.zeros(256, dtype=np.uint8)
        lut[IGNORE] = IGNORE
        for cls_index, flare_id in enumerate(self.flare_ids, start=1):
            lut[flare_id] = cls_index
        return lut[np.asarray(flare_labels, dtype=np.uint8)]

    def to_flare(self, classes: np.ndarray) -> np.ndarray:
        """Map a training-class volume back to FLARE22 ids (uint8, IGNORE kept)."""
        lut = np.zeros(256, dtype=np.uint8)
        lut[IGNORE] = IGNORE
        lut[1 : self.n_classes] = self.flare_ids
        return lut[np.asarray(classes, dtype=np.uint8)]


def one_hot(label: np.ndarray, n_classes: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 classes (X, Y, Z) → float32 one-hot (X, Y, Z, n_classes), into ``out`` if given.

    An :data:`IGNORE` voxel becomes all zeros (no class).

    Raises:
        ValueError: a class id other than IGNORE is >= ``n_classes``.
    """
    top = int(label.max()) if label.size else 0
    ignored = top == IGNORE
    if ignored:
        top = int(label[label != IGNORE].max(initial=0))
    if top >= n_classes:
        raise ValueError(f"label holds class {top} but n_classes is {n_classes}")
    # mode="clip" skips numpy's buffered bounds check (done above): ~3x faster.
    out = np.take(np.eye(n_classes, dtype=np.float32), label, axis=0, out=out, mode="clip")
    if ignored:
        out[label == IGNORE] = 0.0
    return out


def lr_swap_pairs(organs: Sequence[str]) -> list[tuple[int, int]]:
    """Training-class pairs ``(right, left)`` that a left-right flip must exchange.

    Class ``i + 1`` is ``organs[i]``; ``right_X`` pairs with ``left_X``. For the
    default organs this is ``[(2, 3)]`` (right_kidney, left_kidney).

    Raises:
        FlareError: a lateral organ is listed without its other side, so a flip
            could not be labelled correctly.
    """
    names = OrganSet.from_names(organs).organs
    pairs = []
    for index, name in enumerate(names):
        side, _, rest = name.partition("_")
        if side not in ("right", "left") or not rest:
            continue
        partner = f"{'left' if side == 'right' else 'right'}_{rest}"
        if partner not in names:
            raise FlareError(
                f"a left-right flip needs both sides, but {name} is listed without {partner}: "
                "add it to data.organs or set augment.lr_flip_probability to 0"
            )
        if side == "right":
            pairs.append((index + 1, names.index(partner) + 1))
    return pairs
