"""The volume report written beside each prediction: mL of kidney, tumour and cyst per side.

Sides. The foreground (labels > 0) is split into 26-connected components. A component of at
least ``SideConfig.min_component_ml`` is assigned to the patient's right when its centroid's world
x is greater than the midline, else to the left: NIfTI world coordinates are RAS+, where x grows
toward the patient's Right (DICOM's LPS+ is the opposite). The midline is the body's
(``sparsekits.data.body``: the world x of the centroid of the largest region denser than air),
so a patient lying off the scanner's centre keeps their sides; without a body (a label map
alone) it is the world x of the image's own centre. Smaller components (stray voxels, fragments
near the midline) take the side of the nearest large component, so that a speck cannot land on
the wrong side by the midline alone; with no large component they fall back to the midline
rule. World coordinates come from the affine, so the sides do not depend on how the array is
stored (RAS, LPS, IPL, ...).

Lesions are the 26-connected components of tumour (label 2) and of cyst (label 3), counted
separately; a lesion lies inside one foreground component and takes its side.

``measure_labels`` measures a label map once (``Measures``); the report and the plausibility
checks (``sparsekits.predict.plausibility``) both read it. Reported volumes are rounded to
``VOLUME_DECIMALS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cc3d
import numpy as np

from sparsekits.fileio import write_json_atomic
from sparsekits.regions import LABEL_NAMES

if TYPE_CHECKING:
    from sparsekits.data.body import Body

SIDES = ("right", "left")
LABELS = (1, 2, 3)  # kidney, tumor, cyst
LESION_LABELS = (2, 3)
# Volumes are reported to 0.01 mL: a scan's outline is uncertain by a voxel layer (a kidney's
# surface layer at 0.8 mm is several mL), so more digits would only look precise.
VOLUME_DECIMALS = 2


@dataclass(frozen=True)
class SideConfig:
    """How foreground components are split into the patient's left and right."""

    connectivity: int = 26
    min_component_ml: float = 1.0


SIDE_CONFIG = SideConfig()


@dataclass(frozen=True)
class SideSplit:
    """The foreground components of a label map (within ``box``) and their sides."""

    box: tuple[slice, ...]  # bounding box of the foreground in the label map
    components: np.ndarray  # component ids on the box (0 = background)
    sides: tuple[str, ...]  # side of component id k + 1
    voxel_counts: np.ndarray  # voxel count of component id k + 1
    centroids_mm: np.ndarray  # [K, 3] world (RAS) centroid of component id k + 1
    midline_x_mm: float
    midline_of: str  # "body" or "image centre" (see the module docstring)

    def side_centroid_mm(self, side: str) -> np.ndarray | None:
        """Voxel-weighted world centroid of all components on ``side`` (None if it has none)."""
        members = np.array([s == side for s in self.sides], dtype=bool)
        if not members.any():
            return None
        weights = self.voxel_counts[members].astype(float)
        return (self.centroids_mm[members] * weights[:, None]).sum(0) / weights.sum()


def voxel_volume_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0


def _to_world(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return indices @ affine[:3, :3].T + affine[:3, 3]


def foreground_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the nonzero voxels, or None when there are none."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _assign_sides(
    centroids_mm: np.ndarray, volumes_ml: np.ndarray, midline_x_mm: float, min_ml: float
) -> tuple[str, ...]:
    by_midline = np.where(centroids_mm[:, 0] > midline_x_mm, "right", "left")  # RAS+: +x = R
    large = volumes_ml >= min_ml
    if not large.any():
        return tuple(str(side) for side in by_midline)
    sides = by_midline.copy()
    large_ids = np.flatnonzero(large)
    for small in np.flatnonzero(~large):
        distances = np.linalg.norm(centroids_mm[large_ids] - centroids_mm[small], axis=1)
        sides[small] = by_midline[large_ids[np.argmin(distances)]]
    return tuple(str(side) for side in sides)


def split_sides(
    labels: np.ndarray,
    affine: np.ndarray,
    body: Body | None = None,
    config: SideConfig = SIDE_CONFIG,
) -> SideSplit:
    """Foreground components of ``labels`` and the patient side of each (see module docstring)."""
    if body is None:
        centre = (np.array(labels.shape, dtype=float) - 1) / 2
        midline_x_mm, midline_of = float(_to_world(affine, centre)[0]), "image centre"
    else:
        midline_x_mm, midline_of = body.midline_x_mm, "body"
    box = foreground_box(labels > 0)
    if box is None:
        box = (slice(0, 0),) * labels.ndim
        empty = np.zeros((0,) * labels.ndim, dtype=np.uint16)
        counts, centroids = np.zeros(0, np.int64), np.zeros((0, 3))
        return SideSplit(box, empty, (), counts, centroids, midline_x_mm, midline_of)
    components = cc3d.connected_components(labels[box] > 0, connectivity=config.connectivity)
    stats = cc3d.statistics(components)
    counts = np.asarray(stats["voxel_counts"][1:], dtype=np.int64)
    offset = np.array([s.start for s in box], dtype=float)
    centroids_mm = _to_world(affine, np.asarray(stats["centroids"][1:], dtype=float) + offset)
    volumes = counts * voxel_volume_ml(affine)
    sides = _assign_sides(centroids_mm, volumes, midline_x_mm, config.min_component_ml)
    return SideSplit(box, components, sides, counts, centroids_mm, midline_x_mm, midline_of)


