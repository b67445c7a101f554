"""False mass by tissue: where a prediction calls tumour or cyst (labels 2, 3) outside the true
masses, grouped by the phantom tissue each voxel was painted with (``layout.PHANTOM_TISSUES``),
and the true mass it calls something else (missed). Needs no torch.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sparsekits.data.io import read_image, read_label_map
from sparsekits.errors import InputError
from sparsekits.evaluate.kits23 import match_cases
from sparsekits.layout import KITS_LABEL, PHANTOM_TISSUES
from sparsekits.phantoms.tissues import LABELLED_TISSUES, TISSUE_MAP_NAMES, T
from sparsekits.regions import REGION_LABELS, REGION_NAMES

MASS_LABELS = REGION_LABELS[REGION_NAMES.index("mass")]  # tumour, cyst
KIDNEY_LABEL = 1
# Tissue groups of the false mass: tissue-map codes. Where the truth says kidney the voxel counts
# as kidney whatever its code; codes in no group count as OTHER.
TISSUE_GROUPS: dict[str, tuple[int, ...]] = {
    "liver": (T.LIVER,),
    "spleen": (T.SPLEEN,),
    "muscle": (T.MUSCLE,),
    "fat": (T.FAT, T.VISCERAL_FAT, T.PERIRENAL_FAT),
    "bowel": (T.STOMACH_FLUID, T.BOWEL_WALL, T.BOWEL_FLUID, T.STOOL, T.GAS),
    "kidney": (LABELLED_TISSUES[KIDNEY_LABEL],),
    "vessels": (T.AORTA, T.IVC),
}
OTHER = "other"
MISSED = "missed"  # true mass predicted as neither tumour nor cyst
COLUMNS = (*TISSUE_GROUPS, OTHER, MISSED)


def _group_of_code() -> np.ndarray:
    """Tissue-map code -> its group's index in COLUMNS (OTHER for codes in no group)."""
    groups = np.full(max(TISSUE_MAP_NAMES) + 1, COLUMNS.index(OTHER), np.intp)
    for index, codes in enumerate(TISSUE_GROUPS.values()):
        groups[list(codes)] = index
    return groups


_GROUP_OF_CODE = _group_of_code()


@dataclass
class MassErrors:
    """Voxels and mL per column of ``COLUMNS``, summed over ``cases``; ``skipped``: the cases
    without a tissue map."""

    voxels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    ml: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0.0))
    cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, other: MassErrors) -> None:
        for column in COLUMNS:
            self.voxels[column] += other.voxels[column]
            self.ml[column] += other.ml[column]
        self.cases += other.cases
        self.skipped += other.skipped

    def to_dict(self) -> dict:
        return asdict(self)


def false_mass_by_tissue(
    pred: np.ndarray, truth: np.ndarray, tissues: np.ndarray, voxel_mm3: float
) -> MassErrors:
    """False mass (predicted 2 or 3 where the truth is no mass) by tissue group, and missed mass
    (truth 2 or 3 predicted as neither), of three label maps of one shape."""
    if not pred.shape == truth.shape == tissues.shape:
        raise ValueError(f"shapes differ: {pred.shape}, {truth.shape}, {tissues.shape}")
    if tissues.size and (tissues.min() < 0 or tissues.max() >= len(_GROUP_OF_CODE)):
        raise ValueError(f"tissue codes must be 0-{len(_GROUP_OF_CODE) - 1}")
    called, true = np.isin(pred, MASS_LABELS), np.isin(truth, MASS_LABELS)
    false = called & ~true
    groups = _GROUP_OF_CODE[tissues[false]]
    groups[truth[false] == KIDNEY_LABEL] = COLUMNS.index("kidney")
    counts = np.bincount(groups, minlength=len(COLUMNS))
    counts[COLUMNS.index(MISSED)] = np.count_nonzero(true & ~called)
    voxels = {column: int(count) for column, count in zip(COLUMNS, counts, strict=True)}
    ml = {column: count * voxel_mm3 / 1000.0 for column, count in voxels.items()}
    return MassErrors(voxels, ml)


def false_mass_in_folders(pred_dir: str | Path, dataset_dir: str | Path) -> MassErrors:
    """``false_mass_by_tissue`` summed over the predictions PRED_DIR/NAME.nii.gz of the cases
    DATASET/NAME/ (segmentation.nii.gz, tissues.nii.gz); a case without a tissue map is skipped
    with a warning."""
    cases, _ = match_cases(Path(pred_dir), Path(dataset_dir))
    total = MassErrors()
    for case in cases:
        tissues_path = case.gt.with_name(PHANTOM_TISSUES)
        if case.gt.name != KITS_LABEL or not tissues_path.is_file():
            warnings.warn(
                f"{case.name}: no {PHANTOM_TISSUES} beside {case.gt}; skipped", stacklevel=2
            )
            total.skipped.append(case.name)
            continue
        truth = read_label_map(case.gt)
        pred = read_label_map(case.pred, like=truth)
        tissues = read_image(tissues_path, require_hu=False)
        if not tissues.grid.same_as(truth.grid):
            raise InputError(tissues_path, f"grid {tissues.grid} differs from {case.gt}'s")
        voxel_mm3 = float(np.prod(truth.grid.spacing))
        errors = false_mass_by_tissue(pred.array, truth.array, tissues.array, voxel_mm3)
        errors.cases.append(case.name)
        total.add(errors)
    return total
