"""False mass by tissue (sparsekits.bench.tissue_errors) on hand-made volumes with known answers,
and through the files of a tiny phantom dataset; the demo benchmark's table of it."""

from __future__ import annotations

import numpy as np
import pytest

from demo import report, section_key
from sparsekits.bench.tissue_errors import (
    COLUMNS,
    OTHER,
    MassErrors,
    false_mass_by_tissue,
    false_mass_in_folders,
)
from sparsekits.data.io import read_image, read_label_map, write_label_map
from sparsekits.evaluate.kits23 import LESION_COLUMNS, METRIC_COLUMNS, ROI_RECALL_COLUMNS
from sparsekits.layout import KITS_LABEL, NIFTI_OUT, PHANTOM_TISSUES
from sparsekits.methods import DEFAULT_METHOD
from sparsekits.phantoms import write_phantom_dataset
from sparsekits.phantoms.tissues import T

BACKGROUND, KIDNEY, TUMOUR, CYST = 0, 1, 2, 3


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, truth, tissues) of 10^3 voxels: liver, fat, a kidney with a tumour, bowel gas."""
    tissues = np.full((10, 10, 10), T.AIR, np.uint8)
    truth = np.zeros(tissues.shape, np.uint8)
    tissues[0:4, 0:4, 0:4] = T.LIVER  # 64 voxels
    tissues[5:10, 0:4, 0:4] = T.PERIRENAL_FAT
    tissues[0:4, 5:10, 0:4] = T.GAS
    truth[5:10, 5:10, 5:10] = KIDNEY
    truth[5:7, 5:7, 5:9] = TUMOUR  # 16 voxels
    pred = truth.copy()
    pred[0:2, 0:2, 0:3] = TUMOUR  # 12 in liver
    pred[5:6, 0:3, 0:2] = CYST  # 6 in fat
    pred[0:1, 5:6, 0:2] = TUMOUR  # 2 in gas
    pred[8:10, 8:10, 8:10] = CYST  # 8 in kidney
    pred[9, 0, 9] = TUMOUR  # 1 in air
    pred[5:7, 5:7, 5:7] = KIDNEY  # half the tumour missed: 8 voxels
    pred[5, 5, 7] = CYST  # the wrong mass, not missed
    return pred, truth, tissues


def test_false_mass_counts_by_tissue_group_and_missed_mass():
    errors = false_mass_by_tissue(*_volumes(), voxel_mm3=2.0)
    expected = {"liver": 12, "fat": 6, "bowel": 2, "kidney": 8, OTHER: 1, "missed": 8}
    assert errors.voxels == {column: expected.get(column, 0) for column in COLUMNS}
    assert errors.ml == pytest.approx({c: n * 2.0 / 1000 for c, n in errors.voxels.items()})


def test_truth_kidney_counts_as_kidney_whatever_its_tissue_code():
    pred, truth, tissues = _volumes()
    tissues[truth == KIDNEY] = T.LIVER  # a map that disagrees with the labels
    errors = false_mass_by_tissue(pred, truth, tissues, voxel_mm3=1.0)
    assert (errors.voxels["kidney"], errors.voxels["liver"]) == (8, 12)


def test_a_perfect_prediction_has_no_errors_and_shapes_must_agree():
    _, truth, tissues = _volumes()
    errors = false_mass_by_tissue(truth, truth, tissues, voxel_mm3=1.0)
    assert set(errors.voxels.values()) == {0}
    with pytest.raises(ValueError, match="shapes differ"):
        false_mass_by_tissue(truth, truth, tissues[1:], voxel_mm3=1.0)


def test_mass_errors_add_up():
    pred, truth, tissues = _volumes()
    total = MassErrors()
    for name in ("a", "b"):
        errors = false_mass_by_tissue(pred, truth, tissues, voxel_mm3=1.0)
        errors.cases.append(name)
        total.add(errors)
    assert total.voxels["liver"] == 24 and total.ml["liver"] == pytest.approx(0.024)
    assert total.to_dict()["cases"] == ["a", "b"]


def test_false_mass_in_folders_of_a_tiny_phantom_dataset(tmp_path):
    dataset, predictions = tmp_path / "test", tmp_path / "predictions"
    predictions.mkdir()
    write_phantom_dataset(dataset, 1, seed=0, shape=(64, 48, 40))
    case = dataset / "case_00000"
    truth = read_label_map(case / KITS_LABEL)
    tissues = read_image(case / PHANTOM_TISSUES, require_hu=False).array
    pred = truth.array.copy()
    liver = np.flatnonzero(tissues == T.LIVER)
    fat = (
        np.flatnonzero(tissues == T.VISCERAL_FAT)[:3],
        np.flatnonzero(tissues == T.PERIRENAL_FAT)[:2],
    )
    assert liver.size >= 7 and sum(map(len, fat)) == 5
    pred.flat[liver[:7]] = TUMOUR
    pred.flat[np.concatenate(fat)] = CYST
    mass = np.flatnonzero(truth.array >= TUMOUR)
    pred.flat[mass[:3]] = BACKGROUND
    write_label_map(predictions / f"case_00000{NIFTI_OUT}", pred, truth.grid)
    # A second case without a tissue map is skipped, with a warning.
    other = dataset / "case_00001"
    other.mkdir()
    write_label_map(other / KITS_LABEL, truth.array, truth.grid)
    write_label_map(predictions / f"case_00001{NIFTI_OUT}", pred, truth.grid)
    with pytest.warns(UserWarning, match="case_00001"):
        errors = false_mass_in_folders(predictions, dataset)
    assert (errors.cases, errors.skipped) == (["case_00000"], ["case_00001"])
    expected = {"liver": 7, "fat": 5, "missed": 3}
    assert errors.voxels == {column: expected.get(column, 0) for column in COLUMNS}
    voxel_ml = float(np.prod(truth.grid.spacing)) / 1000
    assert errors.ml["liver"] == pytest.approx(7 * voxel_ml)


def _demo_run(voxel_mm3: float, seed: int = 0, dice: float = 0.95) -> dict:
    """A run of benchmarks/demo.py as its ``main`` collects it, with made-up figures."""
    false_mass = false_mass_by_tissue(*_volumes(), voxel_mm3=voxel_mm3)
    false_mass.cases += ["case_00000", "case_00001"]
    return {
        "wall_s": 280.0 + seed,
        "timings_s": {"phantoms": 3.0, "train": 270.0},
        "mean": dict.fromkeys(METRIC_COLUMNS + ROI_RECALL_COLUMNS, dice)
        | dict.fromkeys(LESION_COLUMNS, 1),
        "peak_rss_mb": 2000.0,
        "false_mass": false_mass.to_dict(),
        "seed": seed,
    }


def test_demo_report_gives_each_seed_and_the_mean_and_spread_over_seeds():
    runs = [_demo_run(1000.0, seed, dice) for seed, dice in enumerate((0.6, 0.8, 0.7))]
    body = report(runs, "python benchmarks/demo.py --seeds 3", 0.5)
    assert "(seeds 0, 1, 2)" in body
    lines = body.splitlines()
    first = lines[next(i for i, line in enumerate(lines) if line.startswith("| seed |")) + 2]
    assert first.startswith("| 0 | 280 | 0.600 | 0.600 | 0.600 |")
    assert "| **mean ± SD** | 281 | 0.700 ± 0.100 | 0.700 ± 0.100 |" in body
    # The verdict judges the mean over seeds: 0.70 meets the masses target, not the kidney's.
    assert "Dice_kidney >= 0.9 (mean over seeds) -> MISSED" in body
    assert "Dice_masses >= 0.7 (mean over seeds) -> met" in body


def test_demo_report_states_the_median_false_mass_by_tissue_in_its_methods_section():
    runs = [_demo_run(voxel_mm3) for voxel_mm3 in (1000.0, 3000.0, 2000.0)]  # median: 2 mL/voxel
    body = report(runs, "python benchmarks/demo.py", 0.5, method="dense-coarse2fine")
    assert body.startswith("## The end-to-end demo of dense-coarse2fine (")
    assert "False mass by tissue (mL, held-out phantoms)" in body and "the 2 test cases" in body
    header = "| " + " | ".join([*COLUMNS[:-1], "missed (true mass)"]) + " |"
    # liver 12, spleen 0, muscle 0, fat 6, bowel 2, kidney 8, vessels 0, other 1, missed 8 voxels
    row = "| 24.00 | 0.00 | 0.00 | 12.00 | 4.00 | 16.00 | 0.00 | 2.00 | 16.00 |"
    assert f"{header}\n|{'---|' * len(COLUMNS)}\n{row}\n" in body
    assert section_key(DEFAULT_METHOD) == "demo"
    assert section_key("dense-coarse2fine") == "demo-dense-coarse2fine"
