"""Volume report: mL per side from the affine, lesion counts, storage-order independence."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sparsekits
from sparsekits.predict.overlay import reorient
from sparsekits.predict.report import SideConfig, volume_report, write_report

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
            assert report["volumes_ml"][side][name] == pytest.approx(value), (side, name)
    total = report["volumes_ml"]["total"]
    assert total["total"] == pytest.approx((8000 + 8) * VOXEL_ML)


def test_volumes_sides_and_lesion_counts_on_ras():
    report = volume_report(anatomy(), ras_affine(), None, {"stage1": 1.5})
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
    report = volume_report(np.ascontiguousarray(labels), affine, None, {})
    reference = volume_report(anatomy(), ras_affine(), None, {})
    assert_volumes(report)
    assert report["lesion_counts"] == reference["lesion_counts"]


def test_small_components_follow_the_midline_when_nothing_large_exists():
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:7, 5:7, 5:7] = 2  # 0.045 mL on the patient's left
    labels[50:52, 5:7, 5:7] = 3  # 0.045 mL on the patient's right
    report = volume_report(labels, ras_affine(), None, {})
    assert report["volumes_ml"]["left"]["tumor"] == pytest.approx(8 * VOXEL_ML)
    assert report["volumes_ml"]["right"]["cyst"] == pytest.approx(8 * VOXEL_ML)
    # With a 0.01 mL threshold both are "large": the same answer, by the same rule.
    config = SideConfig(min_component_ml=0.01)
    assert (
        volume_report(labels, ras_affine(), None, {}, config=config)["volumes_ml"]
        == (report["volumes_ml"])
    )


def test_empty_prediction_reports_zeros():
    report = volume_report(np.zeros(SHAPE, np.uint8), ras_affine(), [], {"total": 2.0})
    assert report["kidney_found"] is False
    for side in ("right", "left", "total"):
        assert set(report["volumes_ml"][side].values()) == {0.0}
        assert set(report["lesion_counts"][side].values()) == {0}
    assert report["side_assignment"]["components"] == []


def test_write_report_is_plain_json_with_boxes_timings_and_extra(tmp_path):
    boxes = [{"min_xyz": np.array([1, 2, 3]), "max_xyz": (4, 5, 6), "volume_ml": np.float32(2)}]
    report = volume_report(
        anatomy(), ras_affine(), boxes, {"stage1": 1.25}, extra={"input": tmp_path / "ct.nii.gz"}
    )
    path = write_report(tmp_path / "out" / "case.json", report)
    loaded = json.loads(path.read_text())
    assert loaded["roi_boxes"] == [{"min_xyz": [1, 2, 3], "max_xyz": [4, 5, 6], "volume_ml": 2.0}]
    assert loaded["timings_s"] == {"stage1": 1.25}
    assert loaded["sparsekits_version"] == sparsekits.__version__
    assert loaded["input"] == str(tmp_path / "ct.nii.gz")
    assert loaded["volumes_ml"]["right"]["tumor"] == pytest.approx(54 * VOXEL_ML)
    assert [p.name for p in path.parent.iterdir()] == ["case.json"]  # no temporary left
    with pytest.raises(ValueError, match="timings_s"):
        volume_report(anatomy(), ras_affine(), None, {}, extra={"timings_s": 1})
