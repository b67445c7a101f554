"""The sparse U-Net and its dense twin: parameter count, shared weights, equal functions."""

from __future__ import annotations

import pytest
import torch

from sparsekits.models import (
    PRESETS,
    DenseConvNeXtUNet,
    ModelConfig,
    SparseConvNeXtUNet,
    build_model,
)
from sparsekits.sparse import SparseTensor

PAPER_PARAMETERS = 27_473_696


@pytest.fixture(scope="module")
def paper_twins() -> tuple[SparseConvNeXtUNet, DenseConvNeXtUNet]:
    torch.manual_seed(0)
    sparse = build_model("paper")
    randomise_grn(sparse)
    dense = build_model("paper", dense=True)
    dense.load_state_dict(sparse.state_dict())
    return sparse.eval(), dense.eval()


def randomise_grn(model: torch.nn.Module) -> None:
    """GRN starts as the identity (gamma = beta = 0); give it weight so the tests exercise it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((".gamma", ".beta")):
                param.normal_(0.0, 0.5)


def small_twins(seed: int = 0) -> tuple[SparseConvNeXtUNet, DenseConvNeXtUNet]:
    torch.manual_seed(seed)
    sparse = build_model("small")
    randomise_grn(sparse)
    with torch.no_grad():
        sparse.stem.conv.bias.normal_()  # zero at init; the twins must agree on it too
    dense = build_model("small", dense=True)
    dense.load_state_dict(sparse.state_dict())
    return sparse.eval(), dense.eval()


def full_grid(volume: torch.Tensor) -> SparseTensor:
    return SparseTensor.from_dense(volume, torch.ones_like(volume[:, 0], dtype=torch.bool))


def assert_twins_agree(sparse_out, dense_out, shape: tuple[int, ...]) -> None:
    assert len(sparse_out) == len(dense_out) == 3
    for level, (s, d) in enumerate(zip(sparse_out, dense_out, strict=True)):
        assert s.stride == 2**level
        assert s.features.shape[1] == 3
        level_shape = tuple(-(-size // 2**level) for size in shape)
        assert d.shape[2:] == level_shape
        torch.testing.assert_close(s.dense(level_shape), d, atol=1e-4, rtol=0)


def test_paper_preset_has_the_papers_parameter_count(paper_twins):
    sparse, dense = paper_twins
    assert sum(p.numel() for p in sparse.parameters()) == PAPER_PARAMETERS
    assert sum(p.numel() for p in dense.parameters()) == PAPER_PARAMETERS
    # The count needs a head on every one of the 5 decoder levels, not only the 3 used.
    assert len(sparse.heads) == 5 and sparse.config.ds_levels == 3


def test_twins_share_state_dict_keys_and_shapes(paper_twins):
    sparse, dense = paper_twins
    shapes = {name: tuple(t.shape) for name, t in sparse.state_dict().items()}
    assert shapes == {name: tuple(t.shape) for name, t in dense.state_dict().items()}
    assert shapes["encoder.0.0.grn.gamma"] == (1, 64)
    assert shapes["decoder.0.up.weight"] == (32, 16, 2, 2, 2)  # ConvTranspose3d: [in, out, ...]


def test_paper_twins_agree_on_a_full_32_cube(paper_twins):
    sparse, dense = paper_twins
    torch.manual_seed(1)
    volume = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        assert_twins_agree(sparse(full_grid(volume)), dense(volume), (32, 32, 32))


def test_small_twins_agree_in_both_load_directions():
    sparse, dense = small_twins()
    volume = torch.randn(2, 1, 16, 8, 24)
    with torch.inference_mode():
        assert_twins_agree(sparse(full_grid(volume)), dense(volume), (16, 8, 24))
        # Dense weights loaded back into a fresh sparse network give the same function.
        reloaded = build_model("small").eval()
        reloaded.load_state_dict(dense.state_dict())
        assert_twins_agree(reloaded(full_grid(volume)), dense(volume), (16, 8, 24))


def blob_mask(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A locally dense, irregular mask: a random ellipsoid minus random holes."""
    generator = torch.Generator().manual_seed(seed)
    axes = [torch.arange(size, dtype=torch.float32) for size in shape]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    centre = [size / 2 for size in shape]
    radius = [size / 2.5 for size in shape]
    inside = ((z - centre[0]) / radius[0]) ** 2 + ((y - centre[1]) / radius[1]) ** 2
    inside = inside + ((x - centre[2]) / radius[2]) ** 2 <= 1
    holes = torch.rand(shape, generator=generator) < 0.2
    return inside & ~holes


