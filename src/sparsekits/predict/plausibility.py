"""Plausibility checks of a prediction: a result that cannot be right, or that lies outside what
the model was trained on, is warned about (one line each, printed and in the case's report)
instead of passing silently. None of them stops a prediction.

Every check reads facts measured once: the label map's components, volumes and lesions
(``sparsekits.predict.report.Measures``), the patient's body (``sparsekits.data.body``), the
facts a method's predictor returns about its ROIs (``sparsekits.predict.result``), the model's
plan and the volumes its training cases spanned (``sparsekits.training_volumes``). Each bound is
a constant below, with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sparsekits.data.body import Body
from sparsekits.plan import Plan
from sparsekits.predict.report import SIDES, Measures, SideSplit
from sparsekits.predict.result import CasePrediction
from sparsekits.training_volumes import Ranges, measured_volumes

# A volume is new to a model below half the smallest or above twice the largest its training
# cases held. A range comes from tens to hundreds of cases, and healthy kidneys alone differ 2x
# between adults: the margin spares a kidney the training set just missed. Measured (kidney,
# label 1, per side): 98 KiTS23 label maps span 38-471 mL (median 196), the demo's phantoms
# 3-58 mL. So a real adult kidney is new to a model trained on the demo (up to ~115 mL accepted),
# and the demo's kidneys are not to one trained on KiTS23 (from 19 mL accepted).
RANGE_MARGIN = (0.5, 2.0)
# A component of this many mL is an organ-sized object, not a speck: a kidney is 100-200 mL
# (the demo's phantoms' 20-60 mL), while a network's stray fragments are a few voxels to 1-2 mL
# (and the plan's min_component_ml may drop them). A second one on a side is a second "kidney".
LARGE_COMPONENT_ML = 5.0
# Lesions under TINY_LESION_ML (a sphere under 6 mm across) in these numbers are noise, not
# lesions: 98 KiTS23 label maps hold at most 29 tumours and cysts a case, 14 of them that small.
TINY_LESION_ML = 0.1
MANY_TINY_LESIONS = 100
# Where a kidney lies, in the body's cross-section within FOSSA_SLAB_MM of its centroid's level.
# The renal fossae lie either side of the spine, in the back half: an adult kidney's centroid is
# 4-7 cm from the midline in a half-width of 13-20 cm (0.25-0.5 of it), and 0.25-0.4 of the
# body's depth from the back (measured: the real 3 mm CT of ../shared/data, 0.41-0.44 and
# 0.38-0.40; the default phantoms, 0.41-0.55 and 0.26-0.35). A centroid under 0.1 of the
# half-width from the midline sits on it (the spine, the bladder, the pubic symphysis), one
# beyond 0.8 in the flank's wall, one beyond 0.6 of the depth in the front of the abdomen.
FOSSA_SLAB_MM = 20.0
FOSSA_LATERAL = (0.1, 0.8)
FOSSA_FRONT_MAX = 0.6


def case_warnings(
    measures: Measures, body: Body | None, case: CasePrediction, plan: Plan, ranges: Ranges | None
) -> list[str]:
    """Every warning about one case's prediction (see the module docstring)."""
    return [
        *volume_warnings(measures.volumes_ml, ranges),
        *position_warnings(measures.split, measures.voxel_ml, body),
        *component_warnings(measures.split, measures.voxel_ml),
        *roi_warnings(case, plan.roi.max_components),
        *lesion_warnings(measures),
    ]


def volume_warnings(volumes_ml: dict, ranges: Ranges | None) -> list[str]:
    """Kidney and lesion volumes outside the model's training ranges, widened by RANGE_MARGIN
    (none for a model that records no ranges)."""
    below, above = RANGE_MARGIN
    warnings = []
    for kind, what, value in measured_volumes(volumes_ml):
        if ranges is None or kind not in ranges:
            continue
        low, high = ranges[kind]
        if not low * below <= value <= high * above:
            warnings.append(
                f"{what} {value:.2f} mL is outside what the model was trained on (its training "
                f"cases: {low:.2f}-{high:.2f} mL; accepted: {low * below:.2f}-"
                f"{high * above:.2f} mL)"
            )
    return warnings


