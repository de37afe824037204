"""On-the-fly training augmentation of one (image, label) pair.

Arrays are in canonical RAS voxel order (axis 0 → patient's right, axis 1 →
anterior, axis 2 → superior); the image is float32 in [0, 1], the label uint8
training classes. Three independent transforms, each with its own probability
(:class:`~flare_helpers.config.AugmentConfig`):

- spatial: rotation about the superior (z) axis plus isotropic scaling about
  the volume centre, as one resampling (linear for the image, nearest for the
  label, so no label value is ever invented; 0 fills what comes from outside);
- left-right flip of axis 0, swapping each (right, left) class pair, because a
  flipped right kidney is a left kidney;
- intensity: gamma, gain, offset and Gaussian noise, clipped to [0, 1].

Everything random is drawn up front by :func:`draw_params` in a fixed order, so
a result is a pure function of the inputs and the generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flare_helpers.config import AugmentConfig
from flare_helpers.errors import FlareError
from flare_helpers.labels import OrganSet

_EDGE_TOLERANCE = 1e-6  # source coordinates this close to the edge still count as inside


@dataclass(frozen=True)
class AugmentParams:
    """One draw of every augmentation parameter; the ``spatial``/``intensity``/``flip``
    flags say which transforms apply.

    Attributes:
        angle_deg: rotation about the superior axis, counter-clockwise from axis 0
            toward axis 1 (patient's right toward anterior).
        scale: isotropic zoom factor (> 1 enlarges the anatomy).
        gain, offset, gamma: intensity mapping ``x ** gamma * gain + offset``.
        noise_std: standard deviation of the added Gaussian noise.
        noise_seed: seed of the noise field.
    """

    spatial: bool
    angle_deg: float
    scale: float
    intensity: bool
    gain: float
    offset: float
    gamma: float
    noise_std: float
    noise_seed: int
    flip: bool


def draw_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw all parameters (always the same number of draws, whatever applies)."""
    apply = rng.random(3)
    return AugmentParams(
        spatial=bool(apply[0] < cfg.spatial_probability),
        angle_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
        scale=float(rng.uniform(*cfg.scale_range)),
        intensity=bool(apply[1] < cfg.intensity_probability),
        gain=float(1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale)),
        offset=float(rng.uniform(-cfg.intensity_shift, cfg.intensity_shift)),
        gamma=float(rng.uniform(*cfg.gamma_range)),
        noise_std=float(rng.uniform(0.0, cfg.noise_std)),
        noise_seed=int(rng.integers(2**63)),
        flip=bool(apply[2] < cfg.lr_flip_probability),
    )


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


def _source_coords(n: int, coords: np.ndarray) -> tuple[np.ndarray, ...]:
    """Lower neighbour, weight of the upper one, nearest index and inside-mask of ``coords``."""
    inside = (coords >= -_EDGE_TOLERANCE) & (coords <= n - 1 + _EDGE_TOLERANCE)
    lower = np.clip(np.floor(coords).astype(np.intp), 0, n - 2)
    weight = np.clip(coords - lower, 0.0, 1.0).astype(np.float32)
    nearest = np.clip(np.floor(coords + 0.5).astype(np.intp), 0, n - 1)
    return lower, weight, nearest, inside


