"""The model folder: ``config.json`` (network config + caller's extra) and ``model.safetensors``.

``config.json`` also records the sparsekits version that wrote it (``sparsekits_version``;
folders written before it have none).

Loading reads JSON and safetensors only, so a model folder can never run code (no pickle).
Each file is written atomically, weights first; ``config.json`` records the weights' SHA-256, so a
folder whose two files come from different saves is refused instead of silently mixed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import sparsekits
from sparsekits.errors import InputError
from sparsekits.fileio import atomic_path, write_json_atomic
from sparsekits.models.build import build_model
from sparsekits.models.config import ModelConfig
from sparsekits.models.registry import network_config_from_dict
from sparsekits.models.unet import ConvNeXtUNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "sparsekits-model"
FORMAT_VERSION = 1


def save_model_folder(
    path: str | Path,
    model: ConvNeXtUNet,
    config: ModelConfig | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model``'s weights and ``config`` (default: ``model.config``) into folder ``path``.

    ``extra`` is any JSON-serialisable dict (stage config, training info); it comes back from
    ``load_model_folder`` unchanged. Either twin can be saved; the weights are the same.
    """
    path = Path(path)
    config = model.config if config is None else config
    if _shape_fields(config) != _shape_fields(model.config):
        raise ValueError(f"config {config} does not describe the model ({model.config})")
    header = json.dumps(extra or {})  # fail on non-JSON extra before writing anything
    weights = path / WEIGHTS_FILE
    state = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in unique_state_dict(model).items()
    }
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json_atomic(
        path / CONFIG_FILE,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "sparsekits_version": sparsekits.__version__,
            "model": config.to_dict(),
            "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
            "extra": json.loads(header),
        },
    )
    return path


def load_model_folder(
    path: str | Path, device: str | torch.device = "cpu", dense: bool = False
) -> tuple[ConvNeXtUNet, ModelConfig, dict]:
    """``(model in eval mode on device, config, extra)``; the dense twin if ``dense``.

    A missing, unreadable or mismatched file raises InputError naming the file and the problem.
    """
    path = Path(path)
    header = read_config(path / CONFIG_FILE)
    config = header["config"]
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(weights, "missing: the model folder has no weights file")
    if _sha256(weights) != header["sha256"]:
        raise InputError(weights, f"does not match {CONFIG_FILE} (written by another save)")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise InputError(weights, f"not a readable safetensors file ({error})") from error
    model = build_model(config, dense=dense)
    problem = _state_dict_mismatch(model, state)
    if problem:
        raise InputError(weights, f"does not fit the network of {CONFIG_FILE}: {problem}")
    # Only aliases of loaded tensors are missing (unique_state_dict): they share the parameters.
    model.load_state_dict(state, strict=False)
    return model.to(device).eval(), config, header["extra"]


def read_config(config_path: Path) -> dict:
    """A fold folder's config.json: {"config": network config, "sha256", "extra",
    "sparsekits_version" (None if written before it was recorded)}; InputError if it is missing
    or not a sparsekits model config."""
    if not config_path.is_file():
        raise InputError(config_path, "missing: not a model folder")
    try:
        header = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(config_path, f"not readable JSON ({error})") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(config_path, f"not a {FORMAT} config (no 'format': '{FORMAT}')")
    if header.get("version") != FORMAT_VERSION:
        raise InputError(config_path, f"unsupported version {header.get('version')!r}")
    try:
        config = network_config_from_dict(header["model"])
        sha256 = str(header["weights"]["sha256"])
        extra = header["extra"]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(config_path, f"bad model config: {error}") from error
    if not isinstance(extra, dict):
        raise InputError(config_path, "bad model config: 'extra' is not an object")
    version = header.get("sparsekits_version")
    return {"config": config, "sha256": sha256, "extra": extra, "sparsekits_version": version}


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without aliases: MONAI's DynUNet registers each block under two
    names (its ``skip_layers`` hold the same modules), which safetensors refuses to save twice.
    The first name of each tensor, in state_dict order, is kept: the same for every network of
    one architecture, so saving and loading agree."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor
    return state


def _state_dict_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    expected = {name: tuple(t.shape) for name, t in unique_state_dict(model).items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    problems = []
    if missing := sorted(expected.keys() - found.keys()):
        problems.append(f"missing {len(missing)} tensors (first {missing[0]})")
    if unexpected := sorted(found.keys() - expected.keys()):
        problems.append(f"{len(unexpected)} unexpected tensors (first {unexpected[0]})")
    for name in sorted(expected.keys() & found.keys()):
        if expected[name] != found[name]:
            problems.append(f"{name} has shape {found[name]}, expected {expected[name]}")
            break
    return "; ".join(problems)


def _shape_fields(config: ModelConfig) -> dict:
    values = config.to_dict()
    values.pop("name")
    return values


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
