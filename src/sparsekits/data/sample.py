"""One stage's sample of one case, as the preprocessing cache hands it to training.

A sample keeps the dense HU crop on the stage grid (augmentation works on HU *before*
sparsification) and its sparse view (what the network sees without augmentation), with the
geometry that maps it back to the source image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparsekits.fileio import atomic_path


@dataclass
class Sample:
    case_id: str
    stage: int
    roi_index: int  # -1 for stage 1 (the whole scan), else the ROI component (0 = largest)
    hu: np.ndarray  # int16 [X, Y, Z]: HU on the stage's canonical isotropic grid, cropped
    affine: np.ndarray  # float64 [4, 4]: voxel -> world (RAS, mm) of ``hu``
    coords: np.ndarray | None  # int32 [N, 3]: kept voxels (x, y, z) in ``hu``; None: dense
    features: np.ndarray | None  # float32 [N, 1]: normalised HU of the kept voxels
    labels: np.ndarray | None = None  # uint8 [X, Y, Z], 0-3
    regions: np.ndarray | None = None  # bool [N, 3]: region targets of the kept voxels
    roi_mask: np.ndarray | None = None  # bool [X, Y, Z]: stage 2's dilated ROI component
    meta: dict = field(default_factory=dict)  # source path/shape/affine, kept fraction, ...

    @property
    def dense(self) -> bool:
        """A dense stage's sample: the network sees every voxel of ``hu`` (in ``roi_mask``)."""
        return self.coords is None

    @property
    def kept_voxels(self) -> int:
        if self.dense:
            return int(self.hu.size if self.roi_mask is None else self.roi_mask.sum())
        return len(self.coords)

    @property
    def kept_fraction(self) -> float:
        return self.kept_voxels / max(1, self.hu.size)

    def kept_labels(self) -> np.ndarray:
        """The labels of the voxels the network learns from: the kept ones of a sparse sample,
        every voxel of a dense one (inside its ``roi_mask`` when it has one)."""
        if self.dense:
            return self.labels if self.roi_mask is None else self.labels[self.roi_mask]
        return self.labels[tuple(self.coords.T)]


_ARRAYS = ("hu", "affine", "coords", "features", "labels", "regions", "roi_mask")


def save_sample(path: str | Path, sample: Sample) -> Path:
    """Write ``sample`` as an uncompressed .npz, atomically (temporary name, then rename)."""
    path = Path(path)
    arrays = {name: getattr(sample, name) for name in _ARRAYS if getattr(sample, name) is not None}
    header = {
        "case_id": sample.case_id,
        "stage": sample.stage,
        "roi_index": sample.roi_index,
        "meta": sample.meta,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, header=np.array(json.dumps(header)), **arrays)
    return path


def load_sample(path: str | Path) -> Sample:
    with np.load(Path(path), allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        arrays = {name: (npz[name] if name in npz.files else None) for name in _ARRAYS}
    return Sample(
        case_id=header["case_id"],
        stage=header["stage"],
        roi_index=header["roi_index"],
        meta=header["meta"],
        **arrays,
    )
