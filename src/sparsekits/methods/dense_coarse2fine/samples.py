"""The training samples of one case for the dense cascade, cut by ``views`` as the predictor
cuts its inputs: the coarse view of the whole scan, and the ROI around the ground-truth kidneys
(with their masses) for the kidney and lesion stages; the lesion stage's sample carries its
region (the ground-truth kidney grown by the ROI rule's dilation) as ``roi_mask``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from sparsekits.data.io import Image
from sparsekits.data.sample import Sample
from sparsekits.data.stage_view import mask_foreground
from sparsekits.methods.dense_coarse2fine.views import DenseView, region_mask, walk
from sparsekits.plan import Plan


def case_samples(
    case, image: Image, labels: np.ndarray, plan: Plan, roles: Sequence[str]
) -> Iterator[tuple[str, str, Sample]]:
    chain = walk(image, plan, mask_foreground(labels > 0, image.grid))
    if "coarse" in roles:
        yield "coarse", case.case_id, _sample(case, image, labels, plan, "coarse", chain.coarse)
    if chain.fine_grid is None or not {"kidney", "lesion"} & set(roles):
        return
    view = chain.fine_view()
    if "kidney" in roles:
        yield "kidney", case.case_id, _sample(case, image, labels, plan, "kidney", view)
    if "lesion" in roles:
        fine_labels = view.labels_of(labels, image.grid)
        region = region_mask(fine_labels > 0, view.grid, plan.roi.dilation_mm)
        sample = _sample(case, image, labels, plan, "lesion", view, region)
        yield "lesion", case.case_id, sample


def _sample(
    case,
    image: Image,
    labels: np.ndarray,
    plan: Plan,
    role: str,
    view: DenseView,
    region: np.ndarray | None = None,
) -> Sample:
    sample = Sample(
        case_id=case.case_id,
        stage=plan.position(role),
        roi_index=-1 if role == "coarse" else 0,
        hu=view.hu,
        affine=view.grid.affine.copy(),
        coords=None,
        features=None,
        labels=view.labels_of(labels, image.grid),
        roi_mask=region,
    )
    sample.meta = {
        "source_path": str(image.path),
        "label_path": str(case.label),
        "source_grid": image.grid.to_dict(),
        "crop_grid": view.grid.to_dict(),
        "kept_fraction": sample.kept_fraction,
        "stage": plan.stage(role).input_dict(),
    }
    return sample
