"""Tiny labelled CT datasets written as real NIfTI files in the KiTS23 layout, for training tests.

Each case is a small box of fat with two kidneys (150 HU), a tumour (240 HU) in one of them and
a muscle slab (50 HU), at 2 x 2 x 4 mm: about 24^3 voxels on the stage-1 grid. Air surrounds the
body, so every image passes the HU check and the body crop.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 12)
SPACING = (2.0, 2.0, 4.0)


def write_tiny_dataset(root: Path, n_cases: int, seed: int = 0) -> Path:
    """``n_cases`` KiTS23-layout cases under ``root``, each drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*SPACING, 1.0])
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1)
    for index in range(n_cases):
        hu = np.full(SHAPE, -1000.0)
        labels = np.zeros(SHAPE, np.uint8)
        hu[2:-2, 2:-2, 1:-1] = -100.0  # fat: below both stage windows
        hu[2:-2, 16:19, 1:-1] = 50.0  # muscle: kept, background
        for side in (-1, 1):
            centre = np.array([12 + side * 5.5, 10, 6]) + rng.integers(-1, 2, size=3)
            radii = np.array([3.5, 5.0, 3.0]) + rng.uniform(-0.4, 0.4, size=3)
            kidney = (((grid - centre) / radii) ** 2).sum(-1) <= 1
            hu[kidney], labels[kidney] = 150.0, 1
            if side == 1:
                tumour = (((grid - centre - [0, 1, 0]) / [2.5, 2.5, 1.6]) ** 2).sum(-1) <= 1
                hu[tumour], labels[tumour] = 240.0, 2
        hu += rng.normal(0, 5, size=SHAPE)
        case = root / f"case_{index:05d}"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), case / "imaging.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), case / "segmentation.nii.gz")
    return root
