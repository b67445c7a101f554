"""The dense twin: the same network on dense [B, C, D, H, W] tensors (what sparsity saves)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsekits.models.registry import DENSE_CONVNEXT_UNET
from sparsekits.models.unet import LAYER_NORM_EPS, ConvNeXtUNet, Ops, add_into


class DenseGRN(nn.Module):
    """Global response norm on channels-last [B, D, H, W, C]: L2 norm per channel over a sample."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, dim))
        self.beta = nn.Parameter(torch.zeros(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(1, x.ndim - 1))
        norm = torch.linalg.vector_norm(x, dim=spatial, keepdim=True)
        response = norm / (norm.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(self.beta + x, self.gamma, x * response)


class DenseOps(Ops):
    @staticmethod
    def depthwise_conv(dim: int) -> nn.Module:
        return nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)

    @staticmethod
    def layer_norm(dim: int) -> nn.Module:
        return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    @staticmethod
    def grn(dim: int) -> nn.Module:
        return DenseGRN(dim)

    @staticmethod
    def pointwise_conv(cin: int, cout: int, bias: bool = False) -> nn.Module:
        return nn.Conv3d(cin, cout, kernel_size=1, bias=bias)

    @staticmethod
    def down_conv(cin: int, cout: int) -> nn.Module:
        return nn.Conv3d(cin, cout, kernel_size=2, stride=2)

    @staticmethod
    def up_conv(cin: int, cout: int) -> nn.Module:
        return nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2)

    @staticmethod
    def channels_last(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 4, 1)

    @staticmethod
    def channels_first(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 4, 1, 2, 3)

    @staticmethod
    def map_features(x: torch.Tensor, fn) -> torch.Tensor:
        return fn(x)

    @staticmethod
    def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return add_into(x, y)

    @staticmethod
    def upsample(conv: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return conv(x)


class DenseConvNeXtUNet(ConvNeXtUNet):
    """``forward(x [B, C, D, H, W])`` -> region logits [B, out, ceil(D / s), ...] at s = 1, 2, 4.

    Extents that are not a multiple of the coarsest stride are padded up with zeros at the end of
    each axis and the outputs cropped back, so level k keeps ``ceil(extent / 2**k)`` voxels: the
    extent of the sparse network's coordinates at that level.
    """

    ops = DenseOps
    architecture_key = DENSE_CONVNEXT_UNET

    def _enter(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        spatial = tuple(x.shape[2:])
        stride = self.config.coarsest_stride
        pad = [(-extent) % stride for extent in spatial]
        if any(pad):
            # F.pad lists the last axis first, (before, after) per axis.
            x = F.pad(x, [amount for p in reversed(pad) for amount in (0, p)])
        return x, spatial

    def _leave(self, outputs: list[torch.Tensor], spatial: tuple[int, ...]) -> list[torch.Tensor]:
        cropped = []
        for level, logits in enumerate(outputs):
            extent = [-(-size // 2**level) for size in spatial]
            cropped.append(logits[:, :, : extent[0], : extent[1], : extent[2]])
        return cropped
