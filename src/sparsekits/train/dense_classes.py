"""The training step of a dense network with softmax classes (dense-coarse2fine's stages).

A cached dense sample (``Sample`` with ``coords`` None) is normalised by its stage plan, masked
to its ``roi_mask`` when it has one (voxels outside read as air), cut to a slab along z when the
recipe's ``patch_vox`` is set (seed 004 trains on 48-slice slabs; a slab drawn for a lesion is
centred on one), and augmented with MONAI's transforms (``plan.SlabAugmentation``). Targets are
class indices: the kidney with its masses against the rest (``kits_labels`` False), or the
KiTS23 labels 0-3. The loss is MONAI's Dice + cross-entropy on the softmax, each weighted per
class by the recipe's ``class_weights`` (seed 004's weighted Dice + CE); Dice is counted per
KiTS23 region, as for the sparse method, so logs compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsekits.data.sample import load_sample
from sparsekits.errors import InputError
from sparsekits.layout import AIR_HU
from sparsekits.plan import SlabAugmentation, StagePlan
from sparsekits.regions import REGION_NAMES, labels_to_regions
from sparsekits.train.samples import LESION_LABELS, Draw


@dataclass
class DenseItem:
    case_id: str
    image: torch.Tensor  # float32 [1, X, Y, Z]
    target: torch.Tensor  # int64 [1, X, Y, Z]: class indices


class DenseSampleSet(torch.utils.data.Dataset):
    """Cached dense samples; with ``slab`` (voxels along z) or ``augment``, drawn as training
    draws them, else whole and as cached."""

    def __init__(
        self,
        paths: list[Path],
        stage: StagePlan,
        kits_labels: bool,
        slab: int | None = None,
        augment: SlabAugmentation | None = None,
    ):
        self.paths = list(paths)
        self.stage = stage
        self.kits_labels = kits_labels
        self.slab = slab
        self.augment = augment
        self.outside = float(stage.features(np.float32(AIR_HU)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw: Draw) -> DenseItem:
        sample = load_sample(self.paths[draw.index])
        if sample.labels is None or not sample.dense:
            raise InputError(self.paths[draw.index], "not a dense training sample with labels")
        image = self.stage.features(sample.hu.astype(np.float32))
        target = sample.labels if self.kits_labels else (sample.labels > 0)
        target = target.astype(np.int64)
        if sample.roi_mask is not None:
            image[~sample.roi_mask] = self.outside
            target[~sample.roi_mask] = 0
        rng = np.random.default_rng(list(draw.seed))
        if self.slab is not None:
            image, target = _slab(image, target, sample.labels, self.slab, rng, draw.lesion)
            image, target = _pad_depth(image, target, self.slab, self.outside)
        item = {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(target)[None]}
        if self.augment is not None:
            item = _augment(item, self.augment, int(rng.integers(2**31)))
        return DenseItem(sample.case_id, item["image"].float(), item["label"].long())


class DenseClassTask:
    """``train.task.TrainingTask`` for a dense softmax network on one stage."""

    def __init__(self, stage: StagePlan, kits_labels: bool):
        self.stage = stage
        self.recipe = stage.recipe
        self.kits_labels = kits_labels
        self.class_names = REGION_NAMES if kits_labels else REGION_NAMES[:1]
        from monai.losses import DiceCELoss

        weights = self.recipe.class_weights
        self._loss = DiceCELoss(
            to_onehot_y=True,
            softmax=True,
            smooth_nr=self.recipe.dice_smooth,
            smooth_dr=self.recipe.dice_smooth,
            weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        )

    def dataset(self, paths: list[Path], train: bool) -> DenseSampleSet:
        if not train:
            return DenseSampleSet(paths, self.stage, self.kits_labels)
        recipe = self.recipe
        augment = recipe.augmentation if recipe.augment else None
        if augment is not None and not isinstance(augment, SlabAugmentation):
            raise ValueError(f"stage {self.stage.role}: dense stages take a slab augmentation")
        return DenseSampleSet(paths, self.stage, self.kits_labels, recipe.patch_vox, augment)

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        return net  # its forward already returns a plain tensor

    def batch(self, item: DenseItem, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return item.image[None].to(device), item.target[None].to(device)

    def outputs(self, wrapped: torch.nn.Module, forward_result: torch.Tensor) -> torch.Tensor:
        return forward_result

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._loss(outputs.float(), targets)

    def counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        predicted = outputs.detach().argmax(1).flatten()
        truth = targets.flatten()
        if self.kits_labels:
            predicted, truth = labels_to_regions(predicted), labels_to_regions(truth)
        else:
            predicted, truth = (predicted > 0)[:, None], (truth > 0)[:, None]
        both = (predicted & truth).sum(0)
        return torch.stack([both, predicted.sum(0), truth.sum(0)]).double().cpu()


def _slab(image, target, labels, depth: int, rng: np.random.Generator, lesion: bool):
    """``depth`` consecutive z slices: around a lesion voxel when ``lesion`` and there is one."""
    slices = image.shape[2]
    if slices <= depth:
        return image, target
    centre = int(rng.integers(slices))
    if lesion:
        present = np.flatnonzero(np.isin(labels, LESION_LABELS).any(axis=(0, 1)))
        if len(present):
            centre = int(present[int(rng.integers(len(present)))])
    start = int(np.clip(centre - depth // 2, 0, slices - depth))
    return image[:, :, start : start + depth], target[:, :, start : start + depth]


def _pad_depth(image, target, depth: int, outside: float):
    """Pad a sample thinner than a slab along z (outside voxels read as air, background)."""
    missing = depth - image.shape[2]
    if missing <= 0:
        return np.ascontiguousarray(image), np.ascontiguousarray(target)
    widths = ((0, 0), (0, 0), (0, missing))
    return (
        np.pad(image, widths, constant_values=outside),
        np.pad(target, widths, constant_values=0),
    )


def _augment(item: dict, config: SlabAugmentation, seed: int) -> dict:
    """Seed 004's augmentations (MONAI), seeded per draw so that a resumed run repeats them."""
    from monai import transforms as T

    keys = ("image", "label")
    low, high = config.crop_scale
    compose = T.Compose(
        [
            # A crop of scale s resized back to the slab is a zoom by 1 / s, in plane.
            T.RandZoomd(
                keys,
                prob=config.crop_p,
                min_zoom=(1 / high, 1 / high, 1.0),
                max_zoom=(1 / low, 1 / low, 1.0),
                mode=("trilinear", "nearest"),
                padding_mode="edge",
            ),
            T.RandScaleIntensityd(
                "image",
                factors=(config.brightness[0] - 1, config.brightness[1] - 1),
                prob=config.brightness_p,
            ),
            T.RandScaleIntensityFixedMeand(
                "image",
                factors=(config.contrast[0] - 1, config.contrast[1] - 1),
                prob=config.contrast_p,
            ),
            T.RandAdjustContrastd("image", gamma=config.gamma, prob=config.gamma_p),
            T.Rand3DElasticd(
                keys,
                sigma_range=config.elastic_sigma,
                magnitude_range=config.elastic_magnitude,
                prob=config.elastic_p,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
        ]
    )
    compose.set_random_state(seed=seed)
    out = compose(item)
    return {key: torch.as_tensor(out[key]) for key in keys}
