"""Small synthetic CTs and small random two-stage model folders for the prediction tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.models import build_model
from sparsekits.models.bundle import save_fold

SMALL_PLAN = SSCN_TWOSTAGE.with_network("small")

# A tiny scan: 24 x 20 x 12 voxels at 2.5 x 2.5 x 3 mm (60 x 50 x 36 mm) keeps stage 2's
# 0.78 mm crops at a few hundred thousand voxels, so a random small network runs in a second.
SHAPE = (24, 20, 12)
SPACING = (2.5, 2.5, 3.0)


def synthetic_ct(seed: int = 0, shape=SHAPE, soft_tissue: bool = True) -> np.ndarray:
    """int16 HU: air around a low-density elliptical body holding a soft-tissue blob ("kidney")."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(g**2 for g in grid)
    hu = np.full(shape, -1000.0)
    hu[radius < 2.2] = -400.0  # a lung-like body: outside both stages' HU windows
    if soft_tissue:
        hu[radius < 0.15] = 40.0
    hu += rng.normal(0, 5, shape)
    return hu.astype(np.int16)


def affine_for(orientation: str, spacing=SPACING) -> np.ndarray:
    """Voxel -> RAS affine: 'RAS', 'LPS' (x and y flipped) or 'oblique' (rotated 20 degrees)."""
    affine = np.diag([*spacing, 1.0])
    if orientation == "LPS":
        affine[:2] *= -1
    elif orientation == "oblique":
        angle = np.deg2rad(20)
        rotation = np.array(
            [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        )
        affine[:3, :3] = rotation @ affine[:3, :3]
    elif orientation != "RAS":
        raise ValueError(orientation)
    affine[:3, 3] = [-30.0, 20.0, 5.0]
    return affine


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def save_random_model(model_dir: Path, folds=(0, 1), seed: int = 0, plan=SMALL_PLAN) -> Path:
    """MODEL/plan.json and MODEL/<role>/fold_K with randomly initialised networks."""
    for stage in (1, 2):
        for fold in folds:
            torch.manual_seed(seed + 10 * stage + fold)
            save_fold(model_dir, plan, stage, fold, build_model(plan.stage(stage).network))
    return model_dir
