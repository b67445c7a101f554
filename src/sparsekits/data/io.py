"""Reading CT images (NIfTI, NRRD and MetaImage files, DICOM series folders) and label maps,
writing label maps (NIfTI, NRRD, MetaImage).

Arrays are in stored voxel order [X, Y, Z] (nibabel's and ITK's index order; DICOM columns, rows,
slices) and carry their ``Grid`` (affine voxel -> world RAS mm). The geometry of DICOM, NRRD and
MetaImage, which SimpleITK gives in LPS, is converted to RAS so that every source shares one
convention, and back to LPS when a label map is written through SimpleITK.

Reading refuses, in one line naming the file (``InputError``), what cannot be a CT:

- HU-like rule (``check_hu_like``): a CT in Hounsfield units of a body always contains air (outside
  the body, lungs, bowel gas, the scanner's padding value), so its minimum is below -500 HU. MR
  images, 8-bit (0-255) exports and CTs stored without their rescale slope/intercept have no value
  below -500 and are refused; so are values mostly outside ``CT_RANGE_HU`` (HU x 1000, a wrong
  rescale slope), and NaN or infinite values.
- Geometry (``check_geometry``): a single slice, voxel sizes outside ``SPACING_RANGE_MM``, a field
  of view larger than ``FIELD_OF_VIEW_MM``, or an affine that is not finite and invertible. A NIfTI,
  NRRD or MetaImage header is checked before its voxels are read, and every image before any grid
  is resampled from it, so a damaged header cannot make prediction allocate without bound.
- DICOM: a series of another modality than CT (``Modality`` tag), missing or duplicated slices,
  slices that disagree on orientation or pixel spacing, damaged files (parsed by pydicom before
  GDCM reads them, see ``_dicom_headers``).

Slices ``THICK_SLICE_MM`` or more apart are read, with a warning (``thick_slice_warning``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip

from sparsekits.data.geometry import Grid
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path
from sparsekits.layout import IMAGE_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, has_suffix

# See the module docstring: every HU body CT has voxels below this value.
AIR_BELOW_HU = -500.0
# What a CT in HU holds: air at -1000 (noise a little below it), the densest bone and contrast
# under 4000 (12-bit scanners store at most 3071). Padding outside the scanned circle (-2048,
# -3024) and metal lie outside, but never in most voxels: when more than MAX_SHARE_OUTSIDE_HU of
# them do, the values are not HU (scaled x1000, raw units, a wrong rescale slope).
CT_RANGE_HU = (-1100.0, 4000.0)
MAX_SHARE_OUTSIDE_HU = 0.5
# A CT's voxels: scanners reconstruct 0.2-1 mm in plane and 0.5-10 mm between slices. Outside
# 0.1-20 mm the header is in another unit (metres, microns) or damaged.
SPACING_RANGE_MM = (0.1, 20.0)
# A CT's field of view, shortest axis first: under 1 m across (a scanner's bore is narrower) and
# 2 m long (a patient is shorter). A larger image has a wrong header, and the stage grids
# resampled from its extent would not fit in memory.
FIELD_OF_VIEW_MM = (1000.0, 1000.0, 2000.0)
# Slices this far apart or more are accepted, with a warning: a kidney then spans a dozen slices,
# outlines are coarse and lesions thinner than a slice can be missed, but the volumes and the
# lesions that are seen still stand (old and low-dose protocols reconstruct such slices).
THICK_SLICE_MM = 10.0
# A DICOM series of this modality (tag 0008,0060) is a CT; a series without the tag is accepted.
CT_MODALITY = "CT"
MAX_LABEL = 3
# Slice spacing more than this factor above the series' median spacing means missing slices.
_SLICE_GAP_FACTOR = 1.5
# One series' slices agree on direction cosines and pixel spacing (mm) to this: scanners write
# them with 6 to 16 decimals.
_SLICES_AGREE = 1e-4
# LPS (DICOM, ITK) <-> RAS (NIfTI): negate the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# The image files read here, as a refusal names them.
_IMAGE_FILES = ", ".join(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class DicomSource:
    """The slices a DICOM image was read from, in the order of its last array axis: what a
    DICOM-SEG of it references (``sparsekits.data.dicom_seg``)."""

    files: tuple[Path, ...]
    sop_instance_uids: tuple[str, ...]


@dataclass
class Image:
    """A 3D image with its geometry: ``array`` [X, Y, Z] (int16 or float32) on ``grid``;
    ``dicom``: its slices, for an image read from a DICOM series (None for other files)."""

    array: np.ndarray
    grid: Grid
    path: Path | None = None
    dicom: DicomSource | None = None


def is_nifti(path: Path) -> bool:
    return has_suffix(path, NIFTI_SUFFIXES)


def is_image_file(path: Path) -> bool:
    """A file of an image format read here: NIfTI, NRRD or MetaImage."""
    return has_suffix(path, IMAGE_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' at byte 128 (the extension is optional in DICOM)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path, require_hu: bool = True) -> Image:
    """Read a CT image: a NIfTI, NRRD or MetaImage file, or a folder holding one DICOM series.

    Raises InputError (naming the file) on unreadable input, a non-3D image, a geometry no CT
    has, NaN or infinite values, a DICOM series of another modality, or, with ``require_hu``,
    intensities that are not HU-like (see the module docstring).
    """
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    elif is_image_file(path):
        image = _read_image_file(path)
    elif not path.exists():
        raise InputError(path, "no such file or folder")
    else:
        raise InputError(path, f"not an image file ({_IMAGE_FILES}) or a DICOM series folder")
    _check_finite(image.array, path)
    if require_hu:
        check_hu_like(image.array, path)
    image.array = _compact_intensities(image.array)
    return image


def read_label_map(path: str | Path, like: Image | None = None) -> Image:
    """Read a KiTS23 label map (values 0-3) as uint8; with ``like``, check it shares that grid."""
    path = Path(path)
    if not is_image_file(path):
        raise InputError(path, f"a label map must be an image file ({_IMAGE_FILES})")
    image = _read_image_file(path)
    check_label_values(image.array, path)
    image.array = image.array.astype(np.uint8, copy=False)
    if like is not None and not image.grid.same_as(like.grid):
        raise InputError(
            path,
            f"label map grid {image.grid} differs from its image's {like.grid} (shape or affine)",
        )
    return image


def write_label_map(path: str | Path, labels: np.ndarray, grid: Grid) -> Path:
    """Write ``labels`` on ``grid`` as uint8, in the format of ``path``'s suffix: NIfTI (sform and
    qform = the grid's affine), NRRD or MetaImage (compressed; LPS origin, spacing, direction)."""
    path = Path(path)
    if labels.shape != grid.shape:
        raise ValueError(f"labels shape {labels.shape} does not match grid {grid.shape}")
    if has_suffix(path, ITK_SUFFIXES):
        return _write_itk_label_map(path, labels, grid)
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
    bottom, top = CT_RANGE_HU
    share = np.count_nonzero((array < bottom) | (array > top)) / array.size
    if share > MAX_SHARE_OUTSIDE_HU:
        raise InputError(
            path,
            f"intensities are not HU: {share:.0%} of voxels lie outside {bottom:g}..{top:g} HU "
            f"after rescaling (min {low:g}, max {high:g}); values scaled x1000 or a wrong "
            "rescale slope?",
        )


