"""How much to trust one predicted CT, without its ground truth: a score in [0, 1] per case.

Two signals, both measured while the case is predicted:

- ``mean_probability``: the network's mean top-class softmax over the voxels it
  calls an organ (on the network grid, every window it ran). A network unsure
  of its organs spreads probability over classes and this drops.
- ``component_share``: per organ, the share of its predicted voxels that lie in
  its largest connected piece, averaged over the organs (an organ not found
  counts 0). A real organ is one piece; a confused network leaves fragments
  and misses organs.

``confidence`` is their product. ``bench/pseudolabel_confidence.py`` measures
how each ranks cases by their true Dice (Spearman ρ) on phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class CaseConfidence:
    """The confidence of one predicted case and the signals it is made of."""

    mean_probability: float
    component_share: float
    organs_found: int

    @property
    def confidence(self) -> float:
        """``mean_probability × component_share``, in [0, 1]."""
        return float(self.mean_probability * self.component_share)

    def row(self) -> dict[str, float | int]:
        """CSV columns: confidence and its parts, rounded."""
        return {
            "confidence": round(self.confidence, 5),
            "mean_probability": round(self.mean_probability, 5),
            "component_share": round(self.component_share, 5),
            "organs_found": self.organs_found,
        }


class ProbabilityRecorder:
    """Wraps a Keras model: passes every prediction through and keeps confidence sums.

    Prediction code calls ``predict_on_batch`` (or the model itself) as usual;
    the recorder adds, per call, the top-class probability summed over voxels
    whose top class is not background, and their count. Everything else is the
    wrapped model's.
    """

    def __init__(self, model: object) -> None:
        self._model = model
        self.reset()

    def reset(self) -> None:
        """Start a new case."""
        self.top_sum, self.organ_voxels = 0.0, 0

    def _record(self, out: object) -> object:
        probs = np.asarray(out, dtype=np.float32)
        top = probs.max(axis=-1)
        organ = probs.argmax(axis=-1) != 0
        self.top_sum += float(top[organ].sum(dtype=np.float64))
        self.organ_voxels += int(organ.sum())
        return out

    def predict_on_batch(self, x: np.ndarray) -> object:
        return self._record(self._model.predict_on_batch(x))

    def __call__(self, x: np.ndarray, *args, **kwargs) -> object:
        return self._record(self._model(x, *args, **kwargs))

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    @property
    def mean_probability(self) -> float:
        """Mean top-class probability over organ voxels since :meth:`reset` (0 if none)."""
        return self.top_sum / self.organ_voxels if self.organ_voxels else 0.0


def component_shares(classes: np.ndarray, n_classes: int) -> list[float]:
    """Per class 1..n_classes-1: largest 26-connected piece / all its voxels (0 if absent)."""
    structure = np.ones((3, 3, 3), dtype=bool)
    boxes = ndimage.find_objects(classes, max_label=n_classes - 1)
    shares = []
    for cls, box in enumerate(boxes, start=1):
        if box is None:
            shares.append(0.0)
            continue
        components, count = ndimage.label(classes[box] == cls, structure=structure)
        sizes = np.bincount(components.ravel())[1:]
        shares.append(float(sizes.max() / sizes.sum()) if count else 0.0)
    return shares


def case_confidence(mean_probability: float, classes: np.ndarray, n_classes: int) -> CaseConfidence:
    """Confidence of a case from its recorded probability and its predicted classes
    (before any largest-component cleaning)."""
    shares = component_shares(classes, n_classes)
    return CaseConfidence(
        float(mean_probability), float(np.mean(shares)), sum(s > 0 for s in shares)
    )
