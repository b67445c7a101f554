"""Post-processing every method shares: the plan's ``min_component_ml`` (kidney, tumour, cyst)."""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

from sparsekits.data.geometry import Grid


def drop_small_components(labels: np.ndarray, grid: Grid, min_ml: Sequence[float]) -> None:
    """In place: kidney (with masses) components under ``min_ml[0]`` become background, tumour
    and cyst components under ``min_ml[1]`` and ``min_ml[2]`` become kidney."""
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    for label, minimum, becomes in ((None, min_ml[0], 0), (2, min_ml[1], 1), (3, min_ml[2], 1)):
        if minimum <= 0:
            continue
        mask = labels > 0 if label is None else labels == label
        components, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = np.flatnonzero(sizes * voxel_ml < minimum)
        small = small[small > 0]
        labels[np.isin(components, small)] = becomes
