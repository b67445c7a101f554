"""A batch split over workers (``--num-parts N --part-id K``) and resumed (complete outputs
skipped unless ``--overwrite``), through real CLI processes."""

from __future__ import annotations

import json
from pathlib import Path

from predict_data import affine_for, save_random_model, synthetic_ct, write_nifti

from cli_runner import run_cli
from sparsekits.layout import DICOM_SEG, NIFTI
from sparsekits.predict.pipeline import _NO_SEG, is_complete, predict


def _inputs(folder: Path, count: int) -> Path:
    folder.mkdir()
    for k in range(count):
        write_nifti(folder / f"scan{k}.nii.gz", synthetic_ct(k), affine_for("RAS"))
    return folder


def _written(out: Path) -> list[str]:
    return sorted(path.name.removesuffix(".json") for path in out.glob("scan*.json"))


def _mtimes(out: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in out.glob("scan*")}


def test_two_parts_cover_every_case_exactly_once(tmp_path, model_dir):
    inputs = _inputs(tmp_path / "inputs", 5)
    outs = [tmp_path / f"out{k}" for k in range(2)]

    command = ("predict", "-i", inputs, "--model", model_dir, "--num-parts", 2)
    runs = [run_cli(*command, "-o", out, "--part-id", k) for k, out in enumerate(outs)]

    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert _written(outs[0]) == ["scan0", "scan2", "scan4"]  # every 2nd of the sorted cases
    assert _written(outs[1]) == ["scan1", "scan3"]
    assert runs[0].stderr.splitlines()[-1] == "sparsekits predict: part 0 of 2: 3 inputs written"


def test_a_rerun_skips_complete_outputs_redoes_an_incomplete_one_and_overwrite_redoes_all(
    tmp_path, model_dir
):
    inputs, out = _inputs(tmp_path / "inputs", 3), tmp_path / "out"
    command = ("predict", "-i", inputs, "-o", out, "--model", model_dir)
    assert run_cli(*command).returncode == 0
    # What a kill between a case's label map and its report (written last) would leave.
    (out / "scan1.json").unlink()
    before = _mtimes(out)

    rerun = run_cli(*command)

    assert rerun.returncode == 0, rerun.stderr
    after = _mtimes(out)
    assert _written(out) == ["scan0", "scan1", "scan2"]
    assert [name for name in before if after[name] != before[name]] == ["scan1.nii.gz"]
    closing = [line for line in rerun.stderr.splitlines() if " -> " in line]
    assert len(closing) == 1 and closing[0].startswith(f"sparsekits predict: {inputs}/scan1.")
    assert rerun.stderr.splitlines()[-1] == (
        "sparsekits predict: 1 inputs written, 2 skipped (outputs complete; --overwrite redoes "
        "them)"
    )

    overwritten = run_cli(*command, "--overwrite")

    assert overwritten.returncode == 0, overwritten.stderr
    assert all(_mtimes(out)[name] != after[name] for name in after)
    assert overwritten.stderr.splitlines()[-1] == "sparsekits predict: 3 inputs written"


def test_a_part_id_outside_the_parts_is_refused_in_one_line(tmp_path, model_dir):
    inputs = _inputs(tmp_path / "inputs", 1)

    command = ("predict", "-i", inputs, "-o", tmp_path / "out", "--model", model_dir)
    run = run_cli(*command, "--num-parts", 2, "--part-id", 2)

    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "sparsekits: error: --part-id: 2 with --num-parts 2: need 0 <= K < N"
    ]
    assert not (tmp_path / "out").exists()


def test_outputs_of_another_model_or_without_tta_are_redone(tmp_path, model_dir):
    inputs, out = _inputs(tmp_path / "inputs", 1), tmp_path / "out"
    retrained = save_random_model(tmp_path / "retrained", seed=1)
    predict(inputs, out, model_dir)

    assert predict(inputs, out, model_dir).skipped == [str(inputs / "scan0.nii.gz")]
    assert predict(inputs, out, retrained).skipped == []  # a model retrained into its folder
    assert predict(inputs, out, retrained).skipped == [str(inputs / "scan0.nii.gz")]
    assert predict(inputs, out, retrained, tta=True).skipped == []


def test_a_dicom_seg_its_report_says_was_not_written_is_not_missing(tmp_path):
    destination = tmp_path / "scan.nii.gz"
    destination.write_bytes(b"a label map")
    run = {"fingerprint": "abc", "tta": False}
    report = {"model": {"fingerprint": "abc"}, "tta": False, "warnings": []}
    (tmp_path / "scan.json").write_text(json.dumps(report))

    assert is_complete(destination, (NIFTI,), run)
    assert not is_complete(destination, (NIFTI, DICOM_SEG), run)
    assert not is_complete(destination, (NIFTI,), {**run, "tta": True})

    (tmp_path / "scan.json").write_text(json.dumps({**report, "warnings": [_NO_SEG]}))
    assert is_complete(destination, (NIFTI, DICOM_SEG), run)
