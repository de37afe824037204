"""On-the-fly training augmentation of one patch: nnU-Net's default training transforms.

Arrays are in canonical RAS voxel order (axis 0 → patient's right, axis 1 →
anterior, axis 2 → superior); the image is float32 in [0, 1] (the HU window),
the label uint8 training classes. Each transform, its chance and its range
follow ``nnUNetTrainer.get_training_transforms`` of nnU-Net v2 (MIC-DKFZ/nnUNet,
with batchgeneratorsv2's transforms), in its order:

1. spatial (``SpatialTransform``): with probability 0.2 a rotation about each of
   the three axes, each angle uniform in ±30° (nnU-Net's range for 3D patches
   whose longest side is at most 3× the shortest, ``ANISO_THRESHOLD``; the default
   128×128×64 patch is 2×), and independently with probability 0.2 one isotropic
   zoom factor uniform in 0.7–1.4. The patch is sampled from the whole case around
   the patch centre, as nnU-Net samples it from a larger initial patch, so a
   rotation or a zoom-out shows real anatomy at the patch borders instead of
   zeros. Rotations are of the body in millimetres (voxel sizes given): with the
   default 1.2×1.2×2.5 mm grid a rotation in voxel indices would shear it.
   Images are interpolated linearly, labels by nearest neighbour (no label value
   is invented).
2. Gaussian noise (``GaussianNoiseTransform``), probability 0.1: std uniform in
   0–0.1 intensity units.
3. Gaussian blur (``GaussianBlurTransform``), probability 0.2 × 0.5 per channel
   = 0.1 for one channel: sigma uniform in 0.5–1 voxel, drawn per axis.
4. brightness (``MultiplicativeBrightnessTransform``), probability 0.15: a
   multiplier from ``BGContrast((0.75, 1.25))`` (half the draws below 1, half
   above), about the organs' mean (nnU-Net multiplies z-scored intensities, whose
   0 is that mean).
5. contrast (``ContrastTransform``, ``preserve_range``), probability 0.15: a
   factor from ``BGContrast((0.75, 1.25))`` about the patch mean, then clipped to
   the patch's former range.
6. simulated low resolution (``SimulateLowResolutionTransform``), probability
   0.25 × 0.5 per channel = 0.125: downsampled by one factor uniform in 0.5–1 for
   every axis (nearest), then back up (linear).
7. gamma of the inverted image (``GammaTransform``, ``p_invert_image=1``),
   probability 0.1, and 8. gamma (``p_invert_image=0``), probability 0.3: gamma
   from ``BGContrast((0.7, 1.5))`` on the patch scaled to [0, 1], mean and std
   restored afterwards (``p_retain_stats=1``).

Mirroring, which nnU-Net applies on every axis, is off by default here: a
left-right flip turns a right kidney into a left one, so when it is switched on
(``lr_flip_probability``) the (right, left) classes are swapped with it.

nnU-Net's intensity ranges are in units of its z-scored CT (the dataset's
foreground mean 0, std 1); here one unit is ``foreground_std`` on the [0, 1]
scale and the centre ``foreground_mean`` (:class:`~flare_helpers.config.AugmentConfig`).
Every result is clipped to [0, 1]: outside the HU window a scan shows nothing else.

Everything random is drawn up front by :func:`draw_params` (always the same draws
in the same order), so a result is a pure function of the inputs and the
generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from flare_helpers.config import AugmentConfig
from flare_helpers.train.patches import cut_patch


@dataclass(frozen=True)
class AugmentParams:
    """One draw of every augmentation parameter; a transform applies where its flag is set.

    Attributes:
        rotate, angles_deg: rotation about axes 0, 1, 2 (:func:`rotation_matrix`).
        zoom, scale: isotropic zoom factor (> 1 enlarges the anatomy).
        noise, noise_std, noise_seed: additive noise (std on the [0, 1] scale).
        blur, blur_sigma: Gaussian blur, sigma in voxels per axis.
        brightness, brightness_factor: multiplier about the organs' mean.
        contrast, contrast_factor: factor about the patch mean, range kept.
        low_res, low_res_zoom: downsampling factor before upsampling back.
        gamma_inverted, gamma_inverted_value, gamma, gamma_value: the two gammas.
        flip: left-right mirror (kidney classes swapped).
    """

    rotate: bool
    angles_deg: tuple[float, float, float]
    zoom: bool
    scale: float
    noise: bool
    noise_std: float
    noise_seed: int
    blur: bool
    blur_sigma: tuple[float, float, float]
    brightness: bool
    brightness_factor: float
    contrast: bool
    contrast_factor: float
    low_res: bool
    low_res_zoom: float
    gamma_inverted: bool
    gamma_inverted_value: float
    gamma: bool
    gamma_value: float
    flip: bool

    @property
    def spatial(self) -> bool:
        """Whether the patch is resampled (rotation or zoom)."""
        return self.rotate or self.zoom


def bg_contrast(rng: np.random.Generator, low: float, high: float) -> float:
    """batchgeneratorsv2's ``BGContrast``: half the draws uniform in [low, 1], half in [1, high]
    (so a range like 0.7–1.5 makes as many darkening as brightening draws)."""
    below = rng.random() < 0.5
    value = rng.uniform(min(low, 1.0), 1.0) if below else rng.uniform(1.0, max(high, 1.0))
    return float(value)


def draw_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw all parameters (always the same number of draws, whatever applies)."""
    chance = cfg.probabilities()
    order = (
        "rotation",
        "scale",
        "noise",
        "blur",
        "brightness",
        "contrast",
        "low_resolution",
        "gamma_inverted",
        "gamma",
        "lr_flip",
    )
    apply = dict(zip(order, (rng.random(len(order)) < [chance[k] for k in order]), strict=True))
    return AugmentParams(
        rotate=bool(apply["rotation"]),
        angles_deg=tuple(float(rng.uniform(-d, d)) for d in cfg.rotation_deg),
        zoom=bool(apply["scale"]),
        scale=float(rng.uniform(*cfg.scale_range)),
        noise=bool(apply["noise"]),
        noise_std=float(rng.uniform(*cfg.noise_sigma)) * cfg.foreground_std,
        noise_seed=int(rng.integers(2**63)),
        blur=bool(apply["blur"]),
        blur_sigma=tuple(float(rng.uniform(*cfg.blur_sigma)) for _ in range(3)),
        brightness=bool(apply["brightness"]),
        brightness_factor=bg_contrast(rng, *cfg.brightness_range),
        contrast=bool(apply["contrast"]),
        contrast_factor=bg_contrast(rng, *cfg.contrast_range),
        low_res=bool(apply["low_resolution"]),
        low_res_zoom=float(rng.uniform(*cfg.low_resolution_zoom)),
        gamma_inverted=bool(apply["gamma_inverted"]),
        gamma_inverted_value=bg_contrast(rng, *cfg.gamma_range),
        gamma=bool(apply["gamma"]),
        gamma_value=bg_contrast(rng, *cfg.gamma_range),
        flip=bool(apply["lr_flip"]),
    )


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """``R_2 @ R_1 @ R_0``: rotation about axis 0, then 1, then 2, by ``angles_deg`` degrees,
    each in the plane of the two other axes from the lower-numbered toward the higher."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles_deg):
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        i, j = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[i, i], step[i, j], step[j, i], step[j, j] = c, -s, s, c
        matrix = step @ matrix
    return matrix


def sampling_matrix(
    angles_deg: Sequence[float], scale: float, voxel_mm: Sequence[float] | None = None
) -> np.ndarray:
    """Matrix ``M`` taking an output offset from the patch centre (voxels) to the input offset.

    The anatomy is rotated by ``R`` (:func:`rotation_matrix`) and enlarged by
    ``scale`` in millimetres, so output voxel ``o`` reads the input at
    ``S⁻¹ Rᵀ S o / scale`` with ``S = diag(voxel_mm)`` (voxel space when None).
    """
    inverse = rotation_matrix(angles_deg).T / float(scale)
    if voxel_mm is None:
        return inverse
    spacing = np.asarray(voxel_mm, dtype=np.float64)
    return inverse * spacing[None, :] / spacing[:, None]


def transformed_patch(
    image: np.ndarray,
    label: np.ndarray,
    start: Sequence[int],
    patch: Sequence[int],
    matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``patch`` whose unrotated corner is ``start``, sampled through ``matrix`` about its centre.

    Output voxel ``o`` takes the input at ``c + matrix @ (o - p)``, ``c`` the centre
    of ``image[start : start + patch]`` and ``p`` the patch centre: the image
    linearly (``order=1``), the label by nearest neighbour (``order=0``); 0 where
    that falls outside the case (``mode="grid-constant"``: the case padded with 0, then
    interpolated). Only the input region the patch reaches is read
    (``image`` may be a memory map of the whole case).

    Returns:
        ``(image, label)``: new float32 and uint8 arrays of shape ``patch``.
    """
    patch = np.asarray(patch, dtype=np.int64)
    centre_out = (patch - 1) / 2.0
    centre_in = np.asarray(start, dtype=np.float64) + centre_out
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in patch], indexing="ij")).reshape(3, -1)
    reach = centre_in[:, None] + matrix @ (corners - centre_out[:, None])
    low = np.floor(reach.min(axis=1)).astype(np.int64) - 1
    high = np.ceil(reach.max(axis=1)).astype(np.int64) + 2
    region = tuple(int(n) for n in high - low)
    offset = centre_in - low - matrix @ centre_out
    image_region = cut_region(image, low, region).astype(np.float32, copy=False)
    label_region = cut_region(label, low, region)
    shape = tuple(int(n) for n in patch)
    out = ndimage.affine_transform(
        image_region, matrix, offset, output_shape=shape, order=1, mode="constant", cval=0.0
    )
    label_out = ndimage.affine_transform(
        label_region, matrix, offset, output_shape=shape, order=0, mode="constant", cval=0
    )
    return out.astype(np.float32, copy=False), label_out.astype(np.uint8, copy=False)


