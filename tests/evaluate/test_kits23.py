"""KiTS23 evaluation: the empty-mask rules, known values, and agreement with the official scorer."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances

from cli_runner import run_cli
from sparsekits.errors import InputError
from sparsekits.evaluate.kits23 import (
    LESION_COLUMNS,
    METRIC_COLUMNS,
    ROI_RECALL_COLUMN,
    ROI_RECALL_COLUMNS,
    evaluate_case,
    evaluate_folders,
    roi_recall,
)

# surface_distance imports from scipy.ndimage's deprecated namespaces.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# The official constants, written out independently of the module under test.
OFFICIAL_HECS = {
    "kidney_and_mass": ((1, 2, 3), 1.0330772532390826),
    "mass": ((2, 3), 1.1328796488598762),
    "tumor": ((2,), 1.1498198361434828),
}
ANISOTROPIC_AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])


def official_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> np.ndarray:
    """kits23/evaluation/metrics.py's compute_metrics_for_label, HEC by HEC: [[Dice, SD] x 3]."""
    metrics = []
    for labels, tolerance in OFFICIAL_HECS.values():
        mask_pred = np.zeros(pred.shape, dtype=bool)
        mask_gt = np.zeros(gt.shape, dtype=bool)
        for label in labels:
            mask_pred[pred == label] = True
            mask_gt[gt == label] = True
        if not mask_gt.any() and not mask_pred.any():
            metrics.append((1.0, 1.0))
        elif not mask_gt.any() or not mask_pred.any():
            metrics.append((0.0, 0.0))
        else:
            intersection = np.count_nonzero(mask_pred & mask_gt)
            dice = 2 * intersection / (np.count_nonzero(mask_gt) + np.count_nonzero(mask_pred))
            distances = compute_surface_distances(mask_gt, mask_pred, spacing)
            metrics.append((dice, compute_surface_dice_at_tolerance(distances, tolerance)))
    return np.array(metrics)


def official_case_from_files(pred_path: Path, gt_path: Path) -> np.ndarray:
    """compute_metrics_for_case: SimpleITK arrays, the prediction's spacing reversed."""
    image_pred = sitk.ReadImage(str(pred_path))
    image_gt = sitk.ReadImage(str(gt_path))
    spacing = tuple(image_pred.GetSpacing())[::-1]
    return official_metrics(
        sitk.GetArrayFromImage(image_pred), sitk.GetArrayFromImage(image_gt), spacing
    )


def as_official_layout(row: dict) -> np.ndarray:
    """Our row {Dice_kidney, ..., SD_tumor} as the official 3 x 2 array."""
    values = [row[column] for column in METRIC_COLUMNS]
    return np.array(values).reshape(2, 3).T


def save_labels(path: Path, labels: np.ndarray, affine: np.ndarray = ANISOTROPIC_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), path)
    return path


