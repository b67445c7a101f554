"""Reading CT images (NIfTI files, DICOM series folders) and label maps, writing label maps.

Arrays are in stored voxel order [X, Y, Z] (nibabel's order; DICOM columns, rows, slices) and
carry their ``Grid`` (affine voxel -> world RAS mm). DICOM geometry, which SimpleITK gives in
LPS, is converted to RAS so that both sources share one convention.

HU-like rule (``check_hu_like``): a CT in Hounsfield units of a body always contains air (outside
the body, lungs, bowel gas, the scanner's padding value), so its minimum is below -500 HU. MR
images, 8-bit (0-255) exports and CTs stored without their rescale slope/intercept have no value
below -500 and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from sparsekits.data.geometry import Grid
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path
from sparsekits.layout import NIFTI_SUFFIXES

# See the module docstring: every HU body CT has voxels below this value.
AIR_BELOW_HU = -500.0
MAX_LABEL = 3
# Slice spacing more than this factor above the series' median spacing means missing slices.
_SLICE_GAP_FACTOR = 1.5
# LPS (DICOM, ITK) <-> RAS (NIfTI): negate the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Image:
    """A 3D image with its geometry: ``array`` [X, Y, Z] (int16 or float32) on ``grid``."""

    array: np.ndarray
    grid: Grid
    path: Path | None = None


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' at byte 128 (the extension is optional in DICOM)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path, require_hu: bool = True) -> Image:
    """Read a CT image: a .nii/.nii.gz file or a folder holding one DICOM series.

    Raises InputError (naming the file) on unreadable input, a non-3D image, or, with
    ``require_hu``, intensities that are not HU-like (see the module docstring).
    """
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    elif is_nifti(path):
        image = _read_nifti(path)
    elif not path.exists():
        raise InputError(path, "no such file or folder")
    else:
        raise InputError(path, "not a NIfTI file (.nii, .nii.gz) or a DICOM series folder")
    image.array = _compact_intensities(image.array)
    if require_hu:
        check_hu_like(image.array, path)
    return image


def read_label_map(path: str | Path, like: Image | None = None) -> Image:
    """Read a KiTS23 label map (values 0-3) as uint8; with ``like``, check it shares that grid."""
    path = Path(path)
    if not is_nifti(path):
        raise InputError(path, "a label map must be a NIfTI file (.nii, .nii.gz)")
    image = _read_nifti(path)
    image.array = _checked_labels(image.array, path)
    if like is not None and not image.grid.same_as(like.grid):
        raise InputError(
            path,
            f"label map grid {image.grid} differs from its image's {like.grid} (shape or affine)",
        )
    return image


def write_label_map(path: str | Path, labels: np.ndarray, grid: Grid) -> Path:
    """Write ``labels`` on ``grid`` as a uint8 NIfTI (sform and qform = the grid's affine)."""
    path = Path(path)
    if labels.shape != grid.shape:
        raise ValueError(f"labels shape {labels.shape} does not match grid {grid.shape}")
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), grid.affine)
    image.set_data_dtype(np.uint8)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def check_hu_like(array: np.ndarray, path: Path) -> None:
    """Refuse intensities that cannot be CT Hounsfield units (see the module docstring)."""
    low, high = float(array.min()), float(array.max())
    if low >= AIR_BELOW_HU:
        kind = "a 0-255 range" if low >= 0 and high <= 255 else "no air"
        raise InputError(
            path,
            f"intensities are not HU-like ({kind}: min {low:g}, max {high:g}); a CT in "
            f"Hounsfield units has air below {AIR_BELOW_HU:g} HU (MR or an 8-bit export?)",
        )


def _read_nifti(path: Path) -> Image:
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        nifti = _load_nifti(path)
        array = np.asanyarray(nifti.dataobj)
    except Exception as error:  # nibabel and the inflaters raise many types for damaged files
        raise InputError(path, f"unreadable NIfTI ({_one_line(error)})") from error
    array = _as_3d(array, path)
    return Image(array, Grid(array.shape, nifti.affine), path)


def _load_nifti(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    if not path.name.lower().endswith(".gz"):
        return nib.load(path)
    # ISA-L inflates about 2.5x faster than zlib, and inflating dominates reading a CT.
    data = igzip.decompress(path.read_bytes())
    header_size = int.from_bytes(data[:4], "little")
    if header_size not in (348, 540):
        header_size = int.from_bytes(data[:4], "big")
    image_class = nib.Nifti2Image if header_size == 540 else nib.Nifti1Image
    return image_class.from_bytes(data)


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    # Trailing singleton axes (a 4D file with one volume) are harmless; real 2D/4D are not.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 1:
        raise InputError(path, f"expected a 3D image, got shape {tuple(array.shape)}")
    return array


def _compact_intensities(array: np.ndarray) -> np.ndarray:
    """int16 when the values are whole numbers in range (CT's native type), else float32."""
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.integer) or np.array_equal(array, np.round(array)):
        low, high = array.min(), array.max()
        info = np.iinfo(np.int16)
        if info.min <= low and high <= info.max:
            return array.astype(np.int16)
    return array.astype(np.float32, copy=False)


def _checked_labels(array: np.ndarray, path: Path) -> np.ndarray:
    low, high = array.min(), array.max()
    if low < 0 or high > MAX_LABEL:
        raise InputError(path, f"label values must be 0-{MAX_LABEL}, found {low:g} to {high:g}")
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise InputError(path, "label values must be whole numbers 0-3")
    return array.astype(np.uint8, copy=False)


def _read_dicom_series(folder: Path) -> Image:
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(folder, "no DICOM series found in this folder")
    if len(series_ids) > 1:
        listing = "; ".join(
            f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
            for uid in series_ids
        )
        raise InputError(folder, f"holds {len(series_ids)} DICOM series, expected one: {listing}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    _check_slice_positions(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        volume = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"unreadable DICOM series ({_one_line(error)})") from error
    # SimpleITK arrays are [z, y, x]; ours are [x, y, z] like the index (i, j, k).
    array = _as_3d(sitk.GetArrayFromImage(volume).transpose(2, 1, 0), folder)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(volume.GetDirection()).reshape(3, 3) * np.asarray(volume.GetSpacing())
    lps[:3, 3] = volume.GetOrigin()
    return Image(array, Grid(array.shape, _LPS_TO_RAS @ lps), folder)


def _check_slice_positions(folder: Path, files: tuple[str, ...]) -> None:
    """Refuse a series whose slices are not evenly spaced (missing or duplicated slices)."""
    import pydicom

    if len(files) < 2:
        raise InputError(folder, f"a DICOM series needs at least 2 slices, found {len(files)}")
    positions, orientation = [], None
    for name in files:
        try:
            header = pydicom.dcmread(name, stop_before_pixels=True)
            positions.append([float(v) for v in header.ImagePositionPatient])
            orientation = orientation or [float(v) for v in header.ImageOrientationPatient]
        except Exception as error:
            raise InputError(name, f"unreadable DICOM slice ({_one_line(error)})") from error
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.sort(np.asarray(positions) @ normal)
    steps = np.diff(along)
    median = float(np.median(steps))
    if median <= 0 or steps.min() < median / _SLICE_GAP_FACTOR:
        raise InputError(folder, "DICOM slices share positions (duplicated or mixed series)")
    if steps.max() > median * _SLICE_GAP_FACTOR:
        where = int(steps.argmax())
        raise InputError(
            folder,
            f"missing DICOM slices: gap of {steps.max():.3g} mm after position "
            f"{along[where]:.4g} mm (slice spacing {median:.3g} mm)",
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
