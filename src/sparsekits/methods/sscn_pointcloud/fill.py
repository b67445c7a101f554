"""Seed 002's post-processing: labelled points -> a dense label map.

The cloud holds a few per cent of the voxels, so its labelled points outline an organ rather
than fill it (a kidney's bright cortex, without the darker medulla and hypodense masses). Per
class, the points are clustered with DBSCAN (scikit-learn; points in no cluster are dropped as
outliers), and each cluster's convex hull is filled with the class: per axial slice as the seed
does (a 2D hull of the cluster's points on each slice), or in 3D (``HullFill.hull = "3d"``).
A cluster too flat for a hull (fewer than 3 points on a slice, or all on a line) keeps its
points. The kidney class is filled from every non-tissue point (kidney with its masses, as
KiTS23 paints it), the tumour class over it.
"""

from __future__ import annotations

import numpy as np

from sparsekits.plan import HullFill

KIDNEY, TUMOUR = 1, 2


def fill_labels(
    coords: np.ndarray,
    classes: np.ndarray,
    shape: tuple[int, ...],
    spacing_mm: float,
    rule: HullFill,
    max_kidneys: int | None = None,
) -> tuple[np.ndarray, int]:
    """A uint8 label map of ``shape`` (0 background, 1 kidney, 2 tumour) from points ``coords``
    [N, 3] (indices on an isotropic grid of ``spacing_mm``, z last) of ``classes`` [N] (0
    tissue, 1 kidney, 2 tumour), with the ``max_kidneys`` largest kidney clusters (all when
    None); and how many kidney clusters DBSCAN found."""
    labels = np.zeros(shape, np.uint8)
    kidney_clusters = 0
    for label, members in ((KIDNEY, classes > 0), (TUMOUR, classes == TUMOUR)):
        clusters = dbscan_clusters(coords[members], spacing_mm, rule)
        if label == KIDNEY:
            kidney_clusters = len(clusters)
            clusters = sorted(clusters, key=len, reverse=True)[:max_kidneys]
        for cluster in clusters:
            labels[fill_hull(cluster, shape, rule.hull)] = label
    return labels, kidney_clusters


def dbscan_clusters(points: np.ndarray, spacing_mm: float, rule: HullFill) -> list[np.ndarray]:
    """The points [N, 3] of each DBSCAN cluster (eps in mm), outliers dropped."""
    if len(points) < rule.min_points:
        return []
    from sklearn.cluster import DBSCAN

    found = DBSCAN(eps=rule.eps_mm, min_samples=rule.min_points).fit_predict(points * spacing_mm)
    return [points[found == cluster] for cluster in range(found.max() + 1)]


def fill_hull(points: np.ndarray, shape: tuple[int, ...], hull: str) -> tuple[np.ndarray, ...]:
    """Index arrays of the voxels inside the convex hull of ``points`` [N, 3] (per axial slice,
    or ``"3d"``), the points themselves included."""
    parts = [points]
    solid = _inside_hull(points, shape) if hull == "3d" else None
    if solid is not None:
        return tuple(np.concatenate([points, np.column_stack(solid)]).T)
    for z in np.unique(points[:, 2]):
        on_slice = points[points[:, 2] == z]
        inside = _inside_hull(on_slice[:, :2], shape[:2])
        if inside is not None:
            parts.append(np.column_stack([*inside, np.full(len(inside[0]), z)]))
    voxels = np.concatenate(parts)
    return tuple(voxels.T)


def _inside_hull(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
    """Index arrays of the grid points of the box of ``points`` [N, D] inside their convex hull;
    None when they span no D-dimensional hull (too few, or all on a line or plane)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) <= points.shape[1]:
        return None
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    lo, hi = points.min(axis=0), np.minimum(points.max(axis=0) + 1, shape)
    box = np.indices(hi - lo).reshape(len(lo), -1).T + lo
    # Inside: on the inner side of every facet's plane (normal . x + offset <= 0), with a
    # tolerance for the grid points on a facet (the hull's own vertices among them).
    normals, offsets = hull.equations[:, :-1], hull.equations[:, -1]
    inside = box[(box @ normals.T + offsets <= 1e-6).all(axis=1)]
    return tuple(inside.T)