def check_geometry(grid: Grid, path: Path) -> None:
    """Refuse a grid no CT has (see the module docstring), before anything is resampled."""
    linear = grid.affine[:3, :3]
    spacing = np.asarray(grid.spacing)
    # A determinant far below the product of the voxel sizes: axes (nearly) parallel.
    if not np.isfinite(grid.affine).all() or abs(np.linalg.det(linear)) < 1e-3 * spacing.prod():
        raise InputError(path, "the affine (voxel to world mm) is not finite and invertible")
    _check_spacing(spacing, path)
    extent = np.sort(np.asarray(grid.shape) * spacing)
    if np.any(extent > FIELD_OF_VIEW_MM):
        raise InputError(
            path,
            f"implausible field of view {_mm(extent)} mm: a CT's fits within "
            f"{_mm(FIELD_OF_VIEW_MM)} mm (a header in another unit, or damaged?)",
        )


def _check_spacing(spacing: np.ndarray, path: Path) -> None:
    low, high = SPACING_RANGE_MM
    if not np.all((spacing >= low) & (spacing <= high)):
        raise InputError(
            path,
            f"implausible voxel spacing {_mm(spacing)} mm: a CT's lies within {low:g}-{high:g} "
            "mm (a header in metres or microns, or damaged?)",
        )


