"""The preprocessing cache: per case, the stage samples training reads (ARCHITECTURE.md).

```
CACHE/manifest.json               the plan, cases, per-case files, kept fractions, errors
CACHE/stage1/<case>.npz           the whole scan on the stage-1 grid (cropped to the body)
CACHE/stage2/<case>_roi<k>.npz    one sample per ground-truth kidney ROI component (0 = largest)
CACHE/cases/<case>.json           per-case done marker (its manifest entry), written last
```

Every file is written atomically, and a case's marker only after its samples, so a killed run
leaves no half-written sample and a re-run skips exactly the finished cases (and redoes those
made with another plan's input). Each stage's view comes from ``sparsekits.data.stage_view``, as
the predictor's does. Stage-2 crops come from the ground-truth kidney+masses foreground on the
stage-1 grid, dilated as stage 1's ROIs are.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sparsekits.data.datasets import Case, find_cases
from sparsekits.data.geometry import Grid
from sparsekits.data.io import Image, read_image, read_label_map
from sparsekits.data.roi import extract_roi_components
from sparsekits.data.sample import Sample, save_sample
from sparsekits.data.sparsify import kept_fraction
from sparsekits.data.stage_view import StageView, stage1_view, stage2_view
from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import CACHE_MANIFEST, CACHE_MARKERS, stage_dir
from sparsekits.plan import SSCN_TWOSTAGE, Plan, StagePlan
from sparsekits.regions import labels_to_regions


@dataclass
class PreprocessReport:
    cache: Path
    manifest: Path
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run
    failures: dict[str, str] = field(default_factory=dict)  # case id -> one-line message


def preprocess_dataset(
    dataset: str | Path,
    cache: str | Path,
    plan: Plan = SSCN_TWOSTAGE,
    stages: Iterable[int] = (1, 2),
    workers: int = 1,
) -> PreprocessReport:
    """Write the samples of every case of ``dataset`` into ``cache`` and its manifest.

    Finished cases (same image, same plan input) are skipped; a failing case is recorded (one
    line) and the others go on.
    """
    cache = Path(cache)
    stages = tuple(sorted(set(stages)))
    cases = find_cases(dataset)
    report = PreprocessReport(cache, cache / CACHE_MANIFEST)
    todo = []
    for case in cases:
        if _is_done(cache, case, stages, plan):
            report.skipped.append(case.case_id)
        else:
            todo.append(case)
    jobs = [(case, cache, stages, plan) for case in todo]
    with tqdm(total=len(jobs), desc="preprocess", unit="case") as bar:
        for case_id, error in _run(jobs, workers):
            if error is None:
                report.processed.append(case_id)
            else:
                report.failures[case_id] = error
            bar.update()
    _write_manifest(cache, Path(dataset), cases, stages, plan, report.failures)
    _print_summary(report)
    return report


def preprocess_case(case: Case, cache: Path, stages: tuple[int, ...], plan: Plan) -> dict:
    """Write ``case``'s samples for ``stages``, then its done marker; return its manifest entry."""
    image = read_image(case.image)
    if case.label is None:
        raise InputError(case.image, "no label map for this case (training needs one)")
    labels = read_label_map(case.label, like=image).array
    view1 = stage1_view(image, plan.stage(1))
    labels1 = view1.labels_of(labels, image.grid)
    entry = {"image": _path_key(case.image), "label": _path_key(case.label), "inputs": {}}
    if 1 in stages:
        sample = _make_sample(case, plan.stage(1), -1, view1, labels1, image)
        entry["stage1"] = _save(stage_dir(cache, 1) / f"{case.case_id}.npz", sample, cache)
    if 2 in stages:
        for stale in stage_dir(cache, 2).glob(f"{case.case_id}_roi*.npz"):
            stale.unlink()
        rois = extract_roi_components(labels1 > 0, plan.stage(1).spacing_mm, plan.roi)
        entry["stage2"] = []
        for k, roi in enumerate(rois):
            view2 = stage2_view(image, roi, view1.grid, plan.stage(2))
            labels2 = view2.labels_of(labels, image.grid)
            sample = _make_sample(case, plan.stage(2), k, view2, labels2, image, view1.grid)
            path = stage_dir(cache, 2) / f"{case.case_id}_roi{k}.npz"
            entry["stage2"].append(_save(path, sample, cache))
    entry["inputs"] = {str(s): stage_input(plan, s) for s in stages}
    write_json_atomic(_marker(cache, case.case_id), _merged_entry(cache, case, entry))
    return entry