def rotate_scale(
    image: np.ndarray, label: np.ndarray, angle_deg: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the superior axis and zoom isotropically, about the volume centre.

    Output voxel ``o`` takes the input at ``c + R(-angle) (o - c) / scale``
    (``c`` the centre, ``R`` the rotation in the axis-0/axis-1 plane): the result
    equals ``scipy.ndimage.affine_transform`` with that matrix, ``order=1`` for
    the image, ``order=0`` for the label, ``mode="constant"`` and ``cval=0``
    (checked in the tests). Because the z mapping does not depend on x or y and
    the in-plane mapping does not depend on z, the trilinear interpolation is
    computed separably (z, then whole z-rows gathered in-plane), 2–4× faster.
    The angle is in voxel space; with unequal in-plane voxel sizes the physical
    effect also holds a slight shear, which is harmless as augmentation.

    Returns:
        ``(image, label)``: new float32 and uint8 arrays of the input shape.
    """
    if image.shape != label.shape or image.ndim != 3 or min(image.shape) < 2:
        raise ValueError(f"need matching 3D shapes >= 2, got {image.shape} and {label.shape}")
    n_x, n_y, n_z = image.shape
    c = (np.asarray(image.shape, dtype=np.float64) - 1.0) / 2.0
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale

    z0, wz, zn, z_in = _source_coords(n_z, c[2] + (np.arange(n_z) - c[2]) / scale)
    wz = np.where(z_in, wz, 0.0).astype(np.float32)
    image = np.asarray(image, dtype=np.float32)
    lower_z = image[:, :, z0]
    lower_z *= np.where(z_in, 1.0 - wz, 0.0).astype(np.float32)
    along_z = lower_z + image[:, :, z0 + 1] * wz
    label_z = np.asarray(label, dtype=np.uint8)[:, :, zn]
    label_z[:, :, ~z_in] = 0

    ox, oy = np.meshgrid(np.arange(n_x) - c[0], np.arange(n_y) - c[1], indexing="ij")
    x0, wx, xn, x_in = _source_coords(n_x, c[0] + cos * ox + sin * oy)
    y0, wy, yn, y_in = _source_coords(n_y, c[1] - sin * ox + cos * oy)
    inside = (x_in & y_in)[..., None]
    wx, wy = wx[..., None], wy[..., None]
    out = along_z[x0, y0]
    out *= (1.0 - wx) * (1.0 - wy)
    for dx, dy, weight in ((1, 0, wx * (1.0 - wy)), (0, 1, (1.0 - wx) * wy), (1, 1, wx * wy)):
        corner = along_z[x0 + dx, y0 + dy]
        corner *= weight
        out += corner
    out *= inside
    label_out = label_z[xn, yn]
    label_out *= inside
    return out, label_out


def flip_lr(
    image: np.ndarray, label: np.ndarray, swap_classes: Sequence[tuple[int, int]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror axis 0 (patient's right ↔ left) and exchange each (right, left) class pair."""
    lut = np.arange(256, dtype=np.uint8)
    for right, left in swap_classes:
        lut[right], lut[left] = left, right
    return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(lut[label[::-1]])


def adjust_intensity(
    image: np.ndarray,
    gain: float,
    offset: float,
    gamma: float,
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``x ** gamma * gain + offset + N(0, noise_std²)``, clipped to [0, 1] (new float32)."""
    out = np.clip(np.asarray(image, dtype=np.float32), np.float32(0), np.float32(1))
    np.power(out, np.float32(gamma), out=out)
    out *= np.float32(gain)
    out += np.float32(offset)
    if noise_std > 0:
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        noise *= np.float32(noise_std)
        out += noise
    return np.clip(out, 0.0, 1.0, out=out)


def apply_params(
    image: np.ndarray,
    label: np.ndarray,
    params: AugmentParams,
    swap_classes: Sequence[tuple[int, int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one draw: spatial, then flip, then intensity (noise stays un-interpolated)."""
    if params.spatial:
        image, label = rotate_scale(image, label, params.angle_deg, params.scale)
    if params.flip:
        image, label = flip_lr(image, label, swap_classes)
    if params.intensity:
        noise_rng = np.random.default_rng(params.noise_seed)
        image = adjust_intensity(
            image, params.gain, params.offset, params.gamma, params.noise_std, noise_rng
        )
    return image, label


def augment_pair(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    swap_classes: Sequence[tuple[int, int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment one (X, Y, Z) image (float32, [0, 1]) and its uint8 label.

    Args:
        rng: the only source of randomness; the same state gives the same result.
        cfg: probabilities and ranges; ``cfg.enabled == False`` returns the inputs.
        swap_classes: (right, left) class pairs for the flip, see :func:`lr_swap_pairs`.

    Returns:
        ``(image, label)`` of the input shape: float32 in [0, 1] and uint8 holding
        only values of the input label (or 0). The inputs are never modified; an
        input no transform touches is returned itself (not copied).
    """
    if not cfg.enabled:
        return image, label
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} differs from label shape {label.shape}")
    return apply_params(image, label, draw_params(rng, cfg), swap_classes)
