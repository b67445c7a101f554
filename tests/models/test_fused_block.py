"""The fused inference path of the sparse ConvNeXt block equals the op-by-op path."""

import pytest
import torch

import sparsekits.models.sparse as sparse_models
from sparsekits.models.sparse import SparseOps
from sparsekits.models.unet import Block
from sparsekits.sparse import SparseTensor


def random_cloud(batch: int, side: int = 12, occupancy: float = 0.4) -> SparseTensor:
    coords = []
    for sample in range(batch):
        voxels = (torch.rand(side, side, side) < occupancy).nonzero().int()
        coords.append(
            torch.cat([torch.full((len(voxels), 1), sample, dtype=torch.int32), voxels], 1)
        )
    coords = torch.cat(coords)
    return SparseTensor(torch.randn(len(coords), 8), coords, batch_size=batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_fused_tail_equals_the_op_by_op_tail(batch, monkeypatch):
    monkeypatch.setattr(sparse_models, "FUSED_CHUNK_ROWS", 100)  # several chunks per worker
    torch.manual_seed(batch)
    block = Block(8, SparseOps).eval()
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0.0, 0.5)  # GRN's gamma and beta are zero at init
    x = random_cloud(batch)
    assert len(x.features) > 4 * sparse_models.FUSED_CHUNK_ROWS
    expected = block(x).features  # grad enabled: the op-by-op path
    with torch.inference_mode():
        fused = block(x).features
    torch.testing.assert_close(fused, expected.detach(), atol=1e-5, rtol=1e-5)
    # The GRN's statistics are per sample: a sample's output does not depend on the others.
    first = x.coords[:, 0] == 0
    alone = SparseTensor(x.features[first], x.coords[first], batch_size=1)
    with torch.inference_mode():
        torch.testing.assert_close(block(alone).features, fused[first], atol=1e-5, rtol=1e-5)


def test_fused_tail_leaves_the_block_input_alone():
    torch.manual_seed(0)
    block = Block(8, SparseOps).eval()
    x = random_cloud(1)
    before = x.features.clone()
    with torch.inference_mode():
        block(x)
    assert torch.equal(x.features, before)
