"""Plausibility checks on hand-made label maps and bodies: each warning fires on the case it is
for and stays quiet on a normal one; each method's ROI-edge fact; the model's fingerprint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sparsekits.data.body import find_body
from sparsekits.data.geometry import Grid
from sparsekits.data.stage_view import StageView
from sparsekits.methods.dense_coarse2fine import DEMO as DENSE_DEMO
from sparsekits.methods.dense_coarse2fine.predictor import _edge_voxels as dense_edge_voxels
from sparsekits.methods.sscn_twostage import DEMO, SSCN_TWOSTAGE
from sparsekits.methods.sscn_twostage.chain import Chain
from sparsekits.methods.sscn_twostage.predictor import _edge_voxels as sscn_edge_voxels
from sparsekits.models.bundle import model_fingerprint
from sparsekits.predict.plausibility import (
    MANY_TINY_LESIONS,
    case_warnings,
    tta_warnings,
    volume_warnings,
)
from sparsekits.predict.report import measure_labels
from sparsekits.predict.result import CasePrediction, RoiPrediction

# A trunk at 4 x 4 x 5 mm: 400 x 320 x 100 mm, RAS, its centre at the world origin.
SHAPE = (100, 80, 20)
SPACING = (4.0, 4.0, 5.0)
VOXEL_ML = 0.08


def affine() -> np.ndarray:
    matrix = np.diag([*SPACING, 1.0])
    matrix[:3, 3] = -(np.array(SHAPE) - 1) / 2 * SPACING
    return matrix


def index_of(x_mm: float, y_mm: float) -> tuple[int, int]:
    """The voxel (x, y) index of a world point of the trunk's grid."""
    inverse = np.linalg.inv(affine())
    x, y, _ = inverse[:3, :3] @ [x_mm, y_mm, 0.0] + inverse[:3, 3]
    return round(float(x)), round(float(y))


def body_ct(half_width_mm: float = 160.0, half_depth_mm: float = 110.0) -> np.ndarray:
    """Air around an elliptical soft-tissue body centred on the grid (wider than the field of
    view when ``half_width_mm`` is over 200)."""
    x, y = np.meshgrid(*[np.arange(n) for n in SHAPE[:2]], indexing="ij")
    x_mm, y_mm = [(i - (n - 1) / 2) * s for i, n, s in zip((x, y), SHAPE, SPACING, strict=False)]
    inside = (x_mm / half_width_mm) ** 2 + (y_mm / half_depth_mm) ** 2 <= 1
    ct = np.full(SHAPE, -1000, np.int16)
    ct[inside] = 40
    return ct


