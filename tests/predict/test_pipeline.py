"""Two-stage prediction on real NIfTI/DICOM files with small random model folders."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from predict_data import SMALL_PLAN, affine_for, save_random_model, synthetic_ct, write_nifti

import sparsekits
from cli_runner import run_cli
from dicom_series import write_dicom_series
from sparsekits.errors import InputError
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.methods.sscn_twostage import predictor as predictor_module
from sparsekits.models.bundle import model_fingerprint
from sparsekits.predict.inference import load_stage_networks, predict_probabilities
from sparsekits.predict.pipeline import load_predictor, predict
from sparsekits.training_volumes import write_ranges

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_output_has_the_input_grid(tmp_path, model_dir, orientation):
    affine = affine_for(orientation)
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(), affine)

    summary = predict(source, tmp_path / "out" / "seg.nii.gz", model_dir)

    written = nib.load(tmp_path / "out" / "seg.nii.gz")
    labels = np.asarray(written.dataobj)
    assert summary.outputs == {str(source): tmp_path / "out" / "seg.nii.gz"}
    assert labels.shape == synthetic_ct().shape
    assert np.array_equal(written.affine, nib.load(source).affine)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    # A random stage 1 calls the soft-tissue blob foreground: stage 2 ran on one ROI.
    report = json.loads((tmp_path / "out" / "seg.json").read_text())
    assert len(report["roi_boxes"]) == 1
    assert set(report["timings_s"]) >= {"read", "stage1_net", "roi", "stage2", "checks", "write"}
    assert not summary.failures and not summary.warnings and report["warnings"] == []
    # A model folder written before training ranges were recorded: none, and no range check.
    assert report["model"]["training_volumes_ml"] is None


def test_a_volume_new_to_the_model_is_warned_in_one_line_and_in_the_report(tmp_path):
    model = save_random_model(tmp_path / "model", folds=(0,))
    far = [400.0, 500.0]  # the tiny scan holds nothing near: whatever it predicts is new
    write_ranges(model, {"kidney": far, "tumor": far, "cyst": far})
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(), affine_for("RAS"))

    run = run_cli("predict", "-i", source, "-o", tmp_path / "out", "--model", model)

    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["kidney_found"]  # the random networks' blob (test_output_has_the_input_grid)
    warnings = report["warnings"]
    assert warnings and all(
        "is outside what the model was trained on (its training cases: 400.00-500.00 mL; "
        "accepted: 200.00-1000.00 mL)" in warning
        for warning in warnings
    )
    printed = [line for line in run.stderr.splitlines() if line.startswith("sparsekits: warn")]
    assert printed == [f"sparsekits: warning: {source}: {warning}" for warning in warnings]
    # What ran, for whoever reads the report later.
    assert report["model"] == {
        "path": str(model.resolve()),
        "fingerprint": model_fingerprint(model, SMALL_PLAN, {"roi": [0], "fine": [0]}),
        "folds": {"roi": [0], "fine": [0]},
        "training_volumes_ml": {"kidney": far, "tumor": far, "cyst": far},
    }
    assert (report["tta"], report["device"]) == (False, "cpu")
    assert report["sparsekits_version"] == sparsekits.__version__
    date = datetime.fromisoformat(report["date"])
    assert date.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - date) < timedelta(minutes=10)


def test_dicom_series_folder(tmp_path, model_dir):
    from sparsekits.data.io import read_image

    series = tmp_path / "series"
    write_dicom_series(series, synthetic_ct(1), spacing=(2.5, 2.5, 3.0), origin=(12.0, -40.0, 7.0))

    predict(series, tmp_path / "out", model_dir)

    written = nib.load(tmp_path / "out" / "series.nii.gz")
    grid = read_image(series).grid
    assert written.shape == grid.shape == synthetic_ct(1).shape
    assert np.allclose(written.affine, grid.affine, atol=1e-4)


def test_batch_with_a_corrupt_file_via_cli(tmp_path, model_dir):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_nifti(inputs / "a.nii.gz", synthetic_ct(2), affine_for("RAS"))
    write_nifti(inputs / "c.nii.gz", synthetic_ct(3), affine_for("LPS"))
    (inputs / "b.nii.gz").write_bytes(b"not a nifti file at all")

    run = run_cli("predict", "-i", inputs, "-o", tmp_path / "out", "--model", model_dir)

    assert run.returncode == 1, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]
    lines = run.stderr.splitlines()
    assert len([line for line in lines if "b.nii.gz" in line]) == 1  # printed once
    assert lines[-1] == "sparsekits predict: 1 of 3 inputs failed"
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_no_kidney_writes_an_empty_map(tmp_path, model_dir, capsys):
    # Air and fat only: nothing in stage 1's HU window, so stage 1 finds no ROI.
    source = write_nifti(
        tmp_path / "fat.nii.gz", synthetic_ct(4, soft_tissue=False), affine_for("RAS")
    )

    summary = predict(source, tmp_path / "out", model_dir)

    labels = np.asarray(nib.load(tmp_path / "out" / "fat.nii.gz").dataobj)
    assert labels.shape == synthetic_ct().shape and not labels.any()
    assert "no kidney found" in capsys.readouterr().err
    assert str(source) in summary.warnings and not summary.failures
    report = json.loads((tmp_path / "out" / "fat.json").read_text())
    assert report["kidney_found"] is False
    assert all(value == 0 for side in report["volumes_ml"].values() for value in side.values())


def test_fold_ensemble_is_the_mean_of_the_folds(model_dir):
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 24, (3000, 3)), axis=0).astype(np.int32)
    features = rng.normal(0, 1, (len(coords), 1)).astype(np.float32)
    sample = [(coords, features)]

    networks = load_stage_networks(model_dir, 2, "all", "cpu", SMALL_PLAN)
    both = predict_probabilities(networks, sample)[0]
    per_fold = [
        predict_probabilities(load_stage_networks(model_dir, 2, [fold], "cpu", SMALL_PLAN), sample)[
            0
        ]
        for fold in (0, 1)
    ]

    assert both.shape == (len(coords), 3)
    assert not np.allclose(per_fold[0], per_fold[1])
    np.testing.assert_allclose(both, (per_fold[0] + per_fold[1]) / 2, atol=1e-6)


def test_tta_averages_the_mirrored_predictions(model_dir):
    rng = np.random.default_rng(1)
    coords = np.unique(rng.integers(0, 16, (1500, 3)), axis=0).astype(np.int32)
    features = rng.normal(0, 1, (len(coords), 1)).astype(np.float32)
    networks = load_stage_networks(model_dir, 2, [0], "cpu", SMALL_PLAN)

    plain = predict_probabilities(networks, [(coords, features)])[0]
    mirrored_x = coords.copy()
    mirrored_x[:, 0] = coords[:, 0].max() + coords[:, 0].min() - coords[:, 0]
    flipped = predict_probabilities(networks, [(mirrored_x, features)])[0]
    tta = predict_probabilities(networks, [(coords, features)], tta=True)[0]

    assert not np.allclose(plain, flipped)  # the network is not mirror-symmetric
    assert not np.allclose(tta, plain)
    assert np.all((tta > 0) & (tta < 1))


def test_missing_stage_or_fold_is_an_input_error(tmp_path, model_dir):
    only_fold0 = save_random_model(tmp_path / "m", folds=(0,))
    with pytest.raises(InputError, match="fold"):
        load_predictor(only_fold0, folds="0,1")
    (only_fold0 / "fine" / "fold_0" / "config.json").unlink()
    with pytest.raises(InputError, match="no trained fine model"):
        load_predictor(only_fold0)


def test_failure_leaves_no_output(tmp_path, model_dir, monkeypatch):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(5), affine_for("RAS"))

    def broken_save(image, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        predict(source, tmp_path / "out", model_dir)

    out = tmp_path / "out"
    assert not (out / "scan.nii.gz").exists()
    assert not list(out.glob("*.nii*")) and not list(out.glob(".tmp-*"))


def test_save_probabilities_writes_the_roi_mask_and_stage2_values(tmp_path, model_dir):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(6), affine_for("LPS"))

    predict(source, tmp_path / "out", model_dir, save_probabilities=True)

    roi = nib.load(tmp_path / "out" / "scan_roi.nii.gz")
    assert roi.shape == synthetic_ct().shape
    assert np.array_equal(roi.affine, nib.load(source).affine)
    assert np.asarray(roi.dataobj).max() >= 1  # the random stage 1 keeps the blob
    with np.load(tmp_path / "out" / "scan_probabilities.npz") as npz:
        probabilities = npz["roi0_probabilities"]
        assert probabilities.shape == (len(npz["roi0_coords"]), 3)
        assert probabilities.dtype == np.float16
        assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_stage2_runs_on_the_voxels_inside_roi_and_window(tmp_path, model_dir):
    image_path = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(7), affine_for("RAS"))
    from sparsekits.data.io import read_image

    case = load_predictor(model_dir).predict_image(read_image(image_path), True)

    (roi,) = case.rois
    assert roi.n_voxels == len(roi.coords) > 0
    assert np.all(roi.coords < np.asarray(roi.crop_grid.shape))
    assert roi.crop_grid.spacing == pytest.approx((STAGE2.spacing_mm,) * 3)
    assert case.labels.shape == synthetic_ct().shape
    # Labels appear only inside the ROI's box on the input grid.
    outside = case.labels.copy()
    outside[predictor_module._slices(roi.voxel_box)] = 0
    assert not outside.any()


def test_device_auto_runs_on_the_device_it_picks_and_the_report_says_which(tmp_path, model_dir):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(7), affine_for("RAS"))

    predict(source, tmp_path / "out", model_dir, device="auto")

    picked = "cuda" if torch.cuda.is_available() else "cpu"
    assert json.loads((tmp_path / "out" / "scan.json").read_text())["device"] == picked


def test_a_single_file_closes_with_what_it_wrote_and_the_volumes(tmp_path, model_dir):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(), affine_for("RAS"))
    out = tmp_path / "out"

    run = run_cli("predict", "-i", source, "-o", out, "--model", model_dir, "--overlay")

    assert run.returncode == 0, run.stderr
    total = json.loads((out / "scan.json").read_text())["volumes_ml"]["total"]
    assert total["total"] > 0  # the random networks' blob (test_output_has_the_input_grid)
    overlays = len(list(out.glob("*.png")))
    assert run.stderr.splitlines()[-1] == (
        f"sparsekits predict: {source} -> {out / 'scan.nii.gz'}, {out / 'scan.json'} and "
        f"{overlays} more files; kidney {total['kidney']:.2f} mL, tumour {total['tumor']:.2f} mL, "
        f"cyst {total['cyst']:.2f} mL"
    )
