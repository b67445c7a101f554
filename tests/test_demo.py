"""The shrunken demo, end to end, as a user runs it: a real ``sparsekits demo`` subprocess; its
report from an evaluation; and what it imports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np

from cli_runner import cli_env, run_cli
from sparsekits.demo import QUICK, _write_report
from sparsekits.evaluate.kits23 import (
    LESION_COLUMNS,
    METRIC_COLUMNS,
    ROI_RECALL_COLUMN,
    ROI_RECALL_COLUMNS,
    EvaluationResult,
    mean_row,
)
from sparsekits.plan import default_plan
from sparsekits.regions import NUM_REGIONS


def test_quick_demo_writes_report_model_predictions_and_overlays(tmp_path):
    out = tmp_path / "demo"
    run = run_cli("demo", "--out", out, "--quick", timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]

    for role in ("roi", "fine"):
        fold = out / "model" / role / "fold_0"
        assert (fold / "config.json").is_file() and (fold / "model.safetensors").is_file()
    assert json.loads((out / "model" / "plan.json").read_text())["method"] == "sscn-twostage"

    tests = sorted(p.name for p in (out / "test").glob("case_*"))
    predictions = sorted(
        p.name[: -len(".nii.gz")]
        for p in (out / "predictions").glob("*.nii.gz")
        if not p.name.endswith("_roi.nii.gz")
    )
    assert predictions == tests and tests
    for case in tests:
        label = nib.load(out / "predictions" / f"{case}.nii.gz")
        truth = nib.load(out / "test" / case / "segmentation.nii.gz")
        assert label.shape == truth.shape and np.allclose(label.affine, truth.affine)
        assert (out / "predictions" / f"{case}.json").is_file()
        assert (out / "predictions" / f"{case}_roi.nii.gz").is_file()
    assert list((out / "predictions").glob("*.png"))

    with open(out / "evaluation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == [*tests, "mean"]
    scores = [float(row[k]) for row in rows for k in (*METRIC_COLUMNS, *ROI_RECALL_COLUMNS)]
    assert all(0.0 <= v <= 1.0 for v in scores) and len(scores) == (
        2 * NUM_REGIONS + len(ROI_RECALL_COLUMNS)
    ) * len(rows)
    counts = [int(row[k]) for row in rows for k in LESION_COLUMNS]
    assert min(counts) >= 0

    report = (out / "report.md").read_text()
    for heading in ("Dice", "ROI recall", "Time of each step", "sparsekits predict", ".png"):
        assert heading in report
    for step in ("phantoms", "preprocess", "train roi", "train fine", "predict"):
        assert f"| {step} |" in report
    # each stage's training curves, drawn by its run and shown in the report
    for role in ("roi", "fine"):
        assert f"![{role}](runs/{role}/progress.png)" in report
        assert (out / "runs" / role / "progress.png").is_file()


def test_report_holds_the_evaluations_tables_and_the_step_times(tmp_path):
    counts = dict.fromkeys(LESION_COLUMNS, 1)
    rows = [
        {"case": name, **dict.fromkeys(METRIC_COLUMNS, score), **counts, ROI_RECALL_COLUMN: 1.0}
        for name, score in (("case_00000", 0.25), ("case_00001", 0.75))
    ]
    evaluation = EvaluationResult(rows, mean_row(rows), tmp_path / "evaluation.csv")
    plan = default_plan("sscn-twostage", QUICK.preset)
    report = _write_report(tmp_path, QUICK, plan, evaluation, {"phantoms": 2.0, "predict": 3.0})
    text = report.read_text()
    assert "| case_00001 | " + "0.750 | " * 6 + "1.000 |" in text
    assert "| **mean** | " + "**0.500** | " * 6 + "**1.000** |" in text
    assert "| **total** | " + " | ".join(["**2**"] * 6) + " |\n" in text  # lesion totals
    assert "| **total** | **5** |" in text  # seconds


def test_the_demo_does_not_import_the_benchmarks():
    code = "import sys, sparsekits.demo; assert 'sparsekits.bench' not in sys.modules"
    run = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
