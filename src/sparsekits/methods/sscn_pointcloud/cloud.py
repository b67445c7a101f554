"""What each network of the point-cloud method sees, built once for training and prediction.

- ``cloud``: the scan on the stage's isotropic canonical grid, and its brightest voxels (the
  plan's ``TopPercent`` rule), with their coordinates on that grid and their z-scored HU: the
  seed's point cloud. It is sscn-twostage's stage-1 view with another sparsification rule
  (``data.stage_view.stage1_view``), so the HU are rounded and resampled the same way.
- ``kidney``: the cloud's points within the ROI rule's ``dilation_mm`` of the kidney points
  (``kidney_region``): in training the points whose ground-truth label is kidney, tumour or cyst,
  in prediction the points the cloud network calls kidney. The dilation shows the kidney network
  the tissue around a kidney in training, as the cloud network's errors will in prediction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sparsekits.data.io import Image
from sparsekits.data.sample import Sample
from sparsekits.data.stage_view import StageView, stage1_view
from sparsekits.plan import Plan


def cloud_view(image: Image, plan: Plan) -> StageView:
    """The point cloud of ``image``: its brightest voxels on the cloud stage's grid."""
    return stage1_view(image, plan.stage("cloud"))


@dataclass
class KidneyRegion:
    """The cloud points the kidney network sees: ``rows`` (bool [N] over the cloud's points),
    and ``edge`` (bool [N]) those on its outer layer, within one voxel of its dilation."""

    rows: np.ndarray
    edge: np.ndarray

    @property
    def empty(self) -> bool:
        return not self.rows.any()


def kidney_region(coords: np.ndarray, kidney: np.ndarray, spacing_mm: float, plan: Plan):
    """The points of ``coords`` [N, 3] within ``plan.roi.dilation_mm`` of the points ``kidney``
    (bool [N]) marks; distances on the isotropic grid of ``spacing_mm``."""
    from scipy.spatial import cKDTree

    rows = np.zeros(len(coords), bool)
    edge = np.zeros(len(coords), bool)
    if not kidney.any():
        return KidneyRegion(rows, edge)
    radius = plan.roi.dilation_mm / spacing_mm
    distance, _ = cKDTree(coords[kidney]).query(coords, distance_upper_bound=radius + 1e-6)
    rows = np.isfinite(distance)
    edge = rows & (distance > max(radius - 1.0, 0.0))
    return KidneyRegion(rows, edge)


def case_samples(
    case, image: Image, labels: np.ndarray, plan: Plan, roles: Sequence[str]
) -> Iterator[tuple[str, str, Sample]]:
    """The whole cloud for ``cloud``; for ``kidney`` the cloud's points around the ground-truth
    kidney points (not the cloud network's: it is trained on its own)."""
    # sscn-twostage's sparse sample of a stage view: the same fields, meta and region targets.
    from sparsekits.methods.sscn_twostage.chain import _sample

    view = cloud_view(image, plan)
    if "cloud" in roles:
        yield "cloud", case.case_id, _sample(case, image, labels, plan, "cloud", -1, view)
    if "kidney" in roles:
        point_labels = view.labels_of(labels, image.grid)[tuple(view.coords.T)]
        spacing = plan.stage("cloud").spacing_mm
        region = kidney_region(view.coords, point_labels > 0, spacing, plan)
        if not region.empty:
            rows = region.rows
            sub = StageView(view.grid, view.hu, view.coords[rows], view.features[rows])
            yield "kidney", case.case_id, _sample(case, image, labels, plan, "kidney", 0, sub)
