"""The submanifold sparse U-Net of SparseConvNet's ScanNet example (seed 002's networks), and its
dense twin.

The ScanNet example: a 3x3x3 submanifold convolution to ``m`` planes, then a U-Net whose level k
has ``(k + 1) * m`` planes (7 levels, m = 16 or 32), ``reps`` blocks per level, each block batch
norm -> ReLU -> 3x3x3 submanifold convolution (no bias: the norm that follows has one);
down-sampling by batch norm -> ReLU -> a 2x2x2 stride-2 convolution, up-sampling by batch norm
-> ReLU -> a 2x2x2 stride-2 transposed convolution back onto the finer level's voxels, whose
output is concatenated after the skip (the finer level's own features) and goes through the
level's blocks again (the first from twice the planes); then batch norm -> ReLU -> a linear
layer to the class logits. Batch norm takes its statistics over the active voxels of the batch
(``sparse.SparseBatchNorm``). The example's residual blocks (its option, off by default) are not
built here.

The dense twin holds a dense tensor and its mask of active voxels and zeroes every output outside
the mask, with a batch norm whose statistics are those of the masked voxels: at the active voxels
it computes what the sparse network computes, on any set of them (what the tests check), and on
a fully occupied grid it is a plain dense U-Net with ``nn.BatchNorm3d``. Both twins have the same
state_dict. ``forward`` returns ``[logits]`` (one level: the trainer's and the inference code's
deep-supervision lists).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sparsekits.models.registry import (
    DENSE_SCN_UNET,
    SPARSE_SCN_UNET,
    config_from_dict,
    get_architecture,
)
from sparsekits.sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    cat,
)


@dataclass(frozen=True)
class ScnUNetConfig:
    """Planes ``(k + 1) * m`` at level k of ``levels``, ``reps`` blocks per level."""

    name: str = "custom"
    architecture: str = SPARSE_SCN_UNET
    in_channels: int = 1
    out_channels: int = 2
    m: int = 16
    levels: int = 7
    reps: int = 1

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid SCN U-Net config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = []
        try:
            entry = get_architecture(self.architecture)
        except ValueError as error:
            return [str(error)]
        if not entry.configured_by(type(self)):
            problems.append(f"architecture {self.architecture!r} takes a {entry.config_class}")
        counts = (self.in_channels, self.out_channels, self.m, self.levels, self.reps)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts):
            problems.append("in_channels, out_channels, m, levels and reps must be positive ints")
        return problems

    @property
    def planes(self) -> tuple[int, ...]:
        return tuple((level + 1) * self.m for level in range(self.levels))

    @property
    def coarsest_stride(self) -> int:
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ScnUNetConfig:
        return config_from_dict(cls, values, "SCN U-Net")


class SparseOps:
    """The sparse twin's layers: values are SparseTensors."""

    @staticmethod
    def conv(cin: int, cout: int) -> nn.Module:
        return SubMConv3d(cin, cout, kernel_size=3, bias=False)

    @staticmethod
    def norm(channels: int) -> nn.Module:
        return SparseBatchNorm(channels)

    @staticmethod
    def down(cin: int, cout: int) -> nn.Module:
        return SparseConv3d(cin, cout, kernel_size=2, stride=2, bias=False)

    @staticmethod
    def up(cin: int, cout: int) -> nn.Module:
        return SparseInverseConv3d(cin, cout, kernel_size=2, stride=2, bias=False)

    @staticmethod
    def apply(module: nn.Module, x: SparseTensor) -> SparseTensor:
        return module(x)

    @staticmethod
    def relu(x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.features))

    @staticmethod
    def upsample(module: nn.Module, x: SparseTensor, target: SparseTensor) -> SparseTensor:
        return module(x, target)

    @staticmethod
    def concat(skip: SparseTensor, up: SparseTensor) -> SparseTensor:
        return cat([skip, up])

    @staticmethod
    def linear(module: nn.Linear, x: SparseTensor) -> SparseTensor:
        return x.replace(module(x.features))


@dataclass
class Masked:
    """The dense twin's value: features [B, C, D, H, W], zero outside ``mask`` [B, 1, D, H, W]."""

    x: torch.Tensor
    mask: torch.Tensor


class MaskedBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose statistics are those of the masked voxels (the dense twin of
    ``SparseBatchNorm``); outputs outside the mask are zero. With a full mask it is BatchNorm3d."""

    def forward(self, value: Masked) -> Masked:  # type: ignore[override]
        x, mask = value.x, value.mask
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            count = mask.sum()
            mean = (x * mask).sum(dim=(0, 2, 3, 4)) / count
            centred = (x - mean[None, :, None, None, None]) * mask
            var = (centred * centred).sum(dim=(0, 2, 3, 4)) / count
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * count / (count - 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        shape = (1, -1, 1, 1, 1)
        scale = self.weight / torch.sqrt(var + self.eps)
        out = (x - mean.view(shape)) * scale.view(shape) + self.bias.view(shape)
        return Masked(out * mask, mask)


class DenseOps:
    """The dense twin's layers on ``Masked`` values."""

    @staticmethod
    def conv(cin: int, cout: int) -> nn.Module:
        return nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False)

    @staticmethod
    def norm(channels: int) -> nn.Module:
        return MaskedBatchNorm3d(channels)

    @staticmethod
    def down(cin: int, cout: int) -> nn.Module:
        return nn.Conv3d(cin, cout, kernel_size=2, stride=2, bias=False)

    @staticmethod
    def up(cin: int, cout: int) -> nn.Module:
        return nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2, bias=False)

    @staticmethod
    def apply(module: nn.Module, value: Masked) -> Masked:
        if isinstance(module, MaskedBatchNorm3d):
            return module(value)
        if module.stride == (2, 2, 2):  # a down-sampling: active where any child is
            mask = F.max_pool3d(value.mask, 2)
            return Masked(module(value.x) * mask, mask)
        return Masked(module(value.x) * value.mask, value.mask)

    @staticmethod
    def relu(value: Masked) -> Masked:
        return Masked(F.relu(value.x), value.mask)

    @staticmethod
    def upsample(module: nn.Module, value: Masked, target: Masked) -> Masked:
        return Masked(module(value.x) * target.mask, target.mask)

    @staticmethod
    def concat(skip: Masked, up: Masked) -> Masked:
        return Masked(torch.cat([skip.x, up.x], dim=1), skip.mask)

    @staticmethod
    def linear(module: nn.Linear, value: Masked) -> Masked:
        logits = module(value.x.movedim(1, -1)).movedim(-1, 1)
        return Masked(logits, value.mask)


class NormReluConv(nn.Module):
    """Batch norm -> ReLU -> a convolution (the example's pre-activation unit)."""

    def __init__(self, ops: type, conv: nn.Module, channels: int):
        super().__init__()
        self.ops = ops
        self.norm = ops.norm(channels)
        self.conv = conv

    def forward(self, x: Any, target: Any = None) -> Any:
        ops = self.ops
        y = ops.relu(ops.apply(self.norm, x))
        if target is not None:
            return ops.upsample(self.conv, y, target)
        return ops.apply(self.conv, y)


def _blocks(ops: type, cin: int, planes: int, reps: int) -> nn.Sequential:
    """``reps`` blocks at one level, the first from ``cin`` planes."""
    return nn.Sequential(
        *(NormReluConv(ops, ops.conv(cin if i == 0 else planes, planes), cin if i == 0 else planes)
          for i in range(reps))
    )  # fmt: skip


class ScnUNet(nn.Module):
    """The shared network; a twin sets ``ops`` (and the dense one pads its input)."""

    ops: ClassVar[type]
    architecture_key: ClassVar[str]

    def __init__(self, config: ScnUNetConfig):
        super().__init__()
        self.config = config
        ops, planes, reps = self.ops, config.planes, config.reps
        self.input = ops.conv(config.in_channels, planes[0])
        self.encoder = nn.ModuleList(_blocks(ops, p, p, reps) for p in planes)
        self.down = nn.ModuleList(
            NormReluConv(ops, ops.down(a, b), a) for a, b in itertools.pairwise(planes)
        )
        self.up = nn.ModuleList(
            NormReluConv(ops, ops.up(b, a), b) for a, b in itertools.pairwise(planes)
        )
        self.decoder = nn.ModuleList(_blocks(ops, 2 * p, p, reps) for p in planes[:-1])
        self.out_norm = ops.norm(planes[0])
        self.linear = nn.Linear(planes[0], config.out_channels)

    @classmethod
    def from_config(cls, config: ScnUNetConfig) -> ScnUNet:
        return cls(config)

    def forward(self, x: Any) -> list[Any]:
        """``[logits]``: class logits on the input's voxels."""
        ops = self.ops
        x = ops.apply(self.input, x)
        skips = []
        for level, blocks in enumerate(self.encoder):
            if level:
                x = self.down[level - 1](x)
            x = blocks(x)
            skips.append(x)
        skips.pop()  # the coarsest level has no skip
        for level in reversed(range(len(self.decoder))):
            skip = skips.pop()
            x = self.decoder[level](ops.concat(skip, self.up[level](x, skip)))
        x = ops.relu(ops.apply(self.out_norm, x))
        return [ops.linear(self.linear, x)]


class SparseScnUNet(ScnUNet):
    """``forward(x: SparseTensor)`` -> ``[logits SparseTensor [N, classes]]`` on x's voxels."""

    ops = SparseOps
    architecture_key = SPARSE_SCN_UNET


class DenseScnUNet(ScnUNet):
    """``forward(x [B, C, D, H, W], mask [B, D, H, W] or None = all active)`` ->
    ``[logits [B, classes, D, H, W]]``, equal to the sparse twin's at the active voxels (and
    meaningless elsewhere). Extents are padded up to a multiple of the coarsest stride, as
    the sparse twin's floor-divided coordinates imply, and cropped back."""

    ops = DenseOps
    architecture_key = DENSE_SCN_UNET

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        mask = torch.ones_like(x[:, :1]) if mask is None else mask[:, None].to(x.dtype)
        stride = self.config.coarsest_stride
        pad = [amount for size in reversed(spatial) for amount in (0, (-size) % stride)]
        (logits,) = super().forward(Masked(F.pad(x * mask, pad), F.pad(mask, pad)))
        return [logits.x[:, :, : spatial[0], : spatial[1], : spatial[2]]]
