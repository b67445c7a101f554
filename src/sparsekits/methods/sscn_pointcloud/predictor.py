"""Prediction with the point-cloud method (seed 002): the cloud (``cloud.cloud_view``, as in
training) -> cloud networks -> kidney points -> the kidney region's points -> kidney networks
-> tissue / kidney / tumour per point -> DBSCAN and hulls (``fill``) on the cloud's grid ->
components under the plan's volumes removed -> the input's grid (nearest).

The one ROI of a case is the box of the kidney region's points; its ``edge_voxels`` count the
points the kidney networks call kidney or tumour on the region's outer layer (within a voxel of
its dilation): the kidney may go on beyond what the region showed them. Softmax probabilities
are averaged over folds and, with ``tta``, the 8 mirrorings of the cloud.
"""

from __future__ import annotations

import numpy as np

from sparsekits.data.geometry import resample
from sparsekits.data.io import Image
from sparsekits.data.stage_view import StageView
from sparsekits.methods.sscn_pointcloud.cloud import KidneyRegion, cloud_view, kidney_region
from sparsekits.methods.sscn_pointcloud.fill import fill_labels
from sparsekits.predict.inference import PlanNetworks, predict_probabilities
from sparsekits.predict.postprocess import drop_small_components
from sparsekits.predict.result import CasePrediction, RoiPrediction
from sparsekits.timing import timed

NIFTI_ORDER = "F"  # full-size outputs in NIfTI's on-disk order (sscn-twostage's predictor)


class PointCloudPredictor(PlanNetworks):
    """Both stages' networks of a model folder and its plan; ``predict_image`` as above."""

    def predict_image(self, image: Image, keep_probabilities: bool = False) -> CasePrediction:
        timings: dict[str, float] = {}
        with timed(timings, "cloud_view"):
            view = cloud_view(image, self.plan)
        with timed(timings, "cloud_net"):
            kidney = self._probabilities("cloud", view, np.ones(len(view.coords), bool))
            kidney = kidney[:, 1] >= self.plan.roi.probability_threshold
        spacing = self.plan.stage("cloud").spacing_mm
        region = kidney_region(view.coords, kidney, spacing, self.plan)
        labels = np.zeros(image.grid.shape, np.uint8, order=NIFTI_ORDER)
        empty = (
            np.zeros(image.grid.shape, np.uint8, order=NIFTI_ORDER) if keep_probabilities else None
        )
        if region.empty:
            return CasePrediction(labels, image.grid, [], timings, empty, len(view.coords), 0)
        roi, clusters = self._kidney(image, view, region, labels, keep_probabilities)
        timings["kidney"] = sum(roi.timings.values())
        roi_mask = None
        if keep_probabilities:
            roi_mask = empty
            roi_mask[tuple(slice(b, e) for b, e in roi.voxel_box)] = 1
        return CasePrediction(
            labels, image.grid, [roi], timings, roi_mask, len(view.coords), clusters
        )

    def _kidney(
        self, image: Image, view: StageView, region: KidneyRegion, labels: np.ndarray, keep: bool
    ) -> tuple[RoiPrediction, int]:
        """The kidney stage on the region's points, painted into ``labels`` (the input grid);
        the ROI it worked in and how many kidney clusters it found."""
        timings: dict[str, float] = {}
        coords = view.coords[region.rows]
        lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
        crop = view.grid.crop(lo, hi)
        with timed(timings, "net"):
            probabilities = self._probabilities("kidney", view, region.rows)
            classes = probabilities.argmax(axis=1)
        with timed(timings, "fill"):
            spacing = self.plan.stage("kidney").spacing_mm
            fine, clusters = fill_labels(
                coords - lo,
                classes,
                crop.shape,
                spacing,
                self.plan.fill,
                self.plan.roi.max_components,
            )
            drop_small_components(fine, crop, self.plan.min_component_ml)
        with timed(timings, "map_back"):
            box_lo, box_hi = image.grid.box_covering(crop)
            box = tuple((int(b), int(e)) for b, e in zip(box_lo, box_hi, strict=True))
            mapped = resample(fine, crop, image.grid.crop(box_lo, box_hi), order=0)
            labels[tuple(slice(b, e) for b, e in box)] = mapped
        world_box = tuple(corner.round(2).tolist() for corner in crop.world_bounds())
        edge = int(np.count_nonzero(classes[region.edge[region.rows]] > 0))
        roi = RoiPrediction(0, crop, box, world_box, len(coords), timings, edge)
        if keep:
            roi.coords, roi.probabilities = (coords - lo).astype(np.int32), probabilities
        return roi, clusters

    def _probabilities(self, role: str, view: StageView, rows: np.ndarray) -> np.ndarray:
        """Softmax [N, classes] of stage ``role``'s networks on the cloud's points ``rows``."""
        sample = (view.coords[rows], view.features[rows])
        (probabilities,) = predict_probabilities(
            self.nets[role], [sample], tta=self.tta, softmax=True
        )
        return probabilities
