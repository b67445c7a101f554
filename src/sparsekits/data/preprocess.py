"""The preprocessing cache: per case, the stage samples training reads (ARCHITECTURE.md).

```
CACHE/manifest.json               stage configs, cases, per-case files, kept fractions, errors
CACHE/stage1/<case>.npz           the whole scan on the 1.99 mm grid, cropped to the body
CACHE/stage2/<case>_roi<k>.npz    one sample per ground-truth kidney ROI component (0 = largest)
CACHE/cases/<case>.json           per-case done marker (its manifest entry), written last
```

Every file is written atomically, and a case's marker only after its samples, so a killed run
leaves no half-written sample and a re-run skips exactly the finished cases. Stage-2 crops come
from the ground-truth kidney+masses foreground on the stage-1 grid, dilated as stage 1's ROIs are.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sparsekits.config import ROI, STAGE1, STAGE2, STAGES, StageConfig
from sparsekits.data.datasets import Case, find_cases
from sparsekits.data.geometry import Grid, resample, stage_grid_for
from sparsekits.data.io import Image, read_image, read_label_map
from sparsekits.data.roi import extract_roi_components, roi_crop_grid
from sparsekits.data.sample import Sample, save_sample
from sparsekits.data.sparsify import body_box, box_slices, kept_fraction, sparsify
from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.regions import labels_to_regions

MANIFEST = "manifest.json"
MARKERS = "cases"
# HU given to points outside the scan when resampling (air: below every stage's window).
OUTSIDE_HU = -1024.0


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
    stages: Iterable[int] = (1, 2),
    workers: int = 1,
) -> PreprocessReport:
    """Write the samples of every case of ``dataset`` into ``cache`` and its manifest.

    Finished cases are skipped; a failing case is recorded (one line) and the others go on.
    """
    cache = Path(cache)
    stages = tuple(sorted(set(stages)))
    cases = find_cases(dataset)
    report = PreprocessReport(cache, cache / MANIFEST)
    todo = []
    for case in cases:
        if _is_done(cache, case, stages):
            report.skipped.append(case.case_id)
        else:
            todo.append(case)
    jobs = [(case, cache, stages) for case in todo]
    with tqdm(total=len(jobs), desc="preprocess", unit="case") as bar:
        for case_id, error in _run(jobs, workers):
            if error is None:
                report.processed.append(case_id)
            else:
                report.failures[case_id] = error
            bar.update()
    _write_manifest(cache, Path(dataset), cases, stages, report.failures)
    _print_summary(report)
    return report


def preprocess_case(case: Case, cache: Path, stages: tuple[int, ...]) -> dict:
    """Write ``case``'s samples for ``stages``, then its done marker; return its manifest entry."""
    image = read_image(case.image)
    if case.label is None:
        raise InputError(case.image, "no label map for this case (training needs one)")
    labels = read_label_map(case.label, like=image)
    hu1, labels1, grid1 = _stage1_view(image, labels.array)
    entry = {"image": _path_key(case.image), "label": _path_key(case.label), "stage_configs": {}}
    if 1 in stages:
        sample = _make_sample(case, STAGE1, -1, hu1, labels1, grid1, image)
        entry["stage1"] = _save(cache / "stage1" / f"{case.case_id}.npz", sample, cache)
    if 2 in stages:
        for stale in (cache / "stage2").glob(f"{case.case_id}_roi*.npz"):
            stale.unlink()
        entry["stage2"] = [
            _save(cache / "stage2" / f"{case.case_id}_roi{k}.npz", sample, cache)
            for k, sample in enumerate(_stage2_samples(case, image, labels.array, labels1, grid1))
        ]
    entry["stage_configs"] = {str(s): STAGES[s].to_dict() for s in stages}
    write_json_atomic(_marker(cache, case.case_id), _merged_entry(cache, case, entry))
    return entry


def _stage1_view(image: Image, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, Grid]:
    """HU (int16) and labels on the stage-1 grid, cropped to the body."""
    grid = stage_grid_for(image.grid, STAGE1.spacing_mm)
    hu = _resample_hu(image, grid)
    lo, hi = body_box(hu)
    crop = box_slices(lo, hi)
    labels1 = resample(labels, image.grid, grid, order=0)
    return hu[crop], labels1[crop], grid.crop(lo, hi)


