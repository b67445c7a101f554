"""ROI components from a stage-1 foreground, and the stage-2 crop grid around each."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekits.data.geometry import Grid, resample, stage_grid_for
from sparsekits.data.roi import (
    dilated_components,
    ellipsoid_element,
    roi_candidates,
    roi_crop_grid,
)
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.plan import RoiRule

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


def _foreground() -> np.ndarray:
    mask = np.zeros((60, 40, 40), dtype=bool)
    mask[5:15, 5:15, 5:15] = True  # 1000 voxels
    mask[30:50, 10:30, 10:25] = True  # 6000 voxels, the largest
    mask[55:58, 35:38, 35:38] = True  # 27 voxels: dropped (< 50)
    mask[15, 15, 15] = True  # touches the first block only diagonally: 26-connected to it
    return mask


def extract_roi_components(foreground: np.ndarray, spacing_mm: float, rule: RoiRule) -> list:
    return dilated_components(*roi_candidates(foreground, rule), spacing_mm, rule)


def test_components_largest_first_small_ones_dropped_and_dilated():
    rois = extract_roi_components(_foreground(), STAGE1.spacing_mm, SSCN_TWOSTAGE.roi)
    assert len(rois) == 2
    # Largest first; dilation by 10 mm at 1.99 mm spacing grows each side by 5 voxels.
    assert rois[0][30:50, 10:30, 10:25].all() and not rois[0][5:15, 5:15, 5:15].any()
    assert rois[0][25, 20, 17] and not rois[0][24, 20, 17]
    assert rois[1][15, 15, 15] and rois[1][20, 15, 15] and not rois[1][21, 15, 15]
    assert not any(roi[56, 36, 36] for roi in rois)


def test_max_components_and_empty_foreground():
    config = RoiRule(max_components=1)
    assert len(extract_roi_components(_foreground(), STAGE1.spacing_mm, config)) == 1
    # The candidates the maximum chose from: both large components, largest first.
    components, candidates = roi_candidates(_foreground(), config)
    assert len(candidates) == 2 and components[40, 20, 20] == candidates[0]
    assert (
        extract_roi_components(np.zeros((5, 5, 5), bool), STAGE1.spacing_mm, SSCN_TWOSTAGE.roi)
        == []
    )


def test_ellipsoid_element_is_11_voxels_across_at_stage1_spacing():
    element = ellipsoid_element(STAGE1.spacing_mm, 10.0)
    assert element.shape == (11, 11, 11)
    assert element[5, 5, 0] and element[5, 5, 10] and not element[0, 0, 0]
    assert ellipsoid_element((1.99, 1.99, 5.0), 10.0).shape == (11, 11, 5)


def test_roi_crop_grid_covers_the_roi_with_the_stage2_margin():
    source = Grid((80, 70, 40), np.diag([-0.8, -0.8, 2.5, 1.0]))
    grid1 = stage_grid_for(source, STAGE1.spacing_mm)
    roi = np.zeros(grid1.shape, dtype=bool)
    roi[8:20, 10:18, 12:20] = True
    crop = roi_crop_grid(roi, grid1, STAGE2)
    assert crop.spacing == pytest.approx((0.78, 0.78, 0.78))
    np.testing.assert_allclose(crop.direction, grid1.direction, atol=1e-12)
    # The ROI resampled onto the crop is whole; the margin is the config's (the far side rounds
    # the ROI's extent up to whole crop voxels, so it may be one voxel more).
    on_crop = resample(roi, grid1, crop, order=0)
    assert on_crop.sum() * 0.78**3 == pytest.approx(roi.sum() * 1.99**3, rel=0.05)
    present = np.argwhere(on_crop)
    margin = np.asarray(STAGE2.crop_margin_vox)
    assert (present.min(axis=0) - margin).tolist() == [0, 0, 0]
    far_margin = np.asarray(crop.shape) - 1 - present.max(axis=0)
    assert ((far_margin >= margin) & (far_margin <= margin + 1)).all()