def cut_region(array: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``array[start : start + shape]`` for any ``start`` (also negative), 0 outside."""
    start = np.asarray(start, dtype=np.int64)
    inner_start = np.clip(start, 0, array.shape)
    inner_stop = np.clip(start + np.asarray(shape), 0, array.shape)
    out = np.zeros(tuple(int(n) for n in shape), dtype=array.dtype)
    if np.all(inner_stop > inner_start):
        src = tuple(slice(int(a), int(b)) for a, b in zip(inner_start, inner_stop, strict=True))
        dst = tuple(
            slice(int(a - s), int(b - s))
            for a, b, s in zip(inner_start, inner_stop, start, strict=True)
        )
        out[dst] = array[src]
    return out


def flip_lr(
    image: np.ndarray, label: np.ndarray, swap_classes: Sequence[tuple[int, int]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror axis 0 (patient's right ↔ left) and exchange each (right, left) class pair."""
    lut = np.arange(256, dtype=np.uint8)
    for right, left in swap_classes:
        lut[right], lut[left] = left, right
    return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(lut[label[::-1]])


def gamma_retain_stats(image: np.ndarray, gamma: float, invert: bool = False) -> np.ndarray:
    """batchgenerators' gamma: scale to [0, 1] by the patch's range, ``x ** gamma``, scale
    back, then restore the patch's mean and std; ``invert`` applies it to ``-image``."""
    x = -image if invert else image
    mean, std = float(x.mean()), float(x.std())
    low, span = float(x.min()), float(x.max() - x.min())
    out = np.power((x - low) / (span + 1e-7), gamma, dtype=np.float32) * span + low
    out_std = float(out.std())
    out = (out - float(out.mean())) * (std / (out_std + 1e-7)) + mean
    return (-out if invert else out).astype(np.float32, copy=False)


def simulate_low_resolution(image: np.ndarray, zoom: float) -> np.ndarray:
    """Downsample every axis by ``zoom`` (nearest), then back to the input shape (linear)."""
    small = tuple(max(1, int(round(n * zoom))) for n in image.shape)
    down = ndimage.zoom(
        image, np.divide(small, image.shape), order=0, mode="nearest", grid_mode=True
    )
    up = ndimage.zoom(
        down, np.divide(image.shape, down.shape), order=1, mode="nearest", grid_mode=True
    )
    return up[tuple(slice(0, n) for n in image.shape)].astype(np.float32, copy=False)


def adjust_intensity(image: np.ndarray, params: AugmentParams, cfg: AugmentConfig) -> np.ndarray:
    """The intensity transforms of ``params`` in nnU-Net's order, clipped to [0, 1] (new float32)."""
    out = np.array(image, dtype=np.float32)
    if params.noise and params.noise_std > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(out.shape, np.float32)
        out += noise * np.float32(params.noise_std)
    if params.blur:
        out = ndimage.gaussian_filter(out, params.blur_sigma, mode="nearest", truncate=3.0)
    if params.brightness:
        centre = np.float32(cfg.foreground_mean)
        out = (out - centre) * np.float32(params.brightness_factor) + centre
    if params.contrast:
        low, high, mean = out.min(), out.max(), out.mean(dtype=np.float64)
        out = (out - np.float32(mean)) * np.float32(params.contrast_factor) + np.float32(mean)
        np.clip(out, low, high, out=out)
    if params.low_res:
        out = simulate_low_resolution(out, params.low_res_zoom)
    if params.gamma_inverted:
        out = gamma_retain_stats(out, params.gamma_inverted_value, invert=True)
    if params.gamma:
        out = gamma_retain_stats(out, params.gamma_value)
    return np.clip(out, 0.0, 1.0, out=out)


def _intensity(params: AugmentParams) -> bool:
    return any(
        (
            params.noise,
            params.blur,
            params.brightness,
            params.contrast,
            params.low_res,
            params.gamma_inverted,
            params.gamma,
        )
    )


def apply_params(
    image: np.ndarray,
    label: np.ndarray,
    start: Sequence[int],
    patch: Sequence[int],
    params: AugmentParams,
    cfg: AugmentConfig,
    swap_classes: Sequence[tuple[int, int]] = (),
    voxel_mm: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut (or resample) the patch at ``start``, then mirror, then the intensity transforms."""
    if params.spatial:
        angles = params.angles_deg if params.rotate else (0.0, 0.0, 0.0)
        matrix = sampling_matrix(angles, params.scale if params.zoom else 1.0, voxel_mm)
        image, label = transformed_patch(image, label, start, patch, matrix)
    else:
        image, label = cut_patch(image, start, patch), cut_patch(label, start, patch)
    if params.flip:
        image, label = flip_lr(image, label, swap_classes)
    if _intensity(params):
        image = adjust_intensity(image, params, cfg)
    return np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.uint8)


def augment_patch(
    image: np.ndarray,
    label: np.ndarray,
    start: Sequence[int],
    patch: Sequence[int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    swap_classes: Sequence[tuple[int, int]] = (),
    voxel_mm: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The randomly augmented ``patch`` at ``start`` of a whole case (image in [0, 1], uint8 label).

    Args:
        image, label: the whole case (memory maps are fine: only the region used is read).
        start, patch: corner and shape of the patch before the spatial transform.
        rng: the only source of randomness; the same state gives the same result.
        cfg: chances and ranges; ``cfg.enabled == False`` cuts the patch unchanged.
        swap_classes: (right, left) class pairs for the flip, see :func:`lr_swap_pairs`.
        voxel_mm: the grid's voxel size, so that rotations are rotations of the body.

    Returns:
        ``(image, label)`` of shape ``patch``: new float32 in [0, 1] and uint8 holding
        only values of the input label (or 0).
    """
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} differs from label shape {label.shape}")
    if not cfg.enabled:
        return cut_patch(image, start, patch).astype(np.float32), cut_patch(label, start, patch)
    params = draw_params(rng, cfg)
    return apply_params(image, label, start, patch, params, cfg, swap_classes, voxel_mm)


def augment_pair(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    swap_classes: Sequence[tuple[int, int]] = (),
    voxel_mm: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`augment_patch` of a whole volume (resize mode): the patch is the volume.
    ``cfg.enabled == False`` returns the inputs themselves."""
    if not cfg.enabled:
        return image, label
    return augment_patch(image, label, (0, 0, 0), image.shape, rng, cfg, swap_classes, voxel_mm)
