"""nn-like modules on SparseTensor whose parameters have exactly the shapes of their torch.nn twins.

Each computes, at the active voxels, what its dense twin computes on the zero-filled dense
tensor. Convolutions run in the features' dtype (or the autocast dtype when autocast is on);
their weights are cast to it.

spconv (>= 2.3) could sit behind ``SubMConv3d``/``SparseConv3d`` for groups=1 on CUDA, but it
has no depthwise convolution and its CPU build cannot train, so the engine here is the default.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sparsekits.sparse import functional as SF
from sparsekits.sparse.tensor import SparseTensor


def _conv_params(
    module: nn.Module, weight_shape: tuple[int, ...], bias_channels: int | None
) -> None:
    """weight and bias initialised like torch.nn's conv layers (kaiming-uniform, a=sqrt(5))."""
    module.weight = nn.Parameter(torch.empty(weight_shape))
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if bias_channels is None:
        module.register_parameter("bias", None)
        return
    fan_in = math.prod(weight_shape[1:])  # what torch.nn uses, for Conv3d and ConvTranspose3d
    module.bias = nn.Parameter(torch.empty(bias_channels))
    nn.init.uniform_(module.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


class SubMConv3d(nn.Module):
    """Submanifold conv: output coords = input coords; weight [out, in/groups, k, k, k].

    Equals ``F.conv3d(zero-filled dense input, weight, bias, padding=k//2, groups=groups)`` at
    the active voxels. ``groups=in_channels=out_channels`` takes the depthwise path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if kernel_size % 2 == 0:
            raise ValueError("SubMConv3d needs an odd kernel_size")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.groups = kernel_size, groups
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size, kernel_size)
        _conv_params(self, shape, out_channels if bias else None)

    def forward(self, x: SparseTensor) -> SparseTensor:
        nbr = x.kernel_maps.neighbours(self.kernel_size)
        return x.replace(SF.subm_conv3d(x.features, nbr, self.weight, self.bias, self.groups))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


def _check_kernel_equals_stride(kernel_size: int, stride: int) -> None:
    if kernel_size != stride or kernel_size < 2:
        raise ValueError("only kernel_size == stride >= 2 is supported (each child, one parent)")


class _CellConv3d(nn.Module):
    """Shared by the k = stride convolutions: parameters shaped like torch.nn's twin."""

    # nn.ConvTranspose3d's weight is [in, out, k, k, k]; nn.Conv3d's is [out, in, k, k, k].
    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        bias: bool = True,
    ):
        super().__init__()
        _check_kernel_equals_stride(kernel_size, stride)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, stride
        channels = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        _conv_params(self, (*channels, stride, stride, stride), out_channels if bias else None)

    def extra_repr(self) -> str:
        k = self.kernel_size
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={k}"


class SparseConv3d(_CellConv3d):
    """Strided conv with kernel = stride (default 2): coords -> coords // stride, stride *= 2.

    Outputs at every coarse voxel with at least one active child; weight like nn.Conv3d.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:
        down = x.kernel_maps.downsample(self.kernel_size)
        num_parents = len(down.parent.coords)
        out = SF.down_conv3d(x.features, down.slot, num_parents, self.weight, self.bias)
        return SparseTensor._on_cache(out, down.parent)


class SparseInverseConv3d(_CellConv3d):
    """Transposed conv (kernel = stride, default 2) back onto a finer tensor's coordinates.

    ``forward(x, target)`` returns features on ``target.coords``, equal to
    ``F.conv_transpose3d(dense(x), weight, bias, stride=2)`` there; the weight has
    nn.ConvTranspose3d's shape ``[in, out, k, k, k]``. When ``x`` lives on the coordinates that
    ``target`` downsamples to (the usual U-Net skip), the cached child -> parent map is reused;
    otherwise the parents are looked up and children without one receive only the bias.
    """

    transposed = True

    def forward(self, x: SparseTensor, target: SparseTensor) -> SparseTensor:
        if x.stride != target.stride * self.kernel_size:
            raise ValueError(
                f"inverse conv from stride {x.stride} must land on stride "
                f"{x.stride // self.kernel_size}, but target has stride {target.stride}"
            )
        out = SF.inverse_conv3d(
            x.features, _child_slots(x, target, self.kernel_size), self.weight, self.bias
        )
        return target.replace(out)

    def extra_repr(self) -> str:
        k = self.kernel_size
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={k}"


def _child_slots(x: SparseTensor, target: SparseTensor, factor: int) -> torch.Tensor:
    """Row of x * factor^3 + offset for each target voxel; len(x) * factor^3 where absent."""
    down = target.kernel_maps.downsample(factor)
    if down.parent is x.kernel_maps:
        return down.slot
    cells = factor**3
    parent_rows = x.kernel_maps.index.rows_of(down.parent.coords)  # len(x) where absent
    rows = parent_rows[torch.div(down.slot, cells, rounding_mode="floor")].long()
    return torch.where(rows < len(x), rows * cells + down.slot % cells, len(x) * cells)


class SparseLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at each active voxel; parameters like nn.LayerNorm(C)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(
            F.layer_norm(x.features, self.normalized_shape, self.weight, self.bias, self.eps)
        )


class SparseBatchNorm(nn.BatchNorm1d):
    """Batch norm over the ACTIVE voxels of every sample of the batch: BatchNorm1d(C) on the
    feature rows, parameters and buffers like nn.BatchNorm3d(C). In training, each channel is
    normalised by the mean and biased variance of the rows, and the running statistics move by
    ``momentum`` towards the mean and the unbiased variance, as torch's batch norms do; in
    evaluation the running statistics normalise. It equals nn.BatchNorm3d on a fully occupied
    grid, and a batch norm whose statistics skip the inactive voxels on a sparse one (zero-filled
    inactive voxels would pull a dense BatchNorm3d's mean towards 0)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.features))


class SparseGRN(nn.Module):
    """ConvNeXt V2 global response norm per sample, over that sample's active voxels.

    ``gamma`` and ``beta`` have shape ``[1, C]`` (the dense twin's are [1, 1, 1, 1, C]).
    G[b, c] = ||x[b, :, c]||_2 over the sample's voxels; N = G / (mean_c G + 1e-6);
    out = gamma * (x * N) + beta + x. Zero-filled inactive voxels add nothing to G, so this
    equals the dense GRN at active voxels.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, num_channels))
        self.beta = nn.Parameter(torch.zeros(1, num_channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        f = x.features
        g = self._channel_norms(x)
        n = g / (g.mean(dim=1, keepdim=True) + self.eps)
        # gamma * (x * N) + beta + x == x * (1 + gamma * N) + beta: one pass over [N, C]
        # instead of five (GRN runs on the 4x-wide MLP features, the widest tensors of a block).
        scale = torch.addcmul(torch.ones_like(self.gamma), self.gamma, n)
        if x.batch_size > 1:
            scale = scale[x.kernel_maps.batch_index]
        return x.replace(torch.addcmul(self.beta, f, scale))

    @staticmethod
    def _channel_norms(x: SparseTensor) -> torch.Tensor:
        """G [B, C]: L2 norm of each channel over each sample's voxels."""
        f = x.features
        squares = f * f
        if x.batch_size == 1:
            sq = squares.sum(dim=0, keepdim=True)
        else:
            sq = f.new_zeros(x.batch_size, f.shape[1])
            sq.index_add_(0, x.kernel_maps.batch_index, squares)
        positive = sq > 0
        # sqrt has an infinite slope at 0: keep empty channels out of it so gradients stay finite.
        return torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)


