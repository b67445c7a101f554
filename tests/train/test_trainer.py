"""The training loop end to end: run folder, exact resume after SIGKILL, DDP on gloo, learning.

All runs use the small preset on tiny phantoms on CPU; the resumed and distributed runs are real
CLI subprocesses (``python -m sparsekits.cli``, ``python -m torch.distributed.run``).
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from train_data import SPACING

from cli_runner import cli_command, cli_env, run_cli
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.models import load_model_folder
from sparsekits.plan import Plan, Recipe, check_same_input
from sparsekits.regions import REGION_NAMES
from sparsekits.train.checkpoint import load_checkpoint
from sparsekits.train.runlog import LOG_COLUMNS
from sparsekits.train.trainer import TrainConfig, spread, train
from sparsekits.training_volumes import RUN_KEY

# 2 epochs of 6 samples, 2 per optimiser step: 3 steps an epoch, a checkpoint after each step.
RECIPE = Recipe(epochs=2, samples_per_epoch=6, accumulation=2)
RUN = dict(
    stage=1,
    fold=0,
    network="small",
    recipe=RECIPE,
    seed=3,
    num_workers=0,
    checkpoint_every=1,
)


def _cli_args(data: Path, out: Path) -> list[str]:
    return [
        "train",
        "--data", str(data),
        "--out", str(out),
        "--stage", "roi",  # by role; RUN trains it by number
        "--fold", "0",
        "--preset", "small",
        "--epochs", str(RECIPE.epochs),
        "--seed", str(RUN["seed"]),
        "--samples-per-epoch", str(RECIPE.samples_per_epoch),
        "--accumulation", str(RECIPE.accumulation),
        "--workers", "0",
        "--checkpoint-every", "1",
    ]  # fmt: skip


def _log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


# Bitwise equality needs one thread: with several, CPU BLAS may split a product differently from
# one run to the next on a busy machine (last-bit differences, seen here at load 10 on 2 cores).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference_run(tiny_cache, tmp_path_factory):
    """An uninterrupted single-thread run of ``RUN``: what the other runs must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(TrainConfig(data=tiny_cache, out=out, **RUN))
    finally:
        torch.set_num_threads(threads)


def test_stage2_run_folder_from_a_raw_dataset(tiny_dataset, tmp_path):
    """A raw dataset is preprocessed into RUN/cache; a stage-2 run (augmented ROI crops, sparsified
    inside the ROI mask) writes every promised file."""
    out = tmp_path / "run"
    recipe = replace(RECIPE, samples_per_epoch=2)
    config = TrainConfig(data=tiny_dataset, out=out, **{**RUN, "stage": 2, "recipe": recipe})
    result = train(config)

    assert list((out / "cache" / "fine").glob("case_*_roi1.npz"))
    assert (out / "splits.json").is_file() and (out / "config.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = _log_rows(out)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert list(rows[0]) == [c for c in LOG_COLUMNS if c != "seconds"]
    for row in rows:
        assert 0 < float(row["train_loss"]) < 5.25 and 0 < float(row["val_loss"]) < 5.25
        assert all(0 <= float(row[f"val_dice_{name}"]) <= 1 for name in ("kidney_and_mass",))

    assert result.completed and result.final_metrics["epoch"] == 1
    last = load_checkpoint(result.last_checkpoint)  # weights_only=True inside
    assert (last["epoch"], last["position"], last["step"]) == (2, 0, 2)
    model, model_config, extra = load_model_folder(result.model_dir)
    assert model_config.name == "small"
    assert extra["fold"] == 0 and extra["stage"] == "fine"
    plan = Plan.from_dict(extra["plan"])  # the whole plan travels with the model
    assert plan.stage(2).recipe == recipe and plan.stage(2).network.name == "small"
    assert check_same_input(SSCN_TWOSTAGE, plan, out, "the run") is None
    assert (out / "progress.png").stat().st_size > 1000
    assert extra["epoch"] == result.best_epoch
    assert set(extra["val_dice"]) == set(REGION_NAMES)
    # The volumes its training cases' ground truth spans (mL): each kidney (label 1, left of x
    # index 12, right of it), the tumours; no cyst.
    kidneys, tumours = [], []
    for case in extra["cases"]["train"]:
        labels = np.asarray(nib.load(tiny_dataset / case / "segmentation.nii.gz").dataobj)
        voxel_ml = np.prod(SPACING) / 1000
        kidneys += [(labels[:12] == 1).sum() * voxel_ml, (labels[12:] == 1).sum() * voxel_ml]
        tumours.append((labels == 2).sum() * voxel_ml)
    assert extra[RUN_KEY] == {
        "kidney": [round(min(kidneys), 2), round(max(kidneys), 2)],
        "tumor": [round(min(tumours), 2), round(max(tumours), 2)],
    }
    best = load_checkpoint(result.best_checkpoint)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])


