"""How the two stages chain: the roi stage's view of the scan, kidney ROI components on its grid,
then one fine view per ROI. Written once: preprocessing (ROIs from the ground-truth kidneys),
prediction (ROIs from the roi networks), the benchmarks and the demo all walk it, so every
network meets exactly the input it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sparsekits.data.io import Image
from sparsekits.data.roi import dilated_components, roi_candidates
from sparsekits.data.sample import Sample
from sparsekits.data.sparsify import kept_fraction
from sparsekits.data.stage_view import StageView, mask_foreground, stage1_view, stage2_view
from sparsekits.plan import Plan
from sparsekits.regions import labels_to_regions

# Given the roi stage's view, the foreground (bool on the view's grid) to cut ROIs from.
Foreground = Callable[[StageView], np.ndarray]


@dataclass
class Chain:
    """One scan walked through both stages: the roi view, its ROI components (largest first),
    and each ROI's fine view, built on demand (a few hundred MB each at 0.78 mm)."""

    image: Image
    plan: Plan
    roi_view: StageView
    components: list[np.ndarray]  # bool on roi_view.grid, dilated
    candidates: int  # components the ROI rule found, before it kept at most its maximum

    def fine_view(self, index: int) -> StageView:
        return stage2_view(
            self.image, self.components[index], self.roi_view.grid, self.plan.stage("fine")
        )

    def fine_views(self) -> Iterator[StageView]:
        for index in range(len(self.components)):
            yield self.fine_view(index)


def roi_view(image: Image, plan: Plan) -> StageView:
    """The whole scan as the roi stage sees it."""
    return stage1_view(image, plan.stage("roi"))


def walk(image: Image, plan: Plan, foreground: Foreground, view: StageView | None = None) -> Chain:
    """The chain of ``image``: ROI components of ``foreground(roi view)`` (``view``: the roi
    view when the caller built it already)."""
    view = roi_view(image, plan) if view is None else view
    labels, candidates = roi_candidates(foreground(view), plan.roi)
    components = dilated_components(labels, candidates, plan.stage("roi").spacing_mm, plan.roi)
    return Chain(image, plan, view, components, len(candidates))


def case_samples(
    case, image: Image, labels: np.ndarray, plan: Plan, roles: Sequence[str]
) -> Iterator[tuple[str, str, Sample]]:
    """The training samples of one case: the whole scan for ``roi``, and for ``fine`` one per
    ROI around the dilated ground-truth kidney+masses components (not stage-1 predictions)."""
    chain = walk(image, plan, mask_foreground(labels > 0, image.grid))
    if "roi" in roles:
        yield "roi", case.case_id, _sample(case, image, labels, plan, "roi", -1, chain.roi_view)
    if "fine" in roles:
        for index, view in enumerate(chain.fine_views()):
            sample = _sample(case, image, labels, plan, "fine", index, view, chain.roi_view)
            yield "fine", f"{case.case_id}_roi{index}", sample


def _sample(
    case,
    image: Image,
    labels: np.ndarray,
    plan: Plan,
    role: str,
    roi_index: int,
    view: StageView,
    roi_view_: StageView | None = None,
) -> Sample:
    stage = plan.stage(role)
    view_labels = view.labels_of(labels, image.grid)
    meta = {
        "source_path": str(image.path),
        "label_path": str(case.label),
        "source_grid": image.grid.to_dict(),
        "crop_grid": view.grid.to_dict(),
        "kept_fraction": kept_fraction(view.coords, view.hu.shape),
        "stage": stage.input_dict(),
    }
    if roi_view_ is not None:
        meta["roi_grid"] = roi_view_.grid.to_dict()
    return Sample(
        case_id=case.case_id,
        stage=plan.position(role),
        roi_index=roi_index,
        hu=view.hu,
        affine=view.grid.affine.copy(),
        coords=view.coords,
        features=view.features,
        labels=view_labels,
        regions=labels_to_regions(view_labels[tuple(view.coords.T)]),
        roi_mask=view.roi_mask,
        meta=meta,
    )
