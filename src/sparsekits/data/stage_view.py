"""What a stage sees: a scan (and, for stage 2, one ROI) turned into the stage's grid, HU and
sparse input, by one function per stage. Preprocessing, prediction and the benchmarks all call
them, so a network meets exactly the input it was trained on (a test checks bit equality).

Two choices make the training cache and the predictor agree bit for bit:

- **HU are rounded to int16** on the stage grid. The cache stores them so (half the disk of
  float32, and every value exact); the predictor rounds too, since a feature that differs in its
  last bits from the training data's is a different input. Rounding moves a voxel by at most
  0.5 HU, far below image noise.
- **Stage 1 is cropped to the body box** when the plan says so (``StagePlan.body_crop``). The HU
  windows keep nothing outside it, so the crop saves memory, but it also shifts the coordinates,
  and the network's stride-2 convolutions pair voxels by coordinate: the same crop in training
  and prediction is what keeps their outputs the same. Stage 2's ROIs are cut on this cropped
  grid too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sparsekits.data.geometry import Grid, resample, stage_grid_for
from sparsekits.data.io import Image
from sparsekits.data.roi import roi_crop_grid
from sparsekits.data.sparsify import body_box, box_slices, sparsify
from sparsekits.layout import AIR_HU
from sparsekits.plan import StagePlan


@dataclass
class StageView:
    """One stage's input: its grid, the HU on it, the kept voxels and their features."""

    grid: Grid
    hu: np.ndarray  # int16, grid.shape
    coords: np.ndarray  # int32 [N, 3], (x, y, z) indices on grid
    features: np.ndarray  # float32 [N, 1]
    roi_mask: np.ndarray | None = None  # bool, grid.shape: stage 2's ROI component

    def labels_of(self, labels: np.ndarray, source: Grid) -> np.ndarray:
        """A label map of the ``source`` grid on this view's grid (nearest neighbour)."""
        return resample(labels, source, self.grid, order=0)


def resample_hu(image: Image, grid: Grid) -> np.ndarray:
    """The CT on ``grid`` (linear), rounded to int16, air outside the scan."""
    hu = resample(image.array, image.grid, grid, order=1, cval=AIR_HU)
    return np.rint(hu).astype(np.int16)


def stage1_view(image: Image, stage: StagePlan) -> StageView:
    """The whole scan on the stage's canonical isotropic grid (cropped to the body if asked)."""
    grid = stage_grid_for(image.grid, stage.spacing_mm)
    hu = resample_hu(image, grid)
    if stage.body_crop:
        lo, hi = body_box(hu)
        hu, grid = hu[box_slices(lo, hi)], grid.crop(lo, hi)
    coords, features = sparsify(hu, stage)
    return StageView(grid, hu, coords, features)


def stage2_view(image: Image, roi: np.ndarray, roi_grid: Grid, stage: StagePlan) -> StageView:
    """The crop around one ROI component (bool on ``roi_grid``, stage 1's grid) at the stage's
    spacing, plus its margin; kept voxels lie inside the ROI and the stage's rule."""
    grid = roi_crop_grid(roi, roi_grid, stage)
    hu = resample_hu(image, grid)
    inside = resample(roi.astype(np.uint8), roi_grid, grid, order=0) > 0
    coords, features = sparsify(hu, stage, inside)
    return StageView(grid, hu, coords, features, roi_mask=inside)


def mask_foreground(mask: np.ndarray, source_grid) -> Callable[[StageView], np.ndarray]:
    """``view -> bool mask``: a mask on the scan's own grid (ground-truth kidneys, an organ
    map) on a view's grid (any view with ``labels_of``), as ROIs are cut from it."""
    mask = np.asarray(mask).astype(np.uint8)  # once: a KiTS-size mask takes ~0.2 s to convert

    def foreground(view: StageView) -> np.ndarray:
        return view.labels_of(mask, source_grid) > 0

    return foreground
