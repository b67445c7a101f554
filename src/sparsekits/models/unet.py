"""The ConvNeXt V2 U-Net of METHOD.md, written once for both twins.

The sparse network and its dense twin differ only in *how* they hold features and which
convolution modules they use. Those differences live in an ``Ops`` class (one per twin); the module
tree, the block and the forward pass below are shared, so both twins have the same state_dict and
compute the same function on a fully occupied grid.

Representations: between convolutions a twin holds its "channels-first" value (a SparseTensor, or a
dense [B, C, D, H, W] tensor); the pointwise part of a block (LayerNorm, Linear, GELU, GRN) works on
its "channels-last" value (the same SparseTensor, whose features are [N, C], or a dense
[B, D, H, W, C] view).

Module tree (state_dict keys): ``stem.conv``, ``stem.norm``; ``encoder.<level>.<block>``;
``downsample.<level - 1>.{norm,conv}``; ``decoder.<level>.{norm,up,blocks.<i>}``;
``heads.<level>.{norm,block,conv}``. Every decoder level has a head, as the 27,473,696-parameter
count of the paper's network requires; ``forward`` runs only the ``ds_levels`` finest.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
from torch import nn

from sparsekits.models.config import ModelConfig, preset_name

LAYER_NORM_EPS = 1e-6
MLP_RATIO = 4


class Ops:
    """What a twin provides. Every method is static; subclasses fill them in."""

    # Modules. Norms and GRN act on the channels-last value; convolutions on channels-first.
    @staticmethod
    def depthwise_conv(dim: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def layer_norm(dim: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def grn(dim: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def pointwise_conv(cin: int, cout: int, bias: bool = False) -> nn.Module:
        """1x1x1 convolution, without bias unless asked."""
        raise NotImplementedError

    @staticmethod
    def down_conv(cin: int, cout: int) -> nn.Module:
        """Kernel-2 stride-2 convolution with bias."""
        raise NotImplementedError

    @staticmethod
    def up_conv(cin: int, cout: int) -> nn.Module:
        """Kernel-2 stride-2 transposed convolution with bias."""
        raise NotImplementedError

    # Data.
    @staticmethod
    def channels_last(x: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def channels_first(x: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def map_features(x: Any, fn) -> Any:
        """Apply ``fn`` to the channels-last features (a tensor whose last axis is channels)."""
        raise NotImplementedError

    @staticmethod
    def add(x: Any, y: Any) -> Any:
        """``x + y`` on the same voxels, written into ``y``: a fresh intermediate that no
        backward pass needs (saves a copy per block)."""
        raise NotImplementedError

    @staticmethod
    def upsample(conv: nn.Module, x: Any, target: Any) -> Any:
        """``conv`` (from ``up_conv``) applied to ``x``, onto ``target``'s voxels."""
        raise NotImplementedError

    @classmethod
    def block_tail(cls, block: Block, x: Any, y: Any) -> Any:
        """A block after its depthwise conv ``y``: LN, Linear, GELU, GRN, Linear, + ``x``.
        A twin may replace it with a faster path that computes the same function."""
        y = block.norm(cls.channels_last(y))
        y = cls.map_features(y, lambda f: block.act(block.pwconv1(f)))
        y = cls.map_features(block.grn(y), block.pwconv2)
        return cls.add(x, cls.channels_first(y))


