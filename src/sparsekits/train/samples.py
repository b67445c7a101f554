"""What one training step eats: cached samples, augmented and sparsified, in a resumable order.

Stage-2 samples are the cache's ROIs around the DILATED GROUND-TRUTH kidney components (one per
component, see ``sparsekits.data.preprocess``); ROIs from stage-1 predictions are not used for
training. Folds are split by case, so both kidneys of a patient fall on the same side.

The order of an epoch is a pure function of (seed, epoch), and every draw of a sample augments
with its own generator seeded by (seed, epoch, position). Hence a resumed run sees the same
samples, augmented the same way, whichever process or DataLoader worker loads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsekits.config import StageConfig
from sparsekits.data.sample import Sample, load_sample
from sparsekits.data.sparsify import sparsify
from sparsekits.errors import InputError
from sparsekits.regions import labels_to_regions
from sparsekits.train.augment import AugmentConfig, Crop, augment_crop


@dataclass(frozen=True)
class Draw:
    """One use of one sample: which sample, and the seed of its augmentation."""

    index: int
    seed: tuple[int, int, int]  # (run seed, epoch, position in the epoch)


@dataclass
class SparseItem:
    """A sparse sample ready for the network: (x, y, z) coords, features and region targets."""

    case_id: str
    coords: torch.Tensor  # int32 [N, 3]
    features: torch.Tensor  # float32 [N, C]
    regions: torch.Tensor  # float32 [N, 3]


class SampleSet(torch.utils.data.Dataset):
    """Cached samples of some cases; ``augment=None`` serves the cache's own sparse view."""

    def __init__(
        self, paths: list[Path], stage_config: StageConfig, augment: AugmentConfig | None = None
    ):
        self.paths = list(paths)
        self.stage_config = stage_config
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw: Draw) -> SparseItem:
        sample = load_sample(self.paths[draw.index])
        if sample.labels is None or sample.regions is None:
            raise InputError(self.paths[draw.index], "a training sample needs labels")
        if self.augment is not None:
            item = self._augmented(sample, np.random.default_rng(list(draw.seed)))
            if len(item.coords):
                return item
        return SparseItem(
            sample.case_id,
            torch.from_numpy(sample.coords.astype(np.int32)),
            torch.from_numpy(sample.features.astype(np.float32)),
            torch.from_numpy(sample.regions.astype(np.float32)),
        )

    def _augmented(self, sample: Sample, rng: np.random.Generator) -> SparseItem:
        crop = augment_crop(Crop(sample.hu, sample.labels, sample.roi_mask), rng, self.augment)
        coords, features = sparsify(crop.hu, self.stage_config, crop.roi_mask)
        labels = crop.labels[coords[:, 0], coords[:, 1], coords[:, 2]]
        return SparseItem(
            sample.case_id,
            torch.from_numpy(coords),
            torch.from_numpy(features),
            torch.from_numpy(labels_to_regions(labels).astype(np.float32)),
        )


def epoch_order(n_samples: int, samples_per_epoch: int, seed: int, epoch: int) -> list[int]:
    """The sample indices of one epoch: shuffled passes over all samples, cut to length."""
    rng = np.random.default_rng([seed, epoch])
    passes = math.ceil(samples_per_epoch / n_samples)
    order = np.concatenate([rng.permutation(n_samples) for _ in range(passes)])
    return order[:samples_per_epoch].tolist()


def rank_draws(order: list[int], seed: int, epoch: int, rank: int, world_size: int) -> list[Draw]:
    """This rank's share of an epoch: positions ``rank, rank + world_size, ...``.

    The order is padded by wrapping to a multiple of ``world_size`` so that every rank runs the
    same number of steps (DDP needs that). With accumulation ``A / world_size`` per rank, each
    optimiser step then averages the gradients of the same A consecutive draws that one process
    with accumulation A would use.
    """
    padded = order + order[: (-len(order)) % world_size]
    return [
        Draw(padded[position], (seed, epoch, position))
        for position in range(rank, len(padded), world_size)
    ]


def per_rank_samples(samples_per_epoch: int, world_size: int) -> int:
    return math.ceil(samples_per_epoch / world_size)


@dataclass(frozen=True)
class CacheIndex:
    """A preprocessing cache seen by one stage: its cases, their sample files, the stage config."""

    cases: list[str]  # every case of the cache: the population the folds split
    files: dict[str, list[Path]]  # this stage's sample files per case (stage 2: one per ROI)
    stage_config: StageConfig

    def paths_of(self, cases: list[str]) -> list[Path]:
        """The sample files of ``cases``: all ROIs of a case go wherever the case goes."""
        return [path for case in cases for path in self.files[case]]


def read_cache(cache: Path, stage: int) -> CacheIndex:
    manifest_path = cache / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["cases"]
        stage_config = StageConfig.from_dict(manifest["stages"][str(stage)])
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"not a readable preprocessing manifest ({error})"
        raise InputError(manifest_path, problem) from error
    files = {case: _stage_files(cache, entry, stage) for case, entry in entries.items()}
    if not any(files.values()):
        problem = f"no stage-{stage} samples: preprocess with --stage {stage}"
        raise InputError(manifest_path, problem)
    return CacheIndex(sorted(entries), files, stage_config)


def _stage_files(cache: Path, entry: dict, stage: int) -> list[Path]:
    found = entry.get(f"stage{stage}") or []
    return [cache / item["file"] for item in ([found] if isinstance(found, dict) else found)]