def thick_slice_warning(grid: Grid) -> str | None:
    """The warning for slices THICK_SLICE_MM or more apart (see its comment), else None."""
    thickest = max(grid.spacing)
    if thickest < THICK_SLICE_MM:
        return None
    return (
        f"slices {thickest:.3g} mm apart ({THICK_SLICE_MM:g} mm or more): outlines are coarse "
        "and lesions thinner than a slice can be missed"
    )


def _mm(values) -> str:
    return " x ".join(f"{value:.4g}" for value in values)


def _check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.integer) or np.isfinite(array).all():
        return
    counts = (
        (np.count_nonzero(np.isnan(array)), "NaN"),
        (np.count_nonzero(np.isinf(array)), "infinite"),
    )
    found = ", ".join(f"{count} {kind}" for count, kind in counts if count)
    raise InputError(path, f"NaN or infinite voxel values ({found}); a CT holds numbers only")


def _itk_affine(image: Any) -> np.ndarray:
    """The RAS affine of a SimpleITK image or of a reader that read its header (LPS direction
    cosines, spacing and origin)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ lps


def _read_image_file(path: Path) -> Image:
    """A NIfTI file through nibabel, an NRRD or MetaImage file through SimpleITK."""
    return _read_itk_file(path) if has_suffix(path, ITK_SUFFIXES) else _read_nifti(path)


def _read_itk_file(path: Path) -> Image:
    """An NRRD or MetaImage file: like a NIfTI, its header is checked before its voxels are read
    (a damaged one is refused, not obeyed)."""
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(path, "no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(path, f"unreadable image file ({_itk_problem(error)})") from error
    size = tuple(int(n) for n in reader.GetSize())
    spatial = _spatial_shape(size, path)
    if len(size) != 3:  # a 4D image of one volume: ITK's direction is 4D too
        raise InputError(path, f"expected a 3D image, got {len(size)} dimensions")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, "several values per voxel (a vector or colour image); a CT has one")
    grid = Grid(spatial, _itk_affine(reader))
    check_geometry(grid, path)
    try:
        with _quiet_native_stderr():
            array = sitk.GetArrayFromImage(reader.Execute()).transpose(2, 1, 0)
    except RuntimeError as error:
        raise InputError(path, f"unreadable image file ({_itk_problem(error)})") from error
    if array.dtype.kind not in "iuf":
        raise InputError(path, f"voxel type {array.dtype} is not a number type an image uses")
    return Image(array, grid, path)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what ITK's C++ readers print to the process's stderr about a damaged file (MetaIO
    prints its parse errors there): the fault is refused here, in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _itk_problem(error: RuntimeError) -> str:
    """ITK's message less the source file and line that SimpleITK puts before it."""
    return _one_line(RuntimeError(str(error).split("ITK ERROR:", 1)[-1]))


def _write_itk_label_map(path: Path, labels: np.ndarray, grid: Grid) -> Path:
    """``labels`` as a compressed uint8 NRRD or MetaImage: the grid's affine back to ITK's LPS
    origin, spacing (the axes' lengths) and direction cosines."""
    import SimpleITK as sitk

    lps = _LPS_TO_RAS @ grid.affine  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    volume = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8).transpose(2, 1, 0))
    volume.SetSpacing(spacing.tolist())
    volume.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    volume.SetOrigin(lps[:3, 3].tolist())
    with atomic_path(path) as tmp:
        sitk.WriteImage(volume, str(tmp), useCompression=True)
    return path


