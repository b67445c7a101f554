"""Volume report: mL per side from the affine (sides split at the body's midline), lesion
counts, storage-order independence, volumes to 0.01 mL."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sparsekits
from sparsekits.data.body import find_body
from sparsekits.data.geometry import Grid
from sparsekits.predict.overlay import reorient
from sparsekits.predict.report import SideConfig, measure_labels, volume_report, write_report

SPACING = (1.5, 1.5, 2.5)
VOXEL_ML = 1.5 * 1.5 * 2.5 / 1000
SHAPE = (60, 40, 30)


def ras_affine() -> np.ndarray:
    """RAS grid whose centre sits at world x = 0 (the midline)."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * SPACING
    return affine


def anatomy() -> np.ndarray:
    """Left kidney (low x: RAS+ x grows toward the patient's right) with a cyst; right kidney
    with two tumours; a 2x2x2 kidney speck just left of the midline but nearest the right kidney."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:15, 10:30, 5:25] = 1  # left kidney, centroid x index 9.5
    labels[8:11, 15:18, 10:13] = 3  # cyst
    labels[32:42, 10:30, 5:25] = 1  # right kidney, centroid x index 36.5
    labels[34:37, 12:15, 8:11] = 2  # tumour 1
    labels[34:37, 24:27, 18:21] = 2  # tumour 2, apart from tumour 1
    labels[27:29, 20:22, 14:16] = 1  # speck: x index 27.5 < 29.5, nearer the right kidney
    return labels


def report_of(labels, affine, roi_boxes=None, timings=None, extra=None, **measure) -> dict:
    return volume_report(measure_labels(labels, affine, **measure), roi_boxes, timings or {}, extra)


def expected_volumes() -> dict:
    left = {"kidney": 4000 - 27, "tumor": 0, "cyst": 27}
    right = {"kidney": 4000 - 54 + 8, "tumor": 54, "cyst": 0}
    as_ml = {
        side: {k: v * VOXEL_ML for k, v in counts.items()}
        for side, counts in (("right", right), ("left", left))
    }
    for side in as_ml.values():
        side["total"] = sum(side.values())
    return as_ml


def assert_volumes(report: dict) -> None:
    for side, volumes in expected_volumes().items():
        for name, value in volumes.items():
            assert report["volumes_ml"][side][name] == round(value, 2), (side, name)
    total = report["volumes_ml"]["total"]
    assert total["total"] == round((8000 + 8) * VOXEL_ML, 2)


def test_volumes_sides_and_lesion_counts_on_ras():
    report = report_of(anatomy(), ras_affine(), None, {"stage1": 1.5})
    assert report["kidney_found"] is True
    assert report["voxel_volume_ml"] == pytest.approx(VOXEL_ML)
    assert_volumes(report)  # the speck joined the right kidney despite the midline
    assert report["lesion_counts"] == {
        "right": {"tumor": 2, "cyst": 0},
        "left": {"tumor": 0, "cyst": 1},
        "total": {"tumor": 2, "cyst": 1},
    }
    assert report["side_assignment"]["midline_x_mm"] == pytest.approx(0.0)


@pytest.mark.parametrize("storage", ["LPS", "IPL", "ASR"])
def test_sides_do_not_flip_with_the_storage_order(storage):
    labels, affine = reorient(anatomy(), ras_affine(), storage)
    assert labels.shape != SHAPE or storage == "LPS"
    report = report_of(np.ascontiguousarray(labels), affine)
    reference = report_of(anatomy(), ras_affine())
    assert_volumes(report)
    assert report["lesion_counts"] == reference["lesion_counts"]


def test_small_components_follow_the_midline_when_nothing_large_exists():
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:7, 5:7, 5:7] = 2  # 0.045 mL on the patient's left
    labels[50:52, 5:7, 5:7] = 3  # 0.045 mL on the patient's right
    report = report_of(labels, ras_affine())
    assert report["volumes_ml"]["left"]["tumor"] == round(8 * VOXEL_ML, 2)
    assert report["volumes_ml"]["right"]["cyst"] == round(8 * VOXEL_ML, 2)
    # With a 0.01 mL threshold both are "large": the same answer, by the same rule.
    config = SideConfig(min_component_ml=0.01)
    assert report_of(labels, ras_affine(), config=config)["volumes_ml"] == report["volumes_ml"]


def test_empty_prediction_reports_zeros():
    report = report_of(np.zeros(SHAPE, np.uint8), ras_affine(), [], {"total": 2.0})
    assert report["kidney_found"] is False
    for side in ("right", "left", "total"):
        assert set(report["volumes_ml"][side].values()) == {0.0}
        assert set(report["lesion_counts"][side].values()) == {0}
    assert report["side_assignment"]["components"] == []


def test_write_report_is_plain_json_with_boxes_timings_and_extra(tmp_path):
    boxes = [{"min_xyz": np.array([1, 2, 3]), "max_xyz": (4, 5, 6), "volume_ml": np.float32(2)}]
    report = report_of(
        anatomy(), ras_affine(), boxes, {"stage1": 1.25}, extra={"input": tmp_path / "ct.nii.gz"}
    )
    path = write_report(tmp_path / "out" / "case.json", report)
    loaded = json.loads(path.read_text())
    assert loaded["roi_boxes"] == [{"min_xyz": [1, 2, 3], "max_xyz": [4, 5, 6], "volume_ml": 2.0}]
    assert loaded["timings_s"] == {"stage1": 1.25}
    assert loaded["sparsekits_version"] == sparsekits.__version__
    assert loaded["input"] == str(tmp_path / "ct.nii.gz")
    assert loaded["volumes_ml"]["right"]["tumor"] == round(54 * VOXEL_ML, 2) == 0.3
    assert [p.name for p in path.parent.iterdir()] == ["case.json"]  # no temporary left
    with pytest.raises(ValueError, match="timings_s"):
        report_of(anatomy(), ras_affine(), extra={"timings_s": 1})


def test_sides_split_at_the_bodys_midline_not_the_image_centre():
    # The patient lies far to the image's left (low x): both kidneys are left of the image's
    # centre, but either side of the body's midline.
    ct = np.full(SHAPE, -1000, np.int16)
    ct[2:36, 5:35, :] = 40  # the body: x indices 2-35, its midline at x index 18.5
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:13, 10:20, 5:20] = 1  # the patient's left kidney (x below the midline)
    labels[22:30, 10:20, 5:20] = 1  # the patient's right kidney: above it, left of centre 29.5
    body = find_body(ct, Grid(SHAPE, ras_affine()))

    by_body = report_of(labels, ras_affine(), body=body)
    by_centre = report_of(labels, ras_affine())

    kidney_ml = round(8 * 10 * 15 * VOXEL_ML, 2)
    assert by_body["volumes_ml"]["left"]["kidney"] == by_body["volumes_ml"]["right"]["kidney"]
    assert by_body["volumes_ml"]["right"]["kidney"] == kidney_ml
    assert by_centre["volumes_ml"]["right"]["kidney"] == 0  # what the image centre said
    assert by_body["side_assignment"]["midline_x_mm"] == pytest.approx(
        ras_affine()[0, 3] + 18.5 * 1.5, abs=3
    )
    assert "body's midline" in by_body["side_assignment"]["rule"]


def test_volumes_are_rounded_to_a_hundredth_of_a_millilitre():
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:13, 10:13, 10:13] = 1  # 27 voxels: 0.151875 mL
    report = report_of(labels, ras_affine(), config=SideConfig(min_component_ml=0.01))
    assert report["volumes_ml"]["left"]["kidney"] == 0.15
    assert report["side_assignment"]["components"][0]["volume_ml"] == 0.15
    assert report["voxel_volume_ml"] == VOXEL_ML  # a voxel's size, not a volume: not rounded
