"""DICOM-SEG output through the CLI: a synthetic DICOM series predicted with a small random model,
the SEG read back by highdicom and pydicom, checked by dciodvfy (dicom3tools)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from predict_data import affine_for, synthetic_ct, write_nifti

from cli_runner import run_cli
from dicom_series import write_dicom_series
from sparsekits.cli import main
from sparsekits.data.dicom_seg import segment_labels
from sparsekits.predict.pipeline import predict

SPACING = (2.5, 2.5, 3.0)
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.2.1125.77"
# Rotated 10 degrees about the slice axis: the SEG's frames must follow an oblique series.
_C, _S = np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10))
OBLIQUE = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)


def _series(folder: Path, seed: int, soft_tissue: bool = True, **tags) -> Path:
    write_dicom_series(
        folder,
        synthetic_ct(seed, soft_tissue=soft_tissue),
        SPACING,
        direction=OBLIQUE,
        series_uid=f"1.2.826.0.1.3680043.2.1125.{seed + 10}",
        **tags,
    )
    return folder


def _uids(folder: Path, name: str) -> set[str]:
    return {
        str(pydicom.dcmread(path, stop_before_pixels=True)[name].value) for path in folder.iterdir()
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory, model_dir) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A folder of two series, one holding a soft-tissue blob (the random networks' kidney, see
    test_pipeline.test_output_has_the_input_grid) and one of fat only, predicted to both
    output types."""
    root = tmp_path_factory.mktemp("seg")
    inputs = root / "inputs"
    _series(inputs / "scan", 1, frame_of_reference_uid=FRAME_OF_REFERENCE)
    _series(inputs / "fat", 4, soft_tissue=False, frame_of_reference_uid=FRAME_OF_REFERENCE)
    out = root / "out"
    run = run_cli(
        "predict", "-i", inputs, "-o", out, "--model", model_dir, "--output-type", "nifti,dicom-seg"
    )
    return inputs, out, run


def test_the_seg_holds_the_label_map_on_the_source_frames(batch):
    inputs, out, run = batch
    assert run.returncode == 0, run.stderr
    labels = np.asarray(nib.load(out / "scan.nii.gz").dataobj)
    assert labels.any()

    seg = hd.seg.segread(out / "scan.dcm")
    source_uids = [
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for path in sorted(
            (inputs / "scan").iterdir(),
            key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]),
        )
    ]
    numbers = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids, combine_segments=True, skip_overlap_checks=True
    )
    lookup = np.zeros(max(segment_labels(seg)) + 1, dtype=np.uint8)
    for number, label in segment_labels(seg).items():
        lookup[number] = label
    assert np.array_equal(lookup[numbers].transpose(2, 1, 0), labels)
    # One segment per class present, in SNOMED CT.
    codes = {
        item.SegmentLabel: (
            item.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
        )
        for item in seg.SegmentSequence
    }
    expected = {
        "kidney": ("91723000", "64033007", "SCT"),
        "tumor": ("49755003", "108369006", "SCT"),
        "cyst": ("49755003", "367643001", "SCT"),
    }
    present = {
        name for label, name in ((1, "kidney"), (2, "tumor"), (3, "cyst")) if label in labels
    }
    assert codes == {name: expected[name] for name in present}


def test_the_seg_references_the_source_and_names_the_algorithm(batch):
    import sparsekits

    inputs, out, _ = batch
    seg = pydicom.dcmread(out / "scan.dcm")
    source = inputs / "scan"
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID in _uids(source, "SeriesInstanceUID")
    assert {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence} == _uids(
        source, "SOPInstanceUID"
    )
    assert {seg.StudyInstanceUID} == _uids(source, "StudyInstanceUID")
    assert seg.FrameOfReferenceUID == FRAME_OF_REFERENCE
    assert seg.SeriesInstanceUID not in _uids(source, "SeriesInstanceUID")
    for item in seg.SegmentSequence:
        (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (
            "sparsekits",
            sparsekits.__version__,
        )
        assert "method=sscn-twostage" in algorithm.AlgorithmParameters
    assert seg.ManufacturerModelName == "sscn-twostage"


def test_dciodvfy_finds_no_error_in_the_seg(batch):
    _, out, _ = batch
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy (the dicom3tools package, a dev dependency) is not installed"

    check = subprocess.run(
        [dciodvfy, str(out / "scan.dcm")], capture_output=True, text=True, check=False
    )

    report = check.stdout + check.stderr
    assert "Segmentation" in report  # it recognised the IOD it validated
    assert not [line for line in report.splitlines() if line.startswith("Error")], report


def test_no_class_found_writes_no_seg_and_warns(batch):
    inputs, out, run = batch
    assert (out / "fat.nii.gz").is_file() and not (out / "fat.dcm").exists()
    warning = "no kidney, tumour or cyst found: no DICOM-SEG written (a SEG needs a segment)"
    assert any(warning in line for line in json.loads((out / "fat.json").read_text())["warnings"])
    assert f"sparsekits: warning: {inputs / 'fat'}: {warning}" in run.stderr.splitlines()


def _nifti(folder: Path) -> Path:
    return write_nifti(folder / "scan.nii.gz", synthetic_ct(1), affine_for("RAS"))


# An input a SEG cannot be made of -> what the one-line refusal says after its path.
UNSEGGABLE = {
    "nifti": (
        _nifti,
        "DICOM-SEG output needs a DICOM series input (a SEG references its source series); "
        "use --output-type nifti",
    ),
    "no frame of reference": (
        lambda folder: _series(folder / "series", 1),  # SimpleITK writes no FrameOfReferenceUID
        "the DICOM series lacks what a DICOM-SEG requires: FrameOfReferenceUID",
    ),
}


@pytest.mark.parametrize("kind", sorted(UNSEGGABLE))
def test_an_input_a_seg_cannot_be_made_of_is_refused_in_one_line(tmp_path, model_dir, kind):
    write, problem = UNSEGGABLE[kind]
    source = write(tmp_path)
    out = tmp_path / "out"

    run = run_cli(
        "predict", "-i", source, "-o", out, "--model", model_dir, "--output-type", "dicom-seg"
    )

    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [f"sparsekits: error: {source}: {problem}"]
    assert not out.exists()


def test_a_failed_seg_write_leaves_none_of_the_case_outputs(tmp_path, model_dir, monkeypatch):
    from sparsekits.data import dicom_seg

    series = _series(tmp_path / "series", 1, frame_of_reference_uid=FRAME_OF_REFERENCE)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "x.dcm")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", full_disk)
    with pytest.raises(OSError, match="No space"):
        predict(series, tmp_path / "out", model_dir, output_types=("nifti", "dicom-seg"))

    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("value", ["nrrdx", "nifti,bogus", ","])
def test_an_unknown_output_type_is_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "-i", "x", "-o", "y", "--model", "m", "--output-type", value])
    assert exit_.value.code == 2
    assert "choose from nifti, nrrd, mha, dicom-seg" in capsys.readouterr().err
