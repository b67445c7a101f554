"""sscn-pointcloud (seed 002's point cloud): the top-p % sparsification, the kidney stage's
region, DBSCAN and hulls, the plan's checks, the training step, and the method end to end
through the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import cc3d
import numpy as np
import pytest
import torch
from training_steps import step_losses

from cli_runner import run_cli
from sparsekits.data.datasets import Case
from sparsekits.data.io import read_image, read_label_map
from sparsekits.data.sample import save_sample
from sparsekits.methods.sscn_pointcloud import DEMO, DEMO_QUICK, REFERENCE, SMALL
from sparsekits.methods.sscn_pointcloud.cloud import case_samples, kidney_region
from sparsekits.methods.sscn_pointcloud.fill import fill_labels
from sparsekits.models.build import build_model
from sparsekits.phantoms import write_phantom_dataset
from sparsekits.plan import HullFill, HuWindow, TopPercent
from sparsekits.train.samples import Draw
from sparsekits.train.sparse_classes import SparseClassTask


@pytest.mark.parametrize("percent", [3.0, 10.0, 50.0])
def test_top_percent_keeps_exactly_the_brightest_p_percent_ties_included(percent):
    rng = np.random.default_rng(0)
    hu = rng.integers(-100, 100, size=(13, 11, 7)).astype(np.int16)  # many ties at any cut
    keep = TopPercent(percent).keep(hu)
    assert keep.sum() == round(percent / 100 * hu.size)
    assert hu[keep].min() >= hu[~keep].max()
    assert np.array_equal(keep, TopPercent(percent).keep(hu.copy())), "the same voxels each time"


def test_per_slice_keeps_p_percent_of_every_slice_per_volume_of_the_whole():
    hu = np.zeros((10, 10, 4), np.int16)
    hu[:, :, 3] = 500  # one bright slice holds more than the whole quota
    hu[2, 3, 0] = 100
    per_volume = TopPercent(10.0, "volume").keep(hu)
    per_slice = TopPercent(10.0, "slice").keep(hu)
    assert per_volume.sum() == per_slice.sum() == 40
    assert per_volume[:, :, 3].sum() == 40 and not per_volume[2, 3, 0]
    assert [int(per_slice[:, :, z].sum()) for z in range(4)] == [10, 10, 10, 10]
    assert per_slice[2, 3, 0]


def test_the_plan_refuses_what_the_method_cannot_run():
    cloud = DEMO.stage("cloud")
    with pytest.raises(ValueError, match="top_percent sparsification"):
        DEMO.with_stage("cloud", sparsify=HuWindow(0, 100)).with_stage(
            "kidney", sparsify=HuWindow(0, 100)
        )
    with pytest.raises(ValueError, match="same input"):
        DEMO.with_stage("kidney", spacing_mm=cloud.spacing_mm / 2)
    with pytest.raises(ValueError, match="percent must lie in"):
        DEMO.with_stage("cloud", sparsify=TopPercent(0.0))
    with pytest.raises(ValueError, match="hull must be one of"):
        dataclasses.replace(DEMO, fill=HullFill(hull="cube"))
    with pytest.raises(ValueError, match="2 output channels"):
        DEMO.with_stage("cloud", network=DEMO.stage("kidney").network)
    assert REFERENCE.stage("cloud").sparsify == TopPercent(3.0, "volume")  # the seed's 3 %
    assert REFERENCE.stage("cloud").network.planes == (16, 32, 48, 64, 80, 96, 112)
    assert SMALL.stage("cloud").spacing_mm == 2.0


def blob_shell(centre, radius: float, count: int, rng) -> np.ndarray:
    """Points on a sphere's surface, as the bright cortex outlines a kidney."""
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.rint(np.asarray(centre) + radius * directions).astype(np.int64)


@pytest.mark.parametrize("hull", ["slice", "3d"])
def test_dbscan_and_hulls_fill_each_cluster_and_drop_outliers(hull):
    rng = np.random.default_rng(1)
    left, right = blob_shell((12, 12, 12), 6, 800, rng), blob_shell((40, 14, 12), 5, 600, rng)
    outliers = np.array([[30, 40, 5], [5, 40, 20], [45, 40, 2]])
    # a tumour at the left shell's edge
    tumour = np.array([[x, y, z] for x in (16, 17, 18) for y in (11, 12, 13) for z in (11, 12, 13)])
    coords = np.concatenate([left, right, outliers, tumour])
    classes = np.concatenate([np.ones(len(left) + len(right) + 3, int), np.full(len(tumour), 2)])
    rule = HullFill(eps_mm=4.0, min_points=4, hull=hull)
    labels, clusters = fill_labels(coords, classes, (50, 48, 24), 2.0, rule)
    assert clusters == 2
    assert cc3d.connected_components(labels > 0, connectivity=26, return_N=True)[1] == 2
    assert labels[12, 12, 9] == 1 and labels[40, 14, 12] == 1, "the shells' insides are filled"
    assert labels[17, 12, 12] == 2 and labels[12, 12, 12] == 1, "tumour painted over kidney"
    assert all(labels[tuple(point)] == 0 for point in outliers)
    volume = (labels > 0).sum()
    spheres = 4 / 3 * np.pi * (6.5**3 + 5.5**3)  # points rounded onto the grid: r + 0.5
    assert 0.75 * spheres < volume < 1.1 * spheres, volume
    only_one, _ = fill_labels(coords, classes, (50, 48, 24), 2.0, rule, max_kidneys=1)
    assert only_one[12, 12, 9] == 1 and only_one[40, 14, 12] == 0


