"""Resizing volumes between a crop of the CT grid and the network grid.

All functions use the same voxel-edge-aligned mapping (``grid_mode=True`` in
scipy's terms): output voxel ``i`` of ``m`` samples input coordinate
``(i + 0.5) * n / m - 0.5`` of ``n``, so the two grids cover the same physical
box, and resizing there and back again is consistent. Images use linear
interpolation (order 1); labels use nearest neighbour, which never invents a
label value. Linear interpolation is done one axis at a time, which is exact
for (tri)linear interpolation and much faster than ``scipy.ndimage.zoom``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _source_coords(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate sampled by each output voxel centre (edge-aligned grids)."""
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(coords, 0.0, n_in - 1)


def _linear_axis(array: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    coords = _source_coords(n_in, n_out)
    lo = np.floor(coords).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    shape = [1] * array.ndim
    shape[axis] = n_out
    w = (coords - lo).astype(np.float32).reshape(shape)
    low = np.take(array, lo, axis=axis)
    high = np.take(array, hi, axis=axis)
    low *= 1.0 - w
    high *= w
    low += high
    return low


def resize_linear(volume: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of a 3D volume (float32 out), edge-aligned grids, edges clamped.

    Equal to ``scipy.ndimage.zoom(v, zoom, order=1, grid_mode=True, mode="nearest")``
    up to float32 rounding. Works on any memory layout (NIfTI data are Fortran
    ordered, canonical views may be flipped); the axis that shrinks most goes
    first (ties: the contiguous one), which keeps every later pass small.
    """
    out_shape = tuple(int(n) for n in out_shape)
    if volume.ndim != 3 or len(out_shape) != 3:
        raise ValueError(f"expected a 3D volume and a 3D shape, got {volume.shape} → {out_shape}")
    result = np.asarray(volume, dtype=np.float32)
    strides = [abs(s) for s in result.strides]
    if strides[0] < strides[2]:
        # Fortran-like layout: work on the transposed (C-like) view so every
        # gather below reads contiguous memory, then transpose back.
        return np.ascontiguousarray(resize_linear(result.T, out_shape[::-1]).T)
    for axis in sorted(range(3), key=lambda ax: (out_shape[ax] / result.shape[ax], strides[ax])):
        result = _linear_axis(result, axis, out_shape[axis])
    if result is volume:
        result = result.copy()
    return result


def resize_nearest(labels: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a 3D label volume (dtype kept), edge-aligned grids."""
    out_shape = tuple(int(n) for n in out_shape)
    index = np.ix_(
        *[
            np.floor(_source_coords(n_in, n_out) + 0.5).astype(np.intp)
            for n_in, n_out in zip(labels.shape, out_shape, strict=True)
        ]
    )
    return labels[index]


def resize_probabilities_argmax(
    probabilities: np.ndarray, out_shape: Sequence[int], chunk: int = 16
) -> np.ndarray:
    """Resize class probabilities linearly, then take the argmax: labels on the fine grid.

    More accurate than nearest-neighbour resizing of the coarse argmax: organ
    boundaries fall between coarse voxels instead of on a staircase of them.
    Works slab by slab along the last axis so memory stays at a few slabs.

    Args:
        probabilities: (X, Y, Z, C) softmax output on the coarse grid.
        out_shape: (X', Y', Z') fine grid.
        chunk: output slices per slab.

    Returns:
        (X', Y', Z') uint8 class indices.
    """
    out_shape = tuple(int(n) for n in out_shape)
    probs = np.asarray(probabilities, dtype=np.float32)
    n_in_z = probs.shape[2]
    # Along z first (the coarse grid is small), then each slab in-plane.
    z_coords = _source_coords(n_in_z, out_shape[2])
    labels = np.empty(out_shape, dtype=np.uint8)
    for start in range(0, out_shape[2], chunk):
        stop = min(start + chunk, out_shape[2])
        lo = np.floor(z_coords[start:stop]).astype(np.intp)
        hi = np.minimum(lo + 1, n_in_z - 1)
        w = (z_coords[start:stop] - lo).astype(np.float32)[None, None, :, None]
        slab = probs[:, :, lo, :] * (1.0 - w) + probs[:, :, hi, :] * w
        slab = _linear_axis(_linear_axis(slab, 0, out_shape[0]), 1, out_shape[1])
        labels[:, :, start:stop] = np.argmax(slab, axis=-1)
    return labels


def shape_for_spacing(
    shape: Sequence[int], spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[int, int, int]:
    """Grid size that covers the same physical box as ``shape`` at ``target_spacing_mm``.

    ``round(n * spacing / target)`` voxels per axis (at least 1), as nnU-Net does;
    with the edge-aligned mapping above the new voxels are then within half a voxel
    per box of the target size, and resizing back restores the original grid.
    """
    return tuple(
        max(1, int(round(n * s / t)))
        for n, s, t in zip(shape, spacing_mm, target_spacing_mm, strict=True)
    )
