"""KiTS23 Dice and Surface Dice, computed as the official scorer does, and stage-1 ROI recall.

The official scorer is ``kits23/evaluation/metrics.py`` of github.com/neheller/kits23 (with
``kits23/configuration/labels.py`` and ``kits23/evaluation/dice.py``). This module reimplements
its behaviour, quirks included:

- HECs are built by *exact* label membership: kidney_and_mass = {1, 2, 3}, mass = {2, 3},
  tumor = {2} (``sparsekits.regions.REGION_LABELS``). Values outside 0-3 belong to no HEC, i.e.
  they count as background (unlike ``labels > 0``): so ``evaluate_case`` scores them. Files are
  stricter: ``evaluate_folders`` refuses a prediction or ground truth holding values outside
  0-3 (an organ map is not a KiTS23 label map, and would be scored silently).
- Per case and HEC: both masks empty -> Dice = SD = 1; exactly one empty -> 0 and 0; otherwise
  Dice = 2|P & G| / (|P| + |G|) and Surface Dice from DeepMind's ``surface_distance``:
  ``compute_surface_dice_at_tolerance(compute_surface_distances(gt, pred, spacing), tol)`` with
  the tolerances of ``HEC_SD_TOLERANCES_MM``.
- Files are read the SimpleITK way: the array axes are reversed relative to nibabel's (i, j, k)
  (ITK's ``GetArrayFromImage`` gives (k, j, i)) and the spacing is the header's pixdim, reversed
  to match. The spacing is pixdim (in mm; ITK scales metre/micron units), *not* the norms of the
  affine's columns, and it is the *prediction's* spacing that the scorer uses.
- The scorer evaluates every prediction file in the prediction folder; a ground-truth case
  without a prediction is not evaluated (and does not lower the mean). A prediction without a
  ground truth is an error. This module does the same and warns about unpredicted cases.
- Grids: the scorer itself only warns about spacing differences, but the official submission
  check (``kits23/check_submission_folder.py``) rejects a shape mismatch or an affine whose
  summed absolute difference exceeds 1e-3; this module raises ``InputError`` on either.
- The mean row is the plain mean over cases of each metric column; the ranking's two figures are
  the mean Dice and the mean SD over cases and HECs.

Beyond the official scorer: ``--roi`` adds each case's stage-1 ROI recall (``roi_recall``) of
kidney with masses, of the kidney alone and of the masses alone (``ROI_RECALL_COLUMNS``), read
from ROI_DIR/NAME.nii.gz or from the ``NAME_roi.nii.gz`` that ``predict --save-probabilities``
writes beside its prediction (such sidecars in PRED_DIR are not predictions and are skipped), so
``sparsekits evaluate OUT GT --roi OUT`` works on a prediction folder as written. Every row also
holds lesion-wise detection counts (``LESION_COLUMNS``: tumours and cysts found, missed and
false; rule in ``sparsekits.evaluate.lesions``), after the official columns and before
ROI_recall. The mean row holds the *totals* of these counts over cases, not their means.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances
from tqdm import tqdm

from sparsekits.data.io import check_label_values, read_label_map
from sparsekits.errors import InputError
from sparsekits.evaluate.lesions import LESION_CLASSES, LESION_OUTCOMES, lesion_matches, nonzero_box
from sparsekits.fileio import write_text_atomic
from sparsekits.layout import (
    IMAGE_SUFFIXES,
    KITS_LABEL,
    NIFTI_OUT,
    NIFTI_SUFFIXES,
    ROI_SIDECAR,
    has_suffix,
    image_stem,
)
from sparsekits.regions import REGION_LABELS, REGION_NAMES

# kits23/configuration/labels.py (determined by kits21/evaluation/compute_tolerances.py).
HEC_SD_TOLERANCES_MM = {
    "kidney_and_mass": 1.0330772532390826,
    "mass": 1.1328796488598762,
    "tumor": 1.1498198361434828,
}
HEC_LABELS = dict(zip(REGION_NAMES, REGION_LABELS, strict=True))
# Column names of the official evaluation.csv, per HEC.
_COLUMN_NAMES = {"kidney_and_mass": "kidney", "mass": "masses", "tumor": "tumor"}
DICE_COLUMNS = tuple(f"Dice_{_COLUMN_NAMES[hec]}" for hec in REGION_NAMES)
SD_COLUMNS = tuple(f"SD_{_COLUMN_NAMES[hec]}" for hec in REGION_NAMES)
METRIC_COLUMNS = DICE_COLUMNS + SD_COLUMNS
# Lesion detection counts, e.g. tumours_found; integers, summed (not averaged) in the mean row.
_LESION_COLUMN = {
    (lesion, outcome): f"{lesion}_{outcome}"
    for lesion in LESION_CLASSES
    for outcome in LESION_OUTCOMES
}
LESION_COLUMNS = tuple(_LESION_COLUMN.values())
ROI_RECALL_COLUMN = "ROI_recall"
# The share of each region's true voxels inside the ROIs: kidney with masses, kidney, masses.
ROI_RECALL_LABELS = {
    ROI_RECALL_COLUMN: REGION_LABELS[0],
    f"{ROI_RECALL_COLUMN}_kidney": (1,),
    f"{ROI_RECALL_COLUMN}_masses": REGION_LABELS[1],
}
ROI_RECALL_COLUMNS = tuple(ROI_RECALL_LABELS)
# Affine tolerance of the official submission check: summed absolute difference.
AFFINE_TOLERANCE = 1e-3
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def hec_metrics(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float]:
    """(Dice, Surface Dice) of two boolean masks, with the KiTS23 empty-mask rules."""
    pred_count = int(np.count_nonzero(pred_mask))
    gt_count = int(np.count_nonzero(gt_mask))
    if pred_count == 0 and gt_count == 0:
        return 1.0, 1.0
    if pred_count == 0 or gt_count == 0:
        return 0.0, 0.0
    dice = 2 * int(np.count_nonzero(pred_mask & gt_mask)) / (pred_count + gt_count)
    with warnings.catch_warnings():
        # surface_distance imports from scipy.ndimage's deprecated namespaces: not our concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = compute_surface_distances(gt_mask, pred_mask, tuple(map(float, spacing)))
    return dice, float(compute_surface_dice_at_tolerance(distances, tolerance_mm))


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice and Surface Dice of the three HECs: {Dice_kidney, ..., SD_tumor}.

    ``pred`` and ``gt`` are label maps on the same grid; ``spacing`` is the voxel size in mm
    along their axes, in the same order.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if gt.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"expected 3D maps and 3 spacings, got {gt.shape} and {tuple(spacing)}")
    # surface_distance crops each mask pair to its own bounding box plus zero padding, so cropping
    # beforehand to a box that holds every HEC voxel changes no result; it only saves building
    # full-size masks. Nonzero is a cheap superset of the HEC labels.
    box = nonzero_box(pred, gt)
    pred, gt = pred[box], gt[box]
    row = {}
    for hec, dice_column, sd_column in zip(REGION_NAMES, DICE_COLUMNS, SD_COLUMNS, strict=True):
        labels = HEC_LABELS[hec]
        row[dice_column], row[sd_column] = hec_metrics(
            np.isin(pred, labels), np.isin(gt, labels), spacing, HEC_SD_TOLERANCES_MM[hec]
        )
    return {column: row[column] for column in METRIC_COLUMNS}


def roi_recall(
    roi_mask: np.ndarray, gt_labels: np.ndarray, labels: Sequence[int] = REGION_LABELS[0]
) -> float:
    """Fraction of ground-truth voxels of ``labels`` (default kidney+mass, 1-3) inside the ROI
    mask (nonzero).

    1.0 when the ground truth has no such voxel: nothing was there to miss.
    """
    if roi_mask.shape != gt_labels.shape:
        raise ValueError(f"ROI mask shape {roi_mask.shape} differs from labels {gt_labels.shape}")
    target = np.isin(gt_labels, labels)
    total = int(np.count_nonzero(target))
    if total == 0:
        return 1.0
    return int(np.count_nonzero(target & (roi_mask != 0))) / total


@dataclass(frozen=True)
class CaseFiles:
    name: str
    pred: Path
    gt: Path
    roi: Path | None = None


@dataclass
class EvaluationResult:
    """Per-case rows ({'case': name, column: value}), their mean row, and the ranking figures."""

    rows: list[dict]
    mean: dict  # {'case': 'mean', metric: mean over cases, lesion count: total over cases}
    output_csv: Path
    unpredicted: list[str] = field(default_factory=list)  # ground-truth cases with no prediction

    @property
    def mean_dice(self) -> float:
        """The ranking's mean Dice over cases and HECs."""
        return float(np.mean([self.mean[column] for column in DICE_COLUMNS]))

    @property
    def mean_sd(self) -> float:
        """The ranking's mean Surface Dice over cases and HECs."""
        return float(np.mean([self.mean[column] for column in SD_COLUMNS]))