def _large_components(split: SideSplit, voxel_ml: float) -> Iterator[tuple[str, float, np.ndarray]]:
    """(side, mL, world centroid) of each component of at least LARGE_COMPONENT_ML."""
    for side, count, centroid in zip(
        split.sides, split.voxel_counts, split.centroids_mm, strict=True
    ):
        if count * voxel_ml >= LARGE_COMPONENT_ML:
            yield side, float(count * voxel_ml), centroid


def position_warnings(split: SideSplit, voxel_ml: float, body: Body | None) -> list[str]:
    """Large components outside the renal fossae (none without a body to place them in)."""
    if body is None:
        return []
    warnings = []
    for side, volume, centroid in _large_components(split, voxel_ml):
        problem = _outside_fossa(side, centroid, body)
        if problem:
            warnings.append(f"the {side} kidney's {volume:.2f} mL component {problem}")
    return warnings


def _outside_fossa(side: str, centroid: np.ndarray, body: Body) -> str | None:
    """Why a ``side`` component's centroid lies outside that side's renal fossa, or None. A
    bound is judged only where the body's edges it needs are in the scan (``Section.cut``)."""
    section = body.section(float(centroid[2]), FOSSA_SLAB_MM)
    if section is None:
        return None
    toward, end = (1.0, 1) if side == "right" else (-1.0, 0)  # RAS+: the right is +x
    offset = toward * (centroid[0] - body.midline_x_mm)  # mm from the midline toward its side
    half_width = toward * ((section.low, section.high)[end][0] - body.midline_x_mm)
    lateral = offset / max(half_width, 1.0)
    front = (centroid[1] - section.low[1]) / max(section.high[1] - section.low[1], 1.0)
    where = f"{lateral:.0%} of the way to the body's {side} edge"
    if lateral < FOSSA_LATERAL[0]:
        return f"lies at the body's midline ({where}), not in a renal fossa"
    if lateral > FOSSA_LATERAL[1] and not section.cut[0, end]:
        return f"lies in the body wall ({where}), not in a renal fossa"
    if front > FOSSA_FRONT_MAX and not section.cut[1].any():  # RAS+: +y is anterior
        return f"lies in the front of the body ({front:.0%} of its depth), not in a renal fossa"
    return None


def component_warnings(split: SideSplit, voxel_ml: float) -> list[str]:
    """Sides holding more than one large component, where one kidney is expected."""
    warnings = []
    for side in SIDES:
        volumes = [volume for on, volume, _ in _large_components(split, voxel_ml) if on == side]
        if len(volumes) > 1:
            listed = ", ".join(f"{volume:.2f}" for volume in sorted(volumes, reverse=True))
            warnings.append(
                f"the {side} side holds {len(volumes)} separate components of "
                f"{LARGE_COMPONENT_ML:g} mL or more ({listed} mL) where one kidney is expected"
            )
    return warnings


def roi_warnings(case: CasePrediction, max_components: int) -> list[str]:
    """The ROI rule's maximum cutting candidates off, and predictions reaching an ROI's edge."""
    warnings = []
    if case.roi_candidates > max_components:
        warnings.append(
            f"the ROI rule found {case.roi_candidates} kidney candidates, more than the plan's "
            f"maximum of {max_components}: only the largest {max_components} were segmented"
        )
    for roi in case.rois:
        if roi.edge_voxels:
            warnings.append(
                f"ROI {roi.index}: the predicted kidney or mass reaches its edge "
                f"({roi.edge_voxels} voxels), so it may be cut off"
            )
    return warnings


def lesion_warnings(measures: Measures) -> list[str]:
    """Hundreds of tiny lesions."""
    tiny = sum(
        int(np.count_nonzero(lesions.voxel_counts * measures.voxel_ml < TINY_LESION_ML))
        for lesions in measures.lesions.values()
    )
    if tiny < MANY_TINY_LESIONS:
        return []
    return [
        f"{tiny} tumours and cysts under {TINY_LESION_ML:g} mL: noise, not lesions, most likely"
    ]


def tta_warnings(plan: Plan, tta: bool) -> list[str]:
    """``tta`` (mirroring) on networks that were not trained on mirrored inputs."""
    unmirrored = [stage.role for stage in plan.stages if not stage.recipe.mirrors]
    if not tta or not unmirrored:
        return []
    return [
        f"--tta mirrors the input, but the {', '.join(unmirrored)} stage(s) trained without "
        "mirroring (augmentation off, or no flips): mirrored scans are new to them"
    ]
