"""Deep-supervised losses (soft Dice, Dice + BCE): hand-computed values, per-sample averaging,
the hard-Dice counts of the logs, training use."""

from __future__ import annotations

import math

import pytest
import torch

from sparsekits.models import build_model
from sparsekits.sparse import SparseTensor
from sparsekits.train.losses import (
    DICE_SMOOTH,
    deep_supervision_loss,
    pooled_dice,
    pooled_targets,
    region_counts,
)

LOGIT = {0.25: math.log(1 / 3), 0.5: 0.0, 0.75: math.log(3)}  # sigmoid(LOGIT[p]) == p


def logits(*rows) -> torch.Tensor:
    return torch.tensor([[LOGIT[p] for p in row] for row in rows])


def dice(intersection: float, total: float) -> float:
    return (2 * intersection + DICE_SMOOTH) / (total + DICE_SMOOTH)


def two_voxel_example():
    """Two voxels of one sample that share one stride-2 parent."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)
    targets = SparseTensor(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), coords)
    fine = targets.replace(logits((0.75, 0.5, 0.25), (0.25, 0.5, 0.25)))
    coarse = SparseTensor(logits((0.5, 0.25, 0.75)), coords[:1] // 2, stride=2)
    return [fine, coarse], targets


def test_loss_matches_a_hand_computed_value():
    outputs, targets = two_voxel_example()
    # Level 0, per region: sum(p * t) and sum(p) + sum(t).
    level0 = [dice(0.75, 1.0 + 1.0), dice(0.0, 1.0), dice(0.0, 0.5)]
    # Level 1: the pooled target is the children's mean (0.5, 0, 0); p = (0.5, 0.25, 0.75).
    level1 = [dice(0.25, 0.5 + 0.5), dice(0.0, 0.25), dice(0.0, 0.75)]
    expected = sum(1 - d for d in level0) + 0.5 * sum(1 - d for d in level1)
    loss = deep_supervision_loss(outputs, targets)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.25 + 2 + 0.5 * 2.5, abs=1e-3)  # smoothing aside


def bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_dice_plus_bce_adds_the_mean_voxel_bce_of_each_region():
    outputs, targets = two_voxel_example()
    dice_only = deep_supervision_loss(outputs, targets, "dice").item()
    # Level 0, per region, the mean over the two voxels; level 1 (one voxel, soft target 0.5).
    level0 = [
        (bce(0.75, 1) + bce(0.25, 0)) / 2,
        (bce(0.5, 0) + bce(0.5, 0)) / 2,
        (bce(0.25, 0) + bce(0.25, 0)) / 2,
    ]
    level1 = [bce(0.5, 0.5), bce(0.25, 0), bce(0.75, 0)]
    expected = dice_only + sum(level0) + 0.5 * sum(level1)
    loss = deep_supervision_loss(outputs, targets, "dice+bce")
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        deep_supervision_loss(outputs, targets, "focal")


def test_bce_punishes_a_mass_predicted_where_a_sample_has_none():
    """The cause of 'every kidney is a tumour': with no mass in the sample, soft Dice of the mass
    region is ~0 whatever the prediction, so Dice alone gives no gradient against it."""
    coords = torch.tensor([[0, 0, 0, i] for i in range(4)], dtype=torch.int32)
    targets = SparseTensor(torch.tensor([[1.0, 0, 0]] * 4), coords)
    for loss in ("dice", "dice+bce"):
        mass_logits = torch.full((4, 1), 2.0, requires_grad=True)  # p = 0.88 everywhere
        features = torch.cat([torch.full((4, 1), 2.0), mass_logits, torch.full((4, 1), -9.0)], 1)
        deep_supervision_loss([targets.replace(features)], targets, loss).backward()
        gradient = mass_logits.grad.abs().max().item()
        if loss == "dice":
            assert gradient < 1e-5
        else:
            assert gradient > 0.1


def test_pooled_targets_average_active_children_only():
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 2, 2, 2]], dtype=torch.int32)
    targets = SparseTensor(torch.tensor([[1.0, 1, 0], [0, 1, 0], [1, 1, 1]]), coords)
    level1 = pooled_targets(targets, 2)[1]
    assert level1.stride == 2
    pairs = zip(level1.coords.tolist(), level1.features.tolist(), strict=True)
    by_coord = {tuple(c): f for c, f in pairs}
    assert by_coord == {(0, 0, 0, 0): [0.5, 1.0, 0.0], (0, 1, 1, 1): [1.0, 1.0, 1.0]}


def test_dice_is_per_sample_then_averaged():
    coords = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.int32)
    targets = SparseTensor(torch.tensor([[1.0, 1, 1], [1, 1, 1], [0, 0, 0]]), coords)
    # Sample 0 is predicted right (p = 0.75); sample 1's positive voxel gets 0.25, its negative
    # voxel 0.75.
    outputs = [targets.replace(logits((0.75,) * 3, (0.25,) * 3, (0.75,) * 3))]
    per_sample = [dice(0.75, 1.75), dice(0.25, 2.0)]
    expected = 3 * (1 - sum(per_sample) / 2)
    assert deep_supervision_loss(outputs, targets).item() == pytest.approx(expected, abs=1e-6)


def test_hard_dice_counts_pool_voxels_over_samples():
    logits_ = torch.tensor([[1.0, -1, 1], [1, 1, -1], [-1, -1, -1]])
    targets = torch.tensor([[1.0, 0, 1], [1, 0, 0], [0.6, 0, 0]])
    counts = region_counts(logits_, targets)
    # rows: predicted & true, predicted, true; columns: regions. A soft target counts from 0.5.
    assert counts.tolist() == [[2, 0, 1], [2, 1, 1], [3, 0, 1]]
    dice_ = pooled_dice(counts + region_counts(logits_, targets))
    assert dice_["kidney_and_mass"] == pytest.approx(2 * 4 / (4 + 6))
    assert dice_["mass"] == 0.0 and dice_["tumor"] == 1.0
    assert math.isnan(pooled_dice(torch.zeros(3, 3))["tumor"])


def test_misaligned_outputs_are_refused():
    outputs, targets = two_voxel_example()
    shifted = SparseTensor(outputs[1].features, outputs[1].coords + 1, stride=2)
    with pytest.raises(ValueError, match="different voxels"):
        deep_supervision_loss([outputs[0], shifted], targets)


def test_network_outputs_train_with_the_loss():
    torch.manual_seed(0)
    model = build_model("small")
    mask = torch.rand(1, 12, 10, 9) < 0.6
    x = SparseTensor.from_dense(torch.randn(1, 1, 12, 10, 9), mask)
    regions = (x.features > 0).float().expand(-1, 3) * torch.tensor([1.0, 1.0, 0.0])
    targets = x.replace(regions)  # region "tumor" is empty in this sample
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = deep_supervision_loss(model(x), targets)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert 0 <= losses[-1] < losses[0] <= 3 * (1 + 0.5 + 0.25)
