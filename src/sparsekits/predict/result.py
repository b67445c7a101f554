"""What a method's predictor returns, whatever the method: the label map on the input's grid,
the ROIs it worked in, timings, and the facts about its ROIs that the plausibility checks
(``sparsekits.predict.plausibility``) judge. ``sparsekits.predict.pipeline`` writes it out
(label map, volume report, probabilities, overlays) the same way for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from sparsekits.data.geometry import Grid
    from sparsekits.data.io import Image
    from sparsekits.plan import Plan


@dataclass
class RoiPrediction:
    """One region of interest: where it is and what the fine stage saw and predicted there."""

    index: int
    crop_grid: Grid  # the fine stage's grid of this ROI
    voxel_box: tuple[tuple[int, int], ...]  # (start, stop) per input-grid axis
    world_box: tuple[list[float], list[float]]  # RAS mm corners (min, max) of the crop
    n_voxels: int  # voxels the fine stage ran on
    timings: dict[str, float]
    # Voxels of the ROI's outer layer (on the grid its method measures it on; the scan's own
    # border is none) that the predicted kidney or mass reaches: the ROI may have cut it off.
    edge_voxels: int = 0
    coords: np.ndarray | None = None  # [N, 3] on crop_grid, kept with keep_probabilities
    probabilities: np.ndarray | None = None  # [N, C] float32, kept with keep_probabilities


@dataclass
class CasePrediction:
    labels: np.ndarray  # uint8 0-3, the input's shape
    grid: Grid  # the input's grid
    rois: list[RoiPrediction]
    timings: dict[str, float]
    roi_mask: np.ndarray | None = None  # uint8 on the input grid: ROI k is k + 1
    first_stage_voxels: int = 0  # voxels the first stage ran on
    roi_candidates: int = 0  # kidney components the ROI rule found, before keeping its maximum


class Predictor(Protocol):
    """A method's networks and plan, loaded once and used for every input of a run, and what
    each report records of them."""

    plan: Plan
    model_dir: Path
    folds: dict[str, list[int]]  # the folds loaded, per stage role
    tta: bool
    device: str

    def predict_image(self, image: Image, keep_probabilities: bool = False) -> CasePrediction:
        """Label map of ``image`` on its own grid."""
        ...
