"""Where things are on disk: file suffixes, sidecars, dataset layouts, the cache and the model
folder. Each fact lives here once; the code that reads or writes a layout asks this module.
"""

from __future__ import annotations

from pathlib import Path

# HU of whatever lies outside a scan (resampling, augmentation): air, below every stage's window.
AIR_HU = -1024.0

# Image files: NIfTI (nibabel), NRRD and MetaImage (SimpleITK), each with its suffixes.
NIFTI_SUFFIXES = (".nii.gz", ".nii")  # longest first: stems strip the whole suffix
NRRD_SUFFIXES = (".nrrd", ".nhdr")  # .nhdr: a detached header beside its data file
METAIMAGE_SUFFIXES = (".mha", ".mhd")  # .mhd: a detached header beside its data file
ITK_SUFFIXES = NRRD_SUFFIXES + METAIMAGE_SUFFIXES
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
NIFTI_OUT = ".nii.gz"  # what sparsekits writes
DICOM_SEG_OUT = ".dcm"  # a DICOM Segmentation of a DICOM series input

# What `predict --output-type` writes for a case: NAME<suffix> beside NAME.json; a format's
# single-file suffix (a detached header would make a case's outputs two files for one).
NIFTI = "nifti"
NRRD = "nrrd"
METAIMAGE = "mha"
DICOM_SEG = "dicom-seg"
OUTPUT_SUFFIXES = {NIFTI: NIFTI_OUT, NRRD: ".nrrd", METAIMAGE: ".mha", DICOM_SEG: DICOM_SEG_OUT}
# Each output type's format by the suffixes of its files (inputs' detached headers included).
_FORMAT_SUFFIXES = (
    (NIFTI_SUFFIXES, NIFTI),
    (NRRD_SUFFIXES, NRRD),
    (METAIMAGE_SUFFIXES, METAIMAGE),
    ((DICOM_SEG_OUT,), DICOM_SEG),
)
# The suffixes an image's stem is stripped of, longest first among those that end alike.
_STEM_SUFFIXES = (*IMAGE_SUFFIXES, DICOM_SEG_OUT)
# KiTS23 dataset: DATASET/case_XXXXX/{imaging,segmentation}.nii.gz
KITS_CASE_GLOB = "case_*"
KITS_IMAGE = "imaging.nii.gz"
KITS_LABEL = "segmentation.nii.gz"
# Beside a phantom's two: the tissue each voxel was painted with (sparsekits.phantoms.tissues).
PHANTOM_TISSUES = "tissues.nii.gz"

# nnU-Net v2 raw dataset: dataset.json, imagesTr/NAME_0000.ext, labelsTr/NAME.ext
NNUNET_DATASET_JSON = "dataset.json"
NNUNET_IMAGES = "imagesTr"
NNUNET_LABELS = "labelsTr"
NNUNET_CHANNEL = "_0000"

# Prediction outputs beside NAME.nii.gz: NAME.json, NAME_roi.nii.gz, NAME_probabilities.npz.
REPORT_SUFFIX = ".json"
ROI_SIDECAR = "_roi"
PROBABILITIES_SIDECAR = "_probabilities.npz"

# Preprocessing cache: CACHE/manifest.json, CACHE/<role>/..., CACHE/cases/<case>.json
CACHE_MANIFEST = "manifest.json"
CACHE_MARKERS = "cases"
SAMPLE_SUFFIX = ".npz"

# Model folder: MODEL/plan.json, MODEL/<role>/fold_<K>/{config.json, model.safetensors} and
# MODEL/training_volumes.json (sparsekits.training_volumes)
PLAN_FILE = "plan.json"
TRAINING_VOLUMES = "training_volumes.json"
FOLD_PREFIX = "fold_"
# Caches and model folders written before stages had roles named a stage's folder by number.
LEGACY_STAGE_PREFIX = "stage"


def image_stem(path: Path) -> str:
    """The name of an image file without its suffix (the name itself for other files)."""
    name = path.name
    for suffix in _STEM_SUFFIXES:
        if has_suffix(path, (suffix,)):
            return name[: -len(suffix)]
    return name


def has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    """Whether ``path``'s name ends with one of ``suffixes``, in any case."""
    return path.name.lower().endswith(suffixes)


def output_type_of(path: Path) -> str | None:
    """The output type (a key of OUTPUT_SUFFIXES) of the format ``path``'s name says, or None
    (a DICOM series folder, another file)."""
    for suffixes, kind in _FORMAT_SUFFIXES:
        if has_suffix(path, suffixes):
            return kind
    return None


def sidecar(prediction: Path, suffix: str) -> Path:
    """``NAME<suffix>`` beside the prediction ``NAME.nii.gz`` (or another output suffix)."""
    return prediction.with_name(image_stem(prediction) + suffix)


def stage_dir(root: Path, role: str) -> Path:
    """A stage's folder in a cache or a model folder: named by the stage's role."""
    return Path(root) / role


def legacy_stage_dir(root: Path, position: int) -> Path:
    """The folder of the stage at 1-based ``position`` in caches and models written before
    stages had roles."""
    return Path(root) / f"{LEGACY_STAGE_PREFIX}{position}"


def fold_number(path: Path) -> int | None:
    """K of a ``fold_K`` folder name, None for any other name."""
    digits = path.name.removeprefix(FOLD_PREFIX)
    return int(digits) if path.name.startswith(FOLD_PREFIX) and digits.isdigit() else None
