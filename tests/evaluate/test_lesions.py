"""Lesion-wise detection counts on hand-made masks, and their columns in the evaluation CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sparsekits.evaluate.kits23 import LESION_COLUMNS, METRIC_COLUMNS, evaluate_folders
from sparsekits.evaluate.lesions import lesion_matches

# surface_distance (used by evaluate_folders) imports from scipy.ndimage's deprecated namespaces.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ISOTROPIC = (1.0, 1.0, 1.0)
SHAPE = (24, 24, 24)
NONE = {"ground_truth": 0, "found": 0, "missed": 0, "false": 0}


def counts(ground_truth: int = 0, found: int = 0, missed: int = 0, false: int = 0) -> dict:
    return {"ground_truth": ground_truth, "found": found, "missed": missed, "false": false}


def kidney() -> np.ndarray:
    """A kidney (label 1) filling most of the grid: lesions are painted inside it."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:-1, 1:-1, 1:-1] = 1
    return labels


def paint(labels: np.ndarray, label: int, low, high) -> np.ndarray:
    labels[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))] = label
    return labels


def test_a_lesion_overlapped_by_a_prediction_is_found():
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))  # 125 voxels
    pred = paint(kidney(), 2, (5, 4, 4), (10, 9, 9))  # shifted by one voxel: Dice 0.8
    result = lesion_matches(pred, gt, ISOTROPIC)
    assert result == {"tumours": counts(1, found=1), "cysts": NONE}


def test_touching_tumour_and_cyst_are_two_lesions():
    gt = paint(paint(kidney(), 2, (4, 4, 4), (9, 9, 9)), 3, (9, 4, 4), (14, 9, 9))
    result = lesion_matches(gt.copy(), gt, ISOTROPIC)
    assert result == {"tumours": counts(1, found=1), "cysts": counts(1, found=1)}


def test_cubes_meeting_at_a_corner_are_one_lesion_26_connected():
    gt = paint(paint(kidney(), 2, (4, 4, 4), (7, 7, 7)), 2, (7, 7, 7), (10, 10, 10))
    pred = paint(kidney(), 2, (4, 4, 4), (7, 7, 7))  # one of the two cubes: Dice 2/3
    assert lesion_matches(pred, gt, ISOTROPIC)["tumours"] == counts(1, found=1)


def test_a_lesion_without_prediction_is_missed():
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))
    result = lesion_matches(kidney(), gt, ISOTROPIC)
    assert result == {"tumours": counts(1, missed=1), "cysts": NONE}


def test_a_prediction_without_lesion_is_false():
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))
    pred = paint(gt.copy(), 3, (14, 14, 14), (18, 18, 18))
    result = lesion_matches(pred, gt, ISOTROPIC)
    assert result == {"tumours": counts(1, found=1), "cysts": counts(0, false=1)}


def test_a_cyst_predicted_on_a_tumour_is_a_missed_tumour_and_a_false_cyst():
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))
    pred = paint(kidney(), 3, (4, 4, 4), (9, 9, 9))
    result = lesion_matches(pred, gt, ISOTROPIC)
    assert result == {"tumours": counts(1, missed=1), "cysts": counts(0, false=1)}


def test_one_predicted_blob_finds_each_lesion_whose_dice_with_it_reaches_0_1():
    gt = kidney()
    paint(gt, 2, (2, 2, 2), (6, 6, 6))  # A: 64 voxels
    paint(gt, 2, (2, 2, 8), (6, 6, 12))  # B: 64 voxels, two voxels from A
    pred = paint(kidney(), 2, (2, 2, 2), (6, 6, 12))  # 160 voxels over both
    # Dice(A, blob) = Dice(B, blob) = 2 * 64 / (64 + 160) = 0.571.
    assert lesion_matches(pred, gt, ISOTROPIC)["tumours"] == counts(2, found=2)
    gt = kidney()
    paint(gt, 2, (2, 2, 2), (6, 6, 6))  # A: 64 voxels
    paint(gt, 2, (7, 7, 7), (10, 10, 10))  # B: 27 voxels
    pred = paint(kidney(), 2, (2, 2, 2), (12, 12, 10))  # 800 voxels over both
    # Dice(A, blob) = 128 / 864 = 0.148 >= 0.1; Dice(B, blob) = 54 / 827 = 0.065 < 0.1.
    assert lesion_matches(pred, gt, ISOTROPIC)["tumours"] == counts(2, found=1, missed=1)


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        ((4, 0, 2), counts(1, found=1)),  # overlap 1 x 5 x 2 = 10: Dice 20 / 200 = 0.1
        ((4, 3, 0), counts(1, missed=1, false=1)),  # overlap 1 x 2 x 4 = 8: Dice 0.08
    ],
)
def test_an_overlap_below_dice_0_1_is_a_miss_and_a_false_lesion(shift, expected):
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 8))  # 5 x 5 x 4 = 100 voxels
    low = np.add((4, 4, 4), shift)
    pred = paint(kidney(), 2, low, np.add(low, (5, 5, 4)))
    assert lesion_matches(pred, gt, ISOTROPIC)["tumours"] == expected


