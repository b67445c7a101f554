"""What each stage of the dense cascade sees, and how the stages chain (seed 004).

- ``coarse``: the whole scan on a canonical grid of a fixed shape (128^3 in the seed), HU
  clipped and scaled by the plan.
- The ROI: the box of the coarse stage's kidney components (ground-truth kidneys in training,
  the coarse network's in prediction), grown by the ROI rule's ``dilation_mm``, on the source.
- ``kidney`` and ``lesion``: that box on a canonical grid of a fixed in-plane shape (224 x 384 in
  the seed) and the source's own slice spacing along z (no resampling along z). The lesion stage
  sees the kidney region only (``region_mask``: the kidney mask grown by ``dilation_mm``).

Training and prediction build every view here, so a network meets the input it learnt on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sparsekits.data.geometry import Grid, canonical_grid, resample
from sparsekits.data.io import Image
from sparsekits.data.roi import ellipsoid_element, roi_candidates
from sparsekits.data.stage_view import resample_hu
from sparsekits.plan import Plan, RoiRule

# Given the coarse view, the kidney mask (bool on its grid) that places the ROI.
Foreground = Callable[["DenseView"], np.ndarray]


@dataclass
class DenseView:
    """A dense stage's input: its grid and the HU on it (int16, rounded as the cache stores)."""

    grid: Grid
    hu: np.ndarray

    def labels_of(self, labels: np.ndarray, source: Grid) -> np.ndarray:
        return resample(labels, source, self.grid, order=0)


def stage_view(image: Image, grid: Grid) -> DenseView:
    return DenseView(grid, resample_hu(image, grid))


def coarse_view(image: Image, plan: Plan) -> DenseView:
    """The whole scan at the coarse stage's fixed shape."""
    return stage_view(image, canonical_grid(image.grid, shape=plan.stage("coarse").shape))


def roi_grid(
    image: Image, view: DenseView, kidney: np.ndarray, plan: Plan
) -> tuple[Grid | None, int]:
    """The fine stages' grid over the kidney components of ``kidney`` (bool on ``view.grid``),
    None when there is none; and how many components the ROI rule found (``roi_candidates``)."""
    components, candidates = roi_candidates(kidney, plan.roi)
    box = kidney_box(components, candidates[: plan.roi.max_components], view.grid, plan.roi)
    if box is None:
        return None, len(candidates)
    lo, hi = image.grid.box_covering(view.grid.crop(*box))
    source_box = image.grid.crop(lo, hi)
    return canonical_grid(source_box, shape=plan.stage("kidney").shape), len(candidates)


def kidney_box(
    components: np.ndarray, kept: list[int], grid: Grid, rule: RoiRule
) -> tuple[np.ndarray, np.ndarray] | None:
    """Index box (lo, hi) on ``grid`` of the components ``kept`` (ids in ``components``), grown
    by ``rule.dilation_mm``; None when none is kept."""
    if not kept:
        return None
    present = np.argwhere(np.isin(components, kept))
    grow = np.ceil(rule.dilation_mm / np.asarray(grid.spacing)).astype(int)
    lo = np.maximum(present.min(axis=0) - grow, 0)
    hi = np.minimum(present.max(axis=0) + 1 + grow, grid.shape)
    return lo, hi


def region_mask(kidney: np.ndarray, grid: Grid, dilation_mm: float) -> np.ndarray:
    """The lesion stage's region: ``kidney`` (bool on ``grid``) grown by ``dilation_mm``."""
    from scipy import ndimage

    if not kidney.any():
        return kidney.copy()
    element = ellipsoid_element(grid.spacing, dilation_mm)
    return ndimage.binary_dilation(kidney, structure=element)


@dataclass
class Chain:
    """One scan through the cascade's views: the coarse view and the fine grid (None: no kidney)."""

    image: Image
    plan: Plan
    coarse: DenseView
    fine_grid: Grid | None
    candidates: int  # kidney components the ROI rule found, before it kept at most its maximum

    def fine_view(self) -> DenseView:
        return stage_view(self.image, self.fine_grid)


def walk(image: Image, plan: Plan, foreground: Foreground, view: DenseView | None = None) -> Chain:
    view = coarse_view(image, plan) if view is None else view
    return Chain(image, plan, view, *roi_grid(image, view, foreground(view), plan))