def stage_input(plan: Plan, stage: int) -> dict:
    """What a stage's samples depend on: its own input, and for stage 2 also stage 1's grid and
    the ROI rule (ROIs are cut on stage 1's grid)."""
    values = {"stage": plan.stage(stage).input_dict()}
    if stage == 2:
        values["stage1"] = plan.stage(1).input_dict()
        values["roi"] = plan.input_dict()["roi"]
    return values


def _make_sample(
    case: Case,
    stage: StagePlan,
    roi_index: int,
    view: StageView,
    labels: np.ndarray,
    image: Image,
    roi_grid: Grid | None = None,
) -> Sample:
    meta = {
        "source_path": str(image.path),
        "label_path": str(case.label),
        "source_grid": image.grid.to_dict(),
        "crop_grid": view.grid.to_dict(),
        "kept_fraction": kept_fraction(view.coords, view.hu.shape),
        "stage": stage.input_dict(),
    }
    if roi_grid is not None:
        meta["roi_grid"] = roi_grid.to_dict()
    return Sample(
        case_id=case.case_id,
        stage=stage.stage,
        roi_index=roi_index,
        hu=view.hu,
        affine=view.grid.affine.copy(),
        coords=view.coords,
        features=view.features,
        labels=labels,
        regions=labels_to_regions(labels[tuple(view.coords.T)]),
        roi_mask=view.roi_mask,
        meta=meta,
    )


def _save(path: Path, sample: Sample, cache: Path) -> dict:
    save_sample(path, sample)
    return {
        "file": str(path.relative_to(cache)),
        "roi_index": sample.roi_index,
        "shape": list(sample.hu.shape),
        "kept_voxels": len(sample.coords),
        "kept_fraction": sample.meta["kept_fraction"],
        # kept voxels of each label 0-3: training finds the samples that hold a mass here
        "label_voxels": np.bincount(sample.labels[tuple(sample.coords.T)], minlength=4).tolist(),
    }


def _run(jobs: list[tuple], workers: int) -> Iterator[tuple[str, str | None]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_one, jobs)
        return
    # spawn: no fork of a parent holding big arrays or threads; workers import what they need.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_run_one, jobs)


def _run_one(job: tuple[Case, Path, tuple[int, ...], Plan]) -> tuple[str, str | None]:
    case, cache, stages, plan = job
    try:
        preprocess_case(case, cache, stages, plan)
    except InputError as error:
        return case.case_id, str(error)
    except Exception as error:  # one bad case must not stop the others; report it in one line
        message = " ".join(str(error).split())
        return case.case_id, f"{case.image}: {type(error).__name__}: {message}"
    return case.case_id, None


def _marker(cache: Path, case_id: str) -> Path:
    return cache / CACHE_MARKERS / f"{case_id}.json"


def _read_marker(cache: Path, case_id: str) -> dict | None:
    try:
        return json.loads(_marker(cache, case_id).read_text())
    except (OSError, ValueError):
        return None


def _is_done(cache: Path, case: Case, stages: tuple[int, ...], plan: Plan) -> bool:
    entry = _read_marker(cache, case.case_id)
    if entry is None or entry.get("image") != _path_key(case.image):
        return False
    inputs = entry.get("inputs", {})
    return all(inputs.get(str(s)) == stage_input(plan, s) for s in stages)


def _path_key(path: Path) -> str:
    """The absolute path, so a re-run from another working directory still finds its cases."""
    return str(Path(path).resolve())


def _merged_entry(cache: Path, case: Case, entry: dict) -> dict:
    """Keep a previous run's other stage (same image), so stages can be run one at a time."""
    previous = _read_marker(cache, case.case_id)
    if previous is None or previous.get("image") != entry["image"]:
        return entry
    merged = {**previous, **entry}
    merged["inputs"] = {**previous.get("inputs", {}), **entry["inputs"]}
    return merged


def _write_manifest(
    cache: Path,
    dataset: Path,
    cases: list[Case],
    stages: tuple[int, ...],
    plan: Plan,
    failures: dict,
) -> None:
    entries = {case.case_id: _read_marker(cache, case.case_id) for case in cases}
    manifest = {
        "dataset": str(dataset),
        "plan": plan.to_dict(),
        "requested_stages": list(stages),
        "cases": {cid: entry for cid, entry in entries.items() if entry is not None},
        "errors": failures,
    }
    write_json_atomic(cache / CACHE_MANIFEST, manifest)


def _print_summary(report: PreprocessReport) -> None:
    print(
        f"preprocess: {len(report.processed)} processed, {len(report.skipped)} already done, "
        f"{len(report.failures)} failed -> {report.manifest}",
        file=sys.stderr,
    )
    for message in report.failures.values():
        print(f"  {message}", file=sys.stderr)
