"""The patient's body on a CT: the largest connected region denser than air.

Its midline (the world x of its centroid, RAS+: +x toward the patient's right) splits a label
map's components into the patient's left and right (``sparsekits.predict.report``), wherever
the patient lies in the field of view; its cross-section at a kidney's level says whether that
kidney lies where kidneys lie (``sparsekits.predict.plausibility``). A field of view narrower
than the patient cuts the body: a section records where (``Section.cut``), since the body's true
edge lies beyond the scan there. Air, the scanner's padding and anything not connected to the
patient (a blanket, a separate part of the table) are not part of the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from sparsekits.data.geometry import Grid
from sparsekits.data.io import AIR_BELOW_HU

# The body is found on every n-th voxel, n chosen per axis for about this spacing: a body's
# outline needs no finer grid, and a KiTS-size CT (611 x 512 x 512 at 0.8 mm) shrinks to ~1 M
# voxels.
BODY_GRID_MM = 4.0


@dataclass(frozen=True)
class Section:
    """The body's world box at one level, and which of its faces the scan's border cut."""

    low: np.ndarray  # [3] world (RAS mm) minimum
    high: np.ndarray  # [3] world maximum
    cut: np.ndarray  # bool [3, 2]: per world axis, (low, high) face lies on the scan's border


@dataclass(frozen=True)
class Body:
    """The body's voxels on a coarse grid, as world (RAS mm) points, and its midline."""

    points_mm: np.ndarray  # [N, 3] world centres of the body's voxels
    # bool [N, 3, 2]: the voxel lies on the scan's border facing world axis a's low/high side
    border: np.ndarray
    midline_x_mm: float

    def section(self, z_mm: float, half_height_mm: float) -> Section | None:
        """The body within ``half_height_mm`` of the level ``z_mm``; None where it does not
        reach that level."""
        near = np.abs(self.points_mm[:, 2] - z_mm) <= half_height_mm
        points, border = self.points_mm[near], self.border[near]
        if len(points) == 0:
            return None
        ends = (points.argmin(axis=0), points.argmax(axis=0))  # the extreme voxel per axis
        cut = np.array(
            [[border[end[axis], axis, side] for side, end in enumerate(ends)] for axis in range(3)]
        )
        return Section(points.min(axis=0), points.max(axis=0), cut)


def find_body(hu: np.ndarray, grid: Grid) -> Body | None:
    """The body of the CT ``hu`` on ``grid``: its largest 6-connected region above
    ``AIR_BELOW_HU``; None when no voxel is denser than air."""
    steps = np.array([max(1, round(BODY_GRID_MM / spacing)) for spacing in grid.spacing])
    coarse = np.asarray(hu[tuple(slice(None, None, step) for step in steps)]) > AIR_BELOW_HU
    components, count = cc3d.connected_components(coarse, connectivity=6, return_N=True)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    indices = np.argwhere(components == largest)
    points = (indices * steps).astype(np.float64) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    return Body(points, _border(indices, coarse.shape, grid), float(points[:, 0].mean()))


def _border(indices: np.ndarray, shape: tuple[int, ...], grid: Grid) -> np.ndarray:
    """bool [N, 3, 2]: which voxels (coarse ``indices``) lie on the array face that looks
    toward each world axis's low and high side (the array axis closest to that world axis)."""
    border = np.zeros((len(indices), 3, 2), bool)
    for axis in range(3):
        along = int(np.argmax(np.abs(grid.direction[axis])))  # array axis nearest world axis
        first, last = indices[:, along] == 0, indices[:, along] == shape[along] - 1
        increasing = grid.direction[axis, along] > 0
        border[:, axis, 0], border[:, axis, 1] = (first, last) if increasing else (last, first)
    return border