def test_resume_after_sigkill_mid_epoch_gives_identical_weights(
    reference_run, tiny_cache, tmp_path
):
    out = tmp_path / "run"
    checkpoint = out / "checkpoint_last.pt"
    process = subprocess.Popen(
        cli_command(*_cli_args(tiny_cache, out)),
        stderr=subprocess.DEVNULL,
        env=cli_env(**ONE_THREAD),
    )
    try:
        while not checkpoint.exists():
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(checkpoint)
    assert killed_at["epoch"] == 0 and 0 < killed_at["position"] < RECIPE.samples_per_epoch

    resumed = run_cli(*_cli_args(tiny_cache, out), "--resume", **ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected = load_checkpoint(reference_run.last_checkpoint)
    final = load_checkpoint(checkpoint)
    assert final["step"] == expected["step"] == 6
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert _log_rows(out) == _log_rows(reference_run.run_dir)


def test_resume_refuses_a_changed_schedule(reference_run, tiny_cache):
    changed = replace(RECIPE, epochs=3)
    config = TrainConfig(data=tiny_cache, out=reference_run.run_dir, **{**RUN, "recipe": changed})
    with pytest.raises(ValueError, match="cannot resume with different \\['recipe'\\]"):
        train(replace(config, resume=True))


def test_a_plan_other_than_the_caches_is_refused_in_one_line(tiny_cache, tmp_path):
    window = replace(SSCN_TWOSTAGE.stage(1).sparsify, low=-100.0)
    other = SSCN_TWOSTAGE.with_stage(1, sparsify=window)
    other.save(tmp_path / "plan.json")
    run = run_cli(*_cli_args(tiny_cache, tmp_path / "run"), "--plan", tmp_path / "plan.json")
    assert run.returncode == 2
    message = run.stderr.strip().splitlines()[-1]
    assert str(tiny_cache / "manifest.json") in message and "another plan" in message
    assert "stages[0].sparsify.low is -53.4, expected -100.0" in message
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_ddp_on_two_gloo_processes_matches_one_process(reference_run, tiny_cache, tmp_path):
    """2 ranks x accumulation 1 average the same 2 samples per step as 1 process x 2."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nproc_per_node", "2",
        "-m", "sparsekits.cli", *_cli_args(tiny_cache, out),
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=cli_env(**ONE_THREAD),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    final = load_checkpoint(out / "checkpoint_last.pt")
    assert final["world_size"] == 2
    per_rank = [rank["samples"] for rank in final["ranks"]]
    assert per_rank == [6, 6]  # each rank trained on half of the 2 x 6 samples
    sums = [rank["parameter_sum"] for rank in final["ranks"]]
    assert sums[0] == sums[1]  # the replicas stayed identical

    expected = load_checkpoint(reference_run.last_checkpoint)["model"]
    initial = _initial_weights()
    moved = max((expected[k] - initial[k]).abs().max().item() for k in expected)
    apart = max((final["model"][k] - expected[k]).abs().max().item() for k in expected)
    assert moved > 5e-4  # training changed the weights...
    assert apart < 0.01 * moved  # ...and DDP changed them as one process does (seen: 1e-4)
    assert _log_rows(out) == _log_rows(reference_run.run_dir)  # losses all-reduced alike


def _initial_weights() -> dict:
    from sparsekits.models import build_model

    torch.manual_seed(RUN["seed"])
    return build_model("small").state_dict()


def test_training_loss_halves_on_tiny_phantoms(tiny_cache, tmp_path):
    """96 optimiser steps of one sample (16 epochs of the fold's 6 cases) at lr 3e-3 of a 30-epoch
    schedule, stopped there; seen: 4.22 in epoch 0, 1.94 in epoch 13."""
    config = TrainConfig(
        data=tiny_cache,
        out=tmp_path / "run",
        stage=1,
        fold=0,
        network="small",
        recipe=Recipe(epochs=30, accumulation=1, lr=3e-3, augment=False),
        seed=0,
        num_workers=0,
        val_every=100,
        stop_after_steps=96,
    )
    assert not train(config).completed
    losses = [float(row["train_loss"]) for row in _log_rows(config.out)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_validation_subsets_are_spread_over_the_fold():
    assert spread(5, None) == [0, 1, 2, 3, 4]
    assert spread(5, 9) == [0, 1, 2, 3, 4]
    assert spread(19, 4) == [0, 6, 12, 18]  # first and last included, evenly between
    assert len(spread(100, 8)) == 8


def test_a_validation_subset_of_one_sample_is_what_the_log_scores(tiny_cache, tmp_path):
    run = train(TrainConfig(data=tiny_cache, out=tmp_path / "run", val_samples=1, **RUN))
    log = _log_rows(run.run_dir)
    assert log and all(row["val_loss"] != "" for row in log)
    with pytest.raises(ValueError, match="val_samples"):
        train(TrainConfig(data=tiny_cache, out=tmp_path / "bad", val_samples=0, **RUN))
