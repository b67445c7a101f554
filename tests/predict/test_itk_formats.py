"""NRRD and MetaImage through the CLI: oblique scans written by SimpleITK predicted to label maps in
their own format on their exact geometry, which `sparsekits evaluate` reads back."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from predict_data import synthetic_ct

from cli_runner import run_cli
from itk_images import ITK_SUFFIXES, write_itk_image
from sparsekits.data.io import read_label_map, write_label_map
from sparsekits.predict.pipeline import predict

# Each input suffix -> the single-file suffix its label map is written in.
WRITTEN = {".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, model_dir) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A folder of one oblique scan per suffix (names a-d), predicted by the CLI."""
    root = tmp_path_factory.mktemp("itk")
    inputs = root / "inputs"
    for seed, suffix in enumerate(ITK_SUFFIXES):
        write_itk_image(inputs / f"{'abcd'[seed]}{suffix}", synthetic_ct(seed + 1))
    out = root / "out"
    return inputs, out, run_cli("predict", "-i", inputs, "-o", out, "--model", model_dir)


def test_a_label_map_in_the_inputs_format_on_its_exact_geometry(batch):
    inputs, out, run = batch
    assert run.returncode == 0, run.stderr
    for name, suffix in zip("abcd", ITK_SUFFIXES, strict=True):
        source = sitk.ReadImage(str(inputs / f"{name}{suffix}"))
        written = sitk.ReadImage(str(out / f"{name}{WRITTEN[suffix]}"))
        assert written.GetSize() == source.GetSize()
        assert written.GetOrigin() == source.GetOrigin()
        for get in ("GetSpacing", "GetDirection"):  # to the last bits of a double
            np.testing.assert_allclose(
                getattr(written, get)(), getattr(source, get)(), rtol=0, atol=1e-12
            )
        assert written.GetPixelID() == sitk.sitkUInt8
        assert json.loads((out / f"{name}.json").read_text())["input"] == str(
            inputs / f"{name}{suffix}"
        )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}{ext}"
        for name, suffix in zip("abcd", ITK_SUFFIXES, strict=True)
        for ext in (WRITTEN[suffix], ".json")
    )


def test_evaluate_reads_the_nrrd_and_metaimage_predictions(batch, tmp_path):
    _, out, _ = batch
    # Ground truth: each prediction itself, as NIfTI; a perfect score proves the reading.
    truth = tmp_path / "gt"
    for path in sorted(out.glob("*.nrrd")) + sorted(out.glob("*.mha")):
        labels = read_label_map(path)
        write_label_map(truth / f"{path.name.split('.')[0]}.nii.gz", labels.array, labels.grid)

    run = run_cli("evaluate", out, truth, "-o", tmp_path / "e.csv", "--workers", "1")

    assert run.returncode == 0, run.stderr
    with open(tmp_path / "e.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == ["a", "b", "c", "d", "mean"]
    assert all(float(row["Dice_kidney"]) == 1.0 for row in rows)


def test_an_output_type_or_an_output_file_name_chooses_the_format(tmp_path, model_dir):
    source = tmp_path / "scan.nrrd"
    write_itk_image(source, synthetic_ct(1))

    predict(source, tmp_path / "both", model_dir, output_types=("nifti", "mha"))
    predict(source, tmp_path / "named" / "seg.nii.gz", model_dir)

    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == [
        "scan.json",
        "scan.mha",
        "scan.nii.gz",
    ]
    assert sorted(p.name for p in (tmp_path / "named").iterdir()) == ["seg.json", "seg.nii.gz"]
    nifti = read_label_map(tmp_path / "both" / "scan.nii.gz")
    mha = read_label_map(tmp_path / "both" / "scan.mha")
    np.testing.assert_array_equal(nifti.array, mha.array)
    np.testing.assert_allclose(nifti.grid.affine, mha.grid.affine, atol=1e-5)
