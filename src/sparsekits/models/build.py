"""Building a network from its config: the registry picks the architecture, or its dense twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparsekits.models.config import ModelConfig, resolve_config
from sparsekits.models.registry import build_network

if TYPE_CHECKING:
    from torch import nn


def build_model(config: ModelConfig | str = "paper", dense: bool = False) -> nn.Module:
    """A freshly initialised network of ``config`` (or the preset of that name): the network of
    its ``architecture``, or with ``dense`` that architecture's dense twin (same state_dict)."""
    return build_network(resolve_config(config), dense=dense)
