"""The network's settings in one typed object, and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sparsekits.models.registry import DEFAULT_ARCHITECTURE, get_architecture
from sparsekits.regions import NUM_REGIONS

# Keys added after config files were first written: a file without one gets the field's default.
OPTIONAL_KEYS = frozenset({"architecture"})


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a ConvNeXt V2 U-Net (METHOD.md, "Network").

    ``widths``/``depths`` give one encoder stage per level (level k works at stride 2**k). The
    decoder has ``len(widths) - 1`` stages of ``decoder_depth`` blocks, each with its own
    deep-supervision head; ``forward`` computes only the ``ds_levels`` finest heads.
    ``architecture`` is the registry key of the network built from it (sparsekits.models.registry):
    the sparse network or its dense twin.
    """

    name: str = "custom"
    architecture: str = DEFAULT_ARCHITECTURE
    in_channels: int = 1
    out_channels: int = NUM_REGIONS
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 4, 4, 8, 8, 8)
    decoder_depth: int = 2
    ds_levels: int = 3
    # METHOD.md's stem (1x1x1 conv 1 -> C without bias, then LayerNorm) reduces a one-channel
    # input to its sign: LayerNorm over the channels of w * x is sign(x) * (w - mean w) / std w,
    # so the network cannot tell 60 HU (liver) from 180 HU (renal cortex). A bias in the stem
    # conv (C more parameters, zero at init) keeps the intensity; the "paper" preset goes without
    # it to stay the paper's network exactly.
    stem_bias: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists; the config stays hashable and comparable with tuples.
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "depths", tuple(self.depths))
        problems = self.problems()
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        counts = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "decoder_depth": self.decoder_depth,
            "ds_levels": self.ds_levels,
        }
        problems = [
            f"{key} must be a positive int"
            for key, value in counts.items()
            if not _positive_int(value)
        ]
        if not isinstance(self.stem_bias, bool):
            problems.append("stem_bias must be a bool")
        problems.extend(self._architecture_problems())
        if len(self.widths) < 2 or len(self.widths) != len(self.depths):
            problems.append("widths and depths need the same length, at least 2")
        if not all(_positive_int(value) for value in self.widths + self.depths):
            problems.append("widths and depths must be positive ints")
        if _positive_int(self.ds_levels) and self.ds_levels > len(self.widths) - 1:
            problems.append(f"ds_levels must be at most {len(self.widths) - 1} (decoder levels)")
        return problems

    def _architecture_problems(self) -> list[str]:
        try:
            entry = get_architecture(self.architecture)
        except ValueError as error:
            return [str(error)]
        if not entry.configured_by(type(self)):
            return [f"architecture {self.architecture!r} takes a {entry.config_class} config"]
        return []

    @property
    def levels(self) -> int:
        return len(self.widths)

    @property
    def coarsest_stride(self) -> int:
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["widths"] = list(self.widths)
        values["depths"] = list(self.depths)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown or missing keys and bad values raise ValueError.

        A key of ``OPTIONAL_KEYS`` may be missing (files written before it existed): it takes
        its default."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        missing = sorted(known - set(values) - OPTIONAL_KEYS)
        if unknown or missing:
            raise ValueError(f"model config keys: unknown {unknown}, missing {missing}")
        config = cls(**values)
        preset = PRESETS.get(config.name)
        if config.name != "custom" and preset is None:
            raise ValueError(f"unknown preset {config.name!r} (known: {sorted(PRESETS)})")
        if preset is not None and preset != config:
            raise ValueError(f"model config differs from the {config.name!r} preset it names")
        return config


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


PRESETS: dict[str, ModelConfig] = {
    # METHOD.md's network: exactly 27,473,696 parameters.
    "paper": ModelConfig(name="paper"),
    # The paper's network with a stem that keeps the HU (27,473,712 parameters).
    "paper-stem-bias": ModelConfig(name="paper-stem-bias", stem_bias=True),
    # For CPU tests and the demo: coarsest stride 8, 177,072 parameters, a stem that sees HU.
    "small": ModelConfig(name="small", widths=(8, 16, 32, 64), depths=(1, 1, 2, 2), stem_bias=True),
}


def preset_name(config: ModelConfig) -> ModelConfig:
    """``config`` named after the preset with the same fields, if there is one."""
    for preset in PRESETS.values():
        if replace(config, name=preset.name) == preset:
            return preset
    return config


def resolve_config(config: ModelConfig | str | Any) -> Any:
    """A network config as given (any architecture's), or the ``ModelConfig`` preset of that
    name."""
    if not isinstance(config, str):
        return config
    if config not in PRESETS:
        raise ValueError(f"unknown preset {config!r} (known: {sorted(PRESETS)})")
    return PRESETS[config]
