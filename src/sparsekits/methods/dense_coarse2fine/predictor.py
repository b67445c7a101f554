"""Prediction with the dense cascade (seed 004): coarse kidney mask on the whole scan -> the ROI
around its kidneys -> kidney mask on the ROI -> kidney / tumour / cyst in the kidney region ->
connected components under the plan's volumes removed -> the input's grid.

Every network's softmax is averaged over its folds and, with ``tta``, over the mirroring along z
(the seed's test-time augmentation).
"""

from __future__ import annotations

import cc3d
import numpy as np
import torch

from sparsekits.data.geometry import Grid, resample
from sparsekits.data.io import Image
from sparsekits.methods.dense_coarse2fine.views import DenseView, Foreground, region_mask, walk
from sparsekits.predict.inference import PlanNetworks, StageNetworks
from sparsekits.predict.postprocess import drop_small_components
from sparsekits.predict.result import CasePrediction, RoiPrediction
from sparsekits.timing import timed


class Coarse2FinePredictor(PlanNetworks):
    # Benchmarks with random weights set this: ``hook(coarse view) -> bool mask`` replaces the
    # coarse networks' kidneys (they still run, so timings stay honest).
    foreground_hook: Foreground | None = None

    def predict_image(self, image: Image, keep_probabilities: bool = False) -> CasePrediction:
        timings: dict[str, float] = {}
        with timed(timings, "coarse"):
            chain = walk(image, self.plan, self._coarse_kidney)
        labels = np.zeros(image.grid.shape, np.uint8, order="F")
        if chain.fine_grid is None:
            empty = _empty(keep_probabilities, image)
            return CasePrediction(labels, image.grid, [], timings, empty, 0, chain.candidates)
        roi_timings: dict[str, float] = {}
        with timed(roi_timings, "view"):
            view = chain.fine_view()
        with timed(roi_timings, "kidney"):
            kidney = self._probabilities("kidney", view).argmax(0) > 0
            kidney = largest_components(kidney, self.plan.roi.max_components)
        with timed(roi_timings, "lesion"):
            # The kidney network draws the kidney with its masses (measured on the demo's
            # phantoms: its outline scored 0.78 where the lesion network's scored 0.70); the
            # lesion network, on the kidney region, says which of its voxels are tumour or cyst.
            region = region_mask(kidney, view.grid, self.plan.roi.dilation_mm)
            probabilities = self._probabilities("lesion", view, region)
            fine = np.where(kidney, np.maximum(probabilities.argmax(0), 1), 0).astype(np.uint8)
        with timed(roi_timings, "postprocess"):
            drop_small_components(fine, view.grid, self.plan.min_component_ml)
        with timed(roi_timings, "map_back"):
            lo, hi = image.grid.box_covering(view.grid)
            box = tuple((int(b), int(e)) for b, e in zip(lo, hi, strict=True))
            sub = image.grid.crop(lo, hi)
            mapped = resample(fine, view.grid, sub, order=0)
            labels[tuple(slice(b, e) for b, e in box)] = mapped
        world_box = tuple(corner.round(2).tolist() for corner in view.grid.world_bounds())
        edge_voxels = _edge_voxels(mapped, box, image.grid.shape)
        roi = RoiPrediction(
            0, view.grid, box, world_box, int(region.sum()), roi_timings, edge_voxels
        )
        if keep_probabilities:
            roi.coords = np.argwhere(region).astype(np.int32)
            roi.probabilities = probabilities[:, region].T.astype(np.float32)
        timings["fine"] = sum(roi_timings.values())
        roi_mask = _roi_mask(image.grid, box) if keep_probabilities else None
        return CasePrediction(
            labels, image.grid, [roi], timings, roi_mask, chain.coarse.hu.size, chain.candidates
        )

    def _coarse_kidney(self, view: DenseView) -> np.ndarray:
        kidney = self._probabilities("coarse", view).argmax(0) > 0
        return kidney if self.foreground_hook is None else self.foreground_hook(view)

    @torch.no_grad()
    def _probabilities(
        self, role: str, view: DenseView, region: np.ndarray | None = None
    ) -> np.ndarray:
        """Softmax [C, X, Y, Z] of stage ``role`` on ``view`` (outside ``region``: air)."""
        networks: StageNetworks = self.nets[role]
        stage = self.plan.stage(role)
        image = stage.features(view.hu.astype(np.float32))
        if region is not None:
            image[~region] = stage.features(np.float32(-1024.0))
        tensor = torch.from_numpy(image)[None, None].to(networks.device)
        flips = ((), (4,)) if self.tta else ((),)
        total = None
        for flip in flips:
            # Contiguous: on a CPU it beat channels_last_3d (reference kidney network on a 384 x
            # 224 x 16 slab: 10.9 s against 12.6 s; BENCHMARKS.md, "methods").
            batch = tensor.flip(flip) if flip else tensor
            for model in networks.models:
                logits = model(batch).float()
                soft = torch.softmax(logits, dim=1)
                soft = soft.flip(flip) if flip else soft
                total = soft if total is None else total + soft
        return (total / (len(flips) * len(networks.models)))[0].cpu().numpy()


def largest_components(mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest 26-connected components of ``mask`` (a body has two kidneys: on the
    demo's phantoms this took the kidney stage's Dice from 0.789 to 0.802)."""
    components, found = cc3d.connected_components(mask, connectivity=26, return_N=True)
    if found <= count:
        return mask
    sizes = np.bincount(components.ravel(), minlength=found + 1)[1:]
    return np.isin(components, np.argsort(-sizes, kind="stable")[:count] + 1)


def _edge_voxels(labels: np.ndarray, box, shape: tuple[int, ...]) -> int:
    """Predicted voxels (``labels`` > 0 on the fine box ``box`` of an input grid of ``shape``)
    on the box's faces; a face where the scan ends is none."""
    faces = np.zeros(labels.shape, bool)
    for axis, (begin, end) in enumerate(box):
        for face, scan_ends in ((0, begin == 0), (-1, end == shape[axis])):
            if not scan_ends:
                faces[(slice(None),) * axis + (face,)] = True
    return int(np.count_nonzero(faces & (labels > 0)))


def _roi_mask(grid: Grid, box) -> np.ndarray:
    mask = np.zeros(grid.shape, np.uint8, order="F")
    mask[tuple(slice(b, e) for b, e in box)] = 1
    return mask


def _empty(keep: bool, image: Image) -> np.ndarray | None:
    return np.zeros(image.grid.shape, np.uint8, order="F") if keep else None
