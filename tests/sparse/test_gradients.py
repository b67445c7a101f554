"""Gradients: float64 gradcheck on tiny inputs, and float32 .grad against dense autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sparse_cases import DEVICES, make_case
from torch.func import functional_call

from sparsekits.sparse import (
    SparseAvgPool3d,
    SparseConv3d,
    SparseGRN,
    SparseInverseConv3d,
    SparseLayerNorm,
    SparseMaxPool3d,
    SubMConv3d,
)


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial parameters (GRN and LayerNorm start at zeros/ones)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def _gradcheck_module(module, x, target=None):
    """gradcheck over the input features and every parameter of ``module``."""
    module = _randomised(module.double())
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    feats = x.features.detach().double().requires_grad_()
    base = x.replace(feats)
    extra = () if target is None else (target,)

    def run(f, *ps):
        out = functional_call(module, dict(zip(names, ps, strict=True)), (base.replace(f), *extra))
        return out.features

    assert torch.autograd.gradcheck(run, (feats, *params), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize(
    ("cin", "cout", "groups"), [(4, 4, 4), (4, 3, 1), (4, 6, 2)], ids=["dw", "full", "grouped"]
)
def test_subm_conv_gradcheck(cin, cout, groups):
    case = make_case((4, 3, 5), 0.5, channels=cin, dtype=torch.float64)
    _gradcheck_module(SubMConv3d(cin, cout, 3, groups=groups), case.x)


def test_down_and_inverse_conv_gradcheck():
    case = make_case((4, 5, 3), 0.5, channels=3, dtype=torch.float64)
    down = SparseConv3d(3, 2).double()
    _gradcheck_module(down, case.x)
    coarse = down(case.x)
    _gradcheck_module(SparseInverseConv3d(2, 3), coarse.replace(coarse.features.detach()), case.x)


@pytest.mark.parametrize(
    "make", [lambda: SparseLayerNorm(3), lambda: SparseGRN(3)], ids=["layernorm", "grn"]
)
def test_norm_gradcheck(make):
    case = make_case((3, 4, 3), 0.5, True, channels=3, dtype=torch.float64)
    _gradcheck_module(make(), case.x)


@pytest.mark.parametrize("pool", [SparseAvgPool3d, SparseMaxPool3d])
def test_pool_gradcheck(pool):
    case = make_case((4, 3, 5), 0.5, channels=2, dtype=torch.float64)
    _gradcheck_module(pool(2), case.x)


def _assert_grads_equal(sparse_grads, dense_grads):
    for got, want in zip(sparse_grads, dense_grads, strict=True):
        scale = max(1.0, float(want.abs().max()))
        assert float((got - want).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("cin", "cout", "groups"), [(6, 6, 6), (6, 5, 1), (6, 9, 3)], ids=["dw", "full", "grouped"]
)
def test_subm_conv_grads_match_dense_autograd(device, cin, cout, groups):
    case = make_case((6, 7, 5), 0.4, True, channels=cin, device=device)
    conv = SubMConv3d(cin, cout, 3, groups=groups).to(device)
    upstream = torch.randn(len(case.x), cout, device=device)
    feats = case.x.features.clone().requires_grad_()
    (conv(case.x.replace(feats)).features * upstream).sum().backward()
    sparse_grads = [feats.grad, conv.weight.grad, conv.bias.grad]
    conv.zero_grad()

    volume = case.volume.clone().requires_grad_()
    dense = F.conv3d(volume, conv.weight, conv.bias, padding=1, groups=groups)
    (case.at_active(dense) * upstream).sum().backward()
    dense_grads = [case.at_active(volume.grad), conv.weight.grad, conv.bias.grad]
    _assert_grads_equal(sparse_grads, dense_grads)


@pytest.mark.parametrize("device", DEVICES)
def test_down_up_grads_match_dense_autograd(device):
    case = make_case((6, 5, 7), 0.4, channels=4, device=device)
    down, up = SparseConv3d(4, 5).to(device), SparseInverseConv3d(5, 3).to(device)
    upstream = torch.randn(len(case.x), 3, device=device)
    feats = case.x.features.clone().requires_grad_()
    (up(down(case.x.replace(feats)), case.x).features * upstream).sum().backward()
    params = [down.weight, down.bias, up.weight, up.bias]
    sparse_grads = [feats.grad] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    volume = case.volume.clone().requires_grad_()
    padded = case.even_padded(volume)
    coarse = F.conv3d(padded, down.weight, down.bias, stride=2)
    fine = F.conv_transpose3d(coarse * _parent_mask(case), up.weight, up.bias, stride=2)
    (case.at_active(fine) * upstream).sum().backward()
    dense_grads = [case.at_active(volume.grad)] + [p.grad for p in params]
    _assert_grads_equal(sparse_grads, dense_grads)


def _parent_mask(case) -> torch.Tensor:
    """1 at coarse voxels with an active child: the sparse down conv outputs only there."""
    return F.max_pool3d(case.even_padded(case.mask[:, None].float()), 2)
