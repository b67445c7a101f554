"""Kidneys, tumours and cysts at full resolution, in a box around their labels (RAS layout).

What a labelled box becomes (HU from ``tissues``, per contrast phase):

- **Kidney (label 1)**: cortex within ``cortex_mm`` of the kidney's outer surface; deeper
  parenchyma is medulla, lobulated into pyramids with columns of cortex between them.
- **Renal sinus and hilum** (unlabelled, as in KiTS23): the concavity of the kidney (its
  morphological closing minus the labels) is sinus fat, with the renal pelvis (urine) in its
  depth.
- **Tumours (label 2)**, each connected component its own subtype: clear-cell RCC
  (heterogeneous, hypervascular, a non-enhancing necrotic core more often the larger it is),
  papillary RCC (hypo-enhancing, homogeneous) or chromophobe RCC.
- **Cysts (label 3)**: simple (water, no visible wall) or complex (proteinaceous content, or a
  thick enhancing wall with septa).

Everything is blurred with the scanner's point spread; unlabelled voxels keep the body behind
them, so edges blend into whatever the kidney touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
import scipy.ndimage as ndi

from sparsekits.phantoms.body import BodyConfig, blur_sigma_vox, smooth_field
from sparsekits.phantoms.tissues import (
    CYST_SUBTYPES,
    RENAL_TISSUES,
    TUMOUR_SUBTYPES,
    R,
    check_phase,
)


@dataclass(frozen=True)
class KidneyConfig:
    """Geometry of the renal tissues (the HU are in ``tissues``)."""

    cortex_mm: tuple[float, float] = (4.0, 7.0)
    # Perirenal fat: a case's typical thickness (it varies around each kidney), 8-10 mm a side
    # on average by MRI (ChoiPRF2024: 65-77 mm summed over four sides of both kidneys), 5-25 mm
    # by CT (PerinephricMDCT); never thinner than the hepatorenal strip (~2-3 mm by ultrasound,
    # OkeahialamPRF2020), so organs meet the kidney only across fat.
    perirenal_fat_mm: tuple[float, float] = (5.0, 14.0)
    perirenal_fat_min_mm: float = 2.0
    sinus_closing_mm: float = 12.0  # concavities narrower than this are the renal sinus
    pelvis_depth: float = 0.45  # sinus deeper than this fraction of its deepest is urine
    # Clear-cell RCC shows necrotic or cystic areas in 79-88 % of cases (Zhang2007), the larger
    # the more often: p = necrosis_p * min(1, diameter / necrosis_full_mm).
    necrosis_p: float = 0.85
    necrosis_full_mm: float = 30.0
    complex_wall_mm: tuple[float, float] = (1.5, 4.0)  # Bosniak IIF-III walls and septa
    # Shares of the lesion subtypes (``tissues`` gives the published ones).
    tumour_subtypes: dict[R, float] = field(default_factory=lambda: dict(TUMOUR_SUBTYPES))
    cyst_subtypes: dict[R, float] = field(default_factory=lambda: dict(CYST_SUBTYPES))


@dataclass(frozen=True)
class KidneyLook:
    """One case's renal appearance: mean HU per renal tissue, cortex and fat thickness."""

    phase: str
    means: tuple[float, ...]  # indexed by ``R``
    cortex_mm: float
    perirenal_fat_mm: float

    @classmethod
    def draw(cls, phase: str, config: KidneyConfig, rng: np.random.Generator) -> KidneyLook:
        tissues = RENAL_TISSUES[check_phase(phase)]
        means = tuple(
            tissues[tissue].hu + tissues[tissue].case_sd * rng.standard_normal() for tissue in R
        )
        return cls(
            phase=phase,
            means=means,
            cortex_mm=float(rng.uniform(*config.cortex_mm)),
            perirenal_fat_mm=float(rng.uniform(*config.perirenal_fat_mm)),
        )

    def texture(self, tissue: R) -> float:
        return RENAL_TISSUES[self.phase][tissue].texture

    def lesion_mean(self, tissue: R, rng: np.random.Generator) -> float:
        """A lesion's own mean: the case's mean, varied by the tissue's spread."""
        return self.means[tissue] + 0.5 * RENAL_TISSUES[self.phase][tissue].case_sd * float(
            rng.standard_normal()
        )


