"""Training checkpoints: plain dicts of tensors and numbers, written atomically, loaded safely.

Files hold only what ``torch.load(weights_only=True)`` accepts (tensors, dicts, lists, tuples,
strings, numbers), so loading one never runs pickled code. The RNG states of torch (CPU and CUDA),
numpy and Python travel with the weights, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path


def save_checkpoint(path: str | Path, state: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no checkpoint to resume from")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise InputError(path, f"not a readable training checkpoint ({error})") from error


def capture_rng_state() -> dict:
    """This process's RNG states as tensors and plain values."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
