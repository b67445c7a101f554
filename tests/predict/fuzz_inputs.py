"""Randomly corrupted NIfTI headers and DICOM files, from a fixed seed, for the fuzz test.

Half the inputs are NIfTI files (.nii or .nii.gz) whose 348-byte header had one to three
corruptions: a random byte, or a header field set to an extreme value (0, -1, 1e38, NaN, ...).
The other half are DICOM series folders in which one slice file had one corruption: random bytes
before its pixel data, a tag set to an extreme value (Rows, BitsAllocated, PixelSpacing,
ImagePositionPatient, Modality, ...), or its pixel data cut short.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom import config

from dicom_series import write_dicom_series

NIFTI_VALUES = (0, -1, 1, 2, 7, 255, 32767, -32768, 1e6, 1e-6, 1e38, np.nan, np.inf, -np.inf)
NIFTI_HEADER = nib.Nifti1Header.template_dtype
DICOM_NUMBERS = (0, 1, 3, 8, 15, 16, 17, 32, 64, 255, 4096)
DICOM_TEXTS = ("0", "-1", "1e6", "1e-6", "nan", "inf", "abc", "", "1\\2", "0\\0\\0\\0\\0\\0", "MR")
DICOM_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelSpacing",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Modality",
    "SeriesInstanceUID",
    "NumberOfFrames",
    "PixelData",
)


def write_fuzz_inputs(
    folder: Path, count: int, seed: int, ct: np.ndarray, affine: np.ndarray
) -> list[Path]:
    """``count`` corrupted copies of ``ct`` in ``folder``, NIfTI files and DICOM series folders
    alternately; the inputs' paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    nifti = nib.Nifti1Image(ct, affine).to_bytes()
    series = folder.parent / f"{folder.name}-series"
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    write_dicom_series(series, ct, spacing)
    inputs = []
    for index in range(count):
        if index % 2 == 0:
            suffix = ".nii.gz" if rng.random() < 0.5 else ".nii"
            path = folder / f"n{index:03d}{suffix}"
            data = _corrupt_nifti_header(nifti, rng)
            path.write_bytes(gzip.compress(data, 1) if suffix == ".nii.gz" else data)
        else:
            path = shutil.copytree(series, folder / f"d{index:03d}")
            slices = sorted(path.iterdir())
            _corrupt_dicom_file(slices[rng.integers(len(slices))], ct.shape[0] * ct.shape[1], rng)
        inputs.append(path)
    return inputs


def _corrupt_nifti_header(nifti: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(nifti)
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.4:
            data[rng.integers(NIFTI_HEADER.itemsize)] = rng.integers(256)
            continue
        name = NIFTI_HEADER.names[rng.integers(len(NIFTI_HEADER.names))]
        field, offset = NIFTI_HEADER.fields[name][:2]
        if field.base.kind == "S":
            data[offset : offset + field.itemsize] = rng.bytes(field.itemsize)
            continue
        at = (
            offset
            + rng.integers(max(1, field.itemsize // field.base.itemsize)) * field.base.itemsize
        )
        value = NIFTI_VALUES[rng.integers(len(NIFTI_VALUES))]
        with np.errstate(all="ignore"):
            raw = np.array(value).astype(field.base.newbyteorder("<"), casting="unsafe").tobytes()
        data[at : at + len(raw)] = raw
    return bytes(data)


def _corrupt_dicom_file(path: Path, pixel_bytes: int, rng: np.random.Generator) -> None:
    if rng.random() < 0.4:
        _flip_bytes(path, pixel_bytes, rng)
        return
    keyword = DICOM_KEYWORDS[rng.integers(len(DICOM_KEYWORDS))]
    with warnings.catch_warnings(), _unvalidated_pydicom():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
        try:
            if keyword == "PixelData":
                dataset.PixelData = dataset.PixelData[: rng.integers(len(dataset.PixelData))]
            elif keyword in dataset and dataset[keyword].VR in ("US", "SS", "UL", "IS"):
                setattr(dataset, keyword, int(DICOM_NUMBERS[rng.integers(len(DICOM_NUMBERS))]))
            else:
                setattr(dataset, keyword, DICOM_TEXTS[rng.integers(len(DICOM_TEXTS))])
        except (ValueError, TypeError, OverflowError):  # a value pydicom cannot even hold
            _flip_bytes(path, pixel_bytes, rng)
            return
        dataset.save_as(path)


def _flip_bytes(path: Path, pixel_bytes: int, rng: np.random.Generator) -> None:
    """One to three random bytes of the header, before the int16 pixel data."""
    data = bytearray(path.read_bytes())
    for _ in range(rng.integers(1, 4)):
        data[rng.integers(len(data) - 2 * pixel_bytes)] = rng.integers(256)
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def _unvalidated_pydicom() -> Iterator[None]:
    """pydicom writes invalid values (that is the point) instead of refusing them."""
    settings = config.settings
    modes = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes
