"""The method's network on the sparse engine: it only ever reads active voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsekits.models.registry import SPARSE_CONVNEXT_UNET
from sparsekits.models.unet import LAYER_NORM_EPS, Block, ConvNeXtUNet, Ops, add_into
from sparsekits.sparse import (
    SparseConv3d,
    SparseGRN,
    SparseInverseConv3d,
    SparseLayerNorm,
    SparseTensor,
    SubMConv3d,
)
from sparsekits.sparse.workers import on_workers


class PointwiseConv3d(nn.Module):
    """1x1x1 convolution: a Linear on the features, weight shaped like nn.Conv3d's
    [out, in, 1, 1, 1] (no kernel map needed, unlike a kernel-1 SubMConv3d)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv3d's default

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.linear(x.features, self.weight.flatten(1), self.bias))


class SparseOps(Ops):
    """A SparseTensor is both the channels-first and the channels-last value: features [N, C]."""

    @staticmethod
    def depthwise_conv(dim: int) -> nn.Module:
        return SubMConv3d(dim, dim, kernel_size=3, groups=dim, bias=True)

    @staticmethod
    def layer_norm(dim: int) -> nn.Module:
        return SparseLayerNorm(dim, eps=LAYER_NORM_EPS)

    @staticmethod
    def grn(dim: int) -> nn.Module:
        return SparseGRN(dim)

    @staticmethod
    def pointwise_conv(cin: int, cout: int, bias: bool = False) -> nn.Module:
        return PointwiseConv3d(cin, cout, bias)

    @staticmethod
    def down_conv(cin: int, cout: int) -> nn.Module:
        return SparseConv3d(cin, cout, kernel_size=2, stride=2, bias=True)

    @staticmethod
    def up_conv(cin: int, cout: int) -> nn.Module:
        return SparseInverseConv3d(cin, cout, kernel_size=2, stride=2, bias=True)

    @staticmethod
    def channels_last(x: SparseTensor) -> SparseTensor:
        return x

    @staticmethod
    def channels_first(x: SparseTensor) -> SparseTensor:
        return x

    @staticmethod
    def map_features(x: SparseTensor, fn) -> SparseTensor:
        return x.replace(fn(x.features))

    @staticmethod
    def add(x: SparseTensor, y: SparseTensor) -> SparseTensor:
        # Both lie on the same coordinates by construction (residual, or skip + upsampled).
        return y.replace(add_into(x.features, y.features))

    @staticmethod
    def upsample(conv: nn.Module, x: SparseTensor, target: SparseTensor) -> SparseTensor:
        return conv(x, target)

    @classmethod
    def block_tail(cls, block: Block, x: SparseTensor, y: SparseTensor) -> SparseTensor:
        if (
            torch.is_grad_enabled()
            or y.features.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
        ):
            return super().block_tail(block, x, y)
        return x.replace(fused_block_tail(block, x, y.features))


# Rows per chunk of the fused block tail: its 4C-wide hidden chunk (2 MiB at C = 64 in fp32)
# stays in a core's cache between the Linear, the GELU and the GRN's sums.
FUSED_CHUNK_ROWS = 2048


def fused_block_tail(block: Block, x: SparseTensor, dw: torch.Tensor) -> torch.Tensor:
    """``Ops.block_tail`` without autograd, in two passes over row chunks instead of one pass
    per op over whole tensors: on a CPU each op over [N, 4C] is bound by memory, and a fresh
    [N, 4C] tensor per op costs page faults. Pass 1: LN, Linear and GELU into the hidden
    features, and the GRN's per-sample sums of squares; pass 2: the GRN's scale, its beta folded
    into the second Linear's bias, and the residual. Each worker thread works through its own
    chunks single-threaded (no thread barrier per op). Written into ``dw``'s storage: the conv
    output, which nothing else holds."""
    norm, grn, first, second = block.norm, block.grn, block.pwconv1, block.pwconv2
    hidden = dw.new_empty(len(dw), first.out_features)
    batch_index = x.kernel_maps.batch_index if x.batch_size > 1 else None
    starts = range(0, len(dw), FUSED_CHUNK_ROWS)
    chunks = [slice(start, start + FUSED_CHUNK_ROWS) for start in starts]

    def expand(chunk: slice, squares: torch.Tensor) -> None:
        normed = F.layer_norm(dw[chunk], norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        h = torch.addmm(first.bias, normed, first.weight.t(), out=hidden[chunk])
        torch.ops.aten.gelu_(h)
        if batch_index is None:
            squares[0] += (h * h).sum(0)
        else:
            squares.index_add_(0, batch_index[chunk], h * h)

    width = first.out_features
    squares = sum(on_workers(chunks, expand, lambda: dw.new_zeros(x.batch_size, width)))
    norms = squares.sqrt()
    response = norms / (norms.mean(1, keepdim=True) + grn.eps)
    scale = torch.addcmul(torch.ones_like(grn.gamma), grn.gamma, response)
    bias = torch.addmv(second.bias, second.weight, grn.beta[0])

    def project(chunk: slice, _) -> None:
        h = hidden[chunk]
        h.mul_(scale[0] if batch_index is None else scale[batch_index[chunk]])
        torch.addmm(bias, h, second.weight.t(), out=dw[chunk]).add_(x.features[chunk])

    on_workers(chunks, project)
    return dw


class SparseConvNeXtUNet(ConvNeXtUNet):
    """``forward(x: SparseTensor)`` -> region logits as SparseTensors [N_k, out] at strides
    1, 2, 4 (finest first): level k on the coordinates of ``x`` floor-divided by 2**k."""

    ops = SparseOps
    architecture_key = SPARSE_CONVNEXT_UNET
