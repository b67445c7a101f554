"""Kidney regions of interest: from a foreground mask on the stage-1 grid to stage-2 crop grids.

Shared by preprocessing (foreground = ground-truth kidney+masses) and prediction (foreground =
stage-1 probabilities above ``RoiRule.probability_threshold``).
"""

from __future__ import annotations

import math

import cc3d
import numpy as np
import scipy.ndimage as ndi

from sparsekits.data.geometry import Grid
from sparsekits.plan import RoiRule, StagePlan


def roi_candidates(foreground: np.ndarray, config: RoiRule) -> tuple[np.ndarray, list[int]]:
    """The ``config.connectivity``-connected components of ``foreground`` (an id per voxel, 0
    outside) and the ids of those of at least ``config.min_component_voxels``, largest first:
    what the ROI rule may cut ROIs from, before it keeps at most ``config.max_components``."""
    components, count = cc3d.connected_components(
        np.asarray(foreground, dtype=bool), connectivity=config.connectivity, return_N=True
    )
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable")]
    return components, [label for label in order if sizes[label - 1] >= config.min_component_voxels]


def dilated_components(
    components: np.ndarray, candidates: list[int], spacing_mm: float, config: RoiRule
) -> list[np.ndarray]:
    """ROI masks (bool, ``components``' shape), largest first: the first
    ``config.max_components`` of ``candidates`` (ids in ``components``, ``roi_candidates``), each
    dilated by an ellipsoid of radius ``config.dilation_mm`` (11 voxels across at 1.99 mm)."""
    boxes = ndi.find_objects(components)
    element = ellipsoid_element(spacing_mm, config.dilation_mm)
    return [
        _dilated_component(components, label, boxes[label - 1], element)
        for label in candidates[: config.max_components]
    ]


def ellipsoid_element(spacing_mm, radius_mm: float) -> np.ndarray:
    """Boolean ellipsoid of ``radius_mm`` on a grid of ``spacing_mm`` (scalar or per axis)."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    radii = [max(1, math.floor(radius_mm / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return sum((g / r) ** 2 for g, r in zip(grids, radii, strict=True)) <= 1.0


def _dilated_component(
    components: np.ndarray, label: int, box: tuple[slice, ...], element: np.ndarray
) -> np.ndarray:
    # Dilate inside the component's box grown by the element's radius, not the whole volume.
    radii = [n // 2 for n in element.shape]
    grown = tuple(
        slice(max(0, s.start - r), min(n, s.stop + r))
        for s, r, n in zip(box, radii, components.shape, strict=True)
    )
    mask = np.zeros(components.shape, dtype=bool)
    mask[grown] = ndi.binary_dilation(components[grown] == label, structure=element)
    return mask


def roi_crop_grid(roi_mask: np.ndarray, roi_grid: Grid, stage: StagePlan) -> Grid:
    """The stage-2 grid: ``roi_mask``'s bounding box (on ``roi_grid``) at ``stage.spacing_mm``,
    plus ``stage.crop_margin_vox`` voxels on each side, in ``roi_grid``'s orientation."""
    present = np.argwhere(roi_mask)
    if len(present) == 0:
        raise ValueError("empty ROI mask")
    # The box's outer edges in roi_grid index units.
    lower = present.min(axis=0) - 0.5
    extent_vox = present.max(axis=0) + 0.5 - lower
    ratio = stage.spacing_mm / np.asarray(roi_grid.spacing)
    margin = np.asarray(stage.crop_margin_vox)
    inner = np.ceil(extent_vox / ratio - 1e-6).astype(np.int64)
    index_map = np.eye(4)  # crop index -> roi_grid index
    index_map[:3, :3] = np.diag(ratio)
    index_map[:3, 3] = lower + (0.5 - margin) * ratio
    return Grid(tuple(inner + 2 * margin), roi_grid.affine @ index_map)
