"""What the benchmarks feed the networks: one CT's stage views (``sparsekits.data.stage_view``,
as training and prediction build them), a kidney ROI crop, sweep variants.

The ROI comes from a label map (ground truth or an organ map), because a benchmark's networks
have random weights and their stage-1 output would place no meaningful ROI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsekits.data.geometry import Grid, canonical_grid
from sparsekits.data.io import Image, read_image
from sparsekits.data.sample import Sample
from sparsekits.data.sparsify import box_slices, sparsify
from sparsekits.data.stage_view import StageView, mask_foreground
from sparsekits.errors import InputError
from sparsekits.layout import image_stem
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.methods.sscn_twostage.chain import Chain, roi_view, walk
from sparsekits.plan import HuWindow, Plan

# Every int16 HU value: a window that keeps each voxel.
ALL_HU = (-32768.0, 32767.0)


@dataclass(frozen=True)
class SweepPoint:
    """One sparsity level of the stage-2 crop: an HU window, inside the ROI or over the box."""

    hu_window: tuple[float, float]
    inside_roi: bool = True

    @property
    def label(self) -> str:
        low, high = self.hu_window
        window = "all HU" if self.hu_window == ALL_HU else f"[{low:g}, {high:g}]"
        return f"{window}, {'ROI' if self.inside_roi else 'whole box'}"


# From a narrow soft-tissue window (a few % of the sweep box) through the paper's window inside
# the ROI up to every voxel of the box: on the real CT's 96^3 box about 4, 14, 38, 71, 74, 100 %.
DEFAULT_SWEEP = (
    SweepPoint((30.0, 40.0)),
    SweepPoint((20.0, 60.0)),
    SweepPoint((0.0, 100.0)),
    SweepPoint((-100.0, 200.0)),
    SweepPoint(SSCN_TWOSTAGE.stage("fine").sparsify.bounds),
    SweepPoint(ALL_HU, inside_roi=False),
)


@dataclass
class BenchCase:
    """One CT and its kidney mask on the CT's grid."""

    name: str
    image: Image
    kidney: np.ndarray  # bool, the image's shape

    @classmethod
    def load(cls, image_path: Path, labels_path: Path, kidney_labels: Sequence[int]) -> BenchCase:
        image = read_image(image_path)
        labels = read_image(labels_path, require_hu=False)
        if not labels.grid.same_as(image.grid):
            raise InputError(labels_path, f"label map grid {labels.grid} differs from the CT's")
        kidney = np.isin(labels.array, np.asarray(kidney_labels))
        if not kidney.any():
            raise InputError(labels_path, f"no voxel with a kidney label {list(kidney_labels)}")
        return cls(image_stem(image_path), image, kidney)

    def chain(self, plan: Plan) -> Chain:
        """The scan walked through the stages with ROIs around the kidney mask (as the roi
        stage cuts them)."""
        return walk(self.image, plan, mask_foreground(self.kidney, self.image.grid))


def stage1_sample(case: BenchCase, plan: Plan) -> Sample:
    """The whole scan on the roi stage's grid (the dense twin's input is its body box)."""
    return _sample(case, 1, roi_view(case.image, plan))


def stage2_sample(case: BenchCase, plan: Plan, component: int = 0) -> Sample:
    """Kidney ROI ``component`` (0 = largest) at the fine stage's spacing: its crop box, kept =
    ROI and the stage's rule."""
    chain = case.chain(plan)
    if not chain.components:
        raise InputError(case.name, "the kidney mask gives no ROI component on the roi grid")
    return _sample(case, 2, chain.fine_view(min(component, len(chain.components) - 1)))


def sweep_sample(stage2: Sample, point: SweepPoint, plan: Plan) -> Sample:
    """``stage2``'s crop sparsified with ``point``'s window, inside the ROI or over the box."""
    stage = dataclasses.replace(plan.stage("fine"), sparsify=HuWindow(*point.hu_window))
    mask = stage2.roi_mask if point.inside_roi else None
    coords, features = sparsify(stage2.hu, stage, mask)
    meta = {**stage2.meta, "sweep": point.label, "kept_fraction": len(coords) / stage2.hu.size}
    return dataclasses.replace(stage2, coords=coords, features=features, meta=meta)


def sweep_box(stage2: Sample, extent: int | None, plan: Plan) -> Sample:
    """The ``extent``^3 sub-box of ``stage2``'s crop around its ROI's centre (the whole crop when
    ``extent`` is None or larger), sparsified like stage 2: the sweep's canvas, small enough that
    keeping every voxel stays affordable for the sparse network."""
    shape = np.asarray(stage2.hu.shape)
    size = shape if extent is None else np.minimum(shape, extent)
    centre = np.rint(np.argwhere(stage2.roi_mask).mean(axis=0)).astype(np.int64)
    lo = np.clip(centre - size // 2, 0, shape - size)
    crop = box_slices(lo, lo + size)
    hu, roi_mask = stage2.hu[crop], stage2.roi_mask[crop]
    coords, features = sparsify(hu, plan.stage("fine"), roi_mask)
    grid = Grid(tuple(shape), stage2.affine).crop(lo, lo + size)
    meta = {**stage2.meta, "kept_fraction": len(coords) / hu.size, "sweep_box": lo.tolist()}
    return dataclasses.replace(
        stage2,
        hu=hu,
        roi_mask=roi_mask,
        coords=coords,
        features=features,
        affine=grid.affine.copy(),
        meta=meta,
    )


def _sample(case: BenchCase, stage: int, view: StageView) -> Sample:
    return Sample(
        case_id=case.name,
        stage=stage,
        roi_index=-1 if view.roi_mask is None else 0,
        hu=view.hu,
        affine=view.grid.affine.copy(),
        coords=view.coords,
        features=view.features,
        roi_mask=view.roi_mask,
        meta={"kept_fraction": len(view.coords) / view.hu.size, "source": str(case.image.path)},
    )


def plan_grid(source: Grid, spacing_xyz: tuple[float, float, float]) -> Grid:
    """The canonical grid covering ``source`` at anisotropic ``spacing_xyz`` (nnU-Net's target
    spacing: in-plane x, y finer than the slice axis z), centred on it."""
    return canonical_grid(source, spacing_mm=spacing_xyz)
