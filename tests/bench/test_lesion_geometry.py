"""benchmarks/lesion_geometry.py on hand-made label maps with known answers: a box kidney with a
tumour half outside it, on an anisotropic, flipped grid."""

from __future__ import annotations

import numpy as np
import pytest

from lesion_geometry import extent_beyond_box, measure_case, outside_share, parenchyma_hull

# Voxel (i, j, k) -> mm: 2 mm along -x, 1 mm along y, 3 mm along z.
AFFINE = np.array([[-2.0, 0, 0, 50], [0, 1.0, 0, -7], [0, 0, 3.0, 4], [0, 0, 0, 1]])


def _box_points(low, high) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high, strict=True)], indexing="ij")
    return np.stack([a.ravel() for a in axes], axis=1).astype(float)


def test_outside_share_and_extent_of_points():
    parenchyma = _box_points((0, 0, 0), (10, 10, 10))
    hull = parenchyma_hull(parenchyma)
    half_out = _box_points((6, 3, 3), (14, 7, 7))  # x 6..9 on or inside the hull, 10..13 outside
    assert outside_share(hull, half_out) == pytest.approx(0.5)
    assert outside_share(hull, _box_points((2, 2, 2), (5, 5, 5))) == 0.0
    assert parenchyma_hull(parenchyma[:3]) is None  # degenerate: a plane
    assert np.isnan(outside_share(None, half_out))
    assert extent_beyond_box(parenchyma, half_out) == pytest.approx((4.0, 4.0))
    corner = np.array([[12.0, 13.0, 9.0]])  # 3 beyond in x, 4 in y
    assert extent_beyond_box(parenchyma, corner) == pytest.approx((5.0, 4.0))
    assert extent_beyond_box(parenchyma, np.zeros((0, 3))) == (0.0, 0.0)


def test_measure_case_in_mm_on_a_flipped_anisotropic_grid():
    labels = np.zeros((40, 30, 20), np.uint8)
    labels[5:15, 3:27, 3:17] = 1  # a kidney: a box of 10 x 24 x 14 voxels of 6 mm^3 = 20 mL
    labels[11:19, 8:12, 8:12] = 2  # tumour: i 11..14 inside, 15..18 outside (4 voxels of 2 mm)
    labels[7:11, 7:11, 7:11] = 3  # cyst of 0.38 mL < MIN_LESION_ML: a speck, left out
    labels[25:35, 5:30, 3:18] = 1  # another kidney: 22.5 mL
    labels[25:30, 20:25, 14:18] = 3  # cyst of 0.6 mL, on two faces of the box: all inside
    labels[0:2, 0:2, 0:2] = 1  # a speck: not a kidney
    kidneys = measure_case(labels, AFFINE)
    assert len(kidneys) == 2
    big, small = sorted(kidneys, key=lambda k: k.masses[0].label)
    assert [m.label for m in big.masses] == [2]
    tumour = big.masses[0]
    assert tumour.volume_ml == pytest.approx(8 * 4 * 4 * 6 / 1000)
    assert tumour.outside == pytest.approx(0.5)
    assert (big.extent_mm, big.margin_mm) == pytest.approx((8.0, 8.0))
    assert [m.label for m in small.masses] == [3]
    assert small.masses[0].outside == 0.0
    assert (small.extent_mm, small.margin_mm) == (0.0, 0.0)
    # The first kidney: 3360 voxels of its box, 64 tumour voxels inside it replaced by the
    # tumour, 64 more outside it; 64 cyst-speck voxels painted over it too (still the kidney's).
    assert big.parenchyma_share == pytest.approx((3360 - 64 - 64) / (3360 + 64))
    assert small.parenchyma_share == pytest.approx(1 - 100 / 3750)
    assert measure_case(np.zeros((4, 4, 4), np.uint8), AFFINE) == []
