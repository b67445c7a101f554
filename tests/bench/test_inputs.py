"""The benchmark's inputs: twins agree on them, the sweep's sparsity grows with the window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sparsekits.bench.inputs import (
    ALL_HU,
    DEFAULT_SWEEP,
    BenchCase,
    SweepPoint,
    plan_grid,
    stage2_sample,
    sweep_box,
    sweep_sample,
)
from sparsekits.bench.twin import dense_input, sparse_input
from sparsekits.data.geometry import Grid
from sparsekits.data.sample import Sample
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.models import build_model

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


@pytest.fixture(scope="module")
def stage2(tiny_ct):
    ct, labels = tiny_ct
    return stage2_sample(BenchCase.load(ct, labels, kidney_labels=(1,)), SSCN_TWOSTAGE)


def test_sweep_kept_fraction_grows_with_the_window(stage2):
    fractions = [
        sweep_sample(stage2, point, SSCN_TWOSTAGE).kept_fraction for point in DEFAULT_SWEEP
    ]
    assert fractions == sorted(fractions)
    assert fractions[0] < fractions[-1] == 1.0
    roi_fraction = stage2.roi_mask.mean()
    for point, fraction in zip(DEFAULT_SWEEP, fractions, strict=True):
        if point.inside_roi:
            assert fraction <= roi_fraction
    # The paper's window inside the ROI is the stage-2 sample itself.
    paper = sweep_sample(stage2, SweepPoint(STAGE2.sparsify.bounds), SSCN_TWOSTAGE)
    np.testing.assert_array_equal(paper.coords, stage2.coords)


def test_sweep_box_is_a_cube_of_the_crop_around_the_roi(stage2):
    box = sweep_box(stage2, 32, SSCN_TWOSTAGE)
    assert box.hu.shape == (32, 32, 32)
    # The cube's ROI voxels are the crop's ROI voxels inside it, in the same world place.
    offset = np.rint(np.linalg.solve(stage2.affine, box.affine)[:3, 3]).astype(int)
    inside = tuple(slice(o, o + 32) for o in offset)
    np.testing.assert_array_equal(box.roi_mask, stage2.roi_mask[inside])
    np.testing.assert_array_equal(box.hu, stage2.hu[inside])
    assert box.roi_mask.any()
    assert box.kept_fraction == len(box.coords) / 32**3
    assert sweep_box(stage2, None, SSCN_TWOSTAGE).hu.shape == stage2.hu.shape


def test_sparse_and_dense_twins_agree_on_a_fully_occupied_crop():
    rng = np.random.default_rng(0)
    hu = rng.integers(-200, 300, size=(16, 16, 8)).astype(np.int16)  # multiples of stride 8
    crop = Sample("tiny", 2, 0, hu, np.eye(4), np.zeros((0, 3), np.int32), np.zeros((0, 1)))
    full = sweep_sample(crop, SweepPoint(ALL_HU, inside_roi=False), SSCN_TWOSTAGE)
    assert full.kept_fraction == 1.0
    torch.manual_seed(0)
    sparse = build_model("small").eval()
    dense = build_model("small", dense=True).eval()
    dense.load_state_dict(sparse.state_dict())
    device = torch.device("cpu")
    with torch.no_grad():
        sparse_out = sparse(sparse_input(full, device))[0]
        dense_out = dense(dense_input(full, device))[0]
    index = tuple(sparse_out.coords[:, 1:].long().T)
    at_kept = dense_out[0].permute(1, 2, 3, 0)[index]
    torch.testing.assert_close(sparse_out.features, at_kept, atol=1e-4, rtol=1e-4)


def test_dense_input_holds_kept_features_and_zeros_elsewhere(stage2):
    volume = dense_input(stage2, torch.device("cpu"))[0, 0].numpy()
    kept = np.zeros(stage2.hu.shape, bool)
    kept[tuple(stage2.coords.T)] = True
    np.testing.assert_array_equal(volume[tuple(stage2.coords.T)], stage2.features[:, 0])
    assert not volume[~kept].any()


def test_plan_grid_covers_the_scan_at_nnunet_spacing():
    source = Grid((122, 101, 112), np.diag([3.0, 3.0, 3.0, 1.0]))
    grid = plan_grid(source, (0.78125, 0.78125, 1.0))
    assert grid.shape == (469, 388, 336)
    np.testing.assert_allclose(grid.spacing, (0.78125, 0.78125, 1.0))
    # Centred like the source: same world centre.
    centre = lambda g: g.affine[:3, :3] @ ((np.asarray(g.shape) - 1) / 2) + g.affine[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(grid), centre(source), atol=1e-6)


def test_sweep_point_labels_name_window_and_scope():
    assert SweepPoint((-300.0, 500.0)).label == "[-300, 500], ROI"
    assert SweepPoint(ALL_HU, inside_roi=False).label == "all HU, whole box"
    assert dataclasses.replace(DEFAULT_SWEEP[0]) == DEFAULT_SWEEP[0]
