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
this module needs neither Keras nor a backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

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


def sliding_window_probabilities(
    volume: np.ndarray,
    patch: Sequence[int],
    predict: PredictFn,
    *,
    overlap: float = 0.5,
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
    patch = tuple(int(p) for p in patch)
    shape = volume.shape
    if volume.ndim != 3 or len(patch) != 3:
        raise ValueError(f"expected a 3D volume and a 3D patch, got {shape} and {patch}")
    padded_shape = tuple(max(n, p) for n, p in zip(shape, patch, strict=True))
    if padded_shape != shape:
        padded = np.full(padded_shape, pad_value, dtype=np.float32)
        padded[: shape[0], : shape[1], : shape[2]] = volume
    else:
        padded = np.asarray(volume, dtype=np.float32)
    weights = gaussian_importance(patch)
    boxes = window_boxes(padded_shape, patch, overlap)
    total: np.ndarray | None = None
    weight_sum = np.zeros(padded_shape, dtype=np.float32)
    with tqdm(total=len(boxes), desc="windows", unit="win", disable=not progress) as bar:
        for chunk in _batches(boxes, max(1, int(batch_size))):
            out = np.asarray(predict(np.stack([padded[box] for box in chunk])), dtype=np.float32)
            if total is None:
                total = np.zeros((*padded_shape, out.shape[-1]), dtype=np.float32)
            for box, probs in zip(chunk, out, strict=True):
                total[box] += probs * weights[..., None]
                weight_sum[box] += weights
            bar.update(len(chunk))
    total /= weight_sum[..., None]
    return total[: shape[0], : shape[1], : shape[2]]
