"""Augmentation of dense HU crops: seeded, label-consistent, each transform as configured."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from sparsekits.data.sparsify import sparsify
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.plan import Augmentation
from sparsekits.train import augment
from sparsekits.train.augment import Crop, augment_crop

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages

OFF = Augmentation(
    affine_p=0, flip_p=0, intensity_scale_p=0, intensity_shift_p=0, noise_p=0, smooth_p=0
)
ALL = replace(
    OFF, affine_p=1, flip_p=1, intensity_scale_p=1, intensity_shift_p=1, noise_p=1, smooth_p=1
)


def _crop(shape=(20, 26, 14)) -> Crop:
    """Labels 0-3 in nested boxes; HU = 100 * label inside a body of 0 HU; ROI = labels > 0."""
    labels = np.zeros(shape, np.uint8)
    labels[4:16, 5:21, 3:11] = 1
    labels[6:12, 8:16, 5:9] = 2
    labels[12:15, 15:19, 4:7] = 3
    hu = (labels.astype(np.int16) * 100).astype(np.int16)
    return Crop(hu=hu, labels=labels, roi_mask=labels > 0)


def test_same_seed_same_result_other_seed_other_result():
    crop = _crop()
    first = augment_crop(crop, np.random.default_rng([1, 2, 3]), ALL)
    again = augment_crop(crop, np.random.default_rng([1, 2, 3]), ALL)
    other = augment_crop(crop, np.random.default_rng([1, 2, 4]), ALL)
    assert np.array_equal(first.hu, again.hu) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.hu, other.hu)
    assert first.hu.dtype == np.float32 and first.hu.shape == crop.hu.shape


def test_spatial_transforms_move_labels_and_mask_with_the_hu():
    crop = _crop()
    spatial = replace(OFF, affine_p=1, flip_p=0.5)
    for seed in range(4):
        out = augment_crop(crop, np.random.default_rng(seed), spatial)
        assert set(np.unique(out.labels)) <= {0, 1, 2, 3}
        assert np.array_equal(out.roi_mask, out.labels > 0)  # one nearest-neighbour grid
        # Inside the labelled boxes, where the bilinear HU blends no edge (it is a multiple of
        # 100), it names the label (a one-voxel shift of the labels scores about 0.9).
        unblended = (np.abs(out.hu / 100 - np.round(out.hu / 100)) < 0.01) & (out.hu > 50)
        agrees = np.round(out.hu / 100)[unblended] == out.labels[unblended]
        assert unblended.sum() > 500 and agrees.mean() > 0.99
        assert 0.7 < (out.labels == 2).sum() / (crop.labels == 2).sum() < 1.6  # scale <= 15 %


def test_flip_is_an_exact_mirror():
    crop = _crop()
    out = augment_crop(crop, np.random.default_rng(0), replace(OFF, flip_p=1))
    assert np.array_equal(out.hu, np.flip(crop.hu.astype(np.float32)))
    assert np.array_equal(out.labels, np.flip(crop.labels))


def test_rotation_is_a_rotation_on_an_anisotropic_crop():
    """A quarter turn about z maps voxel (4, 1, 0) of a 5 x 7 x 3 crop to (0, 1, 0)."""
    hu = np.zeros((5, 7, 3), np.float32)
    hu[4, 1, 0] = 1
    matrix = augment._rotation(2, math.pi / 2)
    moved, _, _ = augment._apply_affine(hu, np.zeros(hu.shape, np.uint8), None, matrix, 0.0)
    assert np.argwhere(moved > 0.5).tolist() == [[0, 1, 0]]


def test_intensity_transforms_leave_geometry_and_stay_within_bounds():
    crop = _crop()
    config = replace(OFF, intensity_scale_p=1, intensity_shift_p=1)
    for seed in range(5):
        out = augment_crop(crop, np.random.default_rng(seed), config)
        assert np.array_equal(out.labels, crop.labels)
        at_300 = out.hu[crop.labels == 3]
        assert np.ptp(at_300) < 1e-3 and 300 * 0.9 - 5 <= at_300[0] <= 300 * 1.1 + 5
    noisy = augment_crop(crop, np.random.default_rng(0), replace(OFF, noise_p=1))
    assert 0.9 < np.std(noisy.hu - crop.hu) < 1.1  # std 1 HU
    smooth = augment_crop(crop, np.random.default_rng(0), replace(OFF, smooth_p=1))
    assert np.abs(np.diff(smooth.hu, axis=0)).max() < 100  # edges blurred


def test_zoomed_out_border_is_air_and_not_kept():
    """What the affine brings in from outside the crop must not become kept voxels."""
    hu = np.full((16, 16, 16), 100, np.int16)  # all inside stage 1's window
    crop = Crop(hu=hu, labels=np.zeros(hu.shape, np.uint8))
    zoom_out = np.eye(3) * 1.3  # output samples 1.3x further out: a shrunken image
    moved, _, _ = augment._apply_affine(
        hu.astype(np.float32), crop.labels, None, zoom_out, OFF.pad_hu
    )
    coords, _ = sparsify(moved, STAGE1)
    assert moved[0, 0, 0] == OFF.pad_hu
    assert 0 < len(coords) < hu.size
    assert coords.min() > 0 and coords.max() < 15