def add_into(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``, in ``y``'s storage unless the sum needs a wider dtype (autocast mixes them)."""
    if torch.promote_types(x.dtype, y.dtype) != y.dtype:
        return x + y
    return y.add_(x)


class Block(nn.Module):
    """ConvNeXt V2 block: depthwise 3^3 conv, LN, Linear d->4d, GELU, GRN, Linear 4d->d, +x."""

    def __init__(self, dim: int, ops: type[Ops]):
        super().__init__()
        self.ops = ops
        self.dwconv = ops.depthwise_conv(dim)
        self.norm = ops.layer_norm(dim)
        self.pwconv1 = nn.Linear(dim, MLP_RATIO * dim)
        self.act = nn.GELU()
        self.grn = ops.grn(MLP_RATIO * dim)
        self.pwconv2 = nn.Linear(MLP_RATIO * dim, dim)

    def forward(self, x: Any) -> Any:
        return self.ops.block_tail(self, x, self.dwconv(x))


class NormConv(nn.Module):
    """LayerNorm, then a convolution: the downsampling between encoder stages."""

    def __init__(self, norm: nn.Module, conv: nn.Module, ops: type[Ops]):
        super().__init__()
        self.ops = ops
        self.norm = norm
        self.conv = conv

    def forward(self, x: Any) -> Any:
        return self.conv(self.ops.channels_first(self.norm(self.ops.channels_last(x))))


class Stem(nn.Module):
    """1x1x1 conv (bias only if ``ModelConfig.stem_bias``) to the first width, then LayerNorm."""

    def __init__(self, cin: int, cout: int, ops: type[Ops], bias: bool = False):
        super().__init__()
        self.ops = ops
        self.conv = ops.pointwise_conv(cin, cout, bias)
        self.norm = ops.layer_norm(cout)

    def forward(self, x: Any) -> Any:
        return self.ops.channels_first(self.norm(self.ops.channels_last(self.conv(x))))


class DecoderStage(nn.Module):
    """LN -> transposed conv onto the skip's voxels -> add the skip -> blocks."""

    def __init__(self, cin: int, cout: int, depth: int, ops: type[Ops]):
        super().__init__()
        self.ops = ops
        self.norm = ops.layer_norm(cin)
        self.up = ops.up_conv(cin, cout)
        self.blocks = nn.Sequential(*(Block(cout, ops) for _ in range(depth)))

    def forward(self, x: Any, skip: Any) -> Any:
        ops = self.ops
        x = ops.channels_first(self.norm(ops.channels_last(x)))
        x = ops.add(skip, ops.upsample(self.up, x, skip))
        return self.blocks(x)


class Head(nn.Module):
    """Deep-supervision head: LN -> block -> 1x1x1 conv to the region logits (no bias)."""

    def __init__(self, dim: int, out_channels: int, ops: type[Ops]):
        super().__init__()
        self.ops = ops
        self.norm = ops.layer_norm(dim)
        self.block = Block(dim, ops)
        self.conv = ops.pointwise_conv(dim, out_channels)

    def forward(self, x: Any) -> Any:
        x = self.ops.channels_first(self.norm(self.ops.channels_last(x)))
        return self.conv(self.block(x))


class ConvNeXtUNet(nn.Module):
    """The shared network; a twin sets ``ops`` and, if it must, ``_enter``/``_leave``.

    ``self.config`` is the ``ModelConfig`` (named after the preset it equals, else "custom").
    Its ``architecture`` is the class's own key unless one is given: a dense twin built for a
    sparse network's config keeps that config, so either twin saves the same model folder.
    The heads of levels >= ``ds_levels`` exist (the paper's parameter count includes them) but
    never run, so their parameters get no gradient: wrap the network in DistributedDataParallel
    with ``find_unused_parameters=True``.
    """

    ops: ClassVar[type[Ops]]
    architecture_key: ClassVar[str]  # the registry key that builds this class from its config

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 4, 4, 8, 8, 8),
        decoder_depth: int = 2,
        ds_levels: int = 3,
        stem_bias: bool = False,
        architecture: str | None = None,
    ):
        super().__init__()
        self.config = preset_name(
            ModelConfig(
                architecture=architecture or self.architecture_key,
                in_channels=in_channels,
                out_channels=out_channels,
                widths=widths,
                depths=depths,
                decoder_depth=decoder_depth,
                ds_levels=ds_levels,
                stem_bias=stem_bias,
            )
        )
        ops = self.ops
        widths = self.config.widths
        self.stem = Stem(in_channels, widths[0], ops, self.config.stem_bias)
        self.encoder = nn.ModuleList(
            nn.Sequential(*(Block(width, ops) for _ in range(depth)))
            for width, depth in zip(widths, depths, strict=True)
        )
        self.downsample = nn.ModuleList(
            NormConv(ops.layer_norm(cin), ops.down_conv(cin, cout), ops)
            for cin, cout in itertools.pairwise(widths)
        )
        self.decoder = nn.ModuleList(
            DecoderStage(cin, cout, decoder_depth, ops) for cout, cin in itertools.pairwise(widths)
        )
        self.heads = nn.ModuleList(Head(width, out_channels, ops) for width in widths[:-1])
        init_weights(self)

    @classmethod
    def from_config(cls, config: ModelConfig) -> ConvNeXtUNet:
        fields = config.to_dict()
        fields.pop("name")  # the constructor names a preset's config by itself
        return cls(**fields)

    def forward(self, x: Any) -> list[Any]:
        """Region logits at strides 1, 2, ..., 2**(ds_levels - 1), finest first."""
        x, context = self._enter(x)
        x = self.stem(x)
        skips = []
        for level, stage in enumerate(self.encoder):
            if level:
                x = self.downsample[level - 1](x)
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck has no skip; ``x`` holds it
        outputs = []
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level](x, skips.pop())  # pop: free each skip once used
            if level < self.config.ds_levels:
                outputs.append(self.heads[level](x))
        outputs.reverse()
        return self._leave(outputs, context)

    def _enter(self, x: Any) -> tuple[Any, Any]:
        return x, None

    def _leave(self, outputs: list[Any], context: Any) -> list[Any]:
        return outputs


def init_weights(model: nn.Module) -> None:
    """METHOD.md's init, by parameter name so it holds for both twins' module types.

    Conv and linear weights (2-D or more): truncated normal, std 0.02, cut at +-2 as in
    ConvNeXt's ``trunc_normal_(w, std=.02)`` (so in effect untruncated); biases 0; LayerNorm
    weights (1-D) 1; GRN gamma and beta 0.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight" and param.ndim >= 2:
                nn.init.trunc_normal_(param, std=0.02)
            elif leaf == "weight":
                nn.init.ones_(param)
            elif leaf in ("bias", "gamma", "beta"):
                nn.init.zeros_(param)
            else:
                raise ValueError(f"no init rule for parameter {name}")
