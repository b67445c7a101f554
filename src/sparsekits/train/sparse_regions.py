"""The training step of a sparse network with sigmoid region outputs (sscn-twostage's stages).

Inputs are SparseTensors of the cached (or augmented, patched) samples, targets the three nested
regions on the same voxels; the loss is the recipe's deep-supervised Dice or Dice + BCE
(``sparsekits.train.losses``), the Dice counts are per region.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sparsekits.plan import StagePlan
from sparsekits.regions import REGION_NAMES
from sparsekits.sparse import SparseTensor
from sparsekits.train.losses import deep_supervision_loss, region_counts
from sparsekits.train.samples import SampleSet, SparseItem


class SparseRegionTask:
    class_names = REGION_NAMES

    def __init__(self, stage: StagePlan):
        self.stage = stage
        self.recipe = stage.recipe

    def dataset(self, paths: list[Path], train: bool) -> SampleSet:
        if not train:
            return SampleSet(paths, self.stage)
        augment = self.recipe.augmentation if self.recipe.augment else None
        return SampleSet(paths, self.stage, augment, self.recipe.patch_vox)

    def wrap(self, net: torch.nn.Module) -> FeatureOutputs:
        return FeatureOutputs(net)

    def batch(self, item: SparseItem, device: torch.device) -> tuple[SparseTensor, SparseTensor]:
        batch = torch.zeros((len(item.coords), 1), dtype=torch.int32)
        coords = torch.cat([batch, item.coords.to(torch.int32)], dim=1)
        inputs = SparseTensor(item.features.to(device), coords.to(device))
        return inputs, inputs.replace(item.regions.to(device))

    def outputs(self, wrapped: FeatureOutputs, forward_result) -> list[SparseTensor]:
        return wrapped.rebuild(forward_result)

    def loss(self, outputs: list[SparseTensor], targets: SparseTensor) -> torch.Tensor:
        recipe = self.recipe
        return deep_supervision_loss(
            outputs, targets, recipe.loss, recipe.dice_smooth, recipe.deep_supervision_decay
        )

    def counts(self, outputs: list[SparseTensor], targets: SparseTensor) -> torch.Tensor:
        return region_counts(outputs[0].features.float(), targets.features)


class FeatureOutputs(torch.nn.Module):
    """The network with its outputs' features as plain tensors, which DDP can follow.

    DDP finds the autograd graph (and the unused deep-supervision heads) through the tensors a
    forward returns; it cannot look inside SparseTensors. ``rebuild`` puts the features it hands
    back onto the coordinates of the last forward's outputs.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self._last: list[SparseTensor] = []

    def forward(self, inputs: SparseTensor) -> list[torch.Tensor]:
        self._last = self.net(inputs)
        return [output.features for output in self._last]

    def rebuild(self, features: list[torch.Tensor]) -> list[SparseTensor]:
        outputs, self._last = self._last, []
        return [out.replace(f) for out, f in zip(outputs, features, strict=True)]