def _side_of_ids(split: SideSplit) -> np.ndarray:
    """Side name per component id (index 0 = background, never used)."""
    return np.array(["", *split.sides], dtype=object)


def _volumes_ml(labels: np.ndarray, split: SideSplit, voxel_ml: float) -> dict:
    side_of = _side_of_ids(split)
    crop = labels[split.box]
    voxels = {
        LABEL_NAMES[label]: np.bincount(split.components[crop == label], minlength=len(side_of))
        for label in LABELS
    }
    volumes = {}
    for side in SIDES:
        on_side = side_of == side
        volumes[side] = {name: float(v[on_side].sum()) * voxel_ml for name, v in voxels.items()}
        volumes[side]["total"] = sum(volumes[side].values())
    volumes["total"] = {k: volumes["right"][k] + volumes["left"][k] for k in volumes["right"]}
    return volumes


@dataclass(frozen=True)
class Lesions:
    """The lesions (26-connected components) of one lesion label: each one's side and size."""

    sides: tuple[str, ...]
    voxel_counts: np.ndarray


@dataclass(frozen=True)
class Measures:
    """What a label map holds, measured once: its components by side, the volumes (mL, not
    rounded) per side and in total, and the lesions of each kind."""

    split: SideSplit
    voxel_ml: float
    volumes_ml: dict  # {right, left, total} -> {kidney, tumor, cyst, total}
    lesions: dict[str, Lesions]  # tumor, cyst
    config: SideConfig


def measure_labels(
    labels: np.ndarray,
    affine: np.ndarray,
    body: Body | None = None,
    config: SideConfig = SIDE_CONFIG,
) -> Measures:
    """Measure ``labels`` on a grid of ``affine`` (voxel -> RAS mm), its sides split at
    ``body``'s midline (the image centre's without one)."""
    voxel_ml = voxel_volume_ml(affine)
    split = split_sides(labels, affine, body, config)
    volumes = _volumes_ml(labels, split, voxel_ml)
    return Measures(split, voxel_ml, volumes, _lesions(labels, split, config), config)


def _lesions(labels: np.ndarray, split: SideSplit, config: SideConfig) -> dict[str, Lesions]:
    if not split.sides:
        return {LABEL_NAMES[label]: Lesions((), np.zeros(0, np.int64)) for label in LESION_LABELS}
    side_of = _side_of_ids(split)
    crop = labels[split.box]
    found = {}
    for label in LESION_LABELS:
        lesions = cc3d.connected_components(crop == label, connectivity=config.connectivity)
        inside = lesions > 0
        # Each lesion lies in exactly one foreground component: one (lesion, component) pair,
        # in lesion order.
        pairs = np.unique(np.stack([lesions[inside], split.components[inside]]), axis=1)
        sizes = np.bincount(lesions[inside], minlength=pairs.shape[1] + 1)[1:]
        found[LABEL_NAMES[label]] = Lesions(tuple(side_of[pairs[1]]), sizes)
    return found


def _lesion_counts(lesions: dict[str, Lesions]) -> dict:
    counts = {
        side: {name: found.sides.count(side) for name, found in lesions.items()} for side in SIDES
    }
    counts["total"] = {k: counts["right"][k] + counts["left"][k] for k in counts["right"]}
    return counts


def _rounded(volumes: dict) -> dict:
    return {
        key: _rounded(value) if isinstance(value, dict) else round(value, VOLUME_DECIMALS)
        for key, value in volumes.items()
    }


def volume_report(
    measures: Measures,
    roi_boxes: list[dict] | None,
    timings: dict[str, float],
    extra: dict | None = None,
) -> dict:
    """The JSON-ready report of one measured label map (``measure_labels``).

    Keys: sparsekits_version, kidney_found, volumes_ml (rounded to ``VOLUME_DECIMALS``) and
    lesion_counts (each {right, left, total}), voxel_volume_ml, side_assignment (midline and
    components), roi_boxes, timings_s, then ``extra``'s keys.
    """
    from sparsekits import __version__

    split = measures.split
    report = {
        "sparsekits_version": __version__,
        "kidney_found": bool(split.sides),
        "volumes_ml": _rounded(measures.volumes_ml),
        "lesion_counts": _lesion_counts(measures.lesions),
        "voxel_volume_ml": measures.voxel_ml,
        "side_assignment": {
            "rule": f"component centroid world x vs the {split.midline_of}'s midline (RAS+: +x "
            "is the patient's right); components under "
            f"{measures.config.min_component_ml} mL join the nearest large component",
            "midline_x_mm": split.midline_x_mm,
            "components": [
                {
                    "side": side,
                    "volume_ml": round(float(count) * measures.voxel_ml, VOLUME_DECIMALS),
                    "centroid_mm": centroid,
                }
                for side, count, centroid in zip(
                    split.sides, split.voxel_counts, split.centroids_mm.tolist(), strict=True
                )
            ],
        },
        "roi_boxes": list(roi_boxes or []),
        "timings_s": dict(timings),
    }
    clashes = set(report) & set(extra or {})
    if clashes:
        raise ValueError(f"extra report keys clash with the report's own: {sorted(clashes)}")
    report.update(extra or {})
    return report


def _jsonable(value):
    """numpy scalars/arrays, tuples and paths as plain JSON values."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(path: str | Path, report: dict) -> Path:
    """Write ``report`` as JSON, atomically."""
    write_json_atomic(path, _jsonable(report))
    return Path(path)