def _read_nifti(path: Path) -> Image:
    """The header is checked before the voxels are read: a damaged one is refused, not obeyed."""
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with _quiet_nibabel():
            nifti, n_bytes = _load_nifti(path)
        shape, dtype = nifti.header.get_data_shape(), nifti.header.get_data_dtype()
        offset = nifti.dataobj.offset  # vox_offset as nibabel reads it (its header copy says 0)
        affine = nifti.affine
    except Exception as error:  # nibabel and the inflaters raise many types for damaged files
        raise InputError(path, f"unreadable NIfTI ({_one_line(error)})") from error
    spatial = _spatial_shape(shape, path)
    if dtype.kind not in "iuf":
        raise InputError(path, f"voxel type {dtype} is not a number type an image uses")
    needed = offset + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > n_bytes:
        raise InputError(
            path,
            f"truncated NIfTI: its header declares {needed:,} bytes, the file holds {n_bytes:,}",
        )
    grid = Grid(spatial, affine)
    check_geometry(grid, path)
    try:
        array = np.asanyarray(nifti.dataobj)
    except Exception as error:
        raise InputError(path, f"unreadable NIfTI ({_one_line(error)})") from error
    return Image(array.reshape(spatial), grid, path)


def _load_nifti(path: Path) -> tuple[nib.Nifti1Image | nib.Nifti2Image, int]:
    """The image (header read, voxels not yet) and the size of the data it was read from."""
    if not path.name.lower().endswith(".gz"):
        return nib.load(path), path.stat().st_size
    # ISA-L inflates about 2.5x faster than zlib, and inflating dominates reading a CT.
    data = igzip.decompress(path.read_bytes())
    header_size = int.from_bytes(data[:4], "little")
    if header_size not in (348, 540):
        header_size = int.from_bytes(data[:4], "big")
    image_class = nib.Nifti2Image if header_size == 540 else nib.Nifti1Image
    return image_class.from_bytes(data), len(data)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence the log lines nibabel writes about header faults it repairs: a fault that matters
    is refused here, in one line."""
    logger = nib.imageglobals.logger
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3D shape of an image stored with ``shape``, or InputError."""
    # Trailing singleton axes (a 4D file with one volume) are harmless; real 2D/4D are not.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D image, got shape {tuple(shape)}")
    if min(shape) < 2:
        kind = "a single slice" if min(shape) == 1 else "no voxels"
        raise InputError(
            path, f"{kind} (shape {tuple(shape)}); a 3D CT has 2 or more voxels along each axis"
        )
    return tuple(int(n) for n in shape)


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


def check_label_values(array: np.ndarray, path: Path) -> None:
    """Refuse label values other than KiTS23's whole numbers 0-3 (an organ map, say)."""
    low, high = array.min(), array.max()
    if low < 0 or high > MAX_LABEL:
        raise InputError(path, f"label values must be 0-{MAX_LABEL}, found {low:g} to {high:g}")
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise InputError(path, f"label values must be whole numbers 0-{MAX_LABEL}")


def _read_dicom_series(folder: Path) -> Image:
    import SimpleITK as sitk

    headers = _dicom_headers(folder)
    files = _series_files(folder, headers)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        volume = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"unreadable DICOM series ({_one_line(error)})") from error
    if volume.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(folder, "colour DICOM (several samples per pixel); a CT has one")
    # SimpleITK arrays are [z, y, x]; ours are [x, y, z] like the index (i, j, k).
    array = sitk.GetArrayFromImage(volume).transpose(2, 1, 0)
    grid = Grid(_spatial_shape(array.shape, folder), _itk_affine(volume))
    check_geometry(grid, folder)
    # ``files`` are in slice order, and the reader stacks them in that order along z.
    uids = tuple(str(headers[name].get("SOPInstanceUID", "")) for name in files)
    return Image(array, grid, folder, DicomSource(tuple(map(Path, files)), uids))


