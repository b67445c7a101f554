"""Two-stage prediction of a scan (METHOD.md "Two stages").

roi view (``chain``, as in training) -> roi networks -> foreground (the ROI rule's probability
>= its threshold) -> ROI components -> per ROI: its fine view -> fine networks -> threshold ->
map back (nearest) onto the ROI's sub-box of the input grid -> OR over ROIs -> paint 1, 3, 2.
Every setting comes from the model folder's plan.

Memory: only the roi grid and the ROI crops are dense; the input grid is touched only through
the ROIs' sub-boxes, and the full-size output is one uint8 label map.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from sparsekits.data.geometry import Grid, resample
from sparsekits.data.io import Image
from sparsekits.methods.sscn_twostage.chain import Chain, Foreground, roi_view, walk
from sparsekits.plan import Plan, RoiRule
from sparsekits.predict.inference import (
    MAX_BATCH_VOXELS,
    PlanNetworks,
    batch_groups,
    predict_probabilities,
)
from sparsekits.predict.postprocess import drop_small_components
from sparsekits.predict.result import CasePrediction, RoiPrediction
from sparsekits.regions import NUM_REGIONS, REGION_NAMES, regions_to_labels
from sparsekits.timing import timed

# Full-size outputs are allocated in NIfTI's on-disk (Fortran) order: nibabel then writes them
# without a strided copy, about 6x faster for a 611 x 512 x 512 label map.
NIFTI_ORDER = "F"
# Region r of a thresholded prediction is bit r of one uint8, so one nearest-neighbour resampling
# carries all three regions back to the input grid, and OR merges overlapping ROIs.
REGION_BITS = (1 << np.arange(NUM_REGIONS)).astype(np.uint8)


class TwoStagePredictor(PlanNetworks):
    """Both stages' networks and their plan, loaded once and used for every input of a run."""

    def __init__(
        self,
        model_dir: str | Path,
        plan: Plan,
        device: str = "cpu",
        folds: str | Sequence[int] = "all",
        tta: bool = False,
    ):
        super().__init__(model_dir, plan, device, folds, tta)
        self.roi_nets, self.fine_nets = self.nets["roi"], self.nets["fine"]
        # Benchmarks with random weights set this: ``hook(roi view) -> bool mask`` replaces the
        # roi networks' foreground (the networks still run, so timings stay honest).
        self.foreground_hook: Foreground | None = None
        # On a CPU one ROI per pass costs the same and halves peak memory; a GPU likes batches.
        self.max_batch_voxels = MAX_BATCH_VOXELS if self.fine_nets.device.type == "cuda" else 0

    def predict_image(self, image: Image, keep_probabilities: bool = False) -> CasePrediction:
        """Label map of ``image`` on its own grid."""
        timings: dict[str, float] = {}
        with timed(timings, "stage1_resample"):
            view = roi_view(image, self.plan)
        with timed(timings, "stage1_net"):
            (probabilities,) = predict_probabilities(
                self.roi_nets, [(view.coords, view.features)], tta=self.tta
            )
        with timed(timings, "roi"):
            foreground = self.foreground_hook or _network_foreground(probabilities, self.plan.roi)
            chain = walk(image, self.plan, foreground, view)
        rois, bits = self._fine(chain, keep_probabilities)
        with timed(timings, "merge"):
            labels = np.zeros(image.grid.shape, np.uint8, order=NIFTI_ORDER)
            box = _union_box([roi.voxel_box for roi in rois])
            if box is not None:
                merged, merged_grid = labels[_slices(box)], _sub_grid(image.grid, box)
                _paint(merged, bits)
                drop_small_components(merged, merged_grid, self.plan.min_component_ml)
                edges = _edge_voxels(merged, merged_grid, chain)
                for roi, edge_voxels in zip(rois, edges, strict=True):
                    roi.edge_voxels = edge_voxels
            roi_mask = _roi_mask(chain, rois) if keep_probabilities else None
        timings["stage2"] = sum(sum(roi.timings.values()) for roi in rois)
        return CasePrediction(
            labels, image.grid, rois, timings, roi_mask, len(probabilities), chain.candidates
        )

    def _fine(self, chain: Chain, keep_probabilities: bool):
        """The fine stage on every ROI; the ROIs and the merged region bits on their union box."""
        grid = chain.image.grid
        rois: list[RoiPrediction] = []
        samples = []
        for index in range(len(chain.components)):
            timings: dict[str, float] = {}
            with timed(timings, "view"):
                view = chain.fine_view(index)
            lo, hi = grid.box_covering(view.grid)
            voxel_box = tuple((int(b), int(e)) for b, e in zip(lo, hi, strict=True))
            world_box = tuple(corner.round(2).tolist() for corner in view.grid.world_bounds())
            rois.append(
                RoiPrediction(index, view.grid, voxel_box, world_box, len(view.coords), timings)
            )
            samples.append((view.coords, view.features))
            del view

        probabilities = []
        for group in batch_groups([len(c) for c, _ in samples], self.max_batch_voxels):
            start = time.perf_counter()
            probabilities += predict_probabilities(
                self.fine_nets, [samples[i] for i in group], self.tta, self.max_batch_voxels
            )
            _share_net_time([rois[i] for i in group], time.perf_counter() - start)

        box = _union_box([roi.voxel_box for roi in rois])
        bits = np.zeros([stop - begin for begin, stop in box], np.uint8) if box else None
        threshold = self.plan.region_threshold
        for roi, (coords, _), probability in zip(rois, samples, probabilities, strict=True):
            with timed(roi.timings, "map_back"):
                crop_bits = np.zeros(roi.crop_grid.shape, np.uint8)
                crop_bits[tuple(coords.T)] = (probability >= threshold) @ REGION_BITS
                native = resample(crop_bits, roi.crop_grid, _sub_grid(grid, roi.voxel_box), 0)
                offset = tuple(
                    slice(b - u, e - u) for (b, e), (u, _) in zip(roi.voxel_box, box, strict=True)
                )
                bits[offset] |= native.astype(np.uint8)
            if keep_probabilities:
                roi.coords, roi.probabilities = coords, probability
        return rois, bits


