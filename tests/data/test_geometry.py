"""Grids, stage grids and resampling: exact round trips, both resampling paths, real label maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from data_cases import LPS_AFFINE, synthetic_case
from scipy.spatial.transform import Rotation

from sparsekits.data import geometry
from sparsekits.data.geometry import Grid, resample, stage_grid_for
from sparsekits.data.io import read_label_map
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.regions import labels_to_regions

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


def _affine(matrix, origin=(12.0, -30.0, 7.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


ROTATION = Rotation.from_euler("xyz", [12, -7, 25], degrees=True).as_matrix()
AFFINES = {
    "ras": _affine(np.diag([1.2, 1.2, 1.2])),
    "lps": _affine(np.diag([-1.2, -1.2, 1.2])),
    "permuted_ipl": _affine([[0, 0, -1.2], [0, -1.2, 0], [-1.2, 0, 0]]),
    "oblique": _affine(ROTATION * 1.2),
    "oblique_permuted": _affine(ROTATION @ [[0, 1.2, 0], [0, 0, -1.2], [-1.2, 0, 0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_stage_grid_is_canonical_isotropic_and_covers_the_source(name):
    source = Grid((40, 30, 20), AFFINES[name])
    stage = stage_grid_for(source, 0.7)
    assert stage.spacing == pytest.approx((0.7, 0.7, 0.7))
    # Each stage axis points mostly along R, A, S in turn.
    assert (np.abs(stage.direction).argmax(axis=0) == [0, 1, 2]).all()
    assert (np.diag(stage.direction) > 0).all()
    src_lo, src_hi = source.world_bounds()
    dst_lo, dst_hi = stage.world_bounds()
    assert (dst_lo <= src_lo + 1e-6).all() and (dst_hi >= src_hi - 1e-6).all()
    assert (dst_hi - dst_lo <= src_hi - src_lo + 2 * 0.7 * np.sqrt(3)).all()


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nearest_round_trip_at_source_spacing_is_exact(name):
    source = Grid((40, 30, 20), AFFINES[name])
    labels = np.random.default_rng(1).integers(0, 4, source.shape).astype(np.uint8)
    stage = stage_grid_for(source, 1.2)
    on_stage = resample(labels, source, stage, order=0)
    back = resample(on_stage, stage, source, order=0)
    assert back.shape == source.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("name", ["ras", "lps", "permuted_ipl", "oblique"])
def test_nearest_round_trip_through_finer_grid_is_exact(name):
    affine = AFFINES[name] @ np.diag([1.0, 1.0, 2.5, 1.0])  # thick slices, as in CT
    source = Grid((24, 20, 10), affine)
    labels = np.random.default_rng(2).integers(0, 4, source.shape).astype(np.uint8)
    stage = stage_grid_for(source, 0.5)
    back = resample(resample(labels, source, stage, 0), stage, source, 0)
    np.testing.assert_array_equal(back, labels)


def test_round_trip_through_a_crop_restores_the_source_sub_box():
    _, labels = synthetic_case()
    source = Grid(labels.shape, LPS_AFFINE)
    stage = stage_grid_for(source, STAGE2.spacing_mm)
    crop = stage.crop((10, 12, 5), (60, 70, 40))
    on_crop = resample(labels, source, crop, 0)
    lo, hi = source.box_covering(crop)
    sub = source.crop(lo, hi)
    back = resample(on_crop, crop, sub, 0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    np.testing.assert_array_equal(back, labels[box])


def test_linear_resampling_matches_scipy():
    rng = np.random.default_rng(3)
    for name in ("lps", "oblique"):
        source = Grid((30, 26, 14), AFFINES[name] @ np.diag([0.8, 0.9, 2.0, 1.0]))
        values = ndi.gaussian_filter(rng.normal(size=source.shape), 2).astype(np.float32)
        stage = stage_grid_for(source, 1.99)
        ours = resample(values, source, stage, order=1, cval=-7)
        index_map = np.linalg.inv(source.affine) @ stage.affine
        reference = ndi.map_coordinates(
            values,
            np.einsum("ij,j...->i...", index_map[:3, :3], np.indices(stage.shape))
            + index_map[:3, 3, None, None, None],
            order=1,
            mode="nearest",
        )
        inside = ours != -7
        assert inside.mean() > 0.5
        np.testing.assert_allclose(ours[inside], reference[inside], atol=1e-4)
        assert ours.dtype == np.float32


def test_points_beyond_half_a_voxel_outside_get_cval():
    source = Grid((4, 4, 4), np.eye(4))
    wider = source.crop((-2, 0, 0), (6, 4, 4))
    out = resample(np.ones((4, 4, 4), np.int16), source, wider, order=1, cval=-1000)
    assert (out[:2] == -1000).all() and (out[6:] == -1000).all() and (out[2:6] == 1).all()


def test_grid_crop_to_dict_and_box_covering():
    grid = Grid((50, 40, 30), LPS_AFFINE)
    crop = grid.crop((5, 6, 7), (15, 26, 17))
    assert crop.shape == (10, 20, 10)
    np.testing.assert_allclose(crop.affine[:3, 3], (LPS_AFFINE @ [5, 6, 7, 1])[:3])
    assert Grid.from_dict(crop.to_dict()) == crop and crop != grid
    assert len({crop, Grid.from_dict(crop.to_dict())}) == 1
    lo, hi = grid.box_covering(crop)
    assert tuple(lo) == (5, 6, 7) and tuple(hi) == (15, 26, 17)


# Real KiTS23 label maps: 2 and 3 mm slices, in-plane 0.74-0.76 mm, small and larger tumours.
KITS_CASES = ("case_00010", "case_00040", "case_00190")
# A structure "survives" a spacing when it has at least this many voxels at that spacing.
MIN_STAGE_VOXELS = 1000


@pytest.mark.shared_data
@pytest.mark.parametrize("case", KITS_CASES)
def test_real_label_map_nearest_round_trip_dice(shared_data, case):
    path = shared_data / "kits23-labels" / f"{case}.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    source = read_label_map(path)
    assert nib.aff2axcodes(source.grid.affine) == ("I", "P", "L")
    # Dice over the box around both foregrounds (the rest is background in both; checked).
    box = ndi.find_objects((source.array > 0).astype(np.uint8))[0]
    box = tuple(slice(max(0, b.start - 8), b.stop + 8) for b in box)
    truth = labels_to_regions(source.array[box])
    voxel_mm3 = np.prod(source.grid.spacing)
    for config, min_dice in ((STAGE1, 0.95), (STAGE2, 0.98)):
        stage = stage_grid_for(source.grid, config.spacing_mm)
        back = resample(resample(source.array, source.grid, stage, 0), stage, source.grid, 0)
        assert back.shape == source.array.shape
        assert np.count_nonzero(back[box]) == np.count_nonzero(back)
        regions = labels_to_regions(back[box])
        for r in range(3):
            size = truth[..., r].sum() * voxel_mm3 / config.spacing_mm**3
            if size < MIN_STAGE_VOXELS:
                continue
            overlap = (truth[..., r] & regions[..., r]).sum()
            dice = 2 * overlap / (truth[..., r].sum() + regions[..., r].sum())
            assert dice >= min_dice, (case, config.spacing_mm, r, dice)


@pytest.mark.parametrize("dtype", [np.int16, bool])
def test_oblique_relative_transform_matches_scipy_in_slabs(monkeypatch, dtype):
    monkeypatch.setattr(geometry, "_OBLIQUE_CHUNK_VOXELS", 500)  # many slabs
    rng = np.random.default_rng(4)
    source = Grid((20, 18, 12), AFFINES["oblique"])
    values = (
        rng.integers(-1000, 1000, source.shape) > 0
        if dtype is bool
        else rng.integers(-1000, 1000, source.shape)
    ).astype(dtype)
    target = stage_grid_for(Grid((20, 18, 12), AFFINES["ras"]), 1.0)  # not aligned with source
    index_map = np.linalg.inv(source.affine) @ target.affine
    positions = np.einsum("ij,j...->i...", index_map[:3, :3], np.indices(target.shape))
    positions += index_map[:3, 3, None, None, None]
    inside = np.all(
        [(positions[a] >= -0.5) & (positions[a] < n - 0.5) for a, n in enumerate(source.shape)],
        axis=0,
    )
    assert 0.2 < inside.mean() < 0.95
    for order in (0, 1) if dtype is not bool else (0,):
        cval = True if dtype is bool else -5
        ours = resample(values, source, target, order=order, cval=cval)
        reference = ndi.map_coordinates(
            values.astype(np.float32), positions, order=order, mode="nearest"
        )
        assert ours.dtype == (values.dtype if order == 0 else np.float32)
        np.testing.assert_allclose(ours[inside], reference[inside], atol=1e-3)
        assert (ours[~inside] == cval).all()
