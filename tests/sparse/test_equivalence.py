"""Each sparse op against its dense PyTorch twin at the active voxels (fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sparse_cases import CASES, DEVICES, make_case

from sparsekits.sparse import (
    PointWise,
    SparseAvgPool3d,
    SparseConv3d,
    SparseGRN,
    SparseInverseConv3d,
    SparseLayerNorm,
    SparseMaxPool3d,
    SparseTensor,
    SubMConv3d,
    add,
    cat,
)

CASE_IDS = [f"{s}-occ{o}-empty{e}" for s, o, e in CASES]


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    actual, expected = actual.detach(), expected.detach()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    assert actual.shape == expected.shape
    err = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert err <= 1e-5 * scale, f"max abs error {err} at output scale {scale}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "occupancy", "empty"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    ("cin", "cout", "groups", "kernel"),
    [(6, 6, 6, 3), (6, 5, 1, 3), (6, 4, 2, 3), (6, 12, 6, 3), (6, 6, 6, 5)],
    ids=["depthwise", "full", "grouped", "multiplier", "depthwise-k5"],
)
def test_subm_conv_matches_dense(device, shape, occupancy, empty, cin, cout, groups, kernel):
    case = make_case(shape, occupancy, empty, channels=cin, device=device)
    conv = SubMConv3d(cin, cout, kernel, groups=groups).to(device)
    out = conv(case.x)
    dense = F.conv3d(case.volume, conv.weight, conv.bias, padding=kernel // 2, groups=groups)
    assert torch.equal(out.coords, case.x.coords)
    assert_close(out.features, case.at_active(dense))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "occupancy", "empty"), CASES, ids=CASE_IDS)
def test_down_and_inverse_conv_match_dense(device, shape, occupancy, empty):
    case = make_case(shape, occupancy, empty, channels=5, device=device)
    down = SparseConv3d(5, 7).to(device)
    coarse = down(case.x)
    padded = case.even_padded(case.volume)
    dense = F.conv3d(padded, down.weight, down.bias, stride=2)
    assert coarse.stride == 2
    expected_coords = (case.even_padded(case.mask[:, None].float()) > 0).squeeze(1)
    expected_coords = F.max_pool3d(expected_coords[:, None].float(), 2)[:, 0].nonzero().int()
    assert torch.equal(coarse.coords, expected_coords)
    assert_close(coarse.features, case.at_active(dense, coarse.coords))

    up = SparseInverseConv3d(7, 3).to(device)
    fine = up(coarse, case.x)
    dense_up = F.conv_transpose3d(coarse.dense(dense.shape[2:]), up.weight, up.bias, stride=2)
    assert torch.equal(fine.coords, case.x.coords)
    assert_close(fine.features, case.at_active(dense_up))


@pytest.mark.parametrize("device", DEVICES)
def test_inverse_conv_onto_unrelated_coarse_tensor_looks_parents_up(device):
    case = make_case((6, 6, 6), 0.4, device=device)
    coarse_case = make_case((3, 3, 3), 0.5, channels=3, device=device, seed=3)
    coarse = SparseTensor(coarse_case.x.features, coarse_case.x.coords.clone(), stride=2)
    up = SparseInverseConv3d(3, 2).to(device)
    out = up(coarse, case.x)
    dense = F.conv_transpose3d(coarse_case.volume, up.weight, up.bias, stride=2)
    assert_close(out.features, case.at_active(dense))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "occupancy", "empty"), CASES, ids=CASE_IDS)
def test_pools_match_dense(device, shape, occupancy, empty):
    case = make_case(shape, occupancy, empty, channels=3, device=device)
    avg, mx = SparseAvgPool3d(2)(case.x), SparseMaxPool3d(2)(case.x)
    mask = case.even_padded(case.mask[:, None].float())
    volume = case.even_padded(case.volume)
    mean_of_active = F.avg_pool3d(volume, 2) / F.avg_pool3d(mask, 2).clamp_min(1e-12)
    assert_close(avg.features, case.at_active(mean_of_active, avg.coords))
    filled = volume.masked_fill(mask == 0, float("-inf"))
    assert_close(mx.features, case.at_active(F.max_pool3d(filled, 2), mx.coords))
    assert avg.kernel_maps is mx.kernel_maps


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "occupancy", "empty"), CASES, ids=CASE_IDS)
def test_norms_match_dense(device, shape, occupancy, empty):
    c = 6
    case = make_case(shape, occupancy, empty, channels=c, device=device)
    norm = SparseLayerNorm(c).to(device)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    dense_norm = F.layer_norm(case.at_active(case.volume), (c,), norm.weight, norm.bias, 1e-6)
    assert_close(norm(case.x).features, dense_norm)
    grn = SparseGRN(c).to(device)
    torch.nn.init.normal_(grn.gamma)
    torch.nn.init.normal_(grn.beta)
    x = case.volume
    g = torch.norm(x, p=2, dim=(2, 3, 4), keepdim=True)
    n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
    dense_grn = grn.gamma.view(1, c, 1, 1, 1) * (x * n) + grn.beta.view(1, c, 1, 1, 1) + x
    assert grn.gamma.shape == (1, c)
    assert_close(grn(case.x).features, case.at_active(dense_grn))


@pytest.mark.parametrize("device", DEVICES)
def test_grn_keeps_samples_independent(device):
    case = make_case((5, 5, 5), 0.5, channels=4, device=device)
    grn = SparseGRN(4).to(device)
    torch.nn.init.normal_(grn.gamma)
    first = case.x.coords[:, 0] == 0
    changed = case.x.features.clone()
    changed[~first] *= 100.0
    before = grn(case.x).features[first]
    after = grn(case.x.replace(changed)).features[first]
    assert torch.allclose(before, after)


@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_add_cat_and_dense_round_trip(device):
    case = make_case((5, 6, 7), 0.3, channels=4, device=device)
    x = case.x
    linear = torch.nn.Linear(4, 3).to(device)
    y = PointWise(linear)(x)
    assert_close(y.features, linear(x.features))
    assert_close(add(x, x).features, 2 * x.features)
    assert cat([x, y]).features.shape == (len(x), 7)
    assert torch.equal(x.dense((5, 6, 7)), case.volume)
    assert x.batch_size == 2 and x.device.type == device and x.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_convs_follow_autocast(device):
    """Under autocast the convs compute in the autocast dtype, like nn.Conv3d does."""
    case = make_case((6, 5, 7), 0.4, channels=4, device=device)
    subm = SubMConv3d(4, 4, groups=4).to(device)
    down, up = SparseConv3d(4, 6).to(device), SparseInverseConv3d(6, 4).to(device)
    with torch.no_grad():
        reference = up(down(subm(case.x)), case.x).features
        with torch.autocast(device, dtype=torch.bfloat16):
            out = up(down(subm(case.x)), case.x).features
    assert out.dtype == torch.bfloat16
    scale = float(reference.abs().max())
    assert float((out.float() - reference).abs().max()) <= 0.05 * scale
