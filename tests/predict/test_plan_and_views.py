"""One plan, one stage view: the training cache and the predictor feed the networks the same
coordinates and features bit for bit; the plan travels with caches and models; model folders are
assembled from training runs; models written before plans still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from predict_data import SMALL_PLAN, save_random_model

from cli_runner import run_cli
from sparsekits.data.io import read_image, read_label_map
from sparsekits.data.preprocess import preprocess_dataset
from sparsekits.data.sample import load_sample
from sparsekits.data.stage_view import mask_foreground
from sparsekits.errors import InputError
from sparsekits.layout import PLAN_FILE, TRAINING_VOLUMES, legacy_stage_dir
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.methods.sscn_twostage import predictor as predictor_module
from sparsekits.models import build_model, save_model_folder
from sparsekits.models.bundle import assemble_model, fold_path, read_plan, save_fold
from sparsekits.phantoms import write_phantom_dataset
from sparsekits.plan import Plan, load_plan
from sparsekits.predict.pipeline import load_predictor
from sparsekits.training_volumes import RUN_KEY, read_ranges


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    dataset = root / "dataset"
    write_phantom_dataset(dataset, 1, seed=3, shape=(80, 64, 48))
    cache = root / "cache"
    preprocess_dataset(dataset, cache, SMALL_PLAN)
    return dataset / "case_00000", cache


def test_cache_and_predictor_see_the_same_input_bit_for_bit(phantom_case, tmp_path, monkeypatch):
    case_dir, cache = phantom_case
    image = read_image(case_dir / "imaging.nii.gz")
    labels = read_label_map(case_dir / "segmentation.nii.gz")
    model = save_random_model(tmp_path / "model", folds=(0,))
    fed = []
    original = predictor_module.predict_probabilities

    def recording(networks, samples, *args, **kwargs):
        fed.extend(
            (SSCN_TWOSTAGE.position(networks.stage.role), coords, features)
            for coords, features in samples
        )
        return original(networks, samples, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "predict_probabilities", recording)

    ground_truth_rois = mask_foreground(labels.array > 0, labels.grid)  # as preprocessing
    predictor = load_predictor(model)
    predictor.foreground_hook = ground_truth_rois
    predictor.predict_image(image)
    manifest = json.loads((cache / "manifest.json").read_text())["cases"]["case_00000"]
    cached = [load_sample(cache / manifest["roi"][0]["file"])]
    cached += [load_sample(cache / entry["file"]) for entry in manifest["fine"]]
    assert [stage for stage, _, _ in fed] == [1] + [2] * (len(cached) - 1)
    assert len(cached) == 3  # stage 1 and two kidney ROIs
    for sample, (stage, coords, features) in zip(cached, fed, strict=True):
        assert sample.stage == stage
        assert np.array_equal(sample.coords, coords), f"stage {stage} coordinates differ"
        assert features.dtype == sample.features.dtype == np.float32
        assert np.array_equal(sample.features, features), f"stage {stage} features differ"


def test_the_cache_and_every_model_folder_carry_the_whole_plan(phantom_case, tmp_path):
    _, cache = phantom_case
    manifest = json.loads((cache / "manifest.json").read_text())
    assert Plan.from_dict(manifest["plan"]) == SMALL_PLAN
    model = save_random_model(tmp_path / "model", folds=(0,))
    assert load_plan(model / PLAN_FILE) == SMALL_PLAN == read_plan(model)
    config = json.loads((fold_path(model, SSCN_TWOSTAGE.role(2), 0) / "config.json").read_text())
    assert Plan.from_dict(config["extra"]["plan"]) == SMALL_PLAN


def test_plan_command_writes_an_editable_plan_that_preprocess_uses(phantom_case, tmp_path):
    case_dir, _ = phantom_case
    written = run_cli("plan", "-o", tmp_path / "plan.json", "--preset", "small")
    assert written.returncode == 0, written.stderr
    plan = load_plan(tmp_path / "plan.json")
    assert plan == SMALL_PLAN
    edited = json.loads((tmp_path / "plan.json").read_text())
    edited["stages"][0]["sparsify"]["high"] = 200.0  # a narrower stage-1 window
    (tmp_path / "plan.json").write_text(json.dumps(edited))
    run = run_cli(
        "preprocess", case_dir.parent, "--out", tmp_path / "cache", "--stage", "1",
        "--plan", tmp_path / "plan.json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    sample = load_sample(next((tmp_path / "cache" / "roi").glob("*.npz")))
    assert sample.hu[tuple(sample.coords.T)].max() <= 200


def test_predict_refuses_a_plan_other_than_the_models(phantom_case, tmp_path):
    case_dir, _ = phantom_case
    model = save_random_model(tmp_path / "model", folds=(0,))
    other = SSCN_TWOSTAGE.with_stage(2, crop_margin_vox=(20, 20, 5))
    other.save(tmp_path / "other.json")
    run = run_cli(
        "predict", "-i", case_dir / "imaging.nii.gz", "-o", tmp_path / "out.nii.gz",
        "--model", model, "--plan", tmp_path / "other.json",
    )  # fmt: skip
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert str(model) in line and "stages[1].crop_margin_vox" in line
    assert not (tmp_path / "out.nii.gz").exists()


def train_like_run(run, plan: Plan, stage: int, fold: int, ranges: dict | None = None) -> None:
    """RUN/model as the trainer writes it (the plan, the stage and fold in extra, and the
    training volume ranges when given)."""
    torch.manual_seed(stage * 10 + fold)
    extra = {"plan": plan.to_dict(), "stage": stage, "fold": fold}
    if ranges is not None:
        extra[RUN_KEY] = ranges
    save_model_folder(run / "model", build_model(plan.stage(stage).network), extra=extra)


def test_model_assemble_builds_the_model_folder_and_checks_the_runs(tmp_path):
    runs = []
    for stage in (1, 2):
        for fold in (0, 1):
            runs.append(tmp_path / f"s{stage}f{fold}")
            train_like_run(runs[-1], SMALL_PLAN, stage, fold)
    result = run_cli("model", "assemble", *runs, "-o", tmp_path / "model")
    assert result.returncode == 0, result.stderr
    assert read_plan(tmp_path / "model") == SMALL_PLAN
    for stage in (1, 2):
        for fold in (0, 1):
            assert (
                fold_path(tmp_path / "model", SSCN_TWOSTAGE.role(stage), fold) / "model.safetensors"
            ).is_file()
    assert load_predictor(tmp_path / "model").fine_nets.folds == [0, 1]

    with pytest.raises(InputError, match="stage roi fold 0 is also in"):
        assemble_model([runs[0], runs[0], runs[2]], tmp_path / "again")
    with pytest.raises(InputError, match="no fine stage run"):
        assemble_model(runs[:2], tmp_path / "again")
    other = tmp_path / "other"
    train_like_run(other, SMALL_PLAN.with_stage(2, crop_margin_vox=(1, 1, 1)), 2, 2)
    with pytest.raises(InputError, match=r"differs from the other runs'.*crop_margin_vox"):
        assemble_model([*runs, other], tmp_path / "again")
    mixed = tmp_path / "mixed"
    train_like_run(mixed, SMALL_PLAN.with_stage(2, network=SSCN_TWOSTAGE.stage(2).network), 2, 3)
    with pytest.raises(InputError, match="network differs"):
        assemble_model([*runs, mixed], tmp_path / "again")


def test_model_assemble_joins_the_training_volume_ranges_of_its_runs(tmp_path):
    ranges = {
        (1, 0): {"kidney": [40.0, 60.0], "tumor": [2.0, 30.0]},
        (1, 1): {"kidney": [35.0, 55.0]},
        (2, 0): {"kidney": [40.0, 60.0], "tumor": [1.0, 20.0]},
        (2, 1): {"kidney": [45.0, 70.0], "cyst": [0.5, 3.0]},
    }
    runs = [tmp_path / f"s{stage}f{fold}" for stage, fold in ranges]
    for run, ((stage, fold), run_ranges) in zip(runs, ranges.items(), strict=True):
        train_like_run(run, SMALL_PLAN, stage, fold, run_ranges)

    model = assemble_model(runs, tmp_path / "model")
    assert read_ranges(model) == {"kidney": [35.0, 70.0], "tumor": [1.0, 30.0], "cyst": [0.5, 3.0]}

    # A run from before ranges were recorded: the others' alone would be too narrow, so none.
    old = tmp_path / "old"
    train_like_run(old, SMALL_PLAN, 2, 2)
    assemble_model([*runs, old], model)
    assert read_ranges(model) is None and not (model / TRAINING_VOLUMES).exists()
    (model / TRAINING_VOLUMES).write_text("{not json")
    with pytest.raises(InputError, match="not readable training volume ranges"):
        read_ranges(model)


def test_a_model_folder_from_before_plans_loads_with_its_implied_plan(tmp_path):
    """The format of earlier versions: no plan.json, and each fold's extra held its StageConfig."""
    legacy = {
        1: {"stage": 1, "spacing_mm": 1.99, "hu_window": [-53.4, 283.2], "norm_mean": 48.10007,
            "norm_std": 62.645897, "crop_margin_vox": [0, 0, 0]},
        2: {"stage": 2, "spacing_mm": 0.78, "hu_window": [-300.0, 500.0], "norm_mean": 57.802067,
            "norm_std": 81.260414, "crop_margin_vox": [35, 35, 10]},
    }  # fmt: skip
    for stage, config in legacy.items():
        save_model_folder(
            legacy_stage_dir(tmp_path / "model", stage) / "fold_0",
            build_model("small"),
            extra={"stage": config},
        )
    assert read_plan(tmp_path / "model") == SMALL_PLAN
    assert load_predictor(tmp_path / "model").plan == SMALL_PLAN


