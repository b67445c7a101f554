"""Preprocessing one KiTS-size case (both stages), and the geometry steps of prediction.

The case is a phantom (``sparsekits.phantoms``) built on a real KiTS23 label map,
case_00000: 611 x 512 x 512 voxels at 0.5 x 0.92 x 0.92 mm, int16 HU, gzipped NIfTI, as KiTS23
ships its images. Without ../shared/data, a synthetic phantom of the same size and layout is used.

- Preprocessing: ``preprocess_dataset`` of that one case, both stages, each run in a fresh process
  (its peak RSS is the figure; the time includes reading the .nii.gz and writing the samples);
  one warm-up run, then the median of ``--repeats`` runs.
- Prediction geometry, in one fresh process: read the image; its stage-1 view and, per ROI (the
  cache's stage-2 ROIs), its stage-2 view (``sparsekits.data.stage_view``, as the predictor
  builds them); map each crop's labels back to the source sub-box (nearest) and paint them into
  a full-size label map. Times are medians of ``--repeats`` after one warm-up.

Command (from the repository root):
    python benchmarks/preprocess.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from sparsekits.bench.measure import run_in_fresh_process, time_median
from sparsekits.bench.report import load_average, measured_on
from sparsekits.data.geometry import Grid, resample
from sparsekits.data.io import read_image
from sparsekits.data.preprocess import preprocess_dataset
from sparsekits.data.sample import load_sample
from sparsekits.data.sparsify import box_slices
from sparsekits.layout import stage_dir
from sparsekits.markdown import markdown_table
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.methods.sscn_twostage.chain import roi_view, walk
from sparsekits.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
TARGET = "benchmarks.preprocess"
KITS_LABELS = REPO.parent / "shared" / "data" / "kits23-labels" / "case_00000.nii.gz"
TARGETS_S_GB = (60.0, 6.0)


def build_case(work: Path, labels: Path) -> Path:
    """The one-case dataset (KiTS23 layout), built once and reused (phantoms are deterministic)."""
    dataset = work / "dataset"
    if (dataset / "case_00000" / "segmentation.nii.gz").is_file():
        return dataset
    if labels.is_file():
        source = work / "labels"
        source.mkdir(parents=True, exist_ok=True)
        link = source / labels.name
        if not link.exists():
            os.symlink(labels, link)
        write_phantom_dataset(dataset, 1, labels_from=source, seed=0)
    else:
        write_phantom_dataset(
            dataset, 1, seed=0, shape=(512, 512, 611), spacing=(0.92, 0.92, 0.5), orientation="IPL"
        )
    return dataset


def measure_preprocess(dataset: str, cache: str) -> dict:
    """Fresh-process target: preprocess the dataset into an empty cache, both stages."""
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    report = preprocess_dataset(dataset, cache)
    seconds = time.perf_counter() - start
    if report.failures:
        raise RuntimeError(f"preprocessing failed: {report.failures}")
    manifest = json.loads((Path(cache) / "manifest.json").read_text())
    return {"seconds": seconds, "case": manifest["cases"]["case_00000"]}


def measure_prediction_geometry(image: str, cache: str, repeats: int) -> dict:
    """Fresh-process target: the resampling steps prediction runs, on the cached ROI crops."""
    start = time.perf_counter()
    source = read_image(image)
    read_s = time.perf_counter() - start
    plan = SSCN_TWOSTAGE

    def to_stage1():
        return roi_view(source, plan)

    rois = [load_sample(path) for path in sorted(stage_dir(Path(cache), "fine").glob("*.npz"))]
    crops = [Grid.from_dict(sample.meta["crop_grid"]) for sample in rois]
    # the ROI components as preprocessing cut them: from the cached roi-stage labels
    labels1 = load_sample(next(stage_dir(Path(cache), "roi").glob("*.npz"))).labels
    chain = walk(source, plan, lambda _view: labels1 > 0)

    def to_crops():
        for _view in chain.fine_views():
            pass

    def paint_back():
        labels = np.zeros(source.grid.shape, dtype=np.uint8)
        for sample, crop in zip(rois, crops, strict=True):
            lo, hi = source.grid.box_covering(crop)
            back = resample(sample.labels, crop, source.grid.crop(lo, hi), order=0)
            view = labels[box_slices(lo, hi)]
            np.maximum(view, back, out=view)
        return labels

    return {
        "read_s": read_s,
        "stage1_s": time_median(to_stage1, repeats)["median_s"],
        "crops_s": time_median(to_crops, repeats)["median_s"],
        "back_s": time_median(paint_back, repeats)["median_s"],
        "source_shape": list(source.grid.shape),
        "stage1_grid": list(chain.roi_view.grid.shape),
    }


def main() -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparsekits-bench-preprocess"))
    parser.add_argument("--labels", type=Path, default=KITS_LABELS)
    args = parser.parse_args()
    command = command_line(__file__, args, omit=("work",))
    os.chdir(REPO)  # the fresh processes import this file as benchmarks.preprocess
    load_at_start = load_average()
    dataset = build_case(args.work, args.labels)
    cache = str(args.work / "cache")
    runs = [
        run_in_fresh_process(f"{TARGET}:measure_preprocess", dataset=str(dataset), cache=cache)
        for _ in range(args.repeats + 1)
    ][1:]
    geometry = run_in_fresh_process(
        f"{TARGET}:measure_prediction_geometry",
        image=str(dataset / "case_00000" / "imaging.nii.gz"),
        cache=cache,
        repeats=args.repeats,
    )
    body = report_body(args.labels, runs, geometry, command, load_at_start)
    update_section("preprocess", body)
    print(body)


def report_body(
    labels: Path, runs: list[dict], geometry: dict, command: str, load_at_start: float
) -> str:
    case = runs[0]["case"]
    seconds = statistics.median(run["seconds"] for run in runs)
    peak_gb = max(run["peak_rss_mb"] for run in runs) / 1024
    each = ", ".join(f"{run['seconds']:.1f}" for run in runs)
    rows = [
        [
            "preprocess one case, stages 1 + 2 (read, resample, sparsify, write)",
            f"{seconds:.1f} s ({each})",
            f"{peak_gb:.2f} GB",
            f"< {TARGETS_S_GB[0]:.0f} s, < {TARGETS_S_GB[1]:.0f} GB",
        ],
        ["prediction: read the .nii.gz", f"{geometry['read_s']:.1f} s", "", ""],
        [
            "prediction: source -> stage-1 grid (linear), body crop, sparsify",
            f"{geometry['stage1_s']:.2f} s",
            "",
            "",
        ],
        [
            f"prediction: source -> {len(case['stage2'])} stage-2 ROI crops (linear), sparsify",
            f"{geometry['crops_s']:.2f} s",
            "",
            "",
        ],
        [
            "prediction: ROI labels -> source sub-boxes (nearest), painted",
            f"{geometry['back_s']:.2f} s",
            f"{geometry['peak_rss_mb'] / 1024:.2f} GB (whole prediction-geometry process)",
            "",
        ],
    ]
    stage1 = case["roi"][0]
    samples = [
        f"stage 1: grid {stage1['shape']} (cropped to the body), kept fraction "
        f"{stage1['kept_fraction']:.3f} ({stage1['kept_voxels']:,} voxels)"
    ] + [
        f"stage 2 ROI {roi['roi_index']}: crop {roi['shape']}, kept fraction "
        f"{roi['kept_fraction']:.3f} ({roi['kept_voxels']:,} voxels)"
        for roi in case["fine"]
    ]
    return "\n".join(
        [
            "## Preprocessing and prediction geometry (one KiTS-size case)",
            "",
            f"Case: phantom on KiTS23 label map `{labels.name}`, source "
            f"{geometry['source_shape']} int16 (.nii.gz); stage-1 grid (body crop) "
            f"{geometry['stage1_grid']}. Each preprocessing run is a fresh process; median of "
            f"{len(runs)} after one warm-up.",
            "",
            markdown_table(["step", "time", "peak RSS", "target"], rows),
            "",
            *[f"- {line}" for line in samples],
            "",
            *measured_on(command, load_at_start),
        ]
    )


if __name__ == "__main__":
    main()
