"""PNG overlays of a prediction: an axial and a coronal slice through each kidney.

Display follows the radiological convention whatever the storage order of the arrays: the
patient's right on the image's left, anterior up in axial views, superior up in coronal views.
The arrays are first reoriented to RAS from the affine (``reorient``), so RAS, LPS or I-P-L
storage of the same anatomy gives the same pixels. Pixels are square in millimetres (the image's
width:height is the slice's physical extent), labels are blended over the windowed CT, and each
file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from sparsekits.fileio import atomic_path
from sparsekits.predict.report import SIDES, split_sides
from sparsekits.regions import LABEL_NAMES

if TYPE_CHECKING:
    from sparsekits.data.body import Body

DPI = 100


@dataclass(frozen=True)
class OverlayConfig:
    """Look of the overlays: image size, label colours (RGB 0-1) and their opacity."""

    long_side_px: int = 768
    alpha: float = 0.45
    colours: dict[int, tuple[float, float, float]] = field(
        default_factory=lambda: {1: (0.1, 0.8, 0.1), 2: (0.95, 0.1, 0.1), 3: (0.15, 0.45, 1.0)}
    )


OVERLAY_CONFIG = OverlayConfig()

# Per plane: the RAS axis held fixed, and the screen-edge letters (left, right, top, bottom).
_PLANES = {"axial": (2, "R", "L", "A", "P"), "coronal": (1, "R", "L", "S", "I")}


def reorient(
    array: np.ndarray, affine: np.ndarray, axcodes: str = "RAS"
) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with array axes along ``axcodes`` (flips and transposes only).

    Returns a view of ``array`` and its new affine; the world position of every voxel is kept.
    Oblique affines are taken to their closest axis-aligned orientation (nibabel's rule).
    """
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
    new_affine = affine @ inv_ornt_aff(transform, array.shape)
    return apply_orientation(array, transform), new_affine


def _display_slice(volume_ras: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A 2D slice with rows top-to-bottom and columns patient-right-to-left."""
    fixed_axis = _PLANES[plane][0]
    section = np.take(volume_ras, index, axis=fixed_axis)  # axes (x, y) or (x, z)
    # Rows: anterior (axial) or superior (coronal) first. Columns: RAS+ x grows toward the
    # patient's right, which the radiological convention shows on the left: x descending.
    return section.T[::-1, ::-1]


def _blend(ct: np.ndarray, labels: np.ndarray, window, config: OverlayConfig) -> np.ndarray:
    low, high = window
    grey = np.clip((ct.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for label, colour in config.colours.items():
        mask = labels == label
        rgb[mask] = (1 - config.alpha) * rgb[mask] + config.alpha * np.asarray(colour)
    return rgb


def _figure_pixels(extent_mm: tuple[float, float], config: OverlayConfig) -> tuple[int, int]:
    """(width, height) in pixels: the longer side ``long_side_px``, the other to scale."""
    width_mm, height_mm = extent_mm
    scale = config.long_side_px / max(width_mm, height_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def _render(rgb: np.ndarray, extent_mm, title: str, letters, path: Path, config) -> Path:
    width, height = _figure_pixels(extent_mm, config)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(rgb, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    text = {"color": "yellow", "fontsize": 9, "transform": axes.transAxes}
    boxed = {**text, "bbox": {"facecolor": "black", "alpha": 0.5, "linewidth": 0}}
    axes.text(0.01, 0.99, title, va="top", ha="left", **boxed)
    left, right, top, bottom = letters
    axes.text(0.01, 0.5, left, va="center", ha="left", **text)
    axes.text(0.99, 0.5, right, va="center", ha="right", **text)
    axes.text(0.5, 0.99, top, va="top", ha="center", **text)
    axes.text(0.5, 0.01, bottom, va="bottom", ha="center", **text)
    handles = [
        Patch(color=colour, alpha=config.alpha + 0.3, label=LABEL_NAMES[label])
        for label, colour in config.colours.items()
    ]
    axes.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.5)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _slice_indices(
    labels_ras: np.ndarray, affine_ras: np.ndarray, body: Body | None
) -> dict[str, np.ndarray]:
    """RAS voxel index of each side's kidney centroid (sides as the report splits them);
    {'': centre} when no kidney is found."""
    split = split_sides(labels_ras, affine_ras, body)
    inverse = np.linalg.inv(affine_ras)
    last = np.array(labels_ras.shape) - 1
    targets = {}
    for side in SIDES:
        centroid = split.side_centroid_mm(side)
        if centroid is not None:
            index = inverse[:3, :3] @ centroid + inverse[:3, 3]
            targets[side] = np.clip(np.rint(index), 0, last).astype(int)
    return targets or {"": last // 2}


def write_overlays(
    ct: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    out_prefix: Path,
    window: tuple[float, float] = (-160, 240),
    config: OverlayConfig = OVERLAY_CONFIG,
    body: Body | None = None,
) -> list[Path]:
    """Write PREFIX_{right,left}_{axial,coronal}.png (or PREFIX_{axial,coronal}.png, noted as
    mid-volume slices, when no kidney is labelled); return the paths written.

    ``ct`` (HU) and ``labels`` share one grid, ``affine`` maps it to RAS mm; sides are split at
    ``body``'s midline (``sparsekits.predict.report``).
    """
    if ct.shape != labels.shape:
        raise ValueError(f"CT shape {ct.shape} differs from labels {labels.shape}")
    ct_ras, affine_ras = reorient(ct, affine)
    labels_ras, _ = reorient(labels, affine)
    spacing = np.linalg.norm(affine_ras[:3, :3], axis=0)
    out_prefix = Path(out_prefix)
    paths = []
    for side, index in _slice_indices(labels_ras, affine_ras, body).items():
        for plane, (fixed_axis, *letters) in _PLANES.items():
            shown = [axis for axis in range(3) if axis != fixed_axis]  # (x, y) or (x, z)
            extent_mm = tuple(float(labels_ras.shape[a] * spacing[a]) for a in shown)
            position = int(index[fixed_axis])
            rgb = _blend(
                _display_slice(ct_ras, plane, position),
                _display_slice(labels_ras, plane, position),
                window,
                config,
            )
            what = f"{side} kidney" if side else "no kidney found: mid-volume slice"
            world = affine_ras[:3, :3] @ index + affine_ras[:3, 3]
            title = f"{what}, {plane} at {'xyz'[fixed_axis]} = {world[fixed_axis]:.1f} mm"
            name = (
                f"{out_prefix.name}_{side}_{plane}.png"
                if side
                else f"{out_prefix.name}_{plane}.png"
            )
            paths.append(
                _render(rgb, extent_mm, title, letters, out_prefix.with_name(name), config)
            )
    return paths