def test_sparse_output_ignores_values_outside_the_mask():
    sparse, dense = small_twins(seed=2)
    shape = (17, 14, 19)
    mask = blob_mask(shape, seed=3)[None]
    volume = torch.randn(1, 1, *shape)
    changed = volume.clone()
    changed[:, 0][~mask] = 1000.0  # e.g. bone HU that the stage window throws away
    with torch.inference_mode():
        before = sparse(SparseTensor.from_dense(volume, mask))
        after = sparse(SparseTensor.from_dense(changed, mask))
        dense_before, dense_after = dense(volume), dense(changed)
    for level, (b, a) in enumerate(zip(before, after, strict=True)):
        expected = torch.unique(mask.nonzero().int() // torch.tensor([1, *[2**level] * 3]), dim=0)
        assert torch.equal(b.coords, a.coords)
        assert torch.equal(torch.unique(b.coords, dim=0), expected)
        assert torch.equal(b.features, a.features)
    # The change is one the dense twin does see, so the check above has teeth.
    assert not torch.allclose(dense_before[0], dense_after[0])


def test_dense_twin_pads_odd_extents_and_crops_back():
    sparse, dense = small_twins(seed=4)
    shape = (13, 6, 9)  # coarsest stride of the small preset is 8
    padded = (16, 8, 16)
    volume = torch.randn(1, 1, *shape)
    padded_volume = torch.zeros(1, 1, *padded)
    padded_volume[..., : shape[0], : shape[1], : shape[2]] = volume
    with torch.inference_mode():
        dense_out = dense(volume)
        # The dense twin's function: the sparse network on the zero-padded, fully occupied grid.
        reference = sparse(full_grid(padded_volume))
        odd_sparse = sparse(full_grid(volume))
    for level, (d, r, s) in enumerate(zip(dense_out, reference, odd_sparse, strict=True)):
        extent = tuple(-(-size // 2**level) for size in shape)
        assert d.shape == (1, 3, *extent)
        padded_extent = tuple(size // 2**level for size in padded)
        cropped = r.dense(padded_extent)[..., : extent[0], : extent[1], : extent[2]]
        torch.testing.assert_close(d, cropped, atol=1e-4, rtol=0)
        # The sparse network needs no padding: one output voxel per occupied coarse voxel.
        assert len(s) == extent[0] * extent[1] * extent[2]
        assert torch.isfinite(s.features).all()


def test_forward_runs_only_the_supervised_heads():
    config = ModelConfig(widths=(4, 8, 8, 8), depths=(1, 1, 1, 1), decoder_depth=1, ds_levels=2)
    model = build_model(config)
    called = []
    for level, head in enumerate(model.heads):
        head.register_forward_hook(lambda *_, level=level: called.append(level))
    volume = torch.randn(1, 1, 8, 8, 8)
    outputs = model(full_grid(volume))
    assert [out.stride for out in outputs] == [1, 2]
    assert sorted(called) == [0, 1]
    # Unused heads get no gradient: DDP needs find_unused_parameters=True with ds_levels < 3.
    sum(out.features.sum() for out in outputs).backward()
    assert model.heads[2].conv.weight.grad is None
    assert model.heads[0].conv.weight.grad is not None
    assert model.encoder[3][0].dwconv.weight.grad is not None


def test_init_follows_the_method():
    torch.manual_seed(5)
    model = build_model("paper", dense=True)
    weight = model.encoder[5][0].pwconv1.weight.detach()
    assert abs(float(weight.std()) - 0.02) < 0.001
    assert torch.count_nonzero(model.decoder[2].up.bias) == 0
    assert torch.all(model.stem.norm.weight == 1) and torch.count_nonzero(model.stem.norm.bias) == 0
    assert torch.count_nonzero(model.encoder[0][0].grn.gamma) == 0


def stem_features(model: SparseConvNeXtUNet, values: list[float]) -> torch.Tensor:
    coords = torch.zeros((len(values), 4), dtype=torch.int32)
    coords[:, 1] = torch.arange(len(values))
    return model.stem(SparseTensor(torch.tensor(values)[:, None], coords)).features


def test_stem_bias_keeps_the_intensity_that_the_papers_stem_reduces_to_its_sign():
    torch.manual_seed(3)
    paper_stem = SparseConvNeXtUNet(widths=(8, 16), depths=(1, 1), ds_levels=1)
    # 98 HU (a tumour) and 180 HU (renal cortex), normalised for stage 1; only LayerNorm's eps
    # keeps the two from being exactly equal.
    tumour, cortex = 0.8, 2.1
    same = stem_features(paper_stem, [tumour, cortex, -tumour])
    torch.testing.assert_close(same[0], same[1], atol=0.01, rtol=0)
    torch.testing.assert_close(same[0], -same[2], atol=1e-6, rtol=0)

    model = SparseConvNeXtUNet(widths=(8, 16), depths=(1, 1), ds_levels=1, stem_bias=True)
    # The bias starts at zero as METHOD.md's init says, and still gets a gradient...
    stem_features(model, [tumour, cortex]).pow(3).sum().backward()
    assert torch.count_nonzero(model.stem.conv.bias) == 0
    assert float(model.stem.conv.bias.grad.abs().max()) > 1e-3
    # ... and once it is non-zero, the stem tells the two tissues apart.
    with torch.no_grad():
        model.stem.conv.bias.normal_(0.0, 0.02)
    apart = stem_features(model, [tumour, cortex]).detach()
    assert float((apart[0] - apart[1]).abs().max()) > 0.1


def test_presets_and_config_validation():
    assert build_model("small").config == PRESETS["small"]
    assert SparseConvNeXtUNet().config.name == "paper"  # the constructor's defaults are the paper's
    assert PRESETS["paper"].coarsest_stride == 32 and PRESETS["small"].coarsest_stride == 8
    assert ModelConfig.from_dict(PRESETS["paper"].to_dict()) == PRESETS["paper"]
    with_bias = build_model("paper-stem-bias")
    assert sum(p.numel() for p in with_bias.parameters()) == PAPER_PARAMETERS + 16
    assert not PRESETS["paper"].stem_bias and PRESETS["small"].stem_bias
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("huge")
    with pytest.raises(ValueError, match="ds_levels"):
        ModelConfig(widths=(8, 16), depths=(1, 1), ds_levels=2)
    with pytest.raises(ValueError, match="stem_bias"):
        ModelConfig(widths=(8, 16), depths=(1, 1), ds_levels=1, stem_bias=1)
    with pytest.raises(ValueError, match="same length"):
        ModelConfig(widths=(8, 16, 32), depths=(1, 1))
    changed = {**PRESETS["paper"].to_dict(), "depths": [1, 1, 1, 1, 1, 1]}
    with pytest.raises(ValueError, match="differs from the 'paper' preset"):
        ModelConfig.from_dict(changed)


@pytest.mark.cuda
def test_twins_agree_on_cuda_and_train_under_bf16_autocast(monkeypatch):
    from sparsekits.train.losses import deep_supervision_loss

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # exact fp32 for the compare
    sparse, dense = small_twins(seed=6)
    sparse, dense = sparse.cuda(), dense.cuda()
    volume = torch.randn(2, 1, 16, 16, 8, device="cuda")
    with torch.inference_mode():
        assert_twins_agree(sparse(full_grid(volume)), dense(volume), (16, 16, 8))
    x = full_grid(volume)
    targets = x.replace((x.features > 0).float().expand(-1, 3).contiguous())
    sparse.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = deep_supervision_loss(sparse(x), targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in sparse.encoder.parameters())
