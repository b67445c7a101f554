"""Methods as plug-ins: the registry, plans by role and validated when built, and commands that
take any registered method and refuse another method's files in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cli_runner import run_cli
from sparsekits.errors import InputError
from sparsekits.methods import DEFAULT_METHOD, get_method, method_names
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.plan import Plan, Recipe, check_same_input, default_plan, load_plan


def test_every_registered_method_declares_roles_and_valid_presets():
    assert DEFAULT_METHOD in method_names()
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.roles
        for preset, plan in method.presets.items():
            assert plan.method == name and plan.roles == method.roles, preset
            assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_an_unknown_method_or_preset_is_refused():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="no preset"):
        default_plan(DEFAULT_METHOD, "nope")


def test_stages_are_found_by_role_or_position():
    assert SSCN_TWOSTAGE.roles == ("roi", "fine")
    assert SSCN_TWOSTAGE.stage("fine") is SSCN_TWOSTAGE.stage(2) is SSCN_TWOSTAGE.stage("2")
    with pytest.raises(InputError, match="its stages: roi, fine"):
        SSCN_TWOSTAGE.stage("coarse")


def test_a_plan_is_validated_when_it_is_built():
    with pytest.raises(ValueError, match="loss 'focal'"):
        SSCN_TWOSTAGE.with_stage("fine", recipe=Recipe(loss="focal"))
    with pytest.raises(ValueError, match="lesion_oversampling"):
        SSCN_TWOSTAGE.with_stage("fine", recipe=Recipe(lesion_oversampling=2.0))
    with pytest.raises(ValueError, match="has stages"):
        dataclasses.replace(SSCN_TWOSTAGE, stages=SSCN_TWOSTAGE.stages[:1])


def test_the_recipe_records_every_training_setting_and_old_recipes_load():
    recipe = SSCN_TWOSTAGE.stage("roi").recipe.to_dict()
    for key in ("optimiser", "augmentation", "folds", "split_seed", "dice_smooth"):
        assert key in recipe
    assert Recipe.from_dict(json.loads(json.dumps(recipe))) == SSCN_TWOSTAGE.stage("roi").recipe
    old = {"loss": "dice", "lr": 1e-3, "epochs": 3, "accumulation": 2}  # before the new keys
    assert Recipe.from_dict(old) == Recipe(lr=1e-3, epochs=3, accumulation=2)


def test_a_plan_written_before_stage_roles_loads_with_the_methods_roles(tmp_path):
    old = SSCN_TWOSTAGE.to_dict()
    for number, stage in enumerate(old["stages"], start=1):
        del stage["role"]
        stage["stage"] = number
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(old))
    assert load_plan(path) == SSCN_TWOSTAGE


def test_plans_of_different_methods_are_told_apart_in_one_line(tmp_path):
    check_same_input(SSCN_TWOSTAGE, dataclasses.replace(SSCN_TWOSTAGE), tmp_path, "this model")
    other = dataclasses.replace(SSCN_TWOSTAGE)
    object.__setattr__(other, "method", "dense-coarse2fine")  # a method not registered here
    with pytest.raises(InputError, match="belongs to method dense-coarse2fine, not sscn-twostage"):
        check_same_input(SSCN_TWOSTAGE, other, tmp_path, "this model")


def test_plan_command_takes_method_and_preset_and_refuses_a_folder(tmp_path):
    ok = run_cli("plan", "-o", tmp_path / "p.json", "--method", DEFAULT_METHOD, "--preset", "small")
    assert ok.returncode == 0, ok.stderr
    plan = load_plan(tmp_path / "p.json")
    assert plan.stage("roi").network.name == "small"
    assert json.loads((tmp_path / "p.json").read_text())["sparsekits_version"]
    folder = run_cli("plan", "-o", tmp_path)
    assert folder.returncode == 2 and "is a folder" in folder.stderr
    assert "Traceback" not in folder.stderr
    bad = run_cli("plan", "-o", tmp_path / "q.json", "--preset", "nope")
    assert bad.returncode == 2 and "no preset 'nope'" in bad.stderr


def test_a_bad_plan_file_is_refused_by_preprocess_before_anything_is_written(tmp_path):
    plan = SSCN_TWOSTAGE.to_dict()
    plan["stages"][1]["recipe"]["loss"] = "focal"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    run = run_cli("preprocess", tmp_path, "--out", tmp_path / "cache", "--plan", path)
    assert run.returncode == 2 and "loss 'focal'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()


def test_a_model_of_another_method_is_refused_in_one_line(tmp_path):
    from sparsekits.predict.pipeline import load_predictor

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "plan.json").write_text(json.dumps(SSCN_TWOSTAGE.to_dict()))
    with pytest.raises(InputError, match="holds a sscn-twostage model, not dense-coarse2fine"):
        load_predictor(tmp_path / "model", method="dense-coarse2fine")


def test_train_refuses_a_stage_the_method_does_not_have_in_one_line(tmp_path):
    run = run_cli("train", "--data", tmp_path, "--stage", "coarse", "--out", tmp_path / "run")
    assert run.returncode == 2, run.stderr
    assert "no such stage of sscn-twostage (its stages: roi, fine)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