class _SparsePool3d(nn.Module):
    def __init__(self, kernel_size: int = 2):
        super().__init__()
        _check_kernel_equals_stride(kernel_size, kernel_size)
        self.kernel_size = kernel_size

    def forward(self, x: SparseTensor) -> SparseTensor:
        down = x.kernel_maps.downsample(self.kernel_size)
        cells = self.kernel_size**3
        num_parents = len(down.parent.coords)
        out = self._reduce(x.features, down.slot, num_parents, cells)
        return SparseTensor._on_cache(out, down.parent)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class SparseAvgPool3d(_SparsePool3d):
    """Mean over each coarse cell's ACTIVE children (stride = kernel); soft targets for deep
    supervision. Unlike nn.AvgPool3d, absent children do not count as zeros.
    """

    @staticmethod
    def _reduce(f: torch.Tensor, slot: torch.Tensor, num_parents: int, cells: int):
        table = SF.slot_table(f, slot, num_parents * cells).view(num_parents, cells, -1)
        count = torch.zeros(num_parents * cells, dtype=f.dtype, device=f.device)
        count[slot] = 1
        return table.sum(1) / count.view(num_parents, cells).sum(1, keepdim=True)


class SparseMaxPool3d(_SparsePool3d):
    """Max over each coarse cell's active children (stride = kernel); equals nn.MaxPool3d on a
    dense tensor filled with -inf outside the active voxels.
    """

    @staticmethod
    def _reduce(f: torch.Tensor, slot: torch.Tensor, num_parents: int, cells: int):
        table = SF.slot_table(f, slot, num_parents * cells)
        absent = torch.ones(num_parents * cells, dtype=torch.bool, device=f.device)
        absent[slot] = False
        table = table.masked_fill(absent[:, None], float("-inf"))
        return table.view(num_parents, cells, -1).amax(1)


class PointWise(nn.Module):
    """Applies a feature-wise module (Linear, GELU, Dropout, ...) to ``x.features``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.module(x.features))


def _check_same_coords(tensors: list[SparseTensor]) -> None:
    first = tensors[0]
    for other in tensors[1:]:
        if other.kernel_maps is first.kernel_maps:
            continue
        if other.stride != first.stride or not torch.equal(other.coords, first.coords):
            raise ValueError("sparse tensors must share the same coordinates and stride")


def add(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """Element-wise sum of two tensors on the same coordinates (ValueError otherwise)."""
    _check_same_coords([a, b])
    return a.replace(a.features + b.features)


def cat(tensors: list[SparseTensor]) -> SparseTensor:
    """Channel concatenation of tensors on the same coordinates (ValueError otherwise)."""
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    _check_same_coords(list(tensors))
    return tensors[0].replace(torch.cat([t.features for t in tensors], dim=1))
