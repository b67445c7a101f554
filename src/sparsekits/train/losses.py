"""Deep-supervised soft Dice on sparse region logits (METHOD.md, "Training").

Choices where METHOD.md is silent:

- Dice is computed per sample (over that sample's active voxels), then averaged over the batch,
  so every case weighs the same whatever its size. With batch 1 (the method's setting) per sample
  and per batch are the same thing.
- Smoothing ``DICE_SMOOTH = 1e-5`` in numerator and denominator (nnU-Net's value): a region that is
  empty in both prediction and target scores 1, as in the KiTS23 scorer, and a region absent from
  the target but predicted scores about 0.
- Loss per level is ``sum over regions of (1 - Dice)``; level k (stride 2**k) weighs 1/2**k,
  unnormalised (METHOD.md's weights), so the loss lies in [0, 3 * (1 + 1/2 + 1/4)] for 3 levels.
- Level k's target is the stride-1 target average-pooled k times by 2 over *active* children
  (``SparseAvgPool3d``): soft targets on exactly that level's coordinates.
"""

from __future__ import annotations

import torch

from sparsekits.regions import REGION_NAMES
from sparsekits.sparse import SparseAvgPool3d, SparseTensor

DICE_SMOOTH = 1e-5


def pooled_targets(targets: SparseTensor, levels: int) -> list[SparseTensor]:
    """``targets`` (float [N, R] at stride 1) and its 2x average-pools, finest first."""
    pool = SparseAvgPool3d(2)
    pyramid = [targets.replace(targets.features.float())]
    for _ in range(levels - 1):
        pyramid.append(pool(pyramid[-1]))
    return pyramid


def soft_dice_per_sample(
    probs: torch.Tensor, targets: torch.Tensor, batch: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Soft Dice [B, R] of probabilities and targets [N, R], voxels grouped by ``batch`` [N]."""
    sums = probs.new_zeros(2, batch_size, probs.shape[1])
    sums[0].index_add_(0, batch, probs * targets)
    sums[1].index_add_(0, batch, probs + targets)
    return (2 * sums[0] + DICE_SMOOTH) / (sums[1] + DICE_SMOOTH)


def region_dice(
    outputs: list[SparseTensor], targets: SparseTensor, threshold: float | None = None
) -> torch.Tensor:
    """Dice [levels, regions] of each output level against its pooled target, batch mean.

    ``outputs`` are logits, finest first (the network's output). With ``threshold`` the
    probabilities are binarised first (hard Dice of the predictions, for validation logs).
    """
    rows = []
    for output, target in zip(outputs, pooled_targets(targets, len(outputs)), strict=True):
        _check_aligned(output, target)
        probs = torch.sigmoid(output.features.float())
        if threshold is not None:
            probs = (probs >= threshold).float()
        batch = output.coords[:, 0].long()
        rows.append(soft_dice_per_sample(probs, target.features, batch, output.batch_size).mean(0))
    return torch.stack(rows)


def deep_supervision_dice_loss(outputs: list[SparseTensor], targets: SparseTensor) -> torch.Tensor:
    """Sum over levels k of 1/2**k * sum over regions of (1 - soft Dice); a scalar."""
    dice = region_dice(outputs, targets)
    weights = 0.5 ** torch.arange(len(outputs), dtype=dice.dtype, device=dice.device)
    return (weights[:, None] * (1 - dice)).sum()


def dice_table(dice: torch.Tensor) -> dict[str, float]:
    """``region_dice``'s result by name, e.g. ``{"level0/tumor": 0.8, ...}``, for logging."""
    return {
        f"level{level}/{name}": float(value)
        for level, row in enumerate(dice)
        for name, value in zip(REGION_NAMES, row, strict=True)
    }


def _check_aligned(output: SparseTensor, target: SparseTensor) -> None:
    if output.kernel_maps is target.kernel_maps:
        return
    if output.stride != target.stride or not torch.equal(output.coords, target.coords):
        raise ValueError(
            f"output at stride {output.stride} and pooled target at stride {target.stride} "
            "lie on different voxels: build targets on the network input's coordinates"
        )
