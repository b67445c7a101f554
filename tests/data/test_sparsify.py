"""Sparsification: window AND mask, normalisation, kept fraction, and the body box."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekits.data.sparsify import body_box, box_slices, kept_fraction, sparsify
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


def test_stage1_keeps_the_inclusive_window_with_normalised_features():
    hu = np.array([-1000, -53.5, -53.4, 0, 283.2, 283.3, 1000], dtype=np.float32).reshape(7, 1, 1)
    coords, features = sparsify(hu, STAGE1)
    assert coords.dtype == np.int32 and features.dtype == np.float32
    assert coords[:, 0].tolist() == [2, 3, 4]
    expected = (np.array([-53.4, 0, 283.2]) - 48.10007) / 62.645897
    np.testing.assert_allclose(features[:, 0], expected, rtol=1e-6)
    assert kept_fraction(coords, hu.shape) == pytest.approx(3 / 7)


def test_stage2_keeps_window_and_mask_in_c_order():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, (6, 7, 8)).astype(np.int16)
    mask = rng.random(hu.shape) > 0.5
    coords, features = sparsify(hu, STAGE2, mask=mask)
    keep = (hu >= -300) & (hu <= 500) & mask
    np.testing.assert_array_equal(coords, np.argwhere(keep))
    np.testing.assert_allclose(
        features[:, 0], (hu[keep] - 57.802067) / 81.260414, rtol=1e-6, atol=1e-6
    )


def test_body_box_crops_away_air_but_no_kept_voxel():
    hu = np.full((30, 20, 10), -1000, dtype=np.int16)
    hu[5:12, 3:9, 2:7] = 40
    hu[20, 15, 8] = -400  # faint tissue still counts as body
    lo, hi = body_box(hu, margin_vox=1)
    assert lo.tolist() == [4, 2, 1] and hi.tolist() == [22, 17, 10]
    kept, _ = sparsify(hu, STAGE1)
    cropped, _ = sparsify(hu[box_slices(lo, hi)], STAGE1)
    assert len(kept) == len(cropped)


def test_body_box_of_pure_air_is_the_whole_volume():
    lo, hi = body_box(np.full((4, 5, 6), -1000.0))
    assert lo.tolist() == [0, 0, 0] and hi.tolist() == [4, 5, 6]
