"""Gaussian-weighted sliding-window prediction over a volume larger than the network input.

The network was trained on ``patch`` -sized crops, so a whole CT at the
target spacing is predicted window by window. Windows overlap by
``overlap`` (0.5: each voxel is seen by up to 8 windows in 3D) and their
softmax outputs are averaged with a Gaussian importance map (σ = 1/8 of the
patch, as nnU-Net and MONAI's ``sliding_window_inference`` use), because a
convolutional network is least reliable near the edges of its input, where it
sees the least context. Volumes smaller than a patch along an axis are padded
(value ``pad_value``) and the result is cropped back.

Arrays are (X, Y, Z) voxels; probabilities are (X, Y, Z, C) float32. The
network is any callable that maps a batch (B, X, Y, Z) to (B, X, Y, Z, C), so
this module needs neither Keras nor a backend. The default ``overlap`` is
``infer.overlap``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from flare_helpers.config import InferConfig

PredictFn = Callable[[np.ndarray], np.ndarray]
#: σ of the importance map as a fraction of the patch size (nnU-Net, MONAI).
SIGMA_SCALE = 0.125


def gaussian_importance(patch: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Separable Gaussian weights over one patch, peak 1 at the centre, float32 (X, Y, Z).

    The smallest weight is kept above zero (≥ 1e-3 of the peak), so voxels seen
    only by window edges still get a defined average.
    """
    weights = np.ones((), dtype=np.float64)
    for n in patch:
        centre = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-6)
        axis = np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch`` voxels covering ``size`` voxels (``size >= patch``).

    The stride is at most ``patch * (1 - overlap)``; the windows are spread
    evenly so that the first starts at 0 and the last ends at ``size``.
    """
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch {patch}; pad first")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / stride) + 1
    if count == 1:
        return [0]
    return [int(round(i * (size - patch) / (count - 1))) for i in range(count)]


def window_boxes(
    shape: Sequence[int], patch: Sequence[int], overlap: float
) -> list[tuple[slice, slice, slice]]:
    """Every window (three slices) of a sliding-window pass over ``shape`` (each ≥ patch)."""
    starts = [window_starts(n, p, overlap) for n, p in zip(shape, patch, strict=True)]
    return [
        (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
        for x in starts[0]
        for y in starts[1]
        for z in starts[2]
    ]


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many windows (network inputs) a volume of ``shape`` needs, padding included."""
    padded = [max(n, p) for n, p in zip(shape, patch, strict=True)]
    return len(window_boxes(padded, patch, overlap))


def mirrored(predict: PredictFn, swap_channels: Sequence[tuple[int, int]] = ()) -> PredictFn:
    """Test-time augmentation: average ``predict`` on the batch and on its left-right mirror.

    Axis 0 of each volume is the patient's right → left axis (RAS). Mirroring it
    turns a right kidney into a left one, so the channels of each
    ``swap_channels`` pair (e.g. the right and left kidney classes) are swapped
    back before averaging.
    """

    def predict_tta(batch: np.ndarray) -> np.ndarray:
        plain = np.asarray(predict(batch), dtype=np.float32)
        flipped = np.asarray(predict(batch[:, ::-1]), dtype=np.float32)[:, ::-1]
        order = list(range(flipped.shape[-1]))
        for a, b in swap_channels:
            order[a], order[b] = b, a
        return 0.5 * (plain + flipped[..., order])

    return predict_tta


def _batches(boxes: list, size: int) -> Iterator[list]:
    for start in range(0, len(boxes), size):
        yield boxes[start : start + size]


Box = tuple[slice, slice, slice]


