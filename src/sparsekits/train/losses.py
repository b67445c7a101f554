"""Deep-supervised losses on sparse region logits: the paper's soft Dice, or Dice + BCE.

``LOSSES``: ``"dice"`` is METHOD.md's loss (soft Dice per region, summed); ``"dice+bce"`` adds,
per region, the binary cross-entropy of the sigmoid against the (soft) target, averaged over the
sample's voxels (nnU-Net's default for region-based training, seed 004's Dice + cross-entropy).
Why BCE matters here: a region absent from a sample (a kidney ROI without a mass) has a soft
Dice of ``DICE_SMOOTH / (sum p + DICE_SMOOTH)``, which is ~0 with a vanishing gradient as soon as
the network predicts any mass at all. Dice alone therefore never punishes calling a mass-free
kidney a mass; BCE does, on every voxel.

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
- BCE per region is a per-sample mean over voxels, then a batch mean, like the Dice; a level's
  loss is ``sum over regions of (1 - Dice + BCE)``, so each region weighs as in nnU-Net.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsekits.plan import Recipe
from sparsekits.regions import REGION_NAMES
from sparsekits.sparse import SparseAvgPool3d, SparseTensor

# The recipe's defaults; a training run passes its own recipe's.
DICE_SMOOTH = Recipe.dice_smooth
DEEP_SUPERVISION_DECAY = Recipe.deep_supervision_decay
LOSSES = ("dice", "dice+bce")


def pooled_targets(targets: SparseTensor, levels: int) -> list[SparseTensor]:
    """``targets`` (float [N, R] at stride 1) and its 2x average-pools, finest first."""
    pool = SparseAvgPool3d(2)
    pyramid = [targets.replace(targets.features.float())]
    for _ in range(levels - 1):
        pyramid.append(pool(pyramid[-1]))
    return pyramid


def soft_dice_per_sample(
    probs: torch.Tensor,
    targets: torch.Tensor,
    batch: torch.Tensor,
    batch_size: int,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Soft Dice [B, R] of probabilities and targets [N, R], voxels grouped by ``batch`` [N]."""
    sums = probs.new_zeros(2, batch_size, probs.shape[1])
    sums[0].index_add_(0, batch, probs * targets)
    sums[1].index_add_(0, batch, probs + targets)
    return (2 * sums[0] + smooth) / (sums[1] + smooth)


def region_counts(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Voxel counts [3, R] of (predicted & true, predicted, true) per region, for hard Dice.

    ``logits`` and ``targets`` [N, R] are on the same voxels; a voxel is predicted where its logit
    is positive (probability above 0.5) and true where its target is above 0.5. Counts summed
    over samples and then divided give the Dice of all those voxels pooled, as logs report it.
    """
    predicted = logits.detach() > 0
    truth = targets > 0.5
    return torch.stack([(predicted & truth).sum(0), predicted.sum(0), truth.sum(0)]).double().cpu()


def pooled_dice(counts: torch.Tensor, names: tuple[str, ...] = REGION_NAMES) -> dict[str, float]:
    """Dice by class name from summed counts [3, C] (``region_counts``); nan where a class is
    absent in both."""
    intersection, predicted, truth = counts
    dice = (2 * intersection / (predicted + truth)).tolist()
    return dict(zip(names, dice, strict=True))


def deep_supervision_loss(
    outputs: list[SparseTensor],
    targets: SparseTensor,
    loss: str = "dice",
    smooth: float = DICE_SMOOTH,
    decay: float = DEEP_SUPERVISION_DECAY,
) -> torch.Tensor:
    """Sum over levels k of decay**k * the level's loss (see the module docstring); a scalar."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
    pyramid = pooled_targets(targets, len(outputs))
    levels = []
    for output, target in zip(outputs, pyramid, strict=True):
        _check_aligned(output, target)
        logits = output.features.float()
        batch = output.coords[:, 0].long()
        probs = torch.sigmoid(logits)
        dice = soft_dice_per_sample(probs, target.features, batch, output.batch_size, smooth)
        level = (1 - dice.mean(0)).sum()
        if loss == "dice+bce":
            level = level + bce_per_sample(logits, target.features, batch, output.batch_size)
        levels.append(level)
    weights = decay ** torch.arange(len(levels), dtype=torch.float32, device=levels[0].device)
    return (weights * torch.stack(levels)).sum()


def bce_per_sample(
    logits: torch.Tensor, targets: torch.Tensor, batch: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Sum over regions of the BCE averaged over each sample's voxels, then over samples."""
    voxel_bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    sums = logits.new_zeros(batch_size, logits.shape[1]).index_add_(0, batch, voxel_bce)
    counts = torch.bincount(batch, minlength=batch_size).clamp(min=1).to(sums.dtype)
    return (sums / counts[:, None]).mean(0).sum()


def _check_aligned(output: SparseTensor, target: SparseTensor) -> None:
    if output.kernel_maps is target.kernel_maps:
        return
    if output.stride != target.stride or not torch.equal(output.coords, target.coords):
        raise ValueError(
            f"output at stride {output.stride} and pooled target at stride {target.stride} "
            "lie on different voxels: build targets on the network input's coordinates"
        )