# The label map files read (every format predict writes: NIfTI, NRRD, MetaImage), as named.
_LABEL_FILES = ", ".join(IMAGE_SUFFIXES)


def _case_name(path: Path) -> str:
    return image_stem(path)


def _label_files(folder: Path) -> dict[str, Path]:
    """NAME -> FOLDER/NAME.<an image suffix>, less hidden files (temporaries of interrupted
    atomic writes); of one case's several formats (``--output-type nifti,nrrd``), the first in
    IMAGE_SUFFIXES' order, which are the same labels."""
    found: dict[str, Path] = {}
    for suffix in IMAGE_SUFFIXES:
        for path in sorted(folder.glob(f"*{suffix}")):
            if path.is_file() and not path.name.startswith("."):
                found.setdefault(_case_name(path), path)
    return found


def _ground_truth_path(gt_dir: Path, name: str) -> Path | None:
    """GT_DIR/NAME.nii.gz (flat; or another image format) or GT_DIR/NAME/segmentation.nii.gz
    (KiTS23 layout)."""
    flat = _label_files(gt_dir).get(name)
    nested = gt_dir / name / KITS_LABEL
    return flat or (nested if nested.is_file() else None)


def _ground_truth_cases(gt_dir: Path) -> set[str]:
    nested = {p.parent.name for p in gt_dir.glob(f"*/{KITS_LABEL}")}
    return set(_label_files(gt_dir)) | nested


