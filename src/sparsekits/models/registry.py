"""The networks a plan can name: architecture key -> config class, builder and twin.

A network config records its ``architecture`` key; this registry turns the key into a config
class (``network_config_from_dict``) and a network (``Architecture.build``). Entries name their
classes as ``"module:attribute"`` strings, imported only when used: importing this module (and
with it the configs and the plan) never imports torch, and it imports no config module, which
would be a cycle (the configs validate their key against ``ARCHITECTURES``).

Twins are two architectures with the same config class and the same state_dict, one sparse and
one dense: the benchmarks compare a sparse network with its dense twin on the same weights.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

SPARSE_CONVNEXT_UNET = "sparse-convnext-unet"
DENSE_CONVNEXT_UNET = "dense-convnext-unet"
DENSE_RESUNET = "dense-resunet"
SPARSE_SCN_UNET = "sparse-scn-unet"
DENSE_SCN_UNET = "dense-scn-unet"
# What a network config means without a key: everything written before the key existed.
DEFAULT_ARCHITECTURE = SPARSE_CONVNEXT_UNET


@dataclass(frozen=True)
class Architecture:
    """One registered network. ``config_class`` and ``builder`` are ``"module:attribute"``
    references; the builder takes a config of ``config_class`` and returns a fresh network."""

    key: str
    config_class: str
    builder: str
    dense: bool
    twin: str | None = None  # the other representation's key, same config class and state_dict

    def load_config_class(self) -> type:
        return _resolve(self.config_class)

    def configured_by(self, config_class: type) -> bool:
        """Whether ``config_class`` is this architecture's config class (without importing it)."""
        return self.config_class == f"{config_class.__module__}:{config_class.__qualname__}"

    def build(self, config: Any) -> nn.Module:
        return _resolve(self.builder)(config)

    def dense_twin(self) -> Architecture:
        """This architecture if it is dense, else its dense twin; ValueError if it has none."""
        if self.dense:
            return self
        if self.twin is None:
            raise ValueError(f"architecture {self.key!r} has no dense twin")
        return get_architecture(self.twin)


ARCHITECTURES: dict[str, Architecture] = {
    entry.key: entry
    for entry in (
        Architecture(
            key=SPARSE_CONVNEXT_UNET,
            config_class="sparsekits.models.config:ModelConfig",
            builder="sparsekits.models.sparse:SparseConvNeXtUNet.from_config",
            dense=False,
            twin=DENSE_CONVNEXT_UNET,
        ),
        Architecture(
            key=DENSE_CONVNEXT_UNET,
            config_class="sparsekits.models.config:ModelConfig",
            builder="sparsekits.models.dense:DenseConvNeXtUNet.from_config",
            dense=True,
            twin=SPARSE_CONVNEXT_UNET,
        ),
        Architecture(
            key=DENSE_RESUNET,
            config_class="sparsekits.models.resunet:ResUNetConfig",
            builder="sparsekits.models.resunet:build_resunet",
            dense=True,
        ),
        Architecture(
            key=SPARSE_SCN_UNET,
            config_class="sparsekits.models.scn_unet:ScnUNetConfig",
            builder="sparsekits.models.scn_unet:SparseScnUNet.from_config",
            dense=False,
            twin=DENSE_SCN_UNET,
        ),
        Architecture(
            key=DENSE_SCN_UNET,
            config_class="sparsekits.models.scn_unet:ScnUNetConfig",
            builder="sparsekits.models.scn_unet:DenseScnUNet.from_config",
            dense=True,
            twin=SPARSE_SCN_UNET,
        ),
    )
}


def get_architecture(key: str) -> Architecture:
    """The registered architecture ``key``; ValueError naming the known keys if there is none."""
    if not isinstance(key, str) or key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {key!r} (known: {sorted(ARCHITECTURES)})")
    return ARCHITECTURES[key]


def network_config_from_dict(values: dict) -> Any:
    """A network config from its ``to_dict`` form, of the class its ``architecture`` names
    (``DEFAULT_ARCHITECTURE`` if it names none); bad keys or values raise ValueError."""
    if not isinstance(values, dict):
        raise ValueError(f"a network config is a JSON object, not {type(values).__name__}")
    key = values.get("architecture", DEFAULT_ARCHITECTURE)
    return get_architecture(key).load_config_class().from_dict(values)


def build_network(config: Any, dense: bool = False) -> nn.Module:
    """A fresh network of ``config.architecture``, or that architecture's dense twin."""
    entry = get_architecture(config.architecture)
    return (entry.dense_twin() if dense else entry).build(config)


def config_from_dict(config_class: type, values: dict, what: str) -> Any:
    """``config_class(**values)``, refusing unknown and missing keys (ValueError naming them):
    the ``from_dict`` of the plain network configs."""
    from dataclasses import fields

    known = {field.name for field in fields(config_class)}
    unknown, missing = sorted(set(values) - known), sorted(known - set(values))
    if unknown or missing:
        raise ValueError(f"{what} config keys: unknown {unknown}, missing {missing}")
    return config_class(**values)


def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    value = importlib.import_module(module)
    for name in attribute.split("."):
        value = getattr(value, name)
    return value
