"""The model folder: config.json + model.safetensors, loaded without unpickling anything."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from sparsekits.errors import InputError
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.models import ModelConfig, build_model, load_model_folder, save_model_folder
from sparsekits.models.io import CONFIG_FILE, WEIGHTS_FILE
from sparsekits.plan import Plan

EXTRA = {"plan": SSCN_TWOSTAGE.to_dict(), "stage": 2, "fold": 3, "val_loss": 0.41}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("small")
    with torch.no_grad():
        model.encoder[0][0].grn.gamma.normal_()  # differ from a fresh init
    folder = save_model_folder(tmp_path / "fold_3", model, extra=EXTRA)
    return folder, model


def test_round_trip_to_either_twin_without_pickle(saved, monkeypatch):
    folder, model = saved
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]

    def refuse(*args, **kwargs):
        raise AssertionError("loading a model folder must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for dense in (False, True):
        loaded, config, extra = load_model_folder(folder, "cpu", dense=dense)
        assert config == model.config and config.name == "small"
        assert extra == json.loads(json.dumps(EXTRA))
        assert not loaded.training
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
    assert Plan.from_dict(extra["plan"]) == SSCN_TWOSTAGE


def test_missing_folder_names_the_config_file(tmp_path):
    with pytest.raises(InputError, match=r"config\.json: missing") as caught:
        load_model_folder(tmp_path / "nothing")
    assert caught.value.path == tmp_path / "nothing" / CONFIG_FILE


def edit_config(folder, change) -> None:
    path = folder / CONFIG_FILE
    header = json.loads(path.read_text())
    change(header)
    path.write_text(json.dumps(header))


def test_unknown_preset_is_refused(saved):
    folder, _ = saved
    edit_config(folder, lambda h: h["model"].update(name="giant"))
    with pytest.raises(InputError, match="unknown preset 'giant'"):
        load_model_folder(folder)


def test_config_that_does_not_fit_the_weights_is_refused(saved):
    folder, _ = saved
    edit_config(folder, lambda h: h["model"].update(name="custom", widths=[8, 16, 32, 128]))
    with pytest.raises(InputError, match=r"model\.safetensors: does not fit .*shape") as caught:
        load_model_folder(folder)
    assert caught.value.path == folder / WEIGHTS_FILE


def test_bad_json_and_missing_keys_are_refused(saved):
    folder, _ = saved
    edit_config(folder, lambda h: h["model"].pop("depths"))
    with pytest.raises(InputError, match=r"config\.json: bad model config.*missing \['depths'\]"):
        load_model_folder(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_model_folder(folder)


def test_weights_from_another_save_or_missing_are_refused(saved, tmp_path):
    folder, _ = saved
    other = save_model_folder(tmp_path / "other", build_model("small"), extra={})
    (other / WEIGHTS_FILE).replace(folder / WEIGHTS_FILE)
    with pytest.raises(InputError, match="written by another save"):
        load_model_folder(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match=r"model\.safetensors: missing"):
        load_model_folder(folder)


def test_save_refuses_bad_input_before_writing(tmp_path):
    model = build_model("small")
    with pytest.raises(TypeError):
        save_model_folder(tmp_path / "a", model, extra={"when": object()})
    paper = ModelConfig(name="paper")
    with pytest.raises(ValueError, match="does not describe the model"):
        save_model_folder(tmp_path / "b", model, config=paper)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
