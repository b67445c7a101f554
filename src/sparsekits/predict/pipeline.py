"""Prediction of CT scans, one input or a folder of them, with any method's model folder.

read -> the method's predictor (``sparsekits.methods``; the model folder's plan says which
method, and every setting comes from that plan) -> plausibility checks
(``sparsekits.predict.plausibility``) -> the label map in each output type asked for (NIfTI
with the input's exact shape and affine; a DICOM-SEG of a DICOM series on its frames), volume
report (with the checks' warnings and what ran: model, fingerprint, folds, TTA, device,
date), optional ROI mask, probabilities and overlays, each written atomically; then each
warning printed, one line each.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from sparsekits.errors import InputError, one_line
from sparsekits.fileio import (
    all_or_none,
    atomic_path,
    check_folder_creatable,
    remove_stale_temporaries,
)
from sparsekits.layout import (
    DICOM_SEG,
    NIFTI,
    NIFTI_OUT,
    OUTPUT_SUFFIXES,
    PROBABILITIES_SIDECAR,
    REPORT_SUFFIX,
    ROI_SIDECAR,
    output_type_of,
    sidecar,
)
from sparsekits.plan import check_same_input
from sparsekits.predict.result import CasePrediction, Predictor
from sparsekits.timing import timed

if TYPE_CHECKING:
    from pydicom import Dataset

    from sparsekits.data.datasets import Case
    from sparsekits.data.io import Image
    from sparsekits.predict.report import Measures
    from sparsekits.training_volumes import Ranges


@dataclass
class PredictSummary:
    outputs: dict[str, Path] = field(default_factory=dict)  # input -> label map written
    failures: dict[str, str] = field(default_factory=dict)  # input -> one-line problem
    # input -> one-line warnings, e.g. "no kidney found"
    warnings: dict[str, list[str]] = field(default_factory=dict)
    # inputs whose outputs were complete (batch mode, not --overwrite): left as they were
    skipped: list[str] = field(default_factory=list)


def load_predictor(
    model_dir: str | Path,
    device: str = "cpu",
    folds: str | Sequence[int] = "all",
    tta: bool = False,
    method: str | None = None,
) -> Predictor:
    """The predictor of the method a model folder holds (its plan.json says which), loaded once
    for every input of a run; ``method``, when given, must be that method. ``model_dir`` may
    name an installed model (``models.package.resolve_model``)."""
    from sparsekits.device import check_device
    from sparsekits.methods import get_method
    from sparsekits.models.bundle import read_plan
    from sparsekits.models.package import resolve_model

    device = check_device(device)  # auto: the device it picks, which the reports record
    model_dir = resolve_model(model_dir)
    plan = read_plan(model_dir)
    if method is not None and method != plan.method:
        raise InputError(model_dir, f"holds a {plan.method} model, not {method}")
    return get_method(plan.method).predictor(Path(model_dir), plan, device, folds, tta)


def predict(
    inputs: str | Path,
    output: str | Path,
    model_dir: str | Path,
    device: str = "cpu",
    folds: str | Sequence[int] = "all",
    tta: bool = False,
    save_probabilities: bool = False,
    overlay: bool = False,
    plan=None,
    output_types: Sequence[str] | None = None,
    part: Part | None = None,
    overwrite: bool = False,
) -> PredictSummary:
    """Segment a NIfTI, NRRD or MetaImage file, a DICOM series folder, or a folder of them (batch
    mode).

    A single input raises InputError if it cannot be read; in batch mode a bad input is reported
    in ``summary.failures`` and the others go on. Each output is a label map with a volumes
    report ``NAME.json`` beside it (plus ``NAME_roi.nii.gz`` and ``NAME_probabilities.npz`` with
    ``save_probabilities``, and overlay PNGs with ``overlay``); ``output_types`` (layout's
    OUTPUT_SUFFIXES) choose the label maps: ``NAME.nii.gz``, ``NAME.nrrd``, ``NAME.mha``,
    ``NAME.dcm`` (a DICOM-SEG, for a DICOM series input only, not written when no class is
    found); by default the format of a single output's file name, else of the input (NIfTI for
    a DICOM series). Every setting comes from the
    model folder's plan; a ``plan`` given is only checked against it (InputError if its input
    differs). Refused before any work: an output folder that cannot exist (a file stands in its
    path), a device this machine does not have.

    Batch mode: ``part`` (``Part(count, index)``) keeps this worker's share of the sorted cases;
    a case whose outputs are complete (``is_complete``) is skipped unless ``overwrite``, so a
    killed batch resumes where it stopped.
    """
    inputs, output = Path(inputs), Path(output)
    cases, batch = discover_inputs(inputs)
    if batch:
        cases = (part or Part()).share(cases)
    if not cases:  # this part's share of a folder of fewer cases than parts
        print(f"sparsekits predict: {_batch_outcome(part, 0, 0, 0)}", file=sys.stderr)
        return PredictSummary()
    folder = output_path(cases[0], output, batch).parent
    check_folder_creatable(folder)
    remove_stale_temporaries(folder)
    predictor = load_predictor(model_dir, device=device, folds=folds, tta=tta)
    if plan is not None:
        check_same_input(plan, predictor.plan, predictor.model_dir, "this model")
    summary = PredictSummary()
    run = _what_runs(predictor)
    for case in tqdm(cases, desc="predict", unit="scan", disable=len(cases) < 2):
        destination = output_path(case, output, batch)
        types = output_types or (_default_output_type(case, output, batch),)
        if batch and not overwrite and is_complete(destination, types, run):
            summary.skipped.append(str(case.image))
            continue
        try:
            predict_file(
                predictor, case.image, destination, save_probabilities, overlay, summary, types
            )
        except Exception as error:  # one bad input must not stop a batch
            if not batch:
                raise
            message = one_line(error, case.image)
            summary.failures[str(case.image)] = message
            tqdm.write(f"sparsekits: error: {message}", file=sys.stderr)
    if batch:
        outcome = _batch_outcome(part, len(cases), len(summary.failures), len(summary.skipped))
        print(f"sparsekits predict: {outcome}", file=sys.stderr)
    return summary


@dataclass(frozen=True)
class Part:
    """Worker ``index`` of ``count`` (``--num-parts``, ``--part-id``): every count-th of the
    sorted cases from the index-th on, so the parts are disjoint, cover every case, and each
    worker finds its share alone (no coordination between machines)."""

    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(
                "--part-id", f"{self.index} with --num-parts {self.count}: need 0 <= K < N"
            )

    def share(self, cases: Sequence[Case]) -> list[Case]:
        return list(cases[self.index :: self.count])


def _batch_outcome(part: Part | None, total: int, failed: int, skipped: int) -> str:
    """The closing line of a batch: how many inputs were written, failed and skipped."""
    written = total - skipped
    outcome = f"{failed} of {total} inputs failed" if failed else f"{written} inputs written"
    if skipped:
        outcome += f", {skipped} skipped (outputs complete; --overwrite redoes them)"
    if part is not None and part.count > 1:
        outcome = f"part {part.index} of {part.count}: {outcome}"
    return outcome


def _what_runs(predictor: Predictor) -> dict:
    """What decides a prediction's labels, as its report records it (``_write_report``): the
    networks (their fingerprint) and TTA."""
    return {"fingerprint": _fingerprint(predictor), "tta": predictor.tta}


def is_complete(destination: Path, output_types: Sequence[str], run: dict) -> bool:
    """Whether a case's outputs are all there and made as this run (``_what_runs``) would
    make them: its report (written last, see ``predict_file``) from the same networks and TTA,
    and each label map asked for but a DICOM-SEG that its report says was not written (no
    class found). Each file is written atomically, so one that is there is whole. Another
    model's outputs (a retrained one in the same folder) are redone, not kept."""
    try:
        report = json.loads(sidecar(destination, REPORT_SUFFIX).read_text())
        made = {"fingerprint": report["model"]["fingerprint"], "tta": report["tta"]}
        warnings = report["warnings"]
    except (OSError, ValueError, KeyError, TypeError):  # missing, or not a report of this kind
        return False
    return made == run and all(
        _label_map_path(destination, kind).is_file() or (kind == DICOM_SEG and _NO_SEG in warnings)
        for kind in output_types
    )


