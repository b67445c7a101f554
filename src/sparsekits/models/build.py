"""Building a network from its config: the one place that picks the sparse or the dense twin."""

from __future__ import annotations

from sparsekits.models.config import ModelConfig, resolve_config
from sparsekits.models.dense import DenseConvNeXtUNet
from sparsekits.models.sparse import SparseConvNeXtUNet
from sparsekits.models.unet import ConvNeXtUNet


def build_model(config: ModelConfig | str = "paper", dense: bool = False) -> ConvNeXtUNet:
    """A freshly initialised network of ``config`` (or the preset of that name)."""
    network = DenseConvNeXtUNet if dense else SparseConvNeXtUNet
    return network.from_config(resolve_config(config))
