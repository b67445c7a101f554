"""Finding cases in the KiTS23, nnU-Net raw and plain layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_cases import synthetic_case, write_nifti

from dicom_series import write_dicom_series
from itk_images import write_itk_image
from sparsekits.data.datasets import Case, find_cases
from sparsekits.errors import InputError


def test_kits23_layout_with_and_without_labels(tmp_path):
    hu, labels = synthetic_case(shape=(8, 8, 8))
    write_nifti(tmp_path / "case_00002" / "imaging.nii.gz", hu)
    write_nifti(tmp_path / "case_00002" / "segmentation.nii.gz", labels)
    write_nifti(tmp_path / "case_00001" / "imaging.nii.gz", hu)
    (tmp_path / "case_00003").mkdir()  # no image: not a case
    assert find_cases(tmp_path) == [
        Case("case_00001", tmp_path / "case_00001" / "imaging.nii.gz", None),
        Case(
            "case_00002",
            tmp_path / "case_00002" / "imaging.nii.gz",
            tmp_path / "case_00002" / "segmentation.nii.gz",
        ),
    ]


def test_nnunet_raw_layout(tmp_path):
    hu, labels = synthetic_case(shape=(8, 8, 8))
    (tmp_path / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    write_nifti(tmp_path / "imagesTr" / "kidney_007_0000.nii.gz", hu)
    write_nifti(tmp_path / "labelsTr" / "kidney_007.nii.gz", labels)
    write_nifti(tmp_path / "imagesTr" / "kidney_008_0000.nii.gz", hu)
    cases = find_cases(tmp_path)
    assert [(c.case_id, c.image.name, c.label and c.label.name) for c in cases] == [
        ("kidney_007", "kidney_007_0000.nii.gz", "kidney_007.nii.gz"),
        ("kidney_008", "kidney_008_0000.nii.gz", None),
    ]


def test_plain_folder_of_nifti_files_and_dicom_series(tmp_path):
    hu, _ = synthetic_case(shape=(8, 8, 4))
    write_nifti(tmp_path / "scan_b.nii", hu)
    write_nifti(tmp_path / "scan_a.nii.gz", hu)
    write_dicom_series(tmp_path / "patient_c", hu)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    cases = find_cases(tmp_path)
    assert [(c.case_id, c.image.name, c.label) for c in cases] == [
        ("patient_c", "patient_c", None),
        ("scan_a", "scan_a.nii.gz", None),
        ("scan_b", "scan_b.nii", None),
    ]
    # One file or one DICOM series folder given directly is one case.
    assert find_cases(tmp_path / "scan_a.nii.gz") == [Case("scan_a", tmp_path / "scan_a.nii.gz")]
    assert find_cases(tmp_path / "patient_c") == [Case("patient_c", tmp_path / "patient_c")]


def test_a_plain_folder_holds_nrrd_and_metaimage_files_too(tmp_path):
    hu, _ = synthetic_case(shape=(8, 8, 4))
    for name in ("a.nrrd", "b.nhdr", "c.mha", "d.mhd"):
        write_itk_image(tmp_path / name, hu)
    # The detached headers' data files beside them are not cases.
    assert {"b.raw", "d.raw"} <= {p.name for p in tmp_path.iterdir()}
    assert [(c.case_id, c.image.name) for c in find_cases(tmp_path)] == [
        ("a", "a.nrrd"),
        ("b", "b.nhdr"),
        ("c", "c.mha"),
        ("d", "d.mhd"),
    ]
    assert find_cases(tmp_path / "b.nhdr") == [Case("b", tmp_path / "b.nhdr")]


def test_nothing_recognisable_is_a_clear_error(tmp_path):
    (tmp_path / "readme.md").write_text("hello")
    np.save(tmp_path / "volume.npy", np.zeros(3))
    with pytest.raises(InputError, match="no cases found: expected the KiTS23 layout"):
        find_cases(tmp_path)
    with pytest.raises(InputError, match="no such file or folder"):
        find_cases(tmp_path / "missing")
