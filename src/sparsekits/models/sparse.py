"""The method's network on the sparse engine: it only ever reads active voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsekits.models.registry import SPARSE_CONVNEXT_UNET
from sparsekits.models.unet import LAYER_NORM_EPS, ConvNeXtUNet, Ops, add_into
from sparsekits.sparse import (
    SparseConv3d,
    SparseGRN,
    SparseInverseConv3d,
    SparseLayerNorm,
    SparseTensor,
    SubMConv3d,
)


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


class SparseConvNeXtUNet(ConvNeXtUNet):
    """``forward(x: SparseTensor)`` -> region logits as SparseTensors [N_k, out] at strides
    1, 2, 4 (finest first): level k on the coordinates of ``x`` floor-divided by 2**k."""

    ops = SparseOps
    architecture_key = SPARSE_CONVNEXT_UNET
