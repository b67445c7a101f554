"""run_benchmark end to end on a tiny CT, and its failure mode without a kidney label map."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_cli
from sparsekits.bench.inputs import SweepPoint
from sparsekits.bench.pipeline import BenchConfig, run_benchmark
from sparsekits.errors import InputError
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP = (SweepPoint(STAGE2.sparsify.bounds),)
# One run per measurement: the test checks the plumbing, not the timings.
ONE_RUN = BenchConfig(
    repeats=1,
    warmup=0,
    dense_repeats=1,
    two_stage_repeats=1,
    sweep=SWEEP,
    sweep_repeats=1,
    nnunet=False,
    profile_on_miss=False,
)


@pytest.fixture(scope="module")
def report(tiny_ct, tmp_path_factory):
    ct, labels = tiny_ct
    out = tmp_path_factory.mktemp("bench_out")
    results = run_benchmark(
        ct,
        preset="small",
        out_dir=out,
        json_path=out / "results.json",
        labels=labels,
        kidney_labels=(1,),
        config=ONE_RUN,
    )
    return out, results


def test_writes_markdown_with_a_row_per_stage_and_sweep_point(report):
    out, _ = report
    markdown = (out / "benchmark.md").read_text()
    assert "| 1 (1.99 mm) |" in markdown
    assert "| 2 (0.78 mm) |" in markdown
    assert "| sparse two-stage (stage 1 + each ROI) |" in markdown
    for point in SWEEP:
        assert f"| {point.label} |" in markdown
    assert "| dense twin (the box) |" in markdown
    assert "stage-2 sparse/dense time" in markdown  # the goals table


def test_json_holds_both_twins_and_their_ratios(report):
    out, results = report
    saved = json.loads((out / "results.json").read_text())
    assert [entry["stage"] for entry in saved["stages"]] == [1, 2]
    for entry in saved["stages"]:
        for twin in ("sparse", "dense"):
            assert entry[twin]["median_s"] > 0
            assert entry[twin]["peak_rss_mb"] > 0
        assert entry["time_ratio"] == pytest.approx(
            entry["sparse"]["median_s"] / entry["dense"]["median_s"]
        )
        assert 0 < entry["kept_voxels"] <= entry["box_voxels"]
    stage2 = saved["stages"][1]
    # Stage 2 keeps only voxels inside the ROI.
    assert stage2["kept_fraction"] <= stage2["roi_fraction"] + 1e-9
    assert saved["two_stage"]["timings_of_median_run"]["rois"] == 1
    assert saved["sweep_box"]["dense"]["median_s"] > 0
    assert [entry["setting"] for entry in saved["sweep"]] == [point.label for point in SWEEP]
    assert saved == json.loads(json.dumps(results))


def test_writes_both_figures_as_png(report):
    out, results = report
    assert sorted(p.rsplit("/", 1)[-1] for p in results["figures"]) == [
        "overview.png",
        "sweep.png",
    ]
    for name in ("overview.png", "sweep.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_stage2_without_labels_is_a_one_line_cli_error(tiny_ct, tmp_path):
    ct, _ = tiny_ct
    with pytest.raises(InputError, match="--labels"):
        run_benchmark(ct, stage="2", out_dir=tmp_path)
    proc = run_cli("benchmark", "--input", ct, "--stage", "2", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"sparsekits: error: {ct}: stage 2 needs a kidney ROI: pass --labels LABEL_MAP"
    ]
    assert not (tmp_path / "benchmark.md").exists()


def test_a_failed_measurement_is_reported_and_the_others_go_on():
    from sparsekits.bench.pipeline import _run_job

    def out_of_memory() -> None:
        raise RuntimeError("child failed (exit -9):\nKilled")

    results: dict = {}
    _run_job("stage 2 dense", out_of_memory, results)
    ran = []
    _run_job("stage 2 sparse", lambda: ran.append(True), results)
    assert results["failures"] == {"stage 2 dense": "Killed"}
    assert ran == [True]
