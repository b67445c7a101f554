"""What one training step eats: cached samples, augmented and sparsified, in a resumable order.

Stage-2 samples are the cache's ROIs around the DILATED GROUND-TRUTH kidney components (one per
component, see ``sparsekits.data.preprocess``); ROIs from stage-1 predictions are not used for
training. Folds are split by case, so both kidneys of a patient fall on the same side.

The order of an epoch is a pure function of (seed, epoch), and every draw of a sample augments
with its own generator seeded by (seed, epoch, position). Hence a resumed run sees the same
samples, augmented the same way, whichever process or DataLoader worker loads them.

Patches (``patch_vox``): a draw may train on a cube of the sample instead of all of it, as
nnU-Net trains on patches. A draw forced by lesion oversampling centres its patch on a tumour or
cyst voxel (a lesion class present, then a voxel of it, each uniformly), as nnU-Net forces
foreground into a third of its patches; other patches are centred on a random kept voxel.
Patches cost less per step; the network still predicts whole samples, and its normalisations
(LayerNorm per voxel, GRN's ratio of channel norms) do not depend on the number of voxels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsekits.data.sample import Sample, load_sample
from sparsekits.data.sparsify import sparsify
from sparsekits.errors import InputError
from sparsekits.layout import CACHE_MANIFEST
from sparsekits.plan import Augmentation, Plan, StagePlan
from sparsekits.regions import REGION_NAMES, labels_to_regions
from sparsekits.train.augment import Crop, augment_crop
from sparsekits.training_volumes import CASE_KEY

MASS = REGION_NAMES.index("mass")
LESION_LABELS = (2, 3)  # tumour, cyst


@dataclass(frozen=True)
class Draw:
    """One use of one sample: which sample, the seed of its augmentation and patch, and whether
    lesion oversampling chose it (its patch is then centred on a lesion)."""

    index: int
    seed: tuple[int, int, int]  # (run seed, epoch, position in the epoch)
    lesion: bool = False


@dataclass
class SparseItem:
    """A sparse sample ready for the network: (x, y, z) coords, features and region targets."""

    case_id: str
    coords: torch.Tensor  # int32 [N, 3]
    features: torch.Tensor  # float32 [N, C]
    regions: torch.Tensor  # float32 [N, 3]


class SampleSet(torch.utils.data.Dataset):
    """Cached samples of some cases; without ``augment`` or ``patch_vox`` it serves the cache's
    own sparse view."""

    def __init__(
        self,
        paths: list[Path],
        stage: StagePlan,
        augment: Augmentation | None = None,
        patch_vox: int | None = None,
    ):
        self.paths = list(paths)
        self.stage = stage
        self.augment = augment
        self.patch_vox = patch_vox

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw: Draw) -> SparseItem:
        sample = load_sample(self.paths[draw.index])
        if sample.labels is None or sample.regions is None:
            raise InputError(self.paths[draw.index], "a training sample needs labels")
        if self.augment is not None or self.patch_vox is not None:
            item = self._drawn(sample, draw)
            if len(item.coords):
                return item
        return SparseItem(
            sample.case_id,
            torch.from_numpy(sample.coords.astype(np.int32)),
            torch.from_numpy(sample.features.astype(np.float32)),
            torch.from_numpy(sample.regions.astype(np.float32)),
        )

    def _drawn(self, sample: Sample, draw: Draw) -> SparseItem:
        rng = np.random.default_rng(list(draw.seed))
        crop = Crop(sample.hu, sample.labels, sample.roi_mask)
        if self.patch_vox is not None:
            crop = patch_of(crop, sample.coords, self.patch_vox, rng, draw.lesion)
        if self.augment is not None:
            crop = augment_crop(crop, rng, self.augment)
        coords, features = sparsify(crop.hu, self.stage, crop.roi_mask)
        labels = crop.labels[coords[:, 0], coords[:, 1], coords[:, 2]]
        return SparseItem(
            sample.case_id,
            torch.from_numpy(coords),
            torch.from_numpy(features),
            torch.from_numpy(labels_to_regions(labels).astype(np.float32)),
        )


def patch_of(
    crop: Crop, kept: np.ndarray, size: int, rng: np.random.Generator, lesion: bool
) -> Crop:
    """The ``size``^3 cube of ``crop`` (less where the crop is smaller) around a centre drawn
    from the kept voxels ``kept`` [N, 3]: a lesion voxel when ``lesion`` and the crop holds one."""
    centres = kept
    if lesion:
        labels = crop.labels[tuple(kept.T)]
        present = [label for label in LESION_LABELS if (labels == label).any()]
        if present:
            centres = kept[labels == present[int(rng.integers(len(present)))]]
    if len(centres) == 0:
        return crop
    centre = centres[int(rng.integers(len(centres)))]
    shape = np.asarray(crop.hu.shape)
    extent = np.minimum(shape, size)
    lo = np.clip(centre - extent // 2, 0, shape - extent)
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, extent, strict=True))
    mask = None if crop.roi_mask is None else crop.roi_mask[box]
    return Crop(crop.hu[box], crop.labels[box], mask)


def epoch_order(
    n_samples: int,
    samples_per_epoch: int,
    seed: int,
    epoch: int,
    lesion_indices: list[int] | None = None,
    lesion_oversampling: float = 0.0,
) -> list[tuple[int, bool]]:
    """(sample index, forced onto a lesion) of each draw of one epoch: shuffled passes over all
    samples, cut to length.

    With ``lesion_oversampling`` p > 0, each position is replaced with probability p by a random
    index of ``lesion_indices`` (the samples that hold a mass), so that about p of the draws, plus
    the lesion samples' own share of the rest, show the network a tumour or cyst.
    """
    rng = np.random.default_rng([seed, epoch])
    passes = math.ceil(samples_per_epoch / n_samples)
    order = np.concatenate([rng.permutation(n_samples) for _ in range(passes)])
    order = order[:samples_per_epoch]
    forced = np.zeros(len(order), bool)
    if lesion_indices and lesion_oversampling > 0:
        forced = rng.random(len(order)) < lesion_oversampling
        order[forced] = rng.choice(np.asarray(lesion_indices), size=int(forced.sum()))
    return [(int(index), bool(lesion)) for index, lesion in zip(order, forced, strict=True)]


def rank_draws(
    order: list[tuple[int, bool]], seed: int, epoch: int, rank: int, world_size: int
) -> list[Draw]:
    """This rank's share of an epoch: positions ``rank, rank + world_size, ...``.

    The order is padded by wrapping to a multiple of ``world_size`` so that every rank runs the
    same number of steps (DDP needs that). With accumulation ``A / world_size`` per rank, each
    optimiser step then averages the gradients of the same A consecutive draws that one process
    with accumulation A would use.
    """
    padded = list(order) + list(order[: (-len(order)) % world_size])
    return [
        Draw(int(padded[position][0]), (seed, epoch, position), bool(padded[position][1]))
        for position in range(rank, len(padded), world_size)
    ]


def per_rank_samples(samples_per_epoch: int, world_size: int) -> int:
    return math.ceil(samples_per_epoch / world_size)


@dataclass(frozen=True)
class CacheIndex:
    """A preprocessing cache seen by one stage: its cases, their sample files, its plan."""

    manifest: Path
    cases: list[str]  # every case of the cache: the population the folds split
    files: dict[str, list[Path]]  # this stage's sample files per case (stage 2: one per ROI)
    plan: Plan  # the plan the cache was made with
    with_mass: frozenset[Path]  # the sample files whose kept voxels include a tumour or cyst
    # each case's ground-truth volumes (sparsekits.training_volumes); None in older caches
    volumes: dict[str, dict | None]

    def paths_of(self, cases: list[str]) -> list[Path]:
        """The sample files of ``cases``: all ROIs of a case go wherever the case goes."""
        return [path for case in cases for path in self.files[case]]


def _read_manifest(cache: Path) -> tuple[dict, Plan]:
    manifest_path = cache / CACHE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        return manifest, _manifest_plan(manifest)
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"not a readable preprocessing manifest ({error})"
        raise InputError(manifest_path, problem) from error


def cache_plan(cache: Path) -> Plan:
    """The plan a preprocessing cache was made with."""
    return _read_manifest(Path(cache))[1]


def read_cache(cache: Path, stage: str | int) -> CacheIndex:
    """The samples of stage ``stage`` (a role, or a 1-based position) in a cache."""
    from sparsekits.data.preprocess import stage_items

    manifest_path = cache / CACHE_MANIFEST
    manifest, plan = _read_manifest(cache)
    role, position = plan.role(stage), plan.position(stage)
    entries = manifest.get("cases", {})
    items = {case: stage_items(entry, role, position) for case, entry in entries.items()}
    files = {case: [cache / item["file"] for item in found] for case, found in items.items()}
    if not any(files.values()):
        problem = f"no {role} samples: preprocess with --stage {role}"
        raise InputError(manifest_path, problem)
    with_mass = frozenset(
        cache / item["file"]
        for found in items.values()
        for item in found
        if _holds_mass(cache / item["file"], item)
    )
    volumes = {case: entry.get(CASE_KEY) for case, entry in entries.items()}
    return CacheIndex(manifest_path, sorted(entries), files, plan, with_mass, volumes)


def _manifest_plan(manifest: dict) -> Plan:
    """The cache's plan; caches written before plans recorded stage configs only."""
    if "plan" in manifest:
        return Plan.from_dict(manifest["plan"])
    from sparsekits.methods.sscn_twostage import legacy_plan

    return legacy_plan({int(k): v for k, v in manifest["stages"].items()})


def _holds_mass(path: Path, item: dict) -> bool:
    """From the manifest's per-label voxel counts; caches written before them load the sample."""
    counts = item.get("label_voxels")
    if counts is None:
        regions = load_sample(path).regions
        return bool(regions is not None and regions[:, MASS].any())
    return counts[2] + counts[3] > 0