def _prediction_files(pred_dir: Path) -> list[Path]:
    """PRED_DIR's label maps (``_label_files``), less the ``NAME_roi.nii.gz`` ROI masks that
    ``predict --save-probabilities`` writes beside NAME.nii.gz."""
    files = _label_files(pred_dir)
    sidecars = {
        name for name in files if name.endswith(ROI_SIDECAR) and name[: -len(ROI_SIDECAR)] in files
    }
    return [files[name] for name in sorted(files) if name not in sidecars]


def _roi_path(roi_dir: Path, name: str) -> Path:
    """The prediction's sidecar ROI_DIR/NAME_roi.nii.gz, else ROI_DIR/NAME.nii.gz.

    The sidecar comes first: beside it, NAME.nii.gz is the prediction, not a mask.
    """
    plain = roi_dir / f"{name}{NIFTI_OUT}"
    sidecar = roi_dir / f"{name}{ROI_SIDECAR}{NIFTI_OUT}"
    if sidecar.is_file():
        return sidecar
    if plain.is_file():
        return plain
    raise InputError(plain, f"ROI mask missing (nor {sidecar.name} beside it)")


def match_cases(
    pred_dir: Path, gt_dir: Path, roi_dir: Path | None = None
) -> tuple[list[CaseFiles], list[str]]:
    """Every prediction with its ground truth (and ROI mask), and the unpredicted GT cases."""
    for folder in (pred_dir, gt_dir, roi_dir):
        if folder is not None and not folder.is_dir():
            raise InputError(folder, "is not a folder")
    predictions = _prediction_files(pred_dir)
    if not predictions:
        raise InputError(pred_dir, f"holds no predictions ({_LABEL_FILES})")
    cases = []
    for pred in predictions:
        name = _case_name(pred)
        gt = _ground_truth_path(gt_dir, name)
        if gt is None:
            raise InputError(
                pred, f"no ground truth {name} ({_LABEL_FILES}) or {name}/ in {gt_dir}"
            )
        roi = _roi_path(roi_dir, name) if roi_dir is not None else None
        cases.append(CaseFiles(name, pred, gt, roi))
    unpredicted = sorted(_ground_truth_cases(gt_dir) - {case.name for case in cases})
    return cases, unpredicted


