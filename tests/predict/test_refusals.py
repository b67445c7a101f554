"""Hard input through the CLI as a user meets it: each bad input is refused in one line that
names it and the problem, with a non-zero exit, no traceback and no output, and a batch goes on
past it; thick slices are predicted with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_data import affine_for, synthetic_ct, write_nifti

from cli_runner import run_cli
from dicom_series import write_dicom_series
from itk_images import write_itk_image
from sparsekits.layout import image_stem

RAS = affine_for("RAS")


def _with_values(value: float) -> np.ndarray:
    ct = synthetic_ct(1).astype(np.float32)
    ct[:2, 0, 0] = value
    return ct


# input name -> (writer of the input, what the one-line refusal says)
BAD_INPUTS = {
    "nan.nii.gz": (
        lambda path: write_nifti(path, _with_values(np.nan), RAS),
        "NaN or infinite voxel values (2 NaN); a CT holds numbers only",
    ),
    "inf.nii.gz": (
        lambda path: write_nifti(path, _with_values(np.inf), RAS),
        "NaN or infinite voxel values (2 infinite)",
    ),
    "x1000.nii.gz": (
        lambda path: write_nifti(path, synthetic_ct(1).astype(np.float32) * 1000, RAS),
        "of voxels lie outside -1100..4000 HU after rescaling",
    ),
    "slice.nii.gz": (
        lambda path: write_nifti(path, synthetic_ct(1)[:, :, :1], RAS),
        "a single slice (shape (24, 20, 1))",
    ),
    "pixdim.nii.gz": (
        lambda path: write_nifti(path, synthetic_ct(1), affine_for("RAS", (2.5, 2.5, 1e6))),
        "implausible voxel spacing 2.5 x 2.5 x 1e+06 mm",
    ),
    "mr": (
        lambda path: write_dicom_series(path, synthetic_ct(1), (2.5, 2.5, 3.0), modality="MR"),
        "a DICOM series of modality MR, not CT",
    ),
    # NRRD and MetaImage get the same refusals.
    "nan.nrrd": (
        lambda path: write_itk_image(path, _with_values(np.nan)),
        "NaN or infinite voxel values (2 NaN); a CT holds numbers only",
    ),
    "pixdim.mha": (
        lambda path: write_itk_image(path, synthetic_ct(1), spacing=(2.5, 2.5, 1e6)),
        "implausible voxel spacing 2.5 x 2.5 x 1e+06 mm",
    ),
    "slice.nhdr": (
        lambda path: write_itk_image(path, synthetic_ct(1)[:, :, :1]),
        "a single slice (shape (24, 20, 1))",
    ),
    "noise.mhd": (
        lambda path: path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 9 9\n"),
        "unreadable image file",
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of every bad input, a good scan and a scan with 12 mm slices."""
    folder = tmp_path_factory.mktemp("inputs")
    for name, (write, _) in BAD_INPUTS.items():
        write(folder / name)
    write_nifti(folder / "good.nii.gz", synthetic_ct(2), RAS)
    write_nifti(folder / "thick.nii.gz", synthetic_ct(3), affine_for("RAS", (2.5, 2.5, 12.0)))
    return folder


def test_a_batch_refuses_each_bad_input_once_and_goes_on(tmp_path, model_dir, inputs):
    out = tmp_path / "out"

    run = run_cli("predict", "-i", inputs, "-o", out, "--model", model_dir)

    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    for name, (_, problem) in BAD_INPUTS.items():
        (line,) = [line for line in lines if f"{inputs / name}:" in line]
        assert line.startswith(f"sparsekits: error: {inputs / name}: ") and problem in line
        assert not list(out.glob(f"{image_stem(Path(name))}.*"))
    assert sorted(path.name for path in out.iterdir()) == [
        "good.json",
        "good.nii.gz",
        "thick.json",
        "thick.nii.gz",
    ]
    # Printed once each, and in the report (the random networks' blob adds its own).
    thick = inputs / "thick.nii.gz"
    reported = json.loads((out / "thick.json").read_text())["warnings"]
    assert reported[0].startswith("slices 12 mm apart (10 mm or more)")
    printed = [line for line in lines if f"{thick}:" in line]
    assert printed == [f"sparsekits: warning: {thick}: {warning}" for warning in reported]
    assert (
        lines[-1] == f"sparsekits predict: {len(BAD_INPUTS)} of {len(BAD_INPUTS) + 2} inputs failed"
    )


@pytest.mark.parametrize("name", ["nan.nii.gz", "mr", "noise.mhd"])
def test_a_single_bad_input_is_refused_in_one_line(tmp_path, model_dir, inputs, name):
    out = tmp_path / "out"

    run = run_cli("predict", "-i", inputs / name, "-o", out, "--model", model_dir)

    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"sparsekits: error: {inputs / name}: ")
    assert BAD_INPUTS[name][1] in line
    assert not out.exists()


def test_an_output_whose_folder_is_a_file_is_refused_before_any_work(tmp_path, model_dir, inputs):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is wanted")
    good = inputs / "good.nii.gz"

    single = run_cli("predict", "-i", good, "-o", blocker / "seg.nii.gz", "--model", model_dir)
    batch = run_cli("predict", "-i", inputs, "-o", blocker / "out", "--model", model_dir)

    for run in (single, batch):
        assert run.returncode == 2
        (line,) = run.stderr.strip().splitlines()
        assert line.endswith(f"cannot be a folder: {blocker} is a file"), line
    assert blocker.read_text() == "a file where a folder is wanted"


# (ids without the word "cuda", which would mark them as tests that need CUDA: conftest.py)
@pytest.mark.parametrize("device", ["cuda", "cuda:99"], ids=["gpu", "gpu-99"])
def test_a_device_this_machine_does_not_have_is_refused_in_one_line(
    tmp_path, model_dir, inputs, device
):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"

    run = run_cli("predict", "-i", inputs / "good.nii.gz", "-o", out, "--model", model_dir,
                  "--device", device)  # fmt: skip

    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"sparsekits: error: --device {device}: no ")
    assert not out.exists()


@pytest.mark.parametrize("option", [("--fold", "0"), ("--save-prob",)])
def test_abbreviated_options_are_refused(tmp_path, model_dir, inputs, option):
    out = tmp_path / "out"

    run = run_cli("predict", "-i", inputs / "good.nii.gz", "-o", out, "--model", model_dir, *option)

    assert run.returncode == 2
    assert f"unrecognized arguments: {' '.join(option)}" in run.stderr
    assert not out.exists()


def test_train_on_a_missing_folder_leaves_no_run_folder(tmp_path):
    run = run_cli(
        "train", "--data", tmp_path / "missing", "--stage", "roi", "--out", tmp_path / "run"
    )

    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"sparsekits: error: {tmp_path / 'missing'}: no such file or folder"
    ]
    assert not (tmp_path / "run").exists()
