"""dense-coarse2fine (seed 004's cascade): its views, samples, networks, training step,
post-processing, and the method end to end through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from training_steps import step_losses

from cli_runner import run_cli
from sparsekits.data.datasets import Case
from sparsekits.data.io import read_image, read_label_map
from sparsekits.methods.dense_coarse2fine import DEMO, DEMO_QUICK, REFERENCE
from sparsekits.methods.dense_coarse2fine.predictor import largest_components
from sparsekits.methods.dense_coarse2fine.samples import case_samples
from sparsekits.methods.dense_coarse2fine.views import coarse_view
from sparsekits.models.build import build_model
from sparsekits.models.io import load_model_folder, save_model_folder
from sparsekits.phantoms import write_phantom_dataset
from sparsekits.plan import SlabAugmentation
from sparsekits.predict.postprocess import drop_small_components
from sparsekits.train.dense_classes import DenseClassTask, DenseSampleSet
from sparsekits.train.samples import Draw
from sparsekits.training_volumes import read_ranges


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Case:
    root = tmp_path_factory.mktemp("phantoms")
    (case_dir,) = write_phantom_dataset(root, 1, seed=3, shape=(96, 72, 64))
    return Case(case_dir.name, case_dir / "imaging.nii.gz", case_dir / "segmentation.nii.gz")


@pytest.fixture(scope="module")
def samples(phantom, tmp_path_factory) -> dict:
    from sparsekits.data.sample import save_sample

    image = read_image(phantom.image)
    labels = read_label_map(phantom.label, like=image).array
    folder = tmp_path_factory.mktemp("samples")
    found = {}
    for role, name, sample in case_samples(phantom, image, labels, DEMO, DEMO.roles):
        found[role] = (sample, save_sample(folder / f"{role}_{name}.npz", sample))
    return found


def test_the_reference_preset_has_the_seeds_sizes():
    coarse, kidney, lesion = REFERENCE.stages
    assert coarse.shape == (128, 128, 128) and kidney.shape == lesion.shape == (384, 224, None)
    assert kidney.recipe.patch_vox == 48 and kidney.recipe.epochs == 600
    assert (coarse.normalise.low, coarse.normalise.high) == (-200.0, 400.0)
    fine = kidney.network
    assert len(fine.strides) == 4 and all(s == (2, 2, 1) for s in fine.strides[1:])  # 3 downs
    assert lesion.network.out_channels == 4 and coarse.network.out_channels == 2


def test_views_cut_the_roi_around_the_kidneys_with_the_sources_slices(phantom, samples):
    image = read_image(phantom.image)
    view = coarse_view(image, DEMO)
    assert view.grid.shape == DEMO.stage("coarse").shape and view.hu.dtype == np.int16
    kidney_sample = samples["kidney"][0]
    assert kidney_sample.hu.shape[:2] == (96, 64)
    # no resampling along z: the fine grid keeps the source's 2.5 mm slices
    spacing = np.linalg.norm(kidney_sample.affine[:3, :3], axis=0)
    assert spacing[2] == pytest.approx(2.5, abs=1e-6)
    # the ROI holds (nearly) every kidney voxel of the source: its volume is kept
    labels = read_label_map(phantom.label, like=image).array
    voxel_source = np.prod(image.grid.spacing)
    kept_ml = (kidney_sample.labels > 0).sum() * np.prod(spacing)
    assert kept_ml == pytest.approx((labels > 0).sum() * voxel_source, rel=0.05)


def test_samples_are_dense_and_the_lesion_region_holds_every_kidney_voxel(samples):
    assert set(samples) == {"coarse", "kidney", "lesion"}
    for sample, _ in samples.values():
        assert sample.dense and sample.coords is None and sample.labels.shape == sample.hu.shape
    lesion = samples["lesion"][0]
    assert lesion.roi_mask is not None and lesion.roi_mask[lesion.labels > 0].all()
    assert 0 < lesion.kept_fraction < 1
    assert samples["coarse"][0].kept_fraction == 1.0


def test_slab_draws_are_seeded_masked_and_centred_on_lesions(samples):
    path = samples["lesion"][1]
    stage = DEMO.stage("lesion")
    augment = SlabAugmentation(elastic_p=1.0, crop_p=1.0, elastic_magnitude=(5.0, 10.0))
    slabs = DenseSampleSet([path], stage, kits_labels=True, slab=8, augment=augment)
    a, b = slabs[Draw(0, (1, 2, 3), lesion=True)], slabs[Draw(0, (1, 2, 3), lesion=True)]
    assert a.image.shape == (1, 96, 64, 8) and a.target.shape == (1, 96, 64, 8)
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    other = slabs[Draw(0, (1, 2, 4), lesion=True)]
    assert not torch.equal(a.image, other.image)
    whole = DenseSampleSet([path], stage, kits_labels=True)[Draw(0, (0, 0, 0))]
    sample = samples["lesion"][0]
    outside = ~torch.from_numpy(sample.roi_mask)
    assert (whole.image[0][outside] == -1.0).all() and (whole.target[0][outside] == 0).all()
    plain = DenseSampleSet([path], stage, kits_labels=True, slab=8)
    for seed in range(5):
        item = plain[Draw(0, (0, 0, seed), lesion=True)]
        assert (item.target >= 2).any(), "a lesion draw shows a tumour or cyst"


def test_the_training_step_learns_a_sample(samples):
    stage = DEMO.stage("kidney")
    task = DenseClassTask(stage, kits_labels=False)
    torch.manual_seed(0)
    net = build_model(stage.network)
    item = task.dataset([samples["kidney"][1]], train=True)[Draw(0, (0, 0, 0))]
    losses = step_losses(task, net, item, steps=8)
    assert losses[-1] < losses[0]
    inputs, targets = task.batch(item, torch.device("cpu"))
    counts = task.counts(net(inputs), targets)
    assert counts.shape == (3, 1) and counts[2, 0] == (targets > 0).sum()


def test_a_resunet_with_aliased_blocks_round_trips_through_its_model_folder(tmp_path):
    torch.manual_seed(0)
    net = build_model(DEMO_QUICK.stage("lesion").network).eval()
    save_model_folder(tmp_path / "fold_0", net)
    loaded, config, _ = load_model_folder(tmp_path / "fold_0")
    x = torch.randn(1, 1, 48, 32, 5)
    assert config == net.config
    assert torch.equal(net(x), loaded(x))


def test_small_components_are_dropped_or_become_kidney():
    from sparsekits.data.geometry import Grid

    labels = np.zeros((40, 40, 40), np.uint8)
    labels[5:25, 5:25, 5:25] = 1  # 8 mL at 1 mm
    labels[10:12, 10:12, 10:12] = 2  # a tumour of 8 uL
    labels[10:20, 10:20, 14:24] = 3  # a cyst of 1 mL
    labels[30:32, 30:32, 30:32] = 1  # a stray kidney speck
    kept = largest_components(labels > 0, 1)
    assert kept[6, 6, 6] and not kept[31, 31, 31]
    drop_small_components(labels, Grid((40, 40, 40), np.eye(4)), (0.5, 0.1, 0.1))
    assert labels[31, 31, 31] == 0 and labels[11, 11, 11] == 1 and labels[15, 15, 18] == 3


def test_quick_demo_then_predict_and_refusal_of_another_methods_plan(tmp_path):
    out = tmp_path / "demo"
    run = run_cli("demo", "--out", out, "--quick", "--method", "dense-coarse2fine", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads((out / "model" / "plan.json").read_text())
    assert plan["method"] == "dense-coarse2fine"
    for role in ("coarse", "kidney", "lesion"):
        assert (out / "model" / role / "fold_0" / "model.safetensors").is_file()
    with open(out / "evaluation.csv") as handle:
        assert [row["case"] for row in csv.DictReader(handle)][-1] == "mean"
    assert "dense-coarse2fine" in (out / "report.md").read_text()

    case = next((out / "test").glob("case_*"))
    predicted = tmp_path / "pred.nii.gz"
    run = run_cli("predict", "-i", case / "imaging.nii.gz", "-o", predicted, "--model",
                  out / "model", "--tta")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert nib.load(predicted).shape == nib.load(case / "imaging.nii.gz").shape
    report = json.loads(Path(str(predicted).replace(".nii.gz", ".json")).read_text())
    assert report["method"] == "dense-coarse2fine"
    # Seed 004's augmentation never mirrors: --tta is warned, printed and reported.
    warning = report["warnings"][0]
    assert report["tta"] and warning.startswith("--tta mirrors the input, but the coarse, kidney")
    assert f"sparsekits: warning: {case / 'imaging.nii.gz'}: {warning}" in run.stderr
    # Training recorded the volumes of the demo's phantoms; the model folder carries them.
    assert report["model"]["training_volumes_ml"] == read_ranges(out / "model")
    low, high = read_ranges(out / "model")["kidney"]
    assert 0 < low < high < 200  # the demo's small kidneys, some cut by its field of view

    sscn = tmp_path / "sscn.json"
    assert run_cli("plan", "-o", sscn).returncode == 0
    refused = run_cli("predict", "-i", case / "imaging.nii.gz", "-o", tmp_path / "x.nii.gz",
                      "--model", out / "model", "--plan", sscn)  # fmt: skip
    assert refused.returncode == 2
    assert "belongs to method dense-coarse2fine, not sscn-twostage" in refused.stderr
    assert not (tmp_path / "x.nii.gz").exists()
