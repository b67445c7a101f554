"""The training step of a sparse network with softmax classes on a point cloud (sscn-pointcloud).

A cached sparse sample is served as cached (its points, their features), with class targets
read from its labels at its points through ``class_of_label`` (KiTS23 label 0-3 -> class).
Points are kept as sparsified for the whole volume, so a sample is neither cut into patches
nor augmented (a rule such as "the brightest 3 %" would pick other points in a patch). The loss
is cross-entropy (``"ce"``) or Dice + cross-entropy (``"dice+ce"``, as the dense cascade's
MONAI loss computes it), each weighted per class by the recipe's ``class_weights``; Dice is
counted per KiTS23 region the classes stand for (``class_names``), so logs compare with other
methods'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparsekits.data.sample import load_sample
from sparsekits.errors import InputError
from sparsekits.plan import StagePlan
from sparsekits.sparse import SparseTensor
from sparsekits.train.samples import Draw
from sparsekits.train.sparse_regions import FeatureOutputs

LOSSES = ("ce", "dice+ce")


@dataclass
class CloudItem:
    case_id: str
    coords: torch.Tensor  # int32 [N, 3]
    features: torch.Tensor  # float32 [N, C]
    target: torch.Tensor  # int64 [N]: class indices


class CloudSampleSet(torch.utils.data.Dataset):
    """Cached sparse samples with class targets ``class_of_label[label]`` at their points."""

    def __init__(self, paths: list[Path], class_of_label: tuple[int, ...]):
        self.paths = list(paths)
        self.class_of_label = np.asarray(class_of_label, np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw: Draw) -> CloudItem:
        sample = load_sample(self.paths[draw.index])
        if sample.labels is None or sample.dense:
            raise InputError(self.paths[draw.index], "not a sparse training sample with labels")
        target = self.class_of_label[sample.kept_labels()]
        return CloudItem(
            sample.case_id,
            torch.from_numpy(sample.coords.astype(np.int32)),
            torch.from_numpy(sample.features.astype(np.float32)),
            torch.from_numpy(target),
        )


class SparseClassTask:
    """``train.task.TrainingTask`` for a sparse softmax network on one stage. ``regions`` names
    the KiTS23 region each class > 0 stands for, counted as the classes >= it (classes ordered
    as nested regions: class 1 and above is the kidney with its masses, 2 and above a tumour)."""

    def __init__(self, stage: StagePlan, class_of_label: tuple[int, ...], regions: tuple[str, ...]):
        self.stage = stage
        self.recipe = stage.recipe
        self.class_of_label = class_of_label
        self.class_names = regions
        if self.recipe.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.recipe.loss!r} (known: {', '.join(LOSSES)})")
        weights = self.recipe.class_weights
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def dataset(self, paths: list[Path], train: bool) -> CloudSampleSet:
        return CloudSampleSet(paths, self.class_of_label)

    def wrap(self, net: torch.nn.Module) -> FeatureOutputs:
        return FeatureOutputs(net)

    def batch(self, item: CloudItem, device: torch.device) -> tuple[SparseTensor, torch.Tensor]:
        batch = torch.zeros((len(item.coords), 1), dtype=torch.int32)
        coords = torch.cat([batch, item.coords], dim=1)
        return SparseTensor(item.features.to(device), coords.to(device)), item.target.to(device)

    def outputs(self, wrapped: FeatureOutputs, forward_result) -> torch.Tensor:
        return wrapped.rebuild(forward_result)[0].features

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.float()
        weight = None if self.weights is None else self.weights.to(logits.device)
        loss = F.cross_entropy(logits, targets, weight=weight)
        if self.recipe.loss == "dice+ce":
            loss = loss + soft_dice_loss(logits, targets, weight, self.recipe.dice_smooth)
        return loss

    def counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        predicted = outputs.detach().argmax(1)
        levels = torch.arange(1, len(self.class_names) + 1, device=targets.device)
        predicted, truth = predicted[:, None] >= levels, targets[:, None] >= levels
        both = (predicted & truth).sum(0)
        return torch.stack([both, predicted.sum(0), truth.sum(0)]).double().cpu()


def soft_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None, smooth: float
) -> torch.Tensor:
    """Mean over classes (times ``weight``) of 1 - the soft Dice of the softmax of ``logits``
    [N, C] against the classes ``targets`` [N], over all points: MONAI's DiceLoss of the dense
    cascade's Dice + CE (background included), without importing MONAI (seconds)."""
    probabilities = torch.softmax(logits, dim=1)
    truth = F.one_hot(targets, logits.shape[1]).to(probabilities.dtype)
    overlap = (probabilities * truth).sum(0)
    total = probabilities.sum(0) + truth.sum(0)
    dice = 1 - (2 * overlap + smooth) / (total + smooth)
    return (dice if weight is None else dice * weight).mean()
