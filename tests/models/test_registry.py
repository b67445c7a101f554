"""The architecture registry: keys -> config classes and networks, twins, and configs written
before the ``architecture`` key existed."""

from __future__ import annotations

import json

import pytest
import torch

from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.models import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    PRESETS,
    ModelConfig,
    build_model,
    get_architecture,
    load_model_folder,
    network_config_from_dict,
    save_model_folder,
)
from sparsekits.models.dense import DenseConvNeXtUNet
from sparsekits.models.io import CONFIG_FILE
from sparsekits.models.sparse import SparseConvNeXtUNet
from sparsekits.plan import Plan

TINY = {"widths": (4, 8), "depths": (1, 1), "ds_levels": 1}

# A "small" network as config.json and plan.json recorded it before the architecture key.
OLD_SMALL = {
    "name": "small",
    "in_channels": 1,
    "out_channels": 3,
    "widths": [8, 16, 32, 64],
    "depths": [1, 1, 2, 2],
    "decoder_depth": 2,
    "ds_levels": 3,
    "stem_bias": True,
}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_every_architecture_builds_from_its_config_class(key):
    entry = get_architecture(key)
    config_class = entry.load_config_class()
    assert entry.configured_by(config_class)
    tiny = TINY if config_class is ModelConfig else {}
    config = network_config_from_dict(config_class(architecture=key, **tiny).to_dict())
    assert type(config) is config_class and config.architecture == key
    model = build_model(config)
    assert type(model).__name__ == BUILT[key] and model.config == config


BUILT = {
    "sparse-convnext-unet": "SparseConvNeXtUNet",
    "dense-convnext-unet": "DenseConvNeXtUNet",
    "dense-resunet": "DynUNet",
    "sparse-scn-unet": "SparseScnUNet",
    "dense-scn-unet": "DenseScnUNet",
}
TWINNED = sorted(key for key, entry in ARCHITECTURES.items() if entry.twin is not None)


@pytest.mark.parametrize("key", TWINNED)
def test_twins_share_the_config_class_and_the_state_dict(key):
    entry = get_architecture(key)
    twin = get_architecture(entry.twin)
    assert twin.twin == key and twin.dense != entry.dense
    assert twin.config_class == entry.config_class
    config_class = entry.load_config_class()
    config = config_class(architecture=key, **(TINY if config_class is ModelConfig else {}))
    assert shapes(entry.build(config)) == shapes(twin.build(config))


def test_dense_builds_the_dense_twin_which_keeps_the_config():
    sparse = build_model("small")
    dense = build_model("small", dense=True)
    assert type(sparse) is SparseConvNeXtUNet and type(dense) is DenseConvNeXtUNet
    assert sparse.config == dense.config == PRESETS["small"]
    assert sparse.config.architecture == DEFAULT_ARCHITECTURE == "sparse-convnext-unet"
    dense_config = ModelConfig(architecture="dense-convnext-unet", **TINY)
    assert type(build_model(dense_config, dense=True)) is DenseConvNeXtUNet  # already dense
    assert DenseConvNeXtUNet(**TINY).config == dense_config


def test_unknown_architecture_is_refused_with_the_known_keys():
    known = (
        r"\['dense-convnext-unet', 'dense-resunet', 'dense-scn-unet', 'sparse-convnext-unet', "
        r"'sparse-scn-unet'\]"
    )
    with pytest.raises(ValueError, match=rf"unknown architecture 'resnet' \(known: {known}\)"):
        network_config_from_dict({**OLD_SMALL, "name": "custom", "architecture": "resnet"})
    with pytest.raises(ValueError, match="invalid model config: unknown architecture 'resnet'"):
        ModelConfig(architecture="resnet")
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        ModelConfig.from_dict({**OLD_SMALL, "name": "custom", "architecture": "resnet"})
    with pytest.raises(ValueError, match="unknown architecture 7"):
        ModelConfig(architecture=7)
    with pytest.raises(ValueError, match="JSON object, not list"):
        network_config_from_dict([])


def test_configs_written_before_the_architecture_key_still_load():
    assert ModelConfig.from_dict(OLD_SMALL) == PRESETS["small"]
    assert network_config_from_dict(OLD_SMALL) == PRESETS["small"]
    for preset in PRESETS.values():
        assert network_config_from_dict(preset.to_dict()) == preset
    dense_small = {**PRESETS["small"].to_dict(), "architecture": "dense-convnext-unet"}
    with pytest.raises(ValueError, match="differs from the 'small' preset"):
        ModelConfig.from_dict(dense_small)
    with pytest.raises(ValueError, match=r"missing \['depths'\]"):
        ModelConfig.from_dict({key: value for key, value in OLD_SMALL.items() if key != "depths"})


def without_architecture(values: object) -> object:
    """``values`` as a file written before the architecture key holds it."""
    if isinstance(values, dict):
        return {k: without_architecture(v) for k, v in values.items() if k != "architecture"}
    if isinstance(values, list):
        return [without_architecture(value) for value in values]
    return values


def test_plan_written_before_the_architecture_key_still_loads():
    old = without_architecture(SSCN_TWOSTAGE.to_dict())
    assert "architecture" not in json.dumps(old)
    assert Plan.from_dict(old) == SSCN_TWOSTAGE


def test_model_folder_written_before_the_architecture_key_and_version_still_loads(tmp_path):
    model = build_model("small")
    folder = save_model_folder(tmp_path / "fold_0", model, extra={})
    path = folder / CONFIG_FILE
    header = json.loads(path.read_text())
    del header["model"]["architecture"], header["sparsekits_version"]
    assert header["model"] == OLD_SMALL
    path.write_text(json.dumps(header))
    for dense in (False, True):
        loaded, config, extra = load_model_folder(folder, dense=dense)
        assert config == PRESETS["small"] and extra == {}
        assert type(loaded) is (DenseConvNeXtUNet if dense else SparseConvNeXtUNet)
        assert shapes(loaded) == shapes(model)