def test_components_under_the_minimum_volume_are_ignored_on_both_sides():
    gt = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))  # 125 voxels
    paint(gt, 3, (14, 14, 14), (17, 17, 15))  # a 9 mm^3 cyst speck, unpredicted
    pred = paint(kidney(), 2, (6, 6, 6), (9, 9, 7))  # a 9 mm^3 speck inside the tumour
    paint(pred, 3, (2, 14, 14), (4, 19, 15))  # a 10 mm^3 cyst: counted
    paint(pred, 2, (14, 2, 2), (17, 5, 3))  # a 9 mm^3 tumour speck elsewhere
    # Were the specks counted, the inner one would find the tumour (Dice 18 / 134 = 0.13).
    result = lesion_matches(pred, gt, ISOTROPIC)
    assert result == {"tumours": counts(1, missed=1), "cysts": counts(0, false=1)}
    assert lesion_matches(pred, gt, ISOTROPIC, min_volume_mm3=5.0) == {
        "tumours": counts(1, found=1, false=1),
        "cysts": counts(1, missed=1, false=1),
    }


def test_the_minimum_volume_is_in_mm3_of_the_voxel_spacing():
    gt = kidney()
    pred = paint(kidney(), 3, (4, 4, 4), (6, 6, 6))  # 8 voxels
    assert lesion_matches(pred, gt, (1.0, 1.0, 1.0))["cysts"] == NONE  # 8 mm^3
    assert lesion_matches(pred, gt, (0.5, 4.0, 2.0))["cysts"] == counts(false=1)  # 32 mm^3


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        lesion_matches(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), ISOTROPIC)


def save(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, np.diag([0.8, 0.9, 2.5, 1.0])), path)  # 1.8 mm^3 voxels


def test_the_csv_has_the_counts_per_case_and_their_totals_in_the_mean_row(tmp_path, capsys):
    # Case 0: tumour found, cyst missed. Case 1: tumour found, a false cyst.
    gt0 = paint(paint(kidney(), 2, (4, 4, 4), (9, 9, 9)), 3, (14, 14, 14), (18, 18, 18))
    pred0 = paint(kidney(), 2, (4, 4, 4), (9, 9, 9))
    gt1 = paint(kidney(), 2, (10, 10, 10), (15, 15, 15))
    pred1 = paint(gt1.copy(), 3, (3, 3, 3), (7, 7, 7))
    for name, pred, gt in (("case_0", pred0, gt0), ("case_1", pred1, gt1)):
        save(tmp_path / "pred" / f"{name}.nii.gz", pred)
        save(tmp_path / "gt" / f"{name}.nii.gz", gt)
    out = tmp_path / "evaluation.csv"
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", out, workers=1)
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case", *METRIC_COLUMNS, *LESION_COLUMNS]
    assert [row["case"] for row in rows] == ["case_0", "case_1", "mean"]
    table = {row["case"]: [row[column] for column in LESION_COLUMNS] for row in rows}
    # tumours found, missed, false; cysts found, missed, false
    assert table["case_0"] == ["1", "0", "0", "0", "1", "0"]
    assert table["case_1"] == ["1", "0", "0", "0", "0", "1"]
    assert table["mean"] == ["2", "0", "0", "0", "1", "1"]  # totals, not means
    assert result.mean["tumours_found"] == 2
    for column in METRIC_COLUMNS:  # the metrics stay means
        mean = np.mean([float(row[column]) for row in rows[:-1]])
        assert float(rows[-1][column]) == pytest.approx(mean, abs=1e-8)
    assert float(rows[-1]["Dice_masses"]) < float(rows[-1]["Dice_tumor"]) == 1.0
    summary = capsys.readouterr().out
    assert "lesions: tumours 2/2 found, 0 false; cysts 0/1 found, 1 false" in summary