def test_a_fold_trained_with_another_plan_is_refused(tmp_path):
    model = save_random_model(tmp_path / "model", folds=(0,))
    other = SMALL_PLAN.with_stage(1, spacing_mm=2.5)
    save_fold(tmp_path / "odd", other, 1, 0, build_model("small"))
    (fold_path(model, SSCN_TWOSTAGE.role(1), 1)).parent.mkdir(exist_ok=True)
    (fold_path(tmp_path / "odd", SSCN_TWOSTAGE.role(1), 0)).rename(
        fold_path(model, SSCN_TWOSTAGE.role(1), 1)
    )
    with pytest.raises(InputError, match=r"fold_1: this fold was made with another plan"):
        load_predictor(model)


def test_the_roi_rule_thresholds_the_region_it_names():
    from sparsekits.methods.sscn_twostage.predictor import _roi_probability
    from sparsekits.plan import RoiRule

    # a briefly trained stage 1: low kidney probability, mass high everywhere
    probabilities = np.array([[0.05, 0.9, 0.9], [0.6, 0.7, 0.1]], np.float32)
    assert _roi_probability(probabilities, RoiRule()).tolist() == pytest.approx([0.9, 0.7])
    kidney_only = _roi_probability(probabilities, RoiRule(region="kidney_and_mass"))
    assert kidney_only.tolist() == pytest.approx([0.05, 0.6])
    values = SSCN_TWOSTAGE.to_dict()
    values["roi"]["region"] = "tumor"
    with pytest.raises(ValueError, match=r"roi\.region"):
        Plan.from_dict(values)
