"""The body on a CT: the largest region denser than air, its midline, and where the field of
view cuts it, whatever the array's storage order."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekits.data.body import find_body
from sparsekits.data.geometry import Grid
from sparsekits.predict.overlay import reorient

SHAPE = (60, 50, 10)  # RAS at 4 mm: x 240 mm, y 200 mm
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


def trunk(x: slice, y: slice) -> np.ndarray:
    ct = np.full(SHAPE, -1000, np.int16)
    ct[x, y, :] = 30
    return ct


def test_the_body_is_the_largest_region_and_its_midline_its_centroid():
    ct = trunk(slice(10, 40), slice(5, 45))  # x indices 10-39: midline at x index 24.5
    ct[52:58, 20:25, :] = 200  # a separate dense object to the body's right (an arm rest)
    body = find_body(ct, Grid(SHAPE, AFFINE))
    assert body.midline_x_mm == pytest.approx(24.5 * 4.0)
    assert body.points_mm[:, 0].max() == pytest.approx(39 * 4.0)  # the object is not the body
    assert find_body(np.full(SHAPE, -1000, np.int16), Grid(SHAPE, AFFINE)) is None


@pytest.mark.parametrize("storage", ["RAS", "LPS", "IPL"])
def test_a_section_says_where_the_scan_cut_the_body_in_world_terms(storage):
    ct = trunk(slice(0, 60), slice(5, 50))  # wider than the scan; reaches its anterior border
    stored, affine = reorient(ct, AFFINE, storage)
    body = find_body(np.ascontiguousarray(stored), Grid(stored.shape, affine))

    section = body.section(z_mm=20.0, half_height_mm=6.0)

    assert section.cut[0].tolist() == [True, True]  # both sides: the body goes on beyond them
    assert section.cut[1].tolist() == [False, True]  # posterior skin inside, anterior cut
    assert section.low[1] == pytest.approx(5 * 4.0) and section.high[1] == pytest.approx(49 * 4.0)
    assert body.section(z_mm=500.0, half_height_mm=6.0) is None  # above the scan
