"""Augmentation of a dense HU crop BEFORE sparsification (METHOD.md, Training).

Each transform fires with its own probability, drawn from a ``numpy.random.Generator`` that the
caller seeds per sample, so a resumed run augments every sample exactly as before. The spatial
transforms move the labels and the stage-2 ROI mask with the HU (nearest neighbour); the intensity
transforms touch HU only. The affine is one ``grid_sample`` on the whole crop (labels and mask in
a second, nearest-neighbour call), which keeps a ~150^3 crop well under a training step on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from sparsekits.plan import Augmentation


@dataclass
class Crop:
    """A dense crop on a stage grid, axes (x, y, z)."""

    hu: np.ndarray  # float32 (int16 accepted on input)
    labels: np.ndarray  # uint8
    roi_mask: np.ndarray | None = None  # bool, stage 2 only


def augment_crop(crop: Crop, rng: np.random.Generator, config: Augmentation) -> Crop:
    hu = crop.hu.astype(np.float32)
    labels, roi_mask = crop.labels, crop.roi_mask
    if rng.random() < config.affine_p:
        matrix = _random_matrix(rng, config)
        hu, labels, roi_mask = _apply_affine(hu, labels, roi_mask, matrix, config.pad_hu)
    for axis in range(3):
        if rng.random() < config.flip_p:
            hu, labels = np.flip(hu, axis), np.flip(labels, axis)
            roi_mask = None if roi_mask is None else np.flip(roi_mask, axis)
    if rng.random() < config.noise_p:
        hu = hu + rng.standard_normal(hu.shape, dtype=np.float32) * config.noise_std_hu
    if rng.random() < config.smooth_p:
        sigma = rng.uniform(*config.smooth_sigma, size=3)
        hu = ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest")
    if rng.random() < config.intensity_scale_p:
        hu = hu * np.float32(1.0 + rng.uniform(-config.intensity_scale, config.intensity_scale))
    if rng.random() < config.intensity_shift_p:
        hu = hu + np.float32(rng.uniform(-config.intensity_shift_hu, config.intensity_shift_hu))
    contiguous = np.ascontiguousarray
    return Crop(
        hu=contiguous(hu, dtype=np.float32),
        labels=contiguous(labels),
        roi_mask=None if roi_mask is None else contiguous(roi_mask),
    )


def _random_matrix(rng: np.random.Generator, config: Augmentation) -> np.ndarray:
    """Output-to-input map (voxel units, about the crop centre): rotations, then 1/scale."""
    angles = [rng.uniform(-limit, limit) for limit in config.max_rotation]
    scales = 1.0 + rng.uniform(-config.max_scale_change, config.max_scale_change, size=3)
    matrix = np.diag(1.0 / scales)
    for axis, angle in enumerate(angles):
        matrix = _rotation(axis, angle) @ matrix
    return matrix


def _rotation(axis: int, angle: float) -> np.ndarray:
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = cos, -sin, sin, cos
    return rotation


def _apply_affine(
    hu: np.ndarray,
    labels: np.ndarray,
    roi_mask: np.ndarray | None,
    matrix: np.ndarray,
    pad_hu: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    shape = hu.shape
    grid = _sampling_grid(matrix, shape)
    moved_hu = _sample(torch.from_numpy(hu - pad_hu), grid, "bilinear") + pad_hu
    # Labels and mask go through one nearest-neighbour call; outside the crop they are 0.
    channels = [torch.from_numpy(labels.astype(np.float32))]
    if roi_mask is not None:
        channels.append(torch.from_numpy(roi_mask.astype(np.float32)))
    moved = _sample(torch.stack(channels), grid, "nearest")
    moved_labels = moved[0].to(torch.uint8).numpy()
    moved_mask = None if roi_mask is None else moved[1].numpy() > 0.5
    return moved_hu.numpy(), moved_labels, moved_mask


def _sampling_grid(matrix: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """The ``grid_sample`` grid [1, X, Y, Z, 3] of ``matrix`` given in voxel units on (x, y, z).

    grid_sample reads an array [X, Y, Z] as (D, H, W), wants each grid point as (w, h, d), i.e.
    (z, y, x), normalised to [-1, 1] per axis; the matrix is applied in voxel units so that a
    rotation stays a rotation on anisotropic crops. Built by broadcasting, which is several times
    faster than ``affine_grid`` on CPU.
    """
    half = np.array([(size - 1) / 2.0 for size in shape])
    half = np.where(half > 0, half, 1.0)
    axes = [
        torch.arange(size, dtype=torch.float32) - float(centre)
        for size, centre in zip(shape, half, strict=True)
    ]
    views = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    channels = []
    for out_axis in (2, 1, 0):  # grid order (z, y, x)
        row = matrix[out_axis] / half[out_axis]
        channels.append(sum(view * float(weight) for view, weight in zip(views, row, strict=True)))
    return torch.stack(channels, dim=-1)[None]


def _sample(volume: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample [X, Y, Z] or [C, X, Y, Z]; returns the same rank (zeros outside)."""
    batched = volume.reshape(1, -1, *volume.shape[-3:])
    out = F.grid_sample(batched, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0] if volume.ndim == 4 else out[0, 0]