def _dicom_headers(folder: Path) -> dict[str, Any]:
    """The header of every DICOM file in ``folder``, each element parsed by pydicom and the pixel
    data checked, before GDCM reads any file: GDCM obeys a damaged length or value
    representation, allocating gigabytes for a file of kilobytes."""
    import pydicom

    headers = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and is_dicom_file(path)):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on values outside the standard
                header = pydicom.dcmread(path)
                for _element in (*header.file_meta, *header.iterall()):
                    pass  # iterating converts each raw element, raising on damaged ones
                _check_pixel_data(header)
        except Exception as error:
            raise InputError(path, f"unreadable DICOM file ({_one_line(error)})") from error
        del header.PixelData  # checked; GDCM reads it again
        headers[str(path)] = header
    return headers


def _check_pixel_data(header: Any) -> None:
    """Refuse a slice whose pixel data is missing or shorter than its Rows x Columns need: a
    damaged length field has thrown the parsing out of step."""
    if "PixelData" not in header:
        raise ValueError("no pixel data")
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        return
    needed = (
        int(header.Rows)
        * int(header.Columns)
        * int(header.get("SamplesPerPixel") or 1)
        * int(header.get("NumberOfFrames") or 1)
        * ((int(header.BitsAllocated) + 7) // 8)
    )
    if len(header.PixelData) < needed:
        raise ValueError(f"{len(header.PixelData)} bytes of pixel data, its header says {needed}")


def _series_files(folder: Path, headers: dict[str, Any]) -> list[str]:
    """The files of the folder's one series, in slice order; InputError when it holds none or
    several."""
    series: dict[str, list[str]] = {}
    for name, header in headers.items():
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(name)
    if not series:
        raise InputError(folder, "no DICOM series found in this folder")
    if len(series) > 1:
        listing = "; ".join(f"{uid} ({len(files)} files)" for uid, files in sorted(series.items()))
        raise InputError(folder, f"holds {len(series)} DICOM series, expected one: {listing}")
    (files,) = series.values()
    if len(files) < 2:
        raise InputError(folder, f"a DICOM series needs at least 2 slices, found {len(files)}")
    return _ordered_ct_slices(folder, files, headers)


def _ordered_ct_slices(folder: Path, files: list[str], headers: dict[str, Any]) -> list[str]:
    """``files`` in slice order; InputError for another modality than CT, slices that disagree
    on orientation or pixel spacing, or are not evenly spaced (missing or duplicated slices)."""
    modalities, positions, orientations, spacings = set(), [], [], []
    for name in files:
        header = headers[name]
        try:
            modalities.add(str(header.get("Modality") or CT_MODALITY).strip().upper())
            positions.append(_floats(header.ImagePositionPatient, 3))
            orientations.append(_floats(header.ImageOrientationPatient, 6))
            spacings.append(_floats(header.PixelSpacing, 2))
        except Exception as error:
            raise InputError(name, f"unreadable DICOM slice ({_one_line(error)})") from error
    if modalities != {CT_MODALITY}:
        others = ", ".join(sorted(modalities - {CT_MODALITY}))
        raise InputError(folder, f"a DICOM series of modality {others}, not {CT_MODALITY}")
    # Checked here, not only on the volume read: GDCM and ITK print pages about a zero spacing.
    _check_spacing(spacings[0], folder)
    for values, what in ((orientations, "orientations"), (spacings, "pixel spacings")):
        if not np.allclose(values, values[0], rtol=0, atol=_SLICES_AGREE):
            raise InputError(folder, f"DICOM slices of different {what} (a mixed series)")
    orientation = orientations[0]
    along = np.asarray(positions) @ np.cross(orientation[:3], orientation[3:])
    _check_slice_positions(folder, np.sort(along))
    return [files[i] for i in np.argsort(along, kind="stable")]


def _floats(values, count: int) -> np.ndarray:
    floats = np.array([float(v) for v in values])
    if len(floats) != count or not np.isfinite(floats).all():
        raise ValueError(f"expected {count} finite numbers, got {values}")
    return floats


def _check_slice_positions(folder: Path, along: np.ndarray) -> None:
    """Refuse slice positions (sorted, along the slice normal) that are not evenly spaced."""
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