def _spacing_mm(image: nib.Nifti1Image) -> tuple[float, ...]:
    """pixdim of the three spatial axes in mm, as ITK reads it (unit scaling included)."""
    unit = image.header.get_xyzt_units()[0]
    scale = _UNIT_TO_MM.get(unit, 1.0)
    return tuple(float(zoom) * scale for zoom in image.header.get_zooms()[:3])


def _read_label_map(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(array in ITK axis order, nibabel affine, spacing in ITK axis order)."""
    if not has_suffix(path, NIFTI_SUFFIXES):  # NRRD, MetaImage: sparsekits.data.io reads them
        image = read_label_map(path)
        return image.array.T, image.grid.affine, tuple(image.grid.spacing)[::-1]
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for unreadable files
        raise InputError(path, f"cannot read NIfTI ({error})") from error
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D label map, got shape {data.shape}")
    return data.T, image.affine, _spacing_mm(image)[::-1]


def _check_same_grid(path: Path, shape, affine, gt_path: Path, gt_shape, gt_affine) -> None:
    # Shapes are reported in nibabel's (i, j, k) order, as the files' headers state them.
    if shape != gt_shape:
        raise InputError(path, f"shape {shape[::-1]} differs from {gt_path} {gt_shape[::-1]}")
    if np.abs(affine - gt_affine).sum() > AFFINE_TOLERANCE:
        raise InputError(path, f"affine differs from {gt_path}")


def evaluate_case_files(case: CaseFiles) -> dict:
    """One CSV row: {'case': name, metrics..., lesion counts..., [ROI recalls]}. In a worker."""
    pred, pred_affine, pred_spacing = _read_label_map(case.pred)
    gt, gt_affine, _ = _read_label_map(case.gt)
    for labels, path in ((pred, case.pred), (gt, case.gt)):
        check_label_values(labels, path)
    _check_same_grid(case.pred, pred.shape, pred_affine, case.gt, gt.shape, gt_affine)
    row = {"case": case.name, **evaluate_case(pred, gt, pred_spacing)}
    counts = lesion_matches(pred, gt, pred_spacing)
    row.update(
        {column: counts[lesion][outcome] for (lesion, outcome), column in _LESION_COLUMN.items()}
    )
    if case.roi is not None:
        roi, roi_affine, _ = _read_label_map(case.roi)
        _check_same_grid(case.roi, roi.shape, roi_affine, case.gt, gt.shape, gt_affine)
        for column, labels in ROI_RECALL_LABELS.items():
            row[column] = roi_recall(roi, gt, labels)
    return row


def _run_cases(cases: list[CaseFiles], workers: int) -> list[dict]:
    """Rows in the order of ``cases``; a spawn pool when more than one worker."""
    progress = tqdm(total=len(cases), desc="evaluate", unit="case")
    rows: list[dict | None] = [None] * len(cases)
    with progress:
        if workers <= 1:
            for index, case in enumerate(cases):
                rows[index] = evaluate_case_files(case)
                progress.update()
            return rows
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(evaluate_case_files, case): i for i, case in enumerate(cases)}
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                progress.update()
    return rows


def mean_row(rows: list[dict]) -> dict:
    """The 'mean' row: the mean over cases of each column, but the total of each lesion count."""

    def combine(column: str) -> float | int:
        values = [row[column] for row in rows]
        return sum(values) if column in LESION_COLUMNS else float(np.mean(values))

    return {"case": "mean", **{c: combine(c) for c in rows[0] if c != "case"}}


def _format_value(column: str, value) -> str:
    return str(value) if column in LESION_COLUMNS else f"{value:.8f}"


def format_csv(rows: list[dict], mean: dict) -> str:
    """The official evaluation.csv layout (8 decimals; counts as integers), 'case', 'mean' row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = list(mean)
    writer.writerow(columns)
    for row in [*rows, mean]:
        writer.writerow([row["case"], *(_format_value(c, row[c]) for c in columns[1:])])
    return buffer.getvalue()


def lesion_summary(row: dict, lesion: str) -> str:
    """One lesion class's counts in a row (the mean row: totals): "2/3 found, 1 false"."""
    found, missed, false = (row[_LESION_COLUMN[lesion, o]] for o in LESION_OUTCOMES)
    return f"{found}/{found + missed} found, {false} false"


def format_summary(result: EvaluationResult) -> str:
    """A compact table: each HEC's mean Dice and SD, the ranking's two means, lesion totals."""
    lines = [f"{'HEC':<16}{'Dice':>8}{'SD':>8}"]
    for hec, dice_column, sd_column in zip(REGION_NAMES, DICE_COLUMNS, SD_COLUMNS, strict=True):
        lines.append(f"{hec:<16}{result.mean[dice_column]:>8.4f}{result.mean[sd_column]:>8.4f}")
    lines.append(f"{'mean':<16}{result.mean_dice:>8.4f}{result.mean_sd:>8.4f}")
    totals = [f"{lesion} {lesion_summary(result.mean, lesion)}" for lesion in LESION_CLASSES]
    lines.append(f"lesions: {'; '.join(totals)}")
    if ROI_RECALL_COLUMN in result.mean:
        recalls = [
            f"{column} {result.mean[column]:.4f} (worst {min(r[column] for r in result.rows):.4f})"
            for column in ROI_RECALL_COLUMNS
        ]
        lines.append(f"stage-1 {', '.join(recalls)}")
    lines.append(f"{len(result.rows)} cases -> {result.output_csv}")
    return "\n".join(lines)


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    output_csv: str | Path = "evaluation.csv",
    roi_dir: str | Path | None = None,
    workers: int | None = None,
) -> EvaluationResult:
    """Evaluate every PRED_DIR/NAME.nii.gz against its ground truth; write the CSV; print a summary.

    ``workers`` defaults to the number of usable CPU cores (capped at the number of cases).
    """
    cases, unpredicted = match_cases(
        Path(pred_dir), Path(gt_dir), Path(roi_dir) if roi_dir is not None else None
    )
    if unpredicted:
        shown = ", ".join(unpredicted[:5]) + (", ..." if len(unpredicted) > 5 else "")
        print(
            f"warning: {len(unpredicted)} ground-truth case(s) have no prediction and are not "
            f"evaluated (as the official scorer does): {shown}",
            file=sys.stderr,
        )
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    rows = _run_cases(cases, max(1, min(workers, len(cases))))
    mean = mean_row(rows)
    output_csv = Path(output_csv)
    write_text_atomic(output_csv, format_csv(rows, mean))
    result = EvaluationResult(rows, mean, output_csv, unpredicted)
    print(format_summary(result))
    return result
