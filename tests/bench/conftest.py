"""A tiny CT with one kidney and its label map, written as real NIfTI files; and benchmarks/ on
sys.path, as when a benchmark script runs, so that tests import its helpers (``_sections``)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SPACING_MM = 3.0
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))


def _ellipsoid(shape, centre, radii_mm) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    terms = zip(axes, centre, radii_mm, strict=True)
    return sum(((a - c) * SPACING_MM / r) ** 2 for a, c, r in terms) <= 1


@pytest.fixture(scope="session")
def tiny_ct(tmp_path_factory) -> tuple[Path, Path]:
    """(CT, labels): a 3 mm body of fat and soft tissue, one small kidney labelled 1."""
    folder = tmp_path_factory.mktemp("tiny_ct")
    shape = (24, 20, 16)
    hu = np.full(shape, -1000, np.int16)
    hu[_ellipsoid(shape, (12, 10, 8), (33, 27, 100))] = -90  # fat
    hu[_ellipsoid(shape, (12, 9, 8), (15, 12, 100))] = 50  # soft tissue
    kidney = _ellipsoid(shape, (16, 11, 8), (6, 5, 8))
    hu[kidney] = 30
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    ct, labels = folder / "ct.nii.gz", folder / "labels.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), ct)
    nib.save(nib.Nifti1Image(kidney.astype(np.uint8), affine), labels)
    return ct, labels