def kidney(labels: np.ndarray, x_mm: float, y_mm: float, size=(8, 10, 8)) -> None:
    """A box kidney (640 voxels: 51.2 mL) centred at world (x, y), at mid-height."""
    x, y = index_of(x_mm, y_mm)
    sx, sy, sz = size
    labels[x - sx // 2 : x + sx // 2, y - sy // 2 : y + sy // 2, 6 : 6 + sz] = 1


def warnings_of(labels: np.ndarray, ct: np.ndarray | None = None, **case) -> list[str]:
    """case_warnings of ``labels`` (sscn-twostage's plan, no training ranges)."""
    grid = Grid(SHAPE, affine())
    body = find_body(body_ct() if ct is None else ct, grid)
    measures = measure_labels(labels, grid.affine, body)
    prediction = CasePrediction(labels, grid, case.pop("rois", []), {}, **case)
    return case_warnings(measures, body, prediction, SSCN_TWOSTAGE, None)


def normal_pair() -> np.ndarray:
    """Kidneys 70 mm either side of the midline, 40 mm behind the body's centre."""
    labels = np.zeros(SHAPE, np.uint8)
    kidney(labels, 70, -40)
    kidney(labels, -70, -40)
    return labels


def test_normal_kidneys_raise_no_warning():
    assert warnings_of(normal_pair()) == []


@pytest.mark.parametrize(
    ("x_mm", "y_mm", "problem"),
    [
        (8, -60, "lies at the body's midline"),  # between the pubic bones, on the spine
        (60, 60, "lies in the front of the body"),  # in the bowel, the abdominal wall
        (140, -20, "lies in the body wall"),  # 85 % of the way to the body's right edge
    ],
)
def test_a_kidney_outside_the_renal_fossae_is_warned(x_mm, y_mm, problem):
    labels = np.zeros(SHAPE, np.uint8)
    kidney(labels, -70, -40)
    kidney(labels, x_mm, y_mm)

    (warning,) = warnings_of(labels)

    assert warning.startswith(f"the right kidney's 51.20 mL component {problem}"), warning


def test_a_body_cut_by_the_field_of_view_is_judged_only_where_it_is_whole():
    # The body is wider than the scan: its sides, and so the body wall, lie beyond the border.
    labels = np.zeros(SHAPE, np.uint8)
    kidney(labels, -70, -40)
    kidney(labels, 180, -40)  # 90 % of the way to the scan's right border
    assert warnings_of(labels, body_ct(half_width_mm=260)) == []
    kidney(labels, 8, -40)  # ... while the midline is still the midline
    assert any("lies at the body's midline" in w for w in warnings_of(labels, body_ct(260)))


def test_two_large_components_on_one_side_are_warned_but_not_a_speck():
    labels = normal_pair()
    labels[70, 20, 2] = 1  # a speck on the right
    assert warnings_of(labels) == []
    kidney(labels, 50, -80, size=(4, 4, 6))  # 96 voxels: 7.68 mL, behind the right kidney
    (warning,) = warnings_of(labels)
    assert warning == (
        "the right side holds 2 separate components of 5 mL or more (51.20, 7.68 mL) where one "
        "kidney is expected"
    )


def test_hundreds_of_tiny_lesions_are_warned():
    labels = normal_pair()
    x, y = index_of(70, -40)
    lattice = [(x - 3 + 2 * i, y - 4 + 2 * j, 6 + 2 * k) for i in range(4) for j in range(5)
               for k in range(4)]  # fmt: skip
    for count, (i, j, k) in enumerate(lattice):  # 80 one-voxel (0.08 mL) lesions, apart
        labels[i, j, k] = 2 if count % 2 else 3
    assert warnings_of(labels) == []  # 80 is under MANY_TINY_LESIONS

    big = np.zeros((40, 40, 40), np.uint8)
    big[:, :, :] = 1
    big[::2, ::2, ::2] = 2  # 8000 one-voxel tumours of 0.001 mL, none touching another
    grid = Grid(big.shape, np.eye(4))
    measures = measure_labels(big, grid.affine)
    warnings = case_warnings(measures, None, CasePrediction(big, grid, [], {}), DEMO, None)
    assert warnings == ["8000 tumours and cysts under 0.1 mL: noise, not lesions, most likely"]
    assert MANY_TINY_LESIONS <= 8000


def test_the_roi_count_beyond_the_plans_maximum_and_an_roi_edge_are_warned():
    limit = SSCN_TWOSTAGE.roi.max_components
    roi = RoiPrediction(1, Grid((2, 2, 2), np.eye(4)), ((0, 2),) * 3, ([0] * 3, [1] * 3), 8, {})
    assert warnings_of(normal_pair(), roi_candidates=limit, rois=[roi]) == []
    roi.edge_voxels = 12
    warnings = warnings_of(normal_pair(), roi_candidates=limit + 1, rois=[roi])
    assert warnings == [
        f"the ROI rule found {limit + 1} kidney candidates, more than the plan's maximum of "
        f"{limit}: only the largest {limit} were segmented",
        "ROI 1: the predicted kidney or mass reaches its edge (12 voxels), so it may be cut off",
    ]


def volumes(right: float, left: float, tumor: float = 0.0, cyst: float = 0.0) -> dict:
    sides = {
        side: {"kidney": total, "tumor": 0.0, "cyst": 0.0, "total": total}
        for side, total in (("right", right), ("left", left))
    }
    return {**sides, "total": {"kidney": right + left, "tumor": tumor, "cyst": cyst}}


def test_volumes_outside_the_widened_training_ranges_are_warned():
    ranges = {"kidney": [40.0, 60.0], "tumor": [2.0, 30.0]}  # no cyst in training: no cyst range
    assert volume_warnings(volumes(119.0, 21.0, tumor=59.0, cyst=500.0), ranges) == []
    warnings = volume_warnings(volumes(177.0, 0.0, tumor=0.5), ranges)
    assert warnings == [
        "right kidney 177.00 mL is outside what the model was trained on (its training cases: "
        "40.00-60.00 mL; accepted: 20.00-120.00 mL)",
        "tumor total 0.50 mL is outside what the model was trained on (its training cases: "
        "2.00-30.00 mL; accepted: 1.00-60.00 mL)",
    ]  # the absent left kidney is no volume: nephrectomies are real
    assert volume_warnings(volumes(177.0, 0.0), None) == []  # a model without ranges


def test_tta_on_networks_trained_without_mirroring_is_warned():
    assert tta_warnings(SSCN_TWOSTAGE, tta=True) == []  # the paper's recipe flips each axis
    assert tta_warnings(DEMO, tta=False) == []
    (warning,) = tta_warnings(DEMO, tta=True)  # the demo trains without augmentation
    assert warning.startswith("--tta mirrors the input, but the roi, fine stage(s) trained")
    assert tta_warnings(DENSE_DEMO, tta=True)  # seed 004's slab augmentation never flips


def roi_chain(components: list[np.ndarray]) -> Chain:
    """A chain whose roi grid is 2 mm voxels, 20^3, from the world origin."""
    grid = Grid((20, 20, 20), np.diag([2.0, 2.0, 2.0, 1.0]))
    view = StageView(grid, np.zeros(grid.shape, np.int16), np.zeros((0, 3), np.int32), None)
    return Chain(None, SSCN_TWOSTAGE, view, components, len(components))


def test_sscn_edge_voxels_are_predictions_on_the_roi_components_outer_layer():
    component = np.zeros((20, 20, 20), bool)
    component[5:15, 5:15, 0:10] = True  # touches the roi grid's (the scan's) bottom
    # A 1 mm input grid shifted a quarter voxel: roi voxel i samples input voxel 2 i.
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[12:26, 12:26, 0:14] = 1  # roi 6-12 in x and y, 0-6 in z: inside, on the scan border
    grid = Grid(labels.shape, [[1, 0, 0, 0.25], [0, 1, 0, 0.25], [0, 0, 1, 0.25], [0, 0, 0, 1]])
    assert sscn_edge_voxels(labels, grid, roi_chain([component])) == [0]

    labels[12:26, 12:26, 14:19] = 1  # up to roi z 9, the component's top layer
    assert sscn_edge_voxels(labels, grid, roi_chain([component])) == [7 * 7]
    # Inside another ROI's interior, the first ROI's edge cuts nothing off.
    other = np.zeros_like(component)
    other[4:16, 4:16, 0:14] = True
    assert sscn_edge_voxels(labels, grid, roi_chain([component, other])) == [0, 0]


def test_dense_edge_voxels_are_predictions_on_the_fine_boxs_faces_but_the_scans_border():
    box = ((10, 30), (0, 20), (5, 15))  # in a scan of 40 x 20 x 15: y and the top are its border
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[5:10, 0, 2:4] = 1  # on the scan's y border
    labels[5:10, 5:10, 9] = 3  # on the scan's top
    assert dense_edge_voxels(labels, box, (40, 20, 15)) == 0
    labels[0, 5:8, 2:4] = 2  # the box's low x face, inside the scan
    labels[5, 5, 0] = 1  # its low z face
    assert dense_edge_voxels(labels, box, (40, 20, 15)) == 3 * 2 + 1


def test_the_fingerprint_names_the_plan_and_the_folds_that_ran(model_dir, tmp_path):
    folds = {"roi": [0, 1], "fine": [0, 1]}
    fingerprint = model_fingerprint(model_dir, SSCN_TWOSTAGE, folds)
    assert len(fingerprint) == 16 and set(fingerprint) <= set("0123456789abcdef")
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    assert model_fingerprint(copy, SSCN_TWOSTAGE, folds) == fingerprint  # the files, not a path
    assert model_fingerprint(copy, SSCN_TWOSTAGE, {"roi": [0], "fine": [0]}) != fingerprint
    (copy / "plan.json").write_text((copy / "plan.json").read_text().replace("0.5", "0.25"))
    assert model_fingerprint(copy, SSCN_TWOSTAGE, folds) != fingerprint