def predict_file(
    predictor: Predictor,
    source: Path,
    destination: Path,
    save_probabilities: bool = False,
    overlay: bool = False,
    summary: PredictSummary | None = None,
    output_types: Sequence[str] = (NIFTI,),
) -> CasePrediction:
    """Predict one input, check it, write its label maps (``output_types``), report and optional
    extras, then print its warnings. An input that cannot give an output type asked for (a
    DICOM-SEG of a NIfTI file) is refused before it is predicted."""
    from sparsekits.data.body import find_body
    from sparsekits.data.io import read_image, thick_slice_warning
    from sparsekits.predict.plausibility import case_warnings, tta_warnings
    from sparsekits.predict.report import measure_labels
    from sparsekits.training_volumes import read_ranges

    start = time.perf_counter()
    image = read_image(source)
    sources = _seg_sources(image) if DICOM_SEG in output_types else None
    read_s = time.perf_counter() - start
    case = predictor.predict_image(image, save_probabilities)
    case.timings = {"read": read_s, **case.timings}
    with timed(case.timings, "checks"):
        body = find_body(image.array, image.grid)
        measures = measure_labels(case.labels, case.grid.affine, body)
        ranges = read_ranges(predictor.model_dir)
        found = [
            thick_slice_warning(image.grid),
            *tta_warnings(predictor.plan, predictor.tta),
            None if case.rois else _no_kidney(output_types),
            *case_warnings(measures, body, case, predictor.plan, ranges),
            None if sources is None or case.labels.any() else _NO_SEG,
        ]
        warnings = [warning for warning in found if warning]
    with all_or_none() as written:  # a case's outputs are all there, or none is
        with timed(case.timings, "write"):
            _write_label_maps(written, destination, case, image, output_types, sources, predictor)
            if save_probabilities:
                written += write_probabilities(destination, case)
        if overlay:
            from sparsekits.predict.overlay import write_overlays

            prefix = sidecar(destination, "")
            written += write_overlays(image.array, case.labels, case.grid.affine, prefix, body=body)
        # The report last: a batch rerun takes its presence for a complete case (is_complete).
        report = sidecar(destination, REPORT_SUFFIX)
        written.append(_write_report(source, report, case, predictor, measures, ranges, warnings))
    for warning in warnings:
        _warn(source, warning, summary)
    named = {report, *(_label_map_path(destination, kind) for kind in output_types)}
    tqdm.write(_closing_line(source, written, named, measures), file=sys.stderr)
    if summary is not None:
        summary.outputs[str(source)] = _label_map_path(destination, output_types[0])
    return case


