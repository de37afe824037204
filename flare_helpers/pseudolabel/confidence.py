"""How much to trust one predicted CT, without its ground truth: a score in [0, 1] per case.

Signals, all measured while the case is predicted (each in [0, 1]):

- ``mean_probability``: the network's mean top-class softmax over the voxels it
  calls an organ (on the network grid, every window it ran). A network unsure
  of its organs spreads probability over classes and this drops.
- ``component_share``: per organ, the share of its predicted voxels that lie in
  its largest connected piece, averaged over the organs (an organ not found
  counts 0). A real organ is one piece; a confused network leaves fragments
  and misses organs.
- ``agreement``: mean Dice, over the organs, between the prediction and a
  second one of the same CT seen slightly transformed (test-time augmentation,
  :class:`TransformedModel`: shifted by a few voxels, or mirrored left-right
  with the kidneys swapped). Where the network is right it tends to stay right
  under a small change; where it guesses, the guess moves.
- ``anatomy``: how ordinary the predicted organs are next to the labelled
  training cases' (:class:`AnatomyReference`): per organ, the log-volume and the
  position relative to the organs' common centre as z-scores, scored
  ``exp(-z²/2)``; an organ not found counts 0.

``confidence`` is the product of the signals ``pseudo.confidence`` names.
``bench/pseudolabel_few_labels.py`` measures how each ranks cases by their true
Dice (Spearman ρ) on phantoms (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: The per-case signals a confidence can be made of (``pseudo.confidence``).
SIGNALS: tuple[str, ...] = ("mean_probability", "component_share", "agreement", "anatomy")
#: How far :class:`TransformedModel` shifts a network input, in voxels (X, Y, Z).
SHIFT_VOXELS: tuple[int, int, int] = (3, 3, 2)


def signal_product(values: Mapping[str, float], signals: Sequence[str]) -> float:
    """A case's confidence: the product of its ``signals`` in ``values``; a signal that was
    not measured (absent or NaN) is left out (none measured: 1)."""
    chosen = [values.get(name, math.nan) for name in signals]
    return float(np.prod([v for v in chosen if not math.isnan(v)]))


@dataclass(frozen=True)
class CaseConfidence:
    """The confidence of one predicted case and the signals it is made of.

    ``agreement`` and ``anatomy`` are NaN where they were not measured (no
    test-time prediction, no labelled reference); a NaN signal is left out of
    the product.
    """

    mean_probability: float
    component_share: float
    organs_found: int
    agreement: float = math.nan
    anatomy: float = math.nan
    signals: tuple[str, ...] = ("mean_probability", "component_share")

    @property
    def confidence(self) -> float:
        """The product of the chosen ``signals`` (measured ones), in [0, 1]."""
        return signal_product({name: getattr(self, name) for name in SIGNALS}, self.signals)

    def row(self) -> dict[str, float | int]:
        """CSV columns: confidence and every signal, rounded (NaN as empty)."""
        row: dict[str, float | int | str] = {"confidence": round(self.confidence, 5)}
        for name in SIGNALS:
            value = getattr(self, name)
            row[name] = "" if math.isnan(value) else round(value, 5)
        row["organs_found"] = self.organs_found
        return row


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


def case_confidence(
    mean_probability: float,
    classes: np.ndarray,
    n_classes: int,
    *,
    tta_classes: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    reference: AnatomyReference | None = None,
    signals: Sequence[str] = ("mean_probability", "component_share"),
) -> CaseConfidence:
    """Confidence of a case from its recorded probability and its predicted classes
    (before any largest-component cleaning); ``agreement`` with ``tta_classes`` and
    ``anatomy`` against ``reference`` (with the grid's ``spacing``) where given."""
    shares = component_shares(classes, n_classes)
    agreement = math.nan if tta_classes is None else agreement_dice(classes, tta_classes, n_classes)
    anatomy = math.nan
    if reference is not None and spacing is not None:
        anatomy = reference.score(organ_geometry(classes, spacing, n_classes))
    return CaseConfidence(
        float(mean_probability),
        float(np.mean(shares)),
        sum(s > 0 for s in shares),
        agreement,
        anatomy,
        tuple(signals),
    )


def agreement_dice(classes: np.ndarray, other: np.ndarray, n_classes: int) -> float:
    """Mean Dice of classes 1..n_classes-1 between two predictions (both empty: 1)."""
    a = np.bincount(classes.ravel(), minlength=256)[1:n_classes].astype(np.float64)
    b = np.bincount(other.ravel(), minlength=256)[1:n_classes].astype(np.float64)
    same = classes[classes == other]
    both = np.bincount(same.ravel(), minlength=256)[1:n_classes].astype(np.float64)
    total = a + b
    dice = np.where(total > 0, 2 * both / np.maximum(total, 1), 1.0)
    return float(dice.mean())


def disagreement(classes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Voxels where two predictions of one CT differ (bool, the shape of ``classes``)."""
    return np.asarray(classes) != np.asarray(other)


class TransformedModel:
    """Wraps a Keras model: predicts a transformed input and maps the output back.

    ``"shift"`` rolls each network input by :data:`SHIFT_VOXELS` and rolls the
    probabilities back; ``"mirror"`` mirrors axis 0 (patient right ↔ left) and
    exchanges the ``swap_channels`` pairs (right and left kidney) on the way back.
    Prediction code uses it as it uses the model (``predict_on_batch`` or a call).
    """

    def __init__(
        self, model: object, transform: str, swap_channels: Sequence[tuple[int, int]] = ()
    ) -> None:
        if transform not in ("shift", "mirror"):
            raise ValueError(f"transform must be shift or mirror, got {transform!r}")
        self._model = model
        self.transform = transform
        self.swap_channels = tuple(swap_channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if self.transform == "mirror":
            return np.ascontiguousarray(x[:, ::-1])
        return np.roll(x, SHIFT_VOXELS, axis=(1, 2, 3))

    def _back(self, out: object) -> np.ndarray:
        probs = np.asarray(out, dtype=np.float32)
        if self.transform == "shift":
            return np.roll(probs, [-s for s in SHIFT_VOXELS], axis=(1, 2, 3))
        order = list(range(probs.shape[-1]))
        for a, b in self.swap_channels:
            order[a], order[b] = b, a
        return np.ascontiguousarray(probs[:, ::-1][..., order])

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self._back(self._model.predict_on_batch(self._forward(x)))

    def __call__(self, x: np.ndarray, *args, **kwargs) -> np.ndarray:
        return self._back(self._model(self._forward(x), *args, **kwargs))

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)


@dataclass(frozen=True)
class OrganGeometry:
    """Per organ (classes 1..n-1): volume in ml (0 if absent) and centre in mm relative
    to the centre of all organ voxels (NaN if absent)."""

    volume_ml: np.ndarray
    offset_mm: np.ndarray


def organ_geometry(classes: np.ndarray, spacing: Sequence[float], n_classes: int) -> OrganGeometry:
    """Volumes and relative centres of the organs in a (canonical RAS) class volume."""
    spacing = np.asarray(spacing, dtype=np.float64)
    counts = np.bincount(classes.ravel(), minlength=256)[1:n_classes].astype(np.float64)
    volume = counts * float(np.prod(spacing)) / 1000.0
    offset = np.full((n_classes - 1, 3), np.nan)
    if counts.sum():
        present = counts > 0
        labels = (np.flatnonzero(present) + 1).tolist()
        centres = np.array(ndimage.center_of_mass(np.ones_like(classes), classes, labels))
        middle = np.array(ndimage.center_of_mass((classes > 0) & (classes < n_classes)))
        offset[present] = (centres - middle) * spacing
    return OrganGeometry(volume, offset)


@dataclass(frozen=True)
class AnatomyReference:
    """The labelled training cases' organs: mean and spread of each organ's log-volume
    and relative centre, with floors on the spreads (few cases give poor estimates)."""

    log_volume_mean: np.ndarray
    log_volume_sd: np.ndarray
    offset_mean: np.ndarray
    offset_sd_mm: np.ndarray

    #: Smallest spreads used: 15 % in volume, 10 mm in position.
    MIN_LOG_SD = 0.15
    MIN_OFFSET_SD_MM = 10.0

    @classmethod
    def from_cases(cls, geometries: Sequence[OrganGeometry]) -> AnatomyReference:
        """From the organs of the labelled cases (:func:`organ_geometry` of each)."""
        if not geometries:
            raise ValueError("an anatomy reference needs at least one labelled case")
        volumes = np.array([g.volume_ml for g in geometries])
        offsets = np.array([g.offset_mm for g in geometries])
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(volumes > 0, np.log(np.maximum(volumes, 1e-9)), np.nan)
            distance = np.linalg.norm(offsets - np.nanmean(offsets, axis=0), axis=-1)
            return cls(
                np.nanmean(logs, axis=0),
                np.maximum(np.nan_to_num(np.nanstd(logs, axis=0)), cls.MIN_LOG_SD),
                np.nanmean(offsets, axis=0),
                np.maximum(
                    np.nan_to_num(np.sqrt(np.nanmean(distance**2, axis=0) / 3)),
                    cls.MIN_OFFSET_SD_MM,
                ),
            )

    def score(self, geometry: OrganGeometry) -> float:
        """Mean over organs of ``exp(-z_volume²/2) · exp(-z_position²/2)`` (absent organ: 0;
        an organ the reference never saw: not counted)."""
        scores = []
        for k, volume in enumerate(geometry.volume_ml):
            if np.isnan(self.log_volume_mean[k]):
                continue
            if volume <= 0:
                scores.append(0.0)
                continue
            z_volume = (math.log(volume) - self.log_volume_mean[k]) / self.log_volume_sd[k]
            shift = np.linalg.norm(geometry.offset_mm[k] - self.offset_mean[k])
            z_position = shift / self.offset_sd_mm[k]
            scores.append(math.exp(-0.5 * (z_volume**2 + z_position**2)))
        return float(np.mean(scores)) if scores else math.nan
