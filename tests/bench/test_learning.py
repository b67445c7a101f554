"""The learning benchmark's pieces that run in seconds: disjoint label-map splits, its plans."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekits.bench.learning import LearningConfig, learning_plan, split_label_maps
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.plan import check_same_input


def test_train_and_test_label_maps_are_disjoint_and_seeded(tmp_path):
    for k in range(9):
        (tmp_path / f"case_{k:05d}.nii.gz").write_bytes(b"")
    train, test = split_label_maps(tmp_path, 6, 3, seed=0)
    assert len(train) == 6 and len(test) == 3 and not set(train) & set(test)
    assert (train, test) == split_label_maps(tmp_path, 6, 3, seed=0)
    assert split_label_maps(tmp_path, 6, 3, seed=1) != (train, test)
    with pytest.raises(ValueError, match="10 needed"):
        split_label_maps(tmp_path, 7, 3, seed=0)


def test_each_configuration_changes_only_network_and_stage_2_loss():
    config = LearningConfig()
    plan = learning_plan("paper-stem-bias", "dice+bce", config)
    first_plan = learning_plan(*config.configs[0], config)
    assert check_same_input(first_plan, plan, "x", "the plan") is None  # one cache for all
    assert plan.stage(1).spacing_mm == config.stage1_spacing_mm != SSCN_TWOSTAGE.stage(1).spacing_mm
    assert plan.stage(2).input_dict() == SSCN_TWOSTAGE.stage(2).input_dict()
    assert {stage.network.name for stage in plan.stages} == {"paper-stem-bias"}
    first, second = (stage.recipe for stage in plan.stages)
    assert (first.loss, second.loss) == ("dice", "dice+bce")
    assert (first.patch_vox, second.patch_vox) == config.patch_vox
    assert first.lesion_oversampling == 0 and second.lesion_oversampling == pytest.approx(0.5)
    assert np.isclose(first.lr, config.lr)


def test_a_finished_stage_run_is_reused_with_its_training_time(tmp_path):
    import json

    from sparsekits.bench.learning import _finished, _stage_run
    from sparsekits.train.runlog import LOG_COLUMNS

    plan = learning_plan("small", "dice", LearningConfig())
    run = tmp_path / "stage1"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"plan": plan.to_dict(), "recipe": {"epochs": 2}}))
    assert not _finished(run, plan, "roi")  # no log yet
    # Stage 1 is shared across losses (only stage 2's differs); another network is refused.
    assert not _finished(run, learning_plan("small", "dice+bce", LearningConfig()), "roi")
    with pytest.raises(ValueError, match="another plan"):
        _finished(run, learning_plan("paper-stem-bias", "dice", LearningConfig()), "roi")
    header = ",".join(LOG_COLUMNS)
    row = {column: "" for column in LOG_COLUMNS}
    lines = [header]
    for epoch, (step, seconds) in enumerate(((10, 4.0), (20, 6.0))):
        row.update(epoch=str(epoch), step=str(step), seconds=str(seconds))
        lines.append(",".join(row[column] for column in LOG_COLUMNS))
        (run / "log.csv").write_text("\n".join(lines) + "\n")
        assert _finished(run, plan, "roi") == (epoch == 1)  # only once the last epoch is logged
    stage_run = _stage_run(run)
    assert (stage_run.steps, stage_run.seconds) == (20, 10.0)
    assert stage_run.seconds_per_step == 0.5