def _closing_line(
    source: Path, written: Sequence[Path], named: set[Path], measures: Measures
) -> str:
    """What a case's prediction wrote (the files of ``named`` it wrote: label maps and report;
    the others counted) and the kidney (label 1), tumour and cyst volumes its report holds."""
    from sparsekits.predict.report import VOLUME_DECIMALS

    main = [path for path in written if path in named]
    extra = len(written) - len(main)
    files = ", ".join(map(str, main)) + (f" and {extra} more files" if extra else "")
    total = measures.volumes_ml["total"]
    volumes = ", ".join(
        f"{name} {total[key]:.{VOLUME_DECIMALS}f} mL"
        for name, key in (("kidney", "kidney"), ("tumour", "tumor"), ("cyst", "cyst"))
    )
    return f"sparsekits predict: {source} -> {files}; {volumes}"


# Why a case has no DICOM-SEG: a SEG holds at least one segment.
_NO_SEG = "no kidney, tumour or cyst found: no DICOM-SEG written (a SEG needs a segment)"


def _no_kidney(output_types: Sequence[str]) -> str:
    wrote = "; wrote an empty label map" if set(output_types) - {DICOM_SEG} else ""
    return f"no kidney found{wrote}"


def _seg_sources(image: Image) -> list[Dataset]:
    from sparsekits.data.dicom_seg import source_datasets

    return source_datasets(image)


def _write_label_maps(
    written: list[Path],
    destination: Path,
    case: CasePrediction,
    image: Image,
    output_types: Sequence[str],
    sources: list[Dataset] | None,
    predictor: Predictor,
) -> None:
    """Write the label map in each of ``output_types`` (a DICOM-SEG only when a class was
    found), each path into ``written`` as soon as it is there (all_or_none removes them)."""
    from sparsekits.data.io import write_label_map

    for kind in output_types:
        path = _label_map_path(destination, kind)
        if kind == DICOM_SEG:
            from sparsekits.data.dicom_seg import write_dicom_seg

            seg = write_dicom_seg(path, case.labels, image, sources, _algorithm(predictor))
            written += [seg] if seg else []
        else:
            written.append(write_label_map(path, case.labels, case.grid))