def _stage2_samples(
    case: Case, image: Image, labels: np.ndarray, labels1: np.ndarray, grid1: Grid
) -> Iterator[Sample]:
    rois = extract_roi_components(labels1 > 0, STAGE1.spacing_mm, ROI)
    for k, roi in enumerate(rois):
        crop = roi_crop_grid(roi, grid1, STAGE2)
        hu = _resample_hu(image, crop)
        labels2 = resample(labels, image.grid, crop, order=0)
        roi2 = resample(roi, grid1, crop, order=0, cval=False)
        yield _make_sample(case, STAGE2, k, hu, labels2, crop, image, roi_mask=roi2, roi_grid=grid1)


def _resample_hu(image: Image, grid: Grid) -> np.ndarray:
    hu = resample(image.array, image.grid, grid, order=1, cval=OUTSIDE_HU)
    return np.rint(hu).astype(np.int16)


def _make_sample(
    case: Case,
    config: StageConfig,
    roi_index: int,
    hu: np.ndarray,
    labels: np.ndarray,
    grid: Grid,
    image: Image,
    roi_mask: np.ndarray | None = None,
    roi_grid: Grid | None = None,
) -> Sample:
    coords, features = sparsify(hu, config, mask=roi_mask)
    meta = {
        "source_path": str(image.path),
        "label_path": str(case.label),
        "source_grid": image.grid.to_dict(),
        "crop_grid": grid.to_dict(),
        "kept_fraction": kept_fraction(coords, hu.shape),
        "stage_config": config.to_dict(),
    }
    if roi_grid is not None:
        meta["roi_grid"] = roi_grid.to_dict()
        meta["roi_config"] = asdict(ROI)
    return Sample(
        case_id=case.case_id,
        stage=config.stage,
        roi_index=roi_index,
        hu=hu,
        affine=grid.affine.copy(),
        coords=coords,
        features=features,
        labels=labels,
        regions=labels_to_regions(labels[tuple(coords.T)]),
        roi_mask=roi_mask,
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


def _run_one(job: tuple[Case, Path, tuple[int, ...]]) -> tuple[str, str | None]:
    case, cache, stages = job
    try:
        preprocess_case(case, cache, stages)
    except InputError as error:
        return case.case_id, str(error)
    except Exception as error:  # one bad case must not stop the others; report it in one line
        message = " ".join(str(error).split())
        return case.case_id, f"{case.image}: {type(error).__name__}: {message}"
    return case.case_id, None


def _marker(cache: Path, case_id: str) -> Path:
    return cache / MARKERS / f"{case_id}.json"


def _read_marker(cache: Path, case_id: str) -> dict | None:
    try:
        return json.loads(_marker(cache, case_id).read_text())
    except (OSError, ValueError):
        return None


def _is_done(cache: Path, case: Case, stages: tuple[int, ...]) -> bool:
    entry = _read_marker(cache, case.case_id)
    if entry is None or entry.get("image") != _path_key(case.image):
        return False
    configs = entry.get("stage_configs", {})
    return all(
        str(s) in configs and StageConfig.from_dict(configs[str(s)]) == STAGES[s] for s in stages
    )


def _path_key(path: Path) -> str:
    """The absolute path, so a re-run from another working directory still finds its cases."""
    return str(Path(path).resolve())


def _merged_entry(cache: Path, case: Case, entry: dict) -> dict:
    """Keep a previous run's other stage (same image), so stages can be run one at a time."""
    previous = _read_marker(cache, case.case_id)
    if previous is None or previous.get("image") != entry["image"]:
        return entry
    merged = {**previous, **entry}
    merged["stage_configs"] = {**previous.get("stage_configs", {}), **entry["stage_configs"]}
    return merged


def _write_manifest(
    cache: Path, dataset: Path, cases: list[Case], stages: tuple[int, ...], failures: dict
) -> None:
    entries = {case.case_id: _read_marker(cache, case.case_id) for case in cases}
    manifest = {
        "dataset": str(dataset),
        "stages": {str(s): STAGES[s].to_dict() for s in (1, 2)},
        "roi": asdict(ROI),
        "requested_stages": list(stages),
        "cases": {cid: entry for cid, entry in entries.items() if entry is not None},
        "errors": failures,
    }
    write_json_atomic(cache / MANIFEST, manifest)


def _print_summary(report: PreprocessReport) -> None:
    print(
        f"preprocess: {len(report.processed)} processed, {len(report.skipped)} already done, "
        f"{len(report.failures)} failed -> {report.manifest}",
        file=sys.stderr,
    )
    for message in report.failures.values():
        print(f"  {message}", file=sys.stderr)
