"""DICOM-SEG output: a label map as a DICOM Segmentation (written with highdicom) of the series
it was predicted from, on that series' frames.

One segment per class the label map holds (kidney, tumour, cyst), each coded in SNOMED CT as
DICOM's context groups code it: the segmentation property category (CID 7150) and type (CID
7159, lesions; the kidney is an anatomical structure) through pydicom's code dictionary, the
lesions' anatomic region the kidney. The segments name the algorithm (sparsekits, its version,
the method and the model's fingerprint). The SEG references the source series and each of its
instances (SOP Instance UIDs kept by ``sparsekits.data.io``), and shares its study and frame of
reference: a viewer overlays it on the scan it came from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sparsekits.data.io import Image
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path
from sparsekits.regions import LABEL_NAMES

if TYPE_CHECKING:
    from pydicom import Dataset

# What the SEG IOD takes from its source images and requires (Type 1): the study, series and
# instances it references, the frame of reference it shares (a SEG of a patient's image has
# one), and each frame's plane geometry. A source without one of them cannot be referenced.
REQUIRED_SOURCE_ATTRIBUTES = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)
# The SEG's own series: a number the source series is unlikely to use (Type 2, but highdicom
# asks for one), and a content label (a DICOM code string: capitals, digits, underscores).
SEG_SERIES_NUMBER = 9901
SEG_CONTENT_LABEL = "SPARSEKITS"
# Label -> (category, type, anatomic region) by their names in pydicom's SNOMED CT dictionary:
# Kidney 64033007 (an Anatomical Structure, 91723000); Neoplasm 108369006 and Cyst 367643001
# (Morphologically Abnormal Structures, 49755003, of the Kidney).
_SEGMENT_CODES: dict[int, tuple[str, str, str | None]] = {
    1: ("AnatomicalStructure", "Kidney", None),
    2: ("MorphologicallyAbnormalStructure", "Neoplasm", "Kidney"),
    3: ("MorphologicallyAbnormalStructure", "Cyst", "Kidney"),
}


@dataclass(frozen=True)
class Algorithm:
    """What made a segmentation: recorded in each segment and in the SEG's equipment."""

    version: str  # sparsekits's
    method: str  # the plan's method (sparsekits.methods)
    model_fingerprint: str  # sparsekits.models.bundle.model_fingerprint

    name: str = "sparsekits"


def source_datasets(image: Image) -> list[Dataset]:
    """The headers of the slices ``image`` was read from, in slice order, checked for what a SEG
    of them requires; InputError (one line) for an image that is not a DICOM series, or a series
    lacking a required attribute (named)."""
    import pydicom

    if image.dicom is None:
        raise InputError(
            image.path or "input",
            "DICOM-SEG output needs a DICOM series input (a SEG references its source series); "
            "use --output-type nifti",
        )
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in image.dicom.files]
    missing = [
        name
        for name in REQUIRED_SOURCE_ATTRIBUTES
        if any(ds.get(name) in (None, "") for ds in datasets)
    ]
    if missing:
        raise InputError(
            image.path or "input",
            f"the DICOM series lacks what a DICOM-SEG requires: {', '.join(missing)}",
        )
    return datasets


def write_dicom_seg(
    path: str | Path, labels: np.ndarray, image: Image, sources: list[Dataset], algorithm: Algorithm
) -> Path | None:
    """Write the label map ``labels`` [X, Y, Z] on ``image``'s grid as a binary DICOM-SEG of its
    slices ``sources`` (``source_datasets``) with one segment per class present; None (nothing
    written) when it holds no class, since a SEG holds at least one segment."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    present = [label for label in _SEGMENT_CODES if np.any(labels == label)]
    if not present:
        return None
    # Frame k is slice k: DICOM rows run along y and columns along x, so [Z, Y, X].
    frames = np.asarray(labels).transpose(2, 1, 0)
    masks = np.stack([frames == label for label in present], axis=-1)
    descriptions = [
        _segment_description(number, label, algorithm)
        for number, label in enumerate(present, start=1)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on optional source attributes
        seg = hd.seg.Segmentation(
            source_images=_with_slice_thickness(sources, image),
            pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=algorithm.name,
            manufacturer_model_name=algorithm.method,
            software_versions=algorithm.version,
            device_serial_number=algorithm.model_fingerprint,
            content_label=SEG_CONTENT_LABEL,
            content_description="kidney, tumour and cyst segmentation",
            series_description=f"{algorithm.name} {algorithm.method} segmentation",
        )
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _with_slice_thickness(sources: list[Dataset], image: Image) -> list[Dataset]:
    """The headers, each with a slice thickness: highdicom copies the first's into the SEG's
    pixel measures and cannot do without it, while a CT may leave it empty (Type 2). The
    distance between slices stands in for it then; the files are not touched."""
    for source in sources:
        if source.get("SliceThickness") in (None, ""):
            source.SliceThickness = f"{float(image.grid.spacing[2]):.6g}"
    return sources


def segment_labels(seg: Dataset) -> dict[int, int]:
    """Segment number -> label value of a SEG this module wrote (by its segment labels)."""
    by_name = {name: label for label, name in LABEL_NAMES.items()}
    return {int(item.SegmentNumber): by_name[item.SegmentLabel] for item in seg.SegmentSequence}


def _segment_description(number: int, label: int, algorithm: Algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    category, kind, region = _SEGMENT_CODES[label]
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=LABEL_NAMES[label],
        segmented_property_category=getattr(codes.SCT, category),
        segmented_property_type=getattr(codes.SCT, kind),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name,
            family=codes.DCM.ArtificialIntelligence,
            version=algorithm.version,
            parameters={"method": algorithm.method, "model": algorithm.model_fingerprint},
        ),
        anatomic_regions=[getattr(codes.SCT, region)] if region else None,
    )
