"""Full two-stage prediction of a KiTS-size CT with the paper network, on this machine's CPU.

Command (from the repository root; needs ../shared/data/kits23-labels):

    python benchmarks/predict_speed.py [--repeats 3] [--warmup 1] [--profile]

The CT is a phantom built on the real 611 x 512 x 512 KiTS23 label map case_00000 (0.5 x 0.92 x
0.92 mm, stored I-P-L like every KiTS23 image), written as an int16 NIfTI. Both stages use the
``paper`` preset with random weights: a random stage 1 does not find kidneys, so the ROIs come from
the phantom's own kidney labels through the predictor's ``foreground_hook`` (resampled to the
stage-1 grid, nearest). The stage-1 networks still run on the whole scan and stage 2 runs on the
two real kidney ROIs, so every step costs what it costs with trained weights.

What is timed: ``predict_file`` as ``sparsekits predict`` runs it on one input (read the NIfTI,
stage 1, ROIs, stage 2 per ROI, merge, write the label map and the volume report), with the
networks loaded once beforehand (a batch run loads them once too). Median of ``--repeats`` runs
after ``--warmup``, in a fresh process whose peak RSS is reported. ``--profile`` adds a cProfile
run and lists the operations that dominate.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "kits23-labels" / "case_00000.nii.gz"
SECTION = "predict_speed"
TARGETS = {"total_s": 60.0, "peak_rss_mb": 6 * 1024.0}


def write_kits_size_phantom(work: Path, seed: int = 0) -> dict:
    """``work/ct.nii.gz`` (a phantom on the real label map case_00000), its labels and kidney
    mask (``labels.nii.gz``, ``kidney.npy``); returns the CT's shape and spacing."""
    import nibabel as nib

    from sparsekits.data.io import read_label_map
    from sparsekits.phantoms import make_phantom

    labels = read_label_map(LABELS)
    phantom = make_phantom(seed, labels=labels.array, affine=labels.grid.affine)
    for name, array in (("ct", phantom.hu), ("labels", labels.array.astype(np.uint8))):
        image = nib.Nifti1Image(array, phantom.affine)
        image.set_qform(phantom.affine, code=1)
        image.set_sform(phantom.affine, code=1)
        nib.save(image, work / f"{name}.nii.gz")
    np.save(work / "kidney.npy", labels.array > 0)
    return {"shape": list(phantom.hu.shape), "spacing": list(labels.grid.spacing)}


def build_inputs(work: Path, preset: str = "paper", seed: int = 0) -> dict:
    """Write the phantom CT, its kidney mask and a random two-stage model folder under ``work``."""
    import torch

    from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
    from sparsekits.models import build_model
    from sparsekits.models.bundle import save_fold

    inputs = write_kits_size_phantom(work, seed)
    plan = SSCN_TWOSTAGE.with_network(preset)
    for stage, role in enumerate(plan.roles, start=1):
        torch.manual_seed(seed + stage)
        save_fold(work / "model", plan, role, 0, build_model(preset))
    return inputs


def measure(work: str, repeats: int = 3, warmup: int = 1, profile: bool = False) -> dict:
    """Fresh-process target: time ``predict_file`` on ``work/ct.nii.gz``; per-step timings."""
    import nibabel as nib

    from sparsekits.bench.measure import time_median
    from sparsekits.data.geometry import Grid
    from sparsekits.data.stage_view import mask_foreground
    from sparsekits.predict.pipeline import load_predictor, predict_file

    work = Path(work)
    header = nib.load(work / "ct.nii.gz")
    predictor = load_predictor(work / "model", device="cpu", folds="all")
    # Stands in for thresholding the roi-stage probabilities (timed in the "roi" step).
    predictor.foreground_hook = mask_foreground(
        np.load(work / "kidney.npy"), Grid(header.shape, header.affine)
    )
    cases = []

    def run() -> None:
        start = time.process_time()
        case = predict_file(predictor, work / "ct.nii.gz", work / "out" / "ct.nii.gz")
        case.timings["cpu_s"] = time.process_time() - start  # all threads: load-independent
        cases.append(case)

    result = time_median(run, repeats=repeats, warmup=warmup)
    median = cases[warmup:][int(np.argsort(result["times_s"])[len(result["times_s"]) // 2])]
    result["cpu_s"] = median.timings.pop("cpu_s")
    result["steps_s"] = {k: v for k, v in median.timings.items() if k != "stage2"}
    result["rois"] = [
        {"stage2_voxels": roi.n_voxels, "crop_shape": list(roi.crop_grid.shape), **roi.timings}
        for roi in median.rois
    ]
    result["stage1_voxels"] = median.first_stage_voxels
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        result["profile"] = text.getvalue()
    return result


def _report(inputs: dict, result: dict, command: str, load_at_start: float) -> str:
    from sparsekits.bench.report import measured_on
    from sparsekits.markdown import markdown_table

    steps = [[name, f"{seconds:.2f}"] for name, seconds in result["steps_s"].items()]
    rois = [
        [
            k,
            roi["stage2_voxels"],
            "x".join(map(str, roi["crop_shape"])),
            *(f"{roi[key]:.2f}" for key in ("view", "net", "map_back")),
        ]
        for k, roi in enumerate(result["rois"])
    ]
    total, rss = result["median_s"], result["peak_rss_mb"]
    verdict = (
        f"total {total:.1f} s (target <= {TARGETS['total_s']:.0f} s: "
        f"{'met' if total <= TARGETS['total_s'] else 'NOT met'}), peak RSS {rss / 1024:.2f} GiB "
        f"(target <= 6 GiB: {'met' if rss <= TARGETS['peak_rss_mb'] else 'NOT met'})"
    )
    return "\n".join(
        [
            "## Two-stage prediction speed (paper preset, CPU)",
            "",
            f"Input: phantom on the real KiTS23 label map case_00000, shape {inputs['shape']}, "
            f"spacing {[round(s, 3) for s in inputs['spacing']]} mm; stage 1 on "
            f"{result['stage1_voxels']} sparse voxels at 1.99 mm. Random weights; ROIs from the "
            "kidney labels (`foreground_hook`). Median of "
            f"{len(result['times_s'])} runs ({', '.join(f'{t:.1f}' for t in result['times_s'])} "
            f"s) after warm-up, in a fresh process; the median run used {result['cpu_s']:.0f} "
            "CPU-seconds over all threads (a figure that a busy machine does not inflate).",
            "",
            f"**Result: {verdict}.**",
            "",
            markdown_table(["step", "seconds"], steps),
            "",
            "Stage 2 per ROI (seconds):",
            "",
            markdown_table(
                ["ROI", "voxels", "crop", "view (resample, sparsify)", "net", "map back"], rois
            ),
            "",
            *measured_on(command, load_at_start),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py
    from sparsekits.bench.measure import run_in_fresh_process
    from sparsekits.bench.report import load_average

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep (and reuse) the CT and model folder here"
    )
    args = parser.parse_args(argv)
    if not LABELS.is_file():
        sys.exit(f"predict_speed: {LABELS} not found (../shared/data is needed)")
    command = command_line(__file__, args, omit=("work",))
    load_at_start = load_average()
    os.chdir(REPO)  # the fresh process imports this file as benchmarks.predict_speed
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        inputs_json = work / "inputs.json"
        if not inputs_json.is_file():
            inputs_json.write_text(json.dumps(build_inputs(work)))
        inputs = json.loads(inputs_json.read_text())
        result = run_in_fresh_process(
            "benchmarks.predict_speed:measure",
            work=str(work.resolve()),
            repeats=args.repeats,
            warmup=args.warmup,
            profile=args.profile,
        )
    body = _report(inputs, result, command, load_at_start)
    print(body)
    if args.profile:
        print(result["profile"])
    if not args.no_write:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
