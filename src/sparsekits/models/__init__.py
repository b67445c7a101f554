"""Networks: the sparse ConvNeXt V2 U-Net, its dense twin, presets, the architecture registry and
the model folder.

The public names load their submodule on first use (PEP 562), so importing the configs and the
registry (as ``sparsekits.plan`` does) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHITECTURES": "registry",
    "DEFAULT_ARCHITECTURE": "registry",
    "PRESETS": "config",
    "Architecture": "registry",
    "ConvNeXtUNet": "unet",
    "DenseConvNeXtUNet": "dense",
    "ModelConfig": "config",
    "SparseConvNeXtUNet": "sparse",
    "build_model": "build",
    "get_architecture": "registry",
    "load_model_folder": "io",
    "network_config_from_dict": "registry",
    "resolve_config": "config",
    "save_model_folder": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
