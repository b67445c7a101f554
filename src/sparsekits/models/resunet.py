"""Dense residual U-Nets (seed 004's ResUNets), built with MONAI's DynUNet.

A ``ResUNetConfig`` gives one entry per level: filters, the stride into that level (the first
is 1) and the kernel, each per axis (x, y, z) or one int for all three. A stride of (2, 2, 1)
down-samples in plane only: seed 004's 2.5D fine networks (3 down- and 3 up-samplings, none
along z). Residual blocks (``res_block``), instance norm and leaky ReLU are DynUNet's.
The network returns logits [B, out_channels, X, Y, Z] (softmax classes); it keeps its config
as ``.config``, which model folders record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparsekits.models.registry import DENSE_RESUNET, config_from_dict, get_architecture

Size = int | tuple[int, int, int]


@dataclass(frozen=True)
class ResUNetConfig:
    name: str = "custom"
    architecture: str = DENSE_RESUNET
    in_channels: int = 1
    out_channels: int = 2
    filters: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[Size, ...] = (1, 2, 2, 2)
    kernels: tuple[Size, ...] = (3, 3, 3, 3)

    def __post_init__(self) -> None:
        for name in ("filters", "strides", "kernels"):  # JSON gives lists
            value = tuple(tuple(v) if isinstance(v, list) else v for v in getattr(self, name))
            object.__setattr__(self, name, value)
        problems = self.problems()
        if problems:
            raise ValueError("invalid ResUNet config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = []
        try:
            get_architecture(self.architecture)
        except ValueError as error:
            problems.append(str(error))
        if not len(self.filters) == len(self.strides) == len(self.kernels) >= 2:
            problems.append("filters, strides and kernels need one entry per level, at least 2")
        if self.strides and _per_axis(self.strides[0]) != (1, 1, 1):
            problems.append("the first level's stride must be 1")
        if min(self.in_channels, self.out_channels, *self.filters) < 1:
            problems.append("channels and filters must be positive")
        return problems

    @property
    def down_factor(self) -> tuple[int, int, int]:
        """How much the coarsest level is down-sampled along x, y, z: inputs must divide by it."""
        factor = [1, 1, 1]
        for stride in self.strides:
            factor = [f * s for f, s in zip(factor, _per_axis(stride), strict=True)]
        return tuple(factor)

    def to_dict(self) -> dict:
        values = asdict(self)
        for name in ("filters", "strides", "kernels"):
            values[name] = [list(v) if isinstance(v, tuple) else v for v in values[name]]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ResUNetConfig:
        return config_from_dict(cls, values, "ResUNet")


def build_resunet(config: ResUNetConfig):
    """A freshly initialised DynUNet with residual blocks, as ``config`` says."""
    from monai.networks.nets import DynUNet

    net = DynUNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        kernel_size=[_per_axis(k) for k in config.kernels],
        strides=[_per_axis(s) for s in config.strides],
        upsample_kernel_size=[_per_axis(s) for s in config.strides[1:]],
        filters=list(config.filters),
        norm_name=("instance", {"affine": True}),
        res_block=True,
    )
    net.config = config
    return net


def _per_axis(size: Size) -> tuple[int, int, int]:
    return tuple(size) if isinstance(size, tuple) else (size, size, size)
