"""SparseBatchNorm: statistics over active voxels only, against a masked dense computation and
against nn.BatchNorm3d on a fully occupied grid, in training and evaluation (running stats)."""

from __future__ import annotations

import pytest
import torch
from sparse_cases import CASES, DEVICES, make_case
from test_equivalence import CASE_IDS, assert_close

from sparsekits.sparse import SparseBatchNorm, SparseTensor


def masked_batch_norm(volume, mask, weight, bias, eps, running=None, momentum=0.1):
    """Batch norm of a dense [B, C, D, H, W] volume whose statistics are those of the voxels in
    ``mask`` [B, D, H, W]; updates ``running`` (mean, var) in place as torch does (unbiased
    variance); with ``running`` and no update wanted, pass momentum=None to use it instead."""
    active = volume.permute(0, 2, 3, 4, 1)[mask]  # [N, C]
    if momentum is None:
        mean, var = running
    else:
        mean, var = active.mean(0), active.var(0, unbiased=False)
        if running is not None:
            count = len(active)
            running[0].mul_(1 - momentum).add_(momentum * mean)
            running[1].mul_(1 - momentum).add_(momentum * var * count / (count - 1))
    shape = (1, -1, 1, 1, 1)
    out = (volume - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    return out * weight.view(shape) + bias.view(shape)


def randomised(norm: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial affine parameters, so that a mix-up of weight and bias shows."""
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "occupancy", "empty"), CASES, ids=CASE_IDS)
def test_training_statistics_are_those_of_the_active_voxels_only(device, shape, occupancy, empty):
    case = make_case(shape, occupancy, empty, channels=5, device=device)
    # Shift the features: a dense BatchNorm3d over zero-filled voxels would then differ a lot.
    x = case.x.replace(case.x.features * 3.0 + 2.0)
    volume = x.dense(shape)
    norm = randomised(SparseBatchNorm(5)).to(device).train()
    out = norm(x)
    running = [torch.zeros(5, device=device), torch.ones(5, device=device)]
    expected = masked_batch_norm(volume, case.mask, norm.weight, norm.bias, norm.eps, running)
    assert torch.equal(out.coords, x.coords)
    assert_close(out.features, case.at_active(expected))
    assert_close(norm.running_mean, running[0])
    assert_close(norm.running_var, running[1])
    assert int(norm.num_batches_tracked) == 1
    # Zero-filled inactive voxels counted as data would give other statistics.
    dense_norm = torch.nn.BatchNorm3d(5).to(device).train()
    dense_norm.load_state_dict(norm.state_dict())
    assert not torch.allclose(case.at_active(dense_norm(volume)), out.features, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_normalises_with_the_running_statistics(device):
    case = make_case((6, 5, 9), 0.5, device=device)
    norm = randomised(SparseBatchNorm(4)).to(device)
    for _ in range(3):  # move the running statistics away from (0, 1)
        norm.train()(case.x.replace(case.x.features * 2.0 + 1.0))
    norm.eval()
    out = norm(case.x)
    running = (norm.running_mean, norm.running_var)
    expected = masked_batch_norm(
        case.volume, case.mask, norm.weight, norm.bias, norm.eps, running, momentum=None
    )
    assert_close(out.features, case.at_active(expected))
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    before = norm.running_mean.clone()
    norm(case.x)
    assert torch.equal(norm.running_mean, before), "evaluation leaves the statistics alone"


@pytest.mark.parametrize("device", DEVICES)
def test_on_a_fully_occupied_grid_it_is_batchnorm3d_in_both_modes(device):
    gen = torch.Generator().manual_seed(1)
    volume = (torch.randn((2, 3, 4, 5, 3), generator=gen) * 2 + 1).to(device)
    mask = torch.ones((2, 4, 5, 3), dtype=torch.bool, device=device)
    x = SparseTensor.from_dense(volume, mask)
    sparse = randomised(SparseBatchNorm(3)).to(device)
    dense = torch.nn.BatchNorm3d(3).to(device)
    dense.load_state_dict(sparse.state_dict())
    assert sparse.state_dict().keys() == dense.state_dict().keys()
    rows = x.coords.long()
    for training in (True, True, False):
        sparse.train(training)
        dense.train(training)
        expected = dense(volume).permute(0, 2, 3, 4, 1)[
            rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        ]
        assert_close(sparse(x).features, expected)
        assert_close(sparse.running_mean, dense.running_mean)
        assert_close(sparse.running_var, dense.running_var)


def test_gradients_match_batchnorm3d_on_a_full_grid():
    gen = torch.Generator().manual_seed(2)
    volume = torch.randn((1, 3, 3, 4, 5), generator=gen)
    x = SparseTensor.from_dense(volume, torch.ones((1, 3, 4, 5), dtype=torch.bool))
    sparse, dense = randomised(SparseBatchNorm(3)), torch.nn.BatchNorm3d(3)
    dense.load_state_dict(sparse.state_dict())
    features = x.features.clone().requires_grad_(True)
    weights = torch.randn((len(features), 3), generator=gen)
    (sparse(x.replace(features)).features * weights).sum().backward()
    dense_in = volume.clone().requires_grad_(True)
    # Contiguous: torch 2.13's CPU BatchNorm3d backward returns wrong input gradients for a
    # permuted (channels-last strided) upstream gradient (off by up to 3.7 here).
    dense_weights = weights.view(3, 4, 5, 3).permute(3, 0, 1, 2)[None].contiguous()
    (dense(dense_in) * dense_weights).sum().backward()
    assert_close(features.grad, dense_in.grad[0].permute(1, 2, 3, 0).reshape(-1, 3))
    assert_close(sparse.weight.grad, dense.weight.grad)
