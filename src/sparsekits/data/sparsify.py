"""Sparsification (METHOD.md): keep the voxels of a stage's rule (and mask); normalise them.

Also finds the body on a stage grid, so that stage 1 works on the box that holds the patient
rather than the air around it: nothing the HU windows keep lies outside that box.
"""

from __future__ import annotations

import numpy as np

from sparsekits.data.io import AIR_BELOW_HU
from sparsekits.plan import StagePlan


def sparsify(
    hu: np.ndarray, stage: StagePlan, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kept voxels of ``hu`` [X, Y, Z]: ``stage``'s sparsification rule, AND ``mask`` if given.

    Returns coords int32 [N, 3] (x, y, z indices, C order) and features float32 [N, 1]
    (``stage.features`` of the kept HU).
    """
    keep = stage.sparsify.keep(hu)
    if mask is not None:
        if mask.shape != hu.shape:
            raise ValueError(f"mask shape {mask.shape} does not match HU shape {hu.shape}")
        keep &= mask
    coords = np.argwhere(keep).astype(np.int32)
    features = stage.features(hu[keep].astype(np.float32))[:, None]
    return coords, features.astype(np.float32, copy=False)


def kept_fraction(coords: np.ndarray, shape: tuple[int, ...]) -> float:
    """Fraction of the grid's voxels that sparsification kept."""
    return len(coords) / max(1, int(np.prod(shape)))


def body_box(hu: np.ndarray, margin_vox: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index box ``(lo, hi)`` of the voxels denser than air (> -500 HU), plus ``margin_vox``.

    Every stage's HU window starts well above air, so cropping to this box drops no kept voxel.
    An image with no such voxel gives its whole extent.
    """
    body = hu > AIR_BELOW_HU
    lo, hi = [], []
    for axis in range(hu.ndim):
        other = tuple(a for a in range(hu.ndim) if a != axis)
        present = np.flatnonzero(body.any(axis=other))
        if len(present) == 0:
            return np.zeros(hu.ndim, dtype=np.int64), np.asarray(hu.shape, dtype=np.int64)
        lo.append(max(0, present[0] - margin_vox))
        hi.append(min(hu.shape[axis], present[-1] + 1 + margin_vox))
    return np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)


def box_slices(lo, hi) -> tuple[slice, ...]:
    """Slices that cut the index box ``lo <= index < hi`` out of an array."""
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