def _label_map_path(destination: Path, kind: str) -> Path:
    """Where the ``kind`` label map of a case is written: ``destination`` when it is of that
    type (``-o seg.nii`` is kept as given), else NAME<the type's suffix> beside it (a detached
    header, ``.nhdr``, is never written: its data file would escape the atomic rename)."""
    if kind == NIFTI and output_type_of(destination) == NIFTI:
        return destination
    return sidecar(destination, OUTPUT_SUFFIXES[kind])


def _algorithm(predictor: Predictor):
    """What a DICOM-SEG records made it."""
    import sparsekits
    from sparsekits.data.dicom_seg import Algorithm

    return Algorithm(sparsekits.__version__, predictor.plan.method, _fingerprint(predictor))


def _fingerprint(predictor: Predictor) -> str:
    """The networks a predictor runs, as reports and DICOM-SEGs name them."""
    from sparsekits.models.bundle import model_fingerprint

    return model_fingerprint(predictor.model_dir, predictor.plan, predictor.folds)


def _warn(source: Path, problem: str, summary: PredictSummary | None) -> None:
    message = f"{source}: {problem}"
    tqdm.write(f"sparsekits: warning: {message}", file=sys.stderr)
    if summary is not None:
        summary.warnings.setdefault(str(source), []).append(message)


def write_probabilities(destination: Path, case: CasePrediction) -> list[Path]:
    """NAME_roi.nii.gz (the ROIs on the input grid) and NAME_probabilities.npz (the fine
    stage's probabilities per ROI, float16); the paths written."""
    from sparsekits.data.io import write_label_map

    mask = write_label_map(sidecar(destination, ROI_SIDECAR + NIFTI_OUT), case.roi_mask, case.grid)
    arrays = {}
    for roi in case.rois:
        arrays[f"roi{roi.index}_coords"] = roi.coords
        arrays[f"roi{roi.index}_probabilities"] = roi.probabilities.astype(np.float16)
        arrays[f"roi{roi.index}_affine"] = roi.crop_grid.affine
        arrays[f"roi{roi.index}_shape"] = np.asarray(roi.crop_grid.shape)
    probabilities = sidecar(destination, PROBABILITIES_SIDECAR)
    with atomic_path(probabilities) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return [mask, probabilities]


def _write_report(
    source: Path,
    path: Path,
    case: CasePrediction,
    predictor: Predictor,
    measures: Measures,
    ranges: Ranges | None,
    warnings: list[str],
) -> Path:
    from sparsekits.predict.report import volume_report, write_report

    rois = [
        {
            "index": roi.index,
            "voxel_box": roi.voxel_box,
            "world_box_mm": roi.world_box,
            "fine_voxels": roi.n_voxels,
            "edge_voxels": roi.edge_voxels,
            "timings_s": roi.timings,
        }
        for roi in case.rois
    ]
    plan, model_dir = predictor.plan, predictor.model_dir
    extra = {
        "input": source,
        "first_stage_voxels": case.first_stage_voxels,
        "roi_candidates": case.roi_candidates,
        "method": plan.method,
        "plan": plan.to_dict(),
        "model": {
            "path": model_dir.resolve(),
            "fingerprint": _fingerprint(predictor),
            "folds": predictor.folds,
            "training_volumes_ml": ranges,
        },
        "tta": predictor.tta,
        "device": predictor.device,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "warnings": warnings,
    }
    return write_report(path, volume_report(measures, rois, case.timings, extra))


def discover_inputs(path: Path) -> tuple[list[Case], bool]:
    """The scans under ``path`` (sparsekits.data.datasets layouts) and whether it is a batch."""
    from sparsekits.data.datasets import find_cases

    cases = find_cases(path)
    single = path.is_file() or (len(cases) == 1 and cases[0].image == path)
    return cases, not single


def output_path(case: Case, output: Path, batch: bool) -> Path:
    """``output`` itself for a single input named like an output file (``NAME.nii.gz``,
    ``NAME.nrrd``, ...: each output type's file is ``NAME<its suffix>``), else
    ``output/NAME.nii.gz``."""
    if not batch and _names_a_file(output):
        return output
    return output / f"{case.case_id}{NIFTI_OUT}"


def _names_a_file(output: Path) -> bool:
    return output_type_of(output) is not None


def _default_output_type(case: Case, output: Path, batch: bool) -> str:
    """The label map's type when none is asked for: that of a single output's file name, else
    the input's format (NIfTI for a DICOM series)."""
    if not batch and _names_a_file(output):
        return output_type_of(output)
    return output_type_of(case.image) or NIFTI