def _network_foreground(probabilities: np.ndarray, rule: RoiRule) -> Foreground:
    """The roi networks' foreground: the rule's probability at or above its threshold."""

    def foreground(view) -> np.ndarray:
        mask = np.zeros(view.grid.shape, bool)
        mask[tuple(view.coords.T)] = _roi_probability(probabilities, rule) >= (
            rule.probability_threshold
        )
        return mask

    return foreground


def _edge_voxels(labels: np.ndarray, grid: Grid, chain: Chain) -> list[int]:
    """Per ROI: the voxels of the roi grid on the outer layer of its component that the
    prediction (``labels`` > 0 on ``grid``, a box of the input grid, sampled at their centres)
    reaches, outside every ROI's interior (another ROI covers what lies there). The roi grid's
    own border is no edge: the scan, or the body box beyond which nothing is kept, ends there."""
    roi_grid = chain.roi_view.grid
    predicted = resample((labels > 0).astype(np.uint8), grid, roi_grid, order=0) > 0
    # A component's interior: its voxels whose face neighbours are all in it (or off the grid).
    interiors = [ndi.binary_erosion(component, border_value=1) for component in chain.components]
    uncovered = predicted & ~np.any(interiors, axis=0)
    return [
        int(np.count_nonzero(component & ~interior & uncovered))
        for component, interior in zip(chain.components, interiors, strict=True)
    ]


def _roi_probability(probabilities: np.ndarray, rule: RoiRule) -> np.ndarray:
    """[N] the probability the ROI rule thresholds (sparsekits.plan.RoiRule.region)."""
    if rule.region == "max":
        return probabilities.max(axis=1)
    return probabilities[:, REGION_NAMES.index(rule.region)]


def _share_net_time(rois: list[RoiPrediction], seconds: float) -> None:
    """Attribute a batched pass's network time to its ROIs in proportion to their voxels."""
    total = sum(roi.n_voxels for roi in rois) or 1
    for roi in rois:
        roi.timings["net"] = seconds * roi.n_voxels / total


def _paint(labels: np.ndarray, bits: np.ndarray) -> None:
    """Paint region bits into ``labels`` (same shape), touching only the predicted voxels."""
    predicted = np.nonzero(bits)  # index arrays: ``labels`` may be a non-contiguous view
    regions = (bits[predicted][:, None] & REGION_BITS) > 0
    labels[predicted] = regions_to_labels(regions)


def _sub_grid(grid: Grid, box: tuple[tuple[int, int], ...]) -> Grid:
    return grid.crop([begin for begin, _ in box], [stop for _, stop in box])


def _union_box(boxes: list[tuple[tuple[int, int], ...]]) -> tuple[tuple[int, int], ...] | None:
    if not boxes:
        return None
    return tuple(
        (min(box[axis][0] for box in boxes), max(box[axis][1] for box in boxes))
        for axis in range(3)
    )


def _slices(box: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(begin, stop) for begin, stop in box)


def _roi_mask(chain: Chain, rois: list[RoiPrediction]) -> np.ndarray:
    """The ROI components on the input grid (ROI k -> k + 1), filled only in their boxes."""
    grid = chain.image.grid
    mask = np.zeros(grid.shape, np.uint8, order=NIFTI_ORDER)
    for component, roi in zip(chain.components, rois, strict=True):
        sub_grid = _sub_grid(grid, roi.voxel_box)
        sub = resample(component.astype(np.uint8), chain.roi_view.grid, sub_grid, order=0)
        region = mask[_slices(roi.voxel_box)]
        region[(sub > 0) & (region == 0)] = roi.index + 1
    return mask