def blob_case(seed: int, shape=(40, 36, 24)) -> tuple[np.ndarray, np.ndarray]:
    """A kidney blob with a tumour and a cyst, and a perturbed prediction of it."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.array(shape) / 4 * rng.uniform(0.8, 1.1, 3)
    gt = np.zeros(shape, np.uint8)
    gt[(((grid - centre) / radii) ** 2).sum(-1) <= 1] = 1
    gt[((grid - centre - (3, 0, 0)) ** 2).sum(-1) <= 16] = 2
    gt[((grid - centre + (4, 2, 0)) ** 2).sum(-1) <= 6] = 3
    noisy = ndimage.binary_dilation(gt > 0, iterations=1) & (rng.random(shape) > 0.05)
    pred = np.where(noisy, np.maximum(np.roll(gt, 1, axis=0), 1), 0).astype(np.uint8)
    return pred, gt


def test_both_empty_scores_one():
    empty = np.zeros((8, 8, 8), np.uint8)
    assert evaluate_case(empty, empty, (1.0, 1.0, 1.0)) == dict.fromkeys(METRIC_COLUMNS, 1.0)


def test_one_empty_scores_zero_and_absent_hecs_score_one():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:6, 2:6, 2:6] = 1  # kidney only: mass and tumour are empty in both
    row = evaluate_case(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert (row["Dice_kidney"], row["SD_kidney"]) == (0.0, 0.0)
    assert row["Dice_masses"] == row["SD_masses"] == row["Dice_tumor"] == row["SD_tumor"] == 1.0
    flipped = evaluate_case(gt, np.zeros_like(gt), (1.0, 1.0, 1.0))
    assert (flipped["Dice_kidney"], flipped["SD_kidney"]) == (0.0, 0.0)


def test_identical_maps_score_one():
    _, gt = blob_case(0)
    assert evaluate_case(gt.copy(), gt, (0.8, 0.9, 2.5)) == dict.fromkeys(METRIC_COLUMNS, 1.0)


def test_shifted_cubes_have_the_known_dice_and_hec_nesting():
    gt = np.zeros((30, 30, 30), np.uint8)
    pred = np.zeros_like(gt)
    gt[5:15, 5:15, 5:15] = 2  # a tumour cube of 1000 voxels
    pred[7:17, 5:15, 5:15] = 2  # shifted by 2 voxels: 800 in common
    row = evaluate_case(pred, gt, (1.0, 1.0, 1.0))
    assert row["Dice_tumor"] == row["Dice_masses"] == row["Dice_kidney"] == pytest.approx(0.8)
    # Shifted by 2 mm (> every tolerance): the two faces across the shift are out of tolerance.
    assert 0.0 < row["SD_tumor"] < 1.0
    # A cyst prediction is a mass but not a tumour.
    row = evaluate_case(np.where(pred > 0, 3, 0), gt, (1.0, 1.0, 1.0))
    assert row["Dice_masses"] == pytest.approx(0.8)
    assert (row["Dice_tumor"], row["SD_tumor"]) == (0.0, 0.0)


def test_labels_outside_0_to_3_are_background_as_in_the_official_scorer():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[3:9, 3:9, 3:9] = 1
    pred = gt.copy()
    pred[0:2, 0:2, 0:2] = 4  # an out-of-range value belongs to no HEC
    assert evaluate_case(pred, gt, (1.0, 1.0, 1.0))["Dice_kidney"] == 1.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_surface_distance_called_the_official_way(seed):
    pred, gt = blob_case(seed)
    spacing = (0.7, 0.95, 3.0)
    ours = as_official_layout(evaluate_case(pred, gt, spacing))
    np.testing.assert_allclose(ours, official_metrics(pred, gt, spacing), rtol=0, atol=1e-6)
    assert ours[0, 1] < 1.0  # a real disagreement, not the trivial all-ones case


def test_real_kits23_label_maps_agree_with_the_official_scorer(shared_data, tmp_path):
    """Real label maps (I-P-L, anisotropic), cropped around the kidneys, against perturbations."""
    perturbations = {
        "eroded": lambda gt: np.where(ndimage.binary_erosion(gt > 0), gt, 0),
        "dilated": lambda gt: np.where(ndimage.binary_dilation(gt > 0) & (gt == 0), 1, gt),
        "shifted": lambda gt: np.roll(gt, (1, -2, 1), axis=(0, 1, 2)),
    }
    files = (shared_data / "kits23-labels").glob("case_*.nii.gz")
    sources = sorted(files, key=lambda path: path.stat().st_size)[:2]  # quick to read
    names = []
    for source in sources:
        image = nib.load(source)
        labels = np.asanyarray(image.dataobj)
        # A box around the tumour, small enough to stay fast, large enough for kidney around it.
        centre = np.argwhere(labels == 2).mean(0).astype(int)
        low = np.maximum(centre - (20, 40, 40), 0)
        high = np.minimum(low + np.array((40, 80, 80)), labels.shape)
        crop = image.slicer[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        gt = np.asanyarray(crop.dataobj)
        for kind, perturb in perturbations.items():
            name = f"{source.name[:-7]}_{kind}"
            save_labels(tmp_path / "gt" / f"{name}.nii.gz", gt, crop.affine)
            save_labels(tmp_path / "pred" / f"{name}.nii.gz", perturb(gt), crop.affine)
            names.append(name)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "e.csv", workers=1)
    assert sorted(row["case"] for row in result.rows) == sorted(names)
    for row in result.rows:
        name = row["case"]
        official = official_case_from_files(
            tmp_path / "pred" / f"{name}.nii.gz", tmp_path / "gt" / f"{name}.nii.gz"
        )
        np.testing.assert_allclose(as_official_layout(row), official, rtol=0, atol=1e-6)
    assert min(row["SD_kidney"] for row in result.rows) < 0.99
    assert min(row["SD_tumor"] for row in result.rows) < 0.99  # the tumour is in the crop


def test_roi_recall_counts_kidney_and_mass_voxels_inside_the_rois():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[0:4, 0, 0] = (1, 2, 3, 1)
    roi = np.zeros_like(gt)
    roi[0:3, 0, 0] = 7  # any nonzero value is inside
    assert roi_recall(roi, gt) == pytest.approx(0.75)
    assert roi_recall(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert roi_recall(np.zeros_like(gt), gt) == 0.0
    assert roi_recall(roi, gt, (1,)) == pytest.approx(0.5)  # the kidney alone
    assert roi_recall(roi, gt, (2, 3)) == pytest.approx(1.0)  # the masses alone


def write_cases(root: Path, n: int, nested_gt: bool = False) -> list[str]:
    names = []
    for seed in range(n):
        pred, gt = blob_case(seed)
        name = f"case_{seed:05d}"
        gt_path = root / "gt" / name / "segmentation.nii.gz" if nested_gt else None
        save_labels(gt_path or root / "gt" / f"{name}.nii.gz", gt)
        save_labels(root / "pred" / f"{name}.nii.gz", pred)
        roi = ndimage.binary_dilation(gt > 0, iterations=2)
        roi[: gt.shape[0] // 2] = False  # half the kidney outside the ROI
        save_labels(root / "roi" / f"{name}.nii.gz", roi)
        names.append(name)
    return names


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_the_csv_with_the_mean_row(tmp_path):
    names = write_cases(tmp_path, 2, nested_gt=True)
    out = tmp_path / "evaluation.csv"
    done = run_cli(
        "evaluate",
        tmp_path / "pred",
        tmp_path / "gt",
        "-o",
        out,
        "--roi",
        tmp_path / "roi",
        "--workers",
        "1",
    )
    assert done.returncode == 0, done.stderr
    rows = read_csv(out)
    assert list(rows[0]) == ["case", *METRIC_COLUMNS, *LESION_COLUMNS, *ROI_RECALL_COLUMNS]
    assert [row["case"] for row in rows] == [*names, "mean"]
    for column in [*METRIC_COLUMNS, *ROI_RECALL_COLUMNS]:
        mean = np.mean([float(row[column]) for row in rows[:-1]])
        assert float(rows[-1][column]) == pytest.approx(mean, abs=1e-8)
    assert 0.2 < float(rows[-1][ROI_RECALL_COLUMN]) < 0.8
    assert "mean" in done.stdout and "Dice" in done.stdout


def test_mismatched_grid_is_a_one_line_error_naming_the_file(tmp_path):
    write_cases(tmp_path, 1)
    bad = tmp_path / "pred" / "case_00000.nii.gz"
    save_labels(bad, np.zeros((40, 36, 25), np.uint8))
    with pytest.raises(InputError, match="shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "e.csv", workers=1)
    save_labels(bad, blob_case(0)[0], np.diag([0.8, 0.9, 3.0, 1.0]))
    done = run_cli(
        "evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "e.csv", "--workers", "1"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"sparsekits: error: {bad}: affine")
    assert not (tmp_path / "e.csv").exists()


def test_a_ground_truth_with_labels_outside_0_to_3_is_refused_in_one_line(tmp_path):
    (name,) = write_cases(tmp_path, 1)
    organs = save_labels(tmp_path / "gt" / f"{name}.nii.gz", blob_case(0)[1] * 2)  # an organ map

    done = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "e.csv")

    assert done.returncode == 2
    messages = [line for line in done.stderr.split("\n") if line and "evaluate:" not in line]
    assert messages == [f"sparsekits: error: {organs}: label values must be 0-3, found 0 to 6"]
    assert not (tmp_path / "e.csv").exists()


def test_unpredicted_cases_are_skipped_and_orphan_predictions_rejected(tmp_path, capsys):
    names = write_cases(tmp_path, 3)
    (tmp_path / "pred" / f"{names[1]}.nii.gz").unlink()
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "e.csv", workers=1)
    assert [row["case"] for row in result.rows] == [names[0], names[2]]
    assert result.unpredicted == [names[1]]
    assert names[1] in capsys.readouterr().err
    save_labels(tmp_path / "pred" / "case_09999.nii.gz", blob_case(0)[0])
    with pytest.raises(InputError, match="no ground truth"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "e.csv", workers=1)


def test_roi_sidecars_of_a_prediction_folder_are_masks_not_predictions(tmp_path):
    names = write_cases(tmp_path, 2)
    for name in names:
        (tmp_path / "roi" / f"{name}.nii.gz").rename(tmp_path / "pred" / f"{name}_roi.nii.gz")
    pred = tmp_path / "pred"
    result = evaluate_folders(pred, tmp_path / "gt", tmp_path / "e.csv", roi_dir=pred, workers=1)
    assert [row["case"] for row in result.rows] == names
    assert all(0.2 < row[ROI_RECALL_COLUMN] < 0.8 for row in result.rows)
    with pytest.raises(InputError, match="ROI mask missing"):
        evaluate_folders(pred, tmp_path / "gt", tmp_path / "e.csv", roi_dir=tmp_path, workers=1)


def test_parallel_equals_serial(tmp_path):
    write_cases(tmp_path, 3)
    args = (tmp_path / "pred", tmp_path / "gt")
    serial = evaluate_folders(*args, tmp_path / "serial.csv", roi_dir=tmp_path / "roi", workers=1)
    parallel = evaluate_folders(*args, tmp_path / "pool.csv", roi_dir=tmp_path / "roi", workers=2)
    assert parallel.rows == serial.rows
    assert (tmp_path / "pool.csv").read_text() == (tmp_path / "serial.csv").read_text()
    assert serial.mean_dice == pytest.approx(
        np.mean([[row[c] for c in METRIC_COLUMNS[:3]] for row in serial.rows])
    )