def fit_box(box: Sequence[slice], patch: Sequence[int], shape: Sequence[int]) -> Box:
    """``box`` widened (evenly, kept inside ``shape``) to at least ``patch`` along every axis.

    ``shape`` must be at least ``patch`` along every axis (a padded volume).
    """
    out = []
    for s, p, n in zip(box, patch, shape, strict=True):
        lo, hi = max(int(s.start), 0), min(int(s.stop), int(n))
        short = max(int(p) - (hi - lo), 0)
        lo = max(lo - short // 2, 0)
        hi = min(max(hi + short - short // 2, lo + int(p)), int(n))
        lo = min(lo, hi - int(p))
        out.append(slice(lo, hi))
    return tuple(out)


class WindowSum:
    """Gaussian-weighted sum of window outputs over one volume, filled region by region.

    :meth:`cover` runs the windows of a sliding-window pass over a box of the
    volume and adds them in; further calls add more windows (a grown box) without
    redoing the earlier ones. :meth:`probabilities` is the weighted mean where a
    window ran and background (class 0, probability 1) elsewhere. Covering the
    whole volume once is exactly :func:`sliding_window_probabilities`.

    Boxes are in the coordinates of the padded volume (:attr:`shape`: the volume
    padded with ``pad_value`` up to ``patch`` where it is smaller).
    """

    def __init__(
        self,
        volume: np.ndarray,
        patch: Sequence[int],
        predict: PredictFn,
        *,
        batch_size: int = 1,
        pad_value: float = 0.0,
    ) -> None:
        self.patch = tuple(int(p) for p in patch)
        if volume.ndim != 3 or len(self.patch) != 3:
            raise ValueError(f"expected a 3D volume and a 3D patch, got {volume.shape} and {patch}")
        self.volume_shape = tuple(volume.shape)
        self.shape = tuple(max(n, p) for n, p in zip(volume.shape, self.patch, strict=True))
        if self.shape != self.volume_shape:
            self.padded = np.full(self.shape, pad_value, dtype=np.float32)
            self.padded[tuple(slice(0, n) for n in self.volume_shape)] = volume
        else:
            self.padded = np.asarray(volume, dtype=np.float32)
        self.predict = predict
        self.batch_size = max(1, int(batch_size))
        self.weights = gaussian_importance(self.patch)
        self.total: np.ndarray | None = None
        self.weight_sum = np.zeros(self.shape, dtype=np.float32)
        self.windows_run = 0

    @property
    def whole(self) -> Box:
        """The box of the whole (padded) volume."""
        return tuple(slice(0, n) for n in self.shape)

    def cover(self, box: Sequence[slice] | None, overlap: float, progress: bool = False) -> int:
        """Run the windows of a pass over ``box`` (None: everything); return how many ran."""
        box = self.whole if box is None else fit_box(box, self.patch, self.shape)
        size = [s.stop - s.start for s in box]
        boxes = [
            tuple(slice(s.start + w.start, s.start + w.stop) for s, w in zip(box, win, strict=True))
            for win in window_boxes(size, self.patch, overlap)
        ]
        with tqdm(total=len(boxes), desc="windows", unit="win", disable=not progress) as bar:
            for chunk in _batches(boxes, self.batch_size):
                batch = np.stack([self.padded[b] for b in chunk])
                out = np.asarray(self.predict(batch), dtype=np.float32)
                if self.total is None:
                    self.total = np.zeros((*self.shape, out.shape[-1]), dtype=np.float32)
                for b, probs in zip(chunk, out, strict=True):
                    self.total[b] += probs * self.weights[..., None]
                    self.weight_sum[b] += self.weights
                bar.update(len(chunk))
        self.windows_run += len(boxes)
        return len(boxes)

    def classes(self, box: Sequence[slice]) -> np.ndarray:
        """Argmax class of the running sum inside ``box`` (0 where no window ran yet)."""
        if self.total is None:
            return np.zeros(tuple(s.stop - s.start for s in box), dtype=np.uint8)
        return np.argmax(self.total[tuple(box)], axis=-1).astype(np.uint8)

    def probabilities(self) -> np.ndarray:
        """(X, Y, Z, C) float32 weighted mean, cropped to the volume; background where unseen."""
        if self.total is None:
            raise ValueError("no window has run yet")
        total = self.total
        if np.all(self.weight_sum > 0):
            total /= self.weight_sum[..., None]
        else:
            seen = self.weight_sum > 0
            total[seen] /= self.weight_sum[seen][:, None]
            total[~seen] = np.eye(total.shape[-1], dtype=np.float32)[0]
        self.total = None
        n = self.volume_shape
        return total[: n[0], : n[1], : n[2]]


def sliding_window_probabilities(
    volume: np.ndarray,
    patch: Sequence[int],
    predict: PredictFn,
    *,
    overlap: float = InferConfig.overlap,
    batch_size: int = 1,
    pad_value: float = 0.0,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities for a whole volume from patch-sized network calls.

    Args:
        volume: (X, Y, Z) network input (e.g. float32 in [0, 1]).
        patch: (px, py, pz) window size: the network's input shape.
        predict: batch (B, px, py, pz) → probabilities (B, px, py, pz, C).
        overlap: fraction of a window shared with its neighbour along each axis.
        batch_size: windows per ``predict`` call.
        pad_value: value of the padding where the volume is smaller than a patch.
        progress: show a progress bar over the windows.

    Returns:
        (X, Y, Z, C) float32 Gaussian-weighted mean of the window outputs.
    """
    sums = WindowSum(volume, patch, predict, batch_size=batch_size, pad_value=pad_value)
    sums.cover(None, overlap, progress)
    return sums.probabilities()
