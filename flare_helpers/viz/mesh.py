"""Organ surface meshes (mm) from a label volume, by marching cubes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import measure

from flare_helpers.data.labels import DEFAULT_ORGANS, ORGAN_COLORS
from flare_helpers.errors import FlareError
from flare_helpers.viz.planes import organ_ids, organ_names

#: Automatic coarsening keeps the meshed grid at about this many voxels.
MESH_MAX_VOXELS = 1_000_000


@dataclass(frozen=True)
class Mesh:
    """A triangle surface of one organ.

    Attributes:
        organ: organ name.
        vertices: (N, 3) float32 positions in mm along R, A, S, measured from the
            centre of voxel (0, 0, 0) (voxel index × spacing).
        faces: (M, 3) int32 vertex indices of each triangle, counter-clockwise seen
            from outside (the right-hand rule gives outward normals, as renderers
            such as plotly that shade by winding expect).
        normals: (N, 3) float32 unit vertex normals, pointing outward.
    """

    organ: str
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray

    @property
    def color(self) -> tuple[float, float, float]:
        """The organ's RGB (0..1) from ``labels.ORGAN_COLORS``, as in the 2D overlays."""
        return ORGAN_COLORS[self.organ]


def coarsening_factors(
    shape: Sequence[int], spacing: Sequence[float], max_voxels: int = MESH_MAX_VOXELS
) -> tuple[int, int, int]:
    """Integer block sizes per axis so the coarse grid has at most ``max_voxels`` voxels.

    Blocks are chosen to make the coarse voxels roughly isotropic in mm: the
    finely sampled in-plane axes of a CT are merged first, the slice axis last.
    """
    shape = np.asarray(shape, dtype=np.int64)
    spacing = np.asarray(spacing, dtype=float)
    if int(np.prod(shape)) <= max_voxels:
        return (1, 1, 1)
    target_mm = (np.prod(shape * spacing) / max_voxels) ** (1.0 / 3.0)
    factors = np.maximum(1, np.round(target_mm / spacing)).astype(np.int64)
    while int(np.prod(-(-shape // factors))) > max_voxels:
        grown = (factors + 1) * spacing
        factors[np.isclose(grown, grown.min())] += 1
    return tuple(int(f) for f in factors)


def organ_meshes(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    step: int | None = None,
    smooth_sigma: float = 1.0,
    max_voxels: int = MESH_MAX_VOXELS,
) -> dict[str, Mesh]:
    """Surface mesh of each organ present in ``labels``, in mm.

    Each organ mask is cropped to its bounding box, optionally coarsened,
    smoothed with a Gaussian (removes the voxel staircase) and meshed at the 0.5
    level with ``skimage.measure.marching_cubes`` using the voxel spacing.

    Args:
        labels: (X, Y, Z) FLARE22 ids in canonical RAS order.
        spacing: voxel size in mm along R, A, S.
        organs: organs to mesh; absent ones are left out of the result.
        step: marching-cubes step size on the full-resolution grid (larger is
            coarser and faster). None (default): volumes above ``max_voxels`` are
            first block-averaged toward isotropic voxels (a 512×512×110 CT meshes
            in well under a second), smaller ones are meshed at full resolution.
        smooth_sigma: Gaussian sigma in (meshed-grid) voxels; 0 turns smoothing off.
        max_voxels: voxel budget of the automatic coarsening.

    Returns:
        organ name → :class:`Mesh`, in the order of ``organs``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise FlareError(f"labels must be a 3D (X, Y, Z) array, got shape {labels.shape}")
    spacing = np.asarray([float(s) for s in spacing], dtype=float)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise FlareError(f"spacing must be three positive mm values, got {spacing.tolist()}")
    if step is not None and int(step) < 1:
        raise FlareError(f"step must be at least 1, got {step}")
    factors = (
        (1, 1, 1) if step is not None else coarsening_factors(labels.shape, spacing, max_voxels)
    )
    meshes = {}
    for name, flare_id in zip(organ_names(organs), organ_ids(organs), strict=True):
        mesh = _organ_mesh(labels == flare_id, spacing, factors, step or 1, smooth_sigma)
        if mesh is not None:
            meshes[name] = Mesh(name, *mesh)
    return meshes


def _organ_mesh(mask: np.ndarray, spacing: np.ndarray, factors, step: int, sigma: float):
    """(vertices mm, faces, normals) of one binary mask, or None if it is empty."""
    box = _bounding_box(mask)
    if box is None:
        return None
    factors = np.asarray(factors)
    margin = int(math.ceil(3.0 * sigma)) + 1 + step  # zero border closes surfaces at the edges
    grid = _block_mean(mask[box], factors, margin)
    if sigma > 0:
        grid = ndimage.gaussian_filter(grid, sigma, output=np.float32)
    peak = float(grid.max())
    level = min(0.5, 0.5 * peak)  # tiny structures that smoothing dims below 0.5 still show
    vertices, faces, normals, _ = measure.marching_cubes(
        grid, level, spacing=tuple(spacing * factors), step_size=step, allow_degenerate=False
    )
    start = np.array([s.start for s in box])
    offset = (start - margin * factors + (factors - 1) / 2.0) * spacing
    # marching_cubes winds triangles clockwise seen from outside; reverse them so the
    # winding agrees with its outward normals.
    return (
        (vertices + offset).astype(np.float32),
        np.ascontiguousarray(faces[:, ::-1], dtype=np.int32),
        normals.astype(np.float32),
    )


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _block_mean(crop: np.ndarray, factors: np.ndarray, margin: int) -> np.ndarray:
    """Average ``factors``-sized blocks of a mask, with ``margin`` empty blocks on every side."""
    cells = -(-np.asarray(crop.shape) // factors) + 2 * margin
    padded = np.zeros(tuple(cells * factors), dtype=np.float32)
    inner = zip(factors, crop.shape, strict=True)
    padded[tuple(slice(margin * f, margin * f + n) for f, n in inner)] = crop
    if np.all(factors == 1):
        return padded
    split = [v for c, f in zip(cells, factors, strict=True) for v in (int(c), int(f))]
    return padded.reshape(split).mean(axis=(1, 3, 5), dtype=np.float32)
