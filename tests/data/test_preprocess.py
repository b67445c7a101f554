"""The preprocessing cache end to end: samples, manifest, resume, workers, errors, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_cases import LPS_AFFINE, synthetic_case, write_kits_case, write_nifti

from cli_runner import run_cli
from dicom_series import write_dicom_series
from sparsekits.data.geometry import Grid, resample
from sparsekits.data.preprocess import preprocess_dataset
from sparsekits.data.sample import load_sample
from sparsekits.layout import CACHE_MANIFEST
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.phantoms import write_phantom_dataset
from sparsekits.regions import labels_to_regions

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


def _check_sparse_view(sample, config):
    assert sample.hu.dtype == np.int16 and sample.coords.dtype == np.int32
    hu = sample.hu[tuple(sample.coords.T)]
    assert config.sparsify.keep(hu).all()
    np.testing.assert_allclose(sample.features[:, 0], config.normalise(hu), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        sample.regions, labels_to_regions(sample.labels[tuple(sample.coords.T)])
    )
    assert sample.kept_fraction == pytest.approx(sample.meta["kept_fraction"])


def test_samples_and_manifest_of_a_kits23_dataset(kits_dataset, tmp_path):
    cache = tmp_path / "cache"
    report = preprocess_dataset(kits_dataset, cache)
    assert report.processed == ["case_00000", "case_00001"] and not report.failures
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["plan"]["stages"][1]["sparsify"] == {
        "rule": "hu_window",
        "low": -300.0,
        "high": 500.0,
    }
    entry = manifest["cases"]["case_00000"]
    assert entry["roi"][0]["file"] == "roi/case_00000.npz"
    assert [roi["file"] for roi in entry["fine"]] == [
        "fine/case_00000_roi0.npz",
        "fine/case_00000_roi1.npz",
    ]
    source_labels = synthetic_case(seed=0)[1]
    source = Grid(source_labels.shape, LPS_AFFINE)

    stage1 = load_sample(cache / entry["roi"][0]["file"])
    _check_sparse_view(stage1, STAGE1)
    assert stage1.meta["kept_fraction"] == entry["roi"][0]["kept_fraction"] > 0
    assert Grid.from_dict(stage1.meta["source_grid"]).same_as(source)
    grid1 = Grid.from_dict(stage1.meta["crop_grid"])
    np.testing.assert_allclose(grid1.affine, stage1.affine)
    assert grid1.spacing == pytest.approx((1.99,) * 3)
    # Cropped to the body, yet the labels map back onto the source where they were.
    assert grid1.size < source.size * np.prod(source.spacing) / 1.99**3
    back = resample(stage1.labels, grid1, source, order=0)
    both = (back > 0) & (source_labels > 0)
    assert 2 * both.sum() / ((back > 0).sum() + (source_labels > 0).sum()) > 0.8

    inside_mm3 = 0.0
    for k, roi_entry in enumerate(entry["fine"]):
        sample = load_sample(cache / roi_entry["file"])
        _check_sparse_view(sample, STAGE2)
        assert sample.roi_index == k and sample.stage == 2
        assert sample.roi_mask[tuple(sample.coords.T)].all()
        assert Grid.from_dict(sample.meta["crop_grid"]).spacing == pytest.approx((0.78,) * 3)
        inside_mm3 += (sample.labels[sample.roi_mask] > 0).sum() * 0.78**3
    # The two ROIs (one per kidney) hold all of the kidneys and masses.
    assert inside_mm3 == pytest.approx((source_labels > 0).sum() * 1.5 * 1.5 * 2.5, rel=0.1)

    # The ground truth's volumes, what a model trained on the cache will have seen (mL): each
    # kidney (label 1; the LPS grid's low x is the patient's right), the tumour, the cyst.
    voxel_ml = 1.5 * 1.5 * 2.5 / 1000
    half = source_labels.shape[0] // 2
    right, left = (source_labels[:half] == 1).sum(), (source_labels[half:] == 1).sum()
    tumour, cyst = (source_labels == 2).sum(), (source_labels == 3).sum()
    assert entry["volumes_ml"] == {
        kind: [round(voxels * voxel_ml, 2) for voxels in counts]
        for kind, counts in (("kidney", (right, left)), ("tumor", (tumour,)), ("cyst", (cyst,)))
    }


def test_rerun_skips_finished_cases_and_changes_nothing(kits_dataset, tmp_path):
    cache = tmp_path / "cache"
    preprocess_dataset(kits_dataset, cache, roles=("roi",))
    files = sorted(cache.rglob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    manifest = (cache / "manifest.json").read_text()
    again = preprocess_dataset(kits_dataset, cache, roles=("roi",))
    assert again.skipped == ["case_00000", "case_00001"] and not again.processed
    assert [f.stat().st_mtime_ns for f in sorted(cache.rglob("*.npz"))] == stamps
    assert (cache / "manifest.json").read_text() == manifest
    # Asking for stage 2 later processes the cases again and keeps stage 1 in the manifest.
    later = preprocess_dataset(kits_dataset, cache, roles=("fine",))
    assert later.processed == ["case_00000", "case_00001"]
    entry = json.loads((cache / "manifest.json").read_text())["cases"]["case_00001"]
    assert "roi" in entry and len(entry["fine"]) == 2


def test_killed_write_leaves_no_sample_and_the_case_is_redone(kits_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_savez = np.savez

    def savez_then_die(handle, **arrays):
        handle.write(b"half a sample")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(kits_dataset, cache)
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(np, "savez", real_savez)
    report = preprocess_dataset(kits_dataset, cache)
    assert report.processed == ["case_00000", "case_00001"]
    assert len(list(cache.rglob("*.npz"))) == 6


def test_two_worker_processes_give_the_same_samples(tmp_path):
    dataset = tmp_path / "phantoms"
    write_phantom_dataset(dataset, 2, seed=3, shape=(80, 64, 48), spacing=(4.0, 4.0, 5.0))
    serial = preprocess_dataset(dataset, tmp_path / "serial", roles=("roi",))
    parallel = preprocess_dataset(dataset, tmp_path / "parallel", roles=("roi",), workers=2)
    assert sorted(parallel.processed) == serial.processed == ["case_00000", "case_00001"]
    for name in serial.processed:
        a = load_sample(tmp_path / "serial" / "roi" / f"{name}.npz")
        b = load_sample(tmp_path / "parallel" / "roi" / f"{name}.npz")
        np.testing.assert_array_equal(a.hu, b.hu)
        np.testing.assert_array_equal(a.coords, b.coords)
        assert 0.05 < a.kept_fraction < 0.9


def test_phantom_on_real_kits23_geometry_gives_one_roi_per_kidney(shared_data, tmp_path):
    labels = shared_data / "kits23-labels" / "case_00030.nii.gz"
    if not labels.is_file():
        pytest.skip(f"{labels} is absent")
    (tmp_path / "labels").mkdir()
    os.symlink(labels, tmp_path / "labels" / labels.name)
    write_phantom_dataset(tmp_path / "ds", 1, labels_from=tmp_path / "labels", seed=0)
    report = preprocess_dataset(tmp_path / "ds", tmp_path / "cache")
    assert not report.failures
    entry = json.loads((tmp_path / "cache" / "manifest.json").read_text())["cases"]["case_00000"]
    assert len(entry["fine"]) == 2
    # The ROIs hold all of the kidneys and masses.
    recalled = 0
    for roi_entry in entry["fine"]:
        sample = load_sample(tmp_path / "cache" / roi_entry["file"])
        recalled += (sample.labels > 0).sum()
        assert sample.roi_mask[sample.labels > 0].mean() > 0.99
    assert 0.01 < entry["roi"][0]["kept_fraction"] < 0.6


def _bad_dataset(root):
    """One good case and one case per kind of bad input, in the KiTS23 layout."""
    hu, labels = synthetic_case(shape=(24, 24, 12))
    write_kits_case(root, "case_00000")
    cases = {
        "case_00001": (hu, labels, "truncated"),
        "case_00002": (hu[:, :, 0], labels[:, :, 0], None),
        "case_00003": (np.stack([hu, hu], axis=-1), labels, None),
        "case_00004": (hu, labels[:-1], None),
        "case_00005": (hu, np.where(labels > 0, 5, 0).astype(np.uint8), None),
        "case_00006": ((hu + 1000).clip(0, 255).astype(np.uint8), labels, None),
    }
    for case_id, (image, label, damage) in cases.items():
        path = write_nifti(root / case_id / "imaging.nii.gz", image)
        write_nifti(root / case_id / "segmentation.nii.gz", label)
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:200])


EXPECTED_ERRORS = {
    "case_00001": "imaging.nii.gz: unreadable NIfTI",
    "case_00002": "imaging.nii.gz: expected a 3D image, got shape (24, 24)",
    "case_00003": "imaging.nii.gz: expected a 3D image, got shape (24, 24, 12, 2)",
    "case_00004": "segmentation.nii.gz: label map grid",
    "case_00005": "segmentation.nii.gz: label values must be 0-3, found 0 to 5",
    "case_00006": "imaging.nii.gz: intensities are not HU-like (a 0-255 range",
}


def test_cli_reports_each_bad_case_in_one_line_and_exits_non_zero(tmp_path):
    _bad_dataset(tmp_path / "ds")
    gappy = tmp_path / "plain" / "gappy"
    write_dicom_series(gappy, synthetic_case(shape=(16, 16, 8))[0], skip_slices=(3,))
    result = run_cli("preprocess", tmp_path / "ds", "--out", tmp_path / "cache", "--stage", "roi")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert "1 processed, 0 already done, 6 failed" in result.stderr
    for case_id, message in EXPECTED_ERRORS.items():
        matching = [line for line in lines if case_id in line]
        assert len(matching) == 1 and message in matching[0], (case_id, matching)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert list(manifest["cases"]) == ["case_00000"]
    assert sorted(manifest["errors"]) == sorted(EXPECTED_ERRORS)

    result = run_cli("preprocess", tmp_path / "plain", "--out", tmp_path / "cache2")
    assert result.returncode == 1
    assert "gappy: missing DICOM slices: gap of 4 mm" in result.stderr

    result = run_cli("preprocess", tmp_path / "nowhere", "--out", tmp_path / "cache3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sparsekits: error: {tmp_path / 'nowhere'}: no such file or folder"
    ]


def test_case_errors_do_not_stop_the_others(kits_dataset, tmp_path):
    write_nifti(kits_dataset / "case_00009" / "imaging.nii.gz", synthetic_case()[0])
    report = preprocess_dataset(kits_dataset, tmp_path / "cache", roles=("roi",))
    assert report.processed == ["case_00000", "case_00001"]
    assert list(report.failures) == ["case_00009"]
    assert report.failures["case_00009"].endswith("no label map for this case (training needs one)")
    assert report.manifest.name == CACHE_MANIFEST
