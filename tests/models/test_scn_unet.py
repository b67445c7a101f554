"""The ScanNet-style submanifold U-Net (sscn-pointcloud's networks) and its dense twin with masked
batch norm: shapes, the sizes of the example, and equality of the twins at the active voxels."""

from __future__ import annotations

import pytest
import torch

from sparsekits.models.build import build_model
from sparsekits.models.io import load_model_folder, save_model_folder
from sparsekits.models.scn_unet import DenseScnUNet, ScnUNetConfig, SparseScnUNet
from sparsekits.sparse import SparseTensor

TINY = ScnUNetConfig(out_channels=3, m=4, levels=3, reps=2)


def twins(config: ScnUNetConfig) -> tuple[SparseScnUNet, DenseScnUNet]:
    torch.manual_seed(0)
    sparse = build_model(config)
    dense = build_model(config, dense=True)
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def cloud(
    shape=(9, 7, 10), occupancy=0.25, seed=0
) -> tuple[SparseTensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((2, *shape), generator=gen) < occupancy
    volume = (torch.randn((2, 1, *shape), generator=gen) * 2 + 1) * mask[:, None]
    return SparseTensor.from_dense(volume, mask), volume, mask


def at_active(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def test_the_reference_sizes_are_the_scannet_examples():
    config = ScnUNetConfig()
    assert config.planes == (16, 32, 48, 64, 80, 96, 112) and config.reps == 1
    net = build_model(config)
    convs = [m for m in net.modules() if type(m).__name__ == "SubMConv3d"]
    assert convs and all(c.kernel_size == 3 and c.bias is None for c in convs)
    assert type(net) is SparseScnUNet and net.linear.out_features == 2


def test_logits_lie_on_the_input_voxels():
    sparse, _ = twins(TINY)
    x, _, _ = cloud()
    (logits,) = sparse(x)
    assert torch.equal(logits.coords, x.coords) and logits.features.shape == (len(x.coords), 3)


@pytest.mark.parametrize("training", [True, False])
def test_the_dense_twin_with_masked_batch_norm_equals_the_sparse_network(training):
    sparse, dense = twins(TINY)
    x, volume, mask = cloud()
    for _ in range(2):  # running statistics away from their initial values before evaluation
        sparse.train()(x)
        dense.train()(volume, mask)
    sparse.train(training)
    dense.train(training)
    (logits,) = sparse(x)
    (expected,) = dense(volume, mask)
    assert expected.shape == (2, 3, 9, 7, 10)
    torch.testing.assert_close(logits.features, at_active(expected, x.coords), atol=1e-5, rtol=1e-4)
    for name, buffer in sparse.named_buffers():
        torch.testing.assert_close(buffer, dense.get_buffer(name), atol=1e-5, rtol=1e-4)


def test_on_a_full_grid_the_dense_twin_is_a_plain_dense_unet():
    sparse, dense = twins(TINY)
    full = torch.ones((1, 8, 6, 4), dtype=torch.bool)
    volume = torch.randn((1, 1, 8, 6, 4))
    (with_mask,) = dense(volume, full)
    (without,) = dense(volume)
    torch.testing.assert_close(with_mask, without)
    (logits,) = sparse(SparseTensor.from_dense(volume, full))
    torch.testing.assert_close(
        logits.features, at_active(without, logits.coords), atol=1e-5, rtol=1e-4
    )


def test_gradients_reach_every_parameter_and_the_model_folder_round_trips(tmp_path):
    sparse, _ = twins(TINY)
    x, _, _ = cloud()
    (logits,) = sparse(x)
    logits.features.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sparse.parameters())
    sparse.eval()
    save_model_folder(tmp_path / "fold_0", sparse)
    loaded, config, _ = load_model_folder(tmp_path / "fold_0")
    assert config == TINY
    torch.testing.assert_close(loaded(x)[0].features, sparse(x)[0].features)
    dense, _, _ = load_model_folder(tmp_path / "fold_0", dense=True)
    assert type(dense) is DenseScnUNet


def test_a_bad_config_is_refused():
    with pytest.raises(ValueError, match="positive ints"):
        ScnUNetConfig(levels=0)
    with pytest.raises(ValueError, match="unknown \\['width'\\]"):
        ScnUNetConfig.from_dict({**TINY.to_dict(), "width": 3})