def test_the_kidney_region_is_the_points_within_the_dilation():
    coords = np.array([[0, 0, 0], [2, 0, 0], [3, 0, 0], [9, 9, 9]])
    kidney = np.array([True, False, False, False])
    plan = dataclasses.replace(DEMO, roi=dataclasses.replace(DEMO.roi, dilation_mm=4.0))
    region = kidney_region(coords, kidney, 2.0, plan)  # 2 voxels
    assert region.rows.tolist() == [True, True, False, False]
    assert region.edge.tolist() == [False, True, False, False]  # within a voxel of the edge
    assert kidney_region(coords, np.zeros(4, bool), 2.0, plan).empty


@pytest.fixture(scope="module")
def phantom_samples(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phantoms")
    (case_dir,) = write_phantom_dataset(root, 1, seed=3, shape=(96, 72, 64))
    case = Case(case_dir.name, case_dir / "imaging.nii.gz", case_dir / "segmentation.nii.gz")
    image = read_image(case.image)
    labels = read_label_map(case.label, like=image).array
    found = {}
    for role, name, sample in case_samples(case, image, labels, DEMO, DEMO.roles):
        found[role] = (sample, save_sample(root / f"{role}_{name}.npz", sample))
    return found


def test_the_cloud_is_the_top_ten_percent_and_the_kidney_sample_its_points_near_a_kidney(
    phantom_samples,
):
    cloud, _ = phantom_samples["cloud"]
    kidney, _ = phantom_samples["kidney"]
    assert len(cloud.coords) == round(0.10 * cloud.hu.size)
    kept = cloud.hu[tuple(cloud.coords.T)]
    assert (
        kept.min()
        >= np.delete(cloud.hu.ravel(), np.ravel_multi_index(cloud.coords.T, cloud.hu.shape)).max()
    )
    assert np.array_equal(kidney.hu, cloud.hu), "both stages work on one grid"
    inside = {tuple(c) for c in cloud.coords}
    assert all(tuple(c) in inside for c in kidney.coords)
    assert (cloud.kept_labels() > 0).sum() == (kidney.kept_labels() > 0).sum() > 0
    assert len(kidney.coords) < len(cloud.coords) / 2


def test_the_training_step_learns_a_cloud(phantom_samples):
    stage = DEMO.stage("kidney")
    task = SparseClassTask(stage, (0, 1, 2, 1), ("kidney_and_mass", "tumor"))
    item = task.dataset([phantom_samples["kidney"][1]], train=True)[Draw(0, (0, 0, 0))]
    labels = phantom_samples["kidney"][0].kept_labels()
    assert torch.equal(item.target, torch.from_numpy(np.array([0, 1, 2, 1])[labels]))
    torch.manual_seed(0)
    net = build_model(DEMO_QUICK.stage("kidney").network)  # small: seconds on one core
    losses = step_losses(task, net, item, steps=6)
    assert losses[-1] < losses[0]
    inputs, targets = task.batch(item, torch.device("cpu"))
    wrapped = task.wrap(net)
    counts = task.counts(task.outputs(wrapped, wrapped(inputs)), targets)
    assert counts.shape == (3, 2) and counts[2, 0] == (targets > 0).sum()
    assert counts[2, 1] == (targets == 2).sum()


def test_quick_demo_then_predict_through_the_cli(tmp_path):
    out = tmp_path / "demo"
    run = run_cli("demo", "--out", out, "--quick", "--method", "sscn-pointcloud", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads((out / "model" / "plan.json").read_text())
    assert plan["method"] == "sscn-pointcloud" and plan["fill"]["hull"] == "3d"
    for role in ("cloud", "kidney"):
        assert (out / "model" / role / "fold_0" / "model.safetensors").is_file()
    with open(out / "evaluation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["case"] == "mean" and "Dice_tumor" in rows[-1]
    case = next((out / "test").glob("case_*"))
    report = json.loads((out / "predictions" / f"{case.name}.json").read_text())
    assert report["method"] == "sscn-pointcloud"
    assert DEMO_QUICK.stage("cloud").sparsify.percent == 10.0


@pytest.mark.parametrize("weights", [None, (1.0, 2.0, 4.0)])
def test_dice_plus_ce_is_the_dense_cascades_monai_loss(weights):
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits, targets = torch.randn(300, 3), torch.randint(0, 3, (300,))
    weight = None if weights is None else torch.tensor(weights)
    monai = DiceCELoss(
        to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5, weight=weight
    )
    stage = DEMO.stage("kidney")
    stage = dataclasses.replace(
        stage, recipe=dataclasses.replace(stage.recipe, class_weights=weights)
    )
    ours = SparseClassTask(stage, (0, 1, 2, 1), ("kidney_and_mass", "tumor")).loss(logits, targets)
    torch.testing.assert_close(ours, monai(logits.T[None], targets[None, None]))
