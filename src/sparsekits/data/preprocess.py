"""The preprocessing cache: per case, the stage samples training reads (ARCHITECTURE.md).

```
CACHE/manifest.json               the plan, cases, per-case files, kept fractions, ground-truth
                                  volumes (sparsekits.training_volumes), errors
CACHE/<role>/<name>.npz           the samples of each stage (sscn-twostage: roi/<case>.npz, the
                                  whole scan; fine/<case>_roi<k>.npz, one per kidney ROI)
CACHE/cases/<case>.json           per-case done marker (its manifest entry), written last
```

The plan's method makes each case's samples (``Method.case_samples``) with the views its
predictor uses. Every file is written atomically, and a case's marker only after its samples,
so a killed run leaves no half-written sample and a re-run skips exactly the finished cases
(and redoes those made with another plan's input).
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
from sparsekits.data.io import read_image, read_label_map
from sparsekits.data.sample import Sample, save_sample
from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import (
    CACHE_MANIFEST,
    CACHE_MARKERS,
    LEGACY_STAGE_PREFIX,
    SAMPLE_SUFFIX,
    stage_dir,
)
from sparsekits.plan import Plan
from sparsekits.training_volumes import CASE_KEY, ground_truth_volumes


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
    plan: Plan | None = None,
    roles: Iterable[str | int] | None = None,
    workers: int = 1,
) -> PreprocessReport:
    """Write the samples of every case of ``dataset`` into ``cache`` and its manifest, for the
    stages ``roles`` of ``plan`` (all of them by default).

    Finished cases (same image, same plan input) are skipped; a failing case is recorded (one
    line) and the others go on.
    """
    from sparsekits.plan import default_plan

    cache = Path(cache)
    plan = plan or default_plan()
    roles = tuple(plan.role(role) for role in (roles or plan.roles))
    cases = find_cases(dataset)
    report = PreprocessReport(cache, cache / CACHE_MANIFEST)
    todo = []
    for case in cases:
        if _is_done(cache, case, roles, plan):
            report.skipped.append(case.case_id)
        else:
            todo.append(case)
    jobs = [(case, cache, roles, plan) for case in todo]
    with tqdm(total=len(jobs), desc="preprocess", unit="case") as bar:
        for case_id, error in _run(jobs, workers):
            if error is None:
                report.processed.append(case_id)
            else:
                report.failures[case_id] = error
            bar.update()
    _write_manifest(cache, Path(dataset), cases, roles, plan, report.failures)
    _print_summary(report)
    return report


def preprocess_case(case: Case, cache: Path, roles: tuple[str, ...], plan: Plan) -> dict:
    """Write ``case``'s samples for ``roles``, then its done marker; return its manifest entry."""
    from sparsekits.methods import get_method

    image = read_image(case.image)
    if case.label is None:
        raise InputError(case.image, "no label map for this case (training needs one)")
    labels = read_label_map(case.label, like=image).array
    method = get_method(plan.method)
    entry = {
        "image": _path_key(case.image),
        "label": _path_key(case.label),
        "inputs": {},
        CASE_KEY: ground_truth_volumes(image, labels),  # what its models will have seen
    }
    previous = _read_marker(cache, case.case_id) or {}
    for role in roles:
        for stale in stage_items(previous, role):  # e.g. ROIs that the new plan no longer finds
            (cache / stale["file"]).unlink(missing_ok=True)
        entry[role] = []
    for role, name, sample in method.case_samples(case, image, labels, plan, roles):
        path = stage_dir(cache, role) / f"{name}{SAMPLE_SUFFIX}"
        entry[role].append(_save(path, sample, cache))
    entry["inputs"] = {role: method.stage_input(plan, role) for role in roles}
    write_json_atomic(_marker(cache, case.case_id), _merged_entry(cache, case, entry))
    return entry


def _save(path: Path, sample: Sample, cache: Path) -> dict:
    save_sample(path, sample)
    return {
        "file": str(path.relative_to(cache)),
        "roi_index": sample.roi_index,
        "shape": list(sample.hu.shape),
        "kept_voxels": sample.kept_voxels,
        "kept_fraction": sample.meta["kept_fraction"],
        # kept voxels of each label 0-3: training finds the samples that hold a mass here
        "label_voxels": np.bincount(sample.kept_labels().ravel(), minlength=4).tolist(),
    }


def _run(jobs: list[tuple], workers: int) -> Iterator[tuple[str, str | None]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_one, jobs)
        return
    # spawn: no fork of a parent holding big arrays or threads; workers import what they need.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_run_one, jobs)


def _run_one(job: tuple[Case, Path, tuple[str, ...], Plan]) -> tuple[str, str | None]:
    case, cache, roles, plan = job
    try:
        preprocess_case(case, cache, roles, plan)
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


def _is_done(cache: Path, case: Case, roles: tuple[str, ...], plan: Plan) -> bool:
    from sparsekits.methods import get_method

    entry = _read_marker(cache, case.case_id)
    if entry is None or entry.get("image") != _path_key(case.image):
        return False
    inputs = entry.get("inputs", {})
    method = get_method(plan.method)
    return all(inputs.get(role) == method.stage_input(plan, role) for role in roles)


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
    roles: tuple[str, ...],
    plan: Plan,
    failures: dict,
) -> None:
    entries = {case.case_id: _read_marker(cache, case.case_id) for case in cases}
    manifest = {
        "dataset": str(dataset),
        "plan": plan.to_dict(),
        "requested_stages": list(roles),
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


def stage_items(entry: dict, role: str, position: int | None = None) -> list[dict]:
    """A manifest entry's sample items of stage ``role`` (caches written before stages had
    roles keyed them ``stage<position>``)."""
    found = entry.get(role) or (entry.get(f"{LEGACY_STAGE_PREFIX}{position}") if position else [])
    found = found or []
    return [found] if isinstance(found, dict) else found
