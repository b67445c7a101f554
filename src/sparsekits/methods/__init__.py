"""The registry of methods: a method is a plan (data) plus one module that owns its stages.

Each entry maps a method's name (``Plan.method``, ``--method``) to the module that holds its
``METHOD`` object (a ``sparsekits.methods.base.Method``). Modules are imported on first use, and
a method module imports no torch at import time, so reading a plan stays cheap. Adding a method
is one module (or package) and one line here (docs/ARCHITECTURE.md, "Adding a method").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsekits.methods.base import Method

METHODS: dict[str, str] = {
    "sscn-twostage": "sparsekits.methods.sscn_twostage",
    "dense-coarse2fine": "sparsekits.methods.dense_coarse2fine",
    "sscn-pointcloud": "sparsekits.methods.sscn_pointcloud",
}
DEFAULT_METHOD = "sscn-twostage"


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    # A method module builds its default plans at import, which validates them through this
    # function: the module is then half-imported, and its METHOD (defined first) is what counts.
    module = importlib.import_module(METHODS[name])
    return module.METHOD


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)
