"""NRRD and MetaImage files written by SimpleITK (LPS geometry) for the tests of every package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A rotation about all three axes (20, -10 and 35 degrees): oblique direction cosines that
# round in every component.
_X, _Y, _Z = np.deg2rad([20.0, -10.0, 35.0])
_ROTATION = (
    np.array([[1, 0, 0], [0, np.cos(_X), -np.sin(_X)], [0, np.sin(_X), np.cos(_X)]])
    @ np.array([[np.cos(_Y), 0, np.sin(_Y)], [0, 1, 0], [-np.sin(_Y), 0, np.cos(_Y)]])
    @ np.array([[np.cos(_Z), -np.sin(_Z), 0], [np.sin(_Z), np.cos(_Z), 0], [0, 0, 1]])
)
OBLIQUE = tuple(float(v) for v in _ROTATION.ravel())
# Every suffix read: NRRD, detached NRRD header, MetaImage, detached MetaImage header.
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def write_itk_image(
    path: Path,
    array: np.ndarray,
    spacing=(2.5, 2.5, 3.0),
    origin=(-12.3, 45.6, -78.9),
    direction=OBLIQUE,
):
    """Write ``array`` [X, Y, Z] with SimpleITK (the format from ``path``'s suffix); return the
    SimpleITK image written."""
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    volume.SetSpacing(spacing)
    volume.SetOrigin(origin)
    volume.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(volume, str(path))
    return volume