def kidney_anatomy_hu(
    labels: np.ndarray,
    spacing,
    look: KidneyLook,
    background: np.ndarray,
    body: BodyConfig,
    config: KidneyConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Noise-free, blurred HU of a box around labels; the mask of voxels it decides; and one
    record per lesion (label, subtype, equivalent diameter).

    The decided region is the labels plus a ``body.seam_mm`` rim that holds the blurred edge,
    plus the renal sinus.
    """
    spacing = tuple(float(s) for s in spacing)
    labelled = labels > 0
    hu = background.astype(np.float32, copy=True)
    sinus = _renal_sinus(labelled, spacing, config) & ~labelled
    _paint_sinus(hu, sinus, spacing, look, config, rng)
    _paint_parenchyma(hu, labels == 1, labelled, spacing, look, rng)
    lesions = []
    for label, subtypes in ((3, config.cyst_subtypes), (2, config.tumour_subtypes)):
        for component, diameter in _components(labels == label, spacing):
            shares = np.asarray(list(subtypes.values()), float)
            subtype = R(rng.choice(list(subtypes), p=shares / shares.sum()))
            _paint_lesion(hu, component, subtype, diameter, spacing, look, config, rng)
            lesions.append(
                {"label": label, "subtype": subtype.name.lower(), "diameter_mm": round(diameter, 1)}
            )
    hu = ndi.gaussian_filter(hu, blur_sigma_vox(spacing, body), truncate=3.0)
    outside = ndi.distance_transform_edt(~labelled, sampling=spacing)
    return hu, (outside <= body.seam_mm) | sinus, lesions


def _paint_parenchyma(hu, kidney, labelled, spacing, look: KidneyLook, rng) -> None:
    """Cortex near the outer surface, medulla deeper; columns of cortex between the pyramids."""
    if not kidney.any():
        return
    depth = ndi.distance_transform_edt(labelled, sampling=spacing).astype(np.float32)
    lobules = smooth_field(kidney.shape, spacing, 7.0, rng)
    texture = smooth_field(kidney.shape, spacing, 3.0, rng)
    medulla = kidney & (depth > look.cortex_mm + 4 * np.maximum(lobules, 0))
    cortex = kidney & ~medulla
    for mask, tissue in ((cortex, R.CORTEX), (medulla, R.MEDULLA)):
        hu[mask] = look.means[tissue] + look.texture(tissue) * texture[mask]


def _renal_sinus(labelled: np.ndarray, spacing, config: KidneyConfig) -> np.ndarray:
    """The kidney's morphological closing by a ball of ``sinus_closing_mm``, on a grid no finer
    than 2 mm (cheap at KiTS sizes), back on the box's grid."""
    if not labelled.any():
        return np.zeros_like(labelled)
    factors = [max(1, int(2.0 // s)) for s in spacing]
    coarse = _block_any(labelled, factors)
    coarse_spacing = [s * f for s, f in zip(spacing, factors, strict=True)]
    pad = [int(np.ceil(config.sinus_closing_mm / s)) + 1 for s in coarse_spacing]
    padded = np.pad(coarse, [(p, p) for p in pad])
    dilated = (
        ndi.distance_transform_edt(~padded, sampling=coarse_spacing) <= config.sinus_closing_mm
    )
    closed = ndi.distance_transform_edt(dilated, sampling=coarse_spacing) > config.sinus_closing_mm
    closed = closed[tuple(slice(p, -p) for p in pad)]
    fine = closed
    for axis, factor in enumerate(factors):
        fine = np.repeat(fine, factor, axis=axis)
    out = np.zeros_like(labelled)
    out[tuple(slice(0, n) for n in fine.shape)] = fine[tuple(slice(0, n) for n in labelled.shape)]
    return out


def _block_any(mask: np.ndarray, factors) -> np.ndarray:
    """``mask`` reduced by ``factors`` per axis: a block is set if any voxel in it is."""
    padded_shape = [int(np.ceil(n / f)) * f for n, f in zip(mask.shape, factors, strict=True)]
    padded = np.zeros(padded_shape, bool)
    padded[tuple(slice(0, n) for n in mask.shape)] = mask
    blocks = padded.reshape(
        [part for n, f in zip(padded_shape, factors, strict=True) for part in (n // f, f)]
    )
    return blocks.any(axis=(1, 3, 5))


def _paint_sinus(hu, sinus, spacing, look: KidneyLook, config: KidneyConfig, rng) -> None:
    """Sinus fat, with the renal pelvis (urine) in the sinus's depth."""
    if not sinus.any():
        return
    depth = ndi.distance_transform_edt(sinus, sampling=spacing)
    pelvis = sinus & (depth > config.pelvis_depth * depth.max())
    texture = smooth_field(sinus.shape, spacing, 4.0, rng)
    for mask, tissue in ((sinus & ~pelvis, R.SINUS_FAT), (pelvis, R.URINE)):
        hu[mask] = look.means[tissue] + look.texture(tissue) * texture[mask]


def _components(mask: np.ndarray, spacing):
    """(component mask, equivalent diameter in mm) of each 26-connected component."""
    if not mask.any():
        return
    components, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    voxel_mm3 = float(np.prod(spacing))
    for box, label in zip(ndi.find_objects(components), range(1, count + 1), strict=True):
        component = np.zeros_like(mask)
        component[box] = components[box] == label
        volume = float(component[box].sum()) * voxel_mm3
        yield component, (6 * volume / np.pi) ** (1 / 3)


def _paint_lesion(hu, mask, subtype: R, diameter, spacing, look, config: KidneyConfig, rng):
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
    inside = mask[grown]
    view = hu[grown]
    texture = smooth_field(inside.shape, spacing, 4.0, rng)
    values = look.lesion_mean(subtype, rng) + look.texture(subtype) * texture
    if subtype == R.CLEAR_CELL:
        necrosis_p = config.necrosis_p * min(1.0, diameter / config.necrosis_full_mm)
        if rng.random() < necrosis_p:
            core = _irregular_core(inside, spacing, rng)
            necrosis = look.lesion_mean(R.NECROSIS, rng) + look.texture(R.NECROSIS) * texture
            values = np.where(core, necrosis, values)
    elif subtype == R.COMPLEX_CYST and rng.random() < 0.5:
        # a simple-fluid cyst with a thick enhancing wall and septa (Bosniak IIF-III)
        wall = _wall_and_septa(inside, spacing, config, rng)
        fluid = look.lesion_mean(R.SIMPLE_CYST, rng) + look.texture(R.SIMPLE_CYST) * texture
        values = np.where(wall, look.means[R.CYST_WALL], fluid)
    view[inside] = values[inside]


def _irregular_core(inside: np.ndarray, spacing, rng) -> np.ndarray:
    """A necrotic core: the deeper part of the lesion, its border made irregular."""
    depth = ndi.distance_transform_edt(inside, sampling=spacing)
    wobble = smooth_field(inside.shape, spacing, 5.0, rng)
    return inside & (depth > depth.max() * (0.45 + 0.15 * wobble))


def _wall_and_septa(inside: np.ndarray, spacing, config: KidneyConfig, rng) -> np.ndarray:
    depth = ndi.distance_transform_edt(inside, sampling=spacing)
    wall = inside & (depth <= rng.uniform(*config.complex_wall_mm))
    points = np.meshgrid(
        *[np.arange(n, dtype=np.float32) * s for n, s in zip(inside.shape, spacing, strict=True)],
        indexing="ij",
    )
    centre = [float(p[inside].mean()) for p in points]
    for _ in range(int(rng.integers(1, 4))):
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        offset = rng.uniform(-0.3, 0.3) * depth.max()
        distance = sum((p - c) * n for p, c, n in zip(points, centre, normal, strict=True))
        wall |= inside & (np.abs(distance - offset) <= 0.75)
    return wall
