"""A model: its plan and one trained network per stage and fold.

```
MODEL/plan.json                     the plan the model was trained with (sparsekits.plan)
MODEL/stage<k>/fold_<K>/            a model folder (sparsekits.models.io): config.json + weights
```

Each fold's ``config.json`` also records the whole plan of its training run and its stage and
fold (``extra``), which is what ``assemble_model`` checks when it builds MODEL from training
runs: both stages present, no fold twice, and plans that agree (the input everywhere, each
stage's network across its folds). ``MODEL/plan.json`` takes each stage from that stage's runs.

Model folders written before plans existed (``extra.stage`` was the stage's config) are read
with their implied plan (``sparsekits.plan.legacy_plan``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import FOLD_PREFIX, PLAN_FILE, fold_dir, fold_number, stage_dir
from sparsekits.models.io import CONFIG_FILE, read_config, save_model_folder
from sparsekits.plan import SSCN_TWOSTAGE, Plan, input_difference, legacy_plan

RUN_MODEL = "model"  # a training run's best weights: RUN/model/


def fold_record(fold_path: Path) -> tuple[Plan, int, int]:
    """(plan, stage, fold) that a fold folder's config.json records; legacy folders get their
    implied plan."""
    header = read_config(fold_path / CONFIG_FILE)
    extra = header["extra"]
    try:
        fold = int(extra.get("fold", 0))
        if isinstance(extra.get("stage"), dict):  # written before plans: a StageConfig
            stage = int(extra["stage"]["stage"])
            return legacy_plan({stage: extra["stage"]}, {stage: header["config"]}), stage, fold
        return Plan.from_dict(extra["plan"]), int(extra["stage"]), fold
    except (KeyError, TypeError, ValueError) as error:
        problem = f"no usable plan, stage or fold ({error})"
        raise InputError(fold_path / CONFIG_FILE, problem) from error


def save_fold(model_dir: Path, plan: Plan, stage: int, fold: int, net, extra=None) -> Path:
    """MODEL/stage<stage>/fold_<fold> holding ``net``, and MODEL/plan.json."""
    record = {"plan": plan.to_dict(), "stage": stage, "fold": fold, **(extra or {})}
    path = save_model_folder(fold_dir(model_dir, stage, fold), net, extra=record)
    write_json_atomic(Path(model_dir) / PLAN_FILE, plan.to_dict())
    return path


def available_folds(model_dir: Path, stage: int) -> list[int]:
    folds = (fold_number(path) for path in stage_dir(model_dir, stage).glob(f"{FOLD_PREFIX}*"))
    return sorted(
        fold
        for fold in folds
        if fold is not None and (fold_dir(model_dir, stage, fold) / CONFIG_FILE).is_file()
    )


def require_folds(model_dir: Path, stage: int) -> list[int]:
    """``available_folds``; InputError when the stage has none."""
    folds = available_folds(model_dir, stage)
    if not folds:
        expected = stage_dir(model_dir, stage) / f"{FOLD_PREFIX}K"
        raise InputError(model_dir, f"no trained stage-{stage} model (expected {expected}/)")
    return folds


def read_plan(model_dir: str | Path) -> Plan:
    """MODEL/plan.json; for a model written before plans, the plan its folds imply."""
    model_dir = Path(model_dir)
    path = model_dir / PLAN_FILE
    if path.is_file():
        from sparsekits.plan import load_plan

        return load_plan(path)
    plan = SSCN_TWOSTAGE
    for stage in (1, 2):
        folds = require_folds(model_dir, stage)
        implied, _, _ = fold_record(fold_dir(model_dir, stage, folds[0]))
        plan = plan.with_stage_plan(implied.stage(stage))
    return plan


def assemble_model(runs: list[str | Path], out: str | Path) -> Path:
    """MODEL folder ``out`` from training run folders (each holding RUN/model/)."""
    out = Path(out)
    found: dict[tuple[int, int], tuple[Path, Plan]] = {}
    for run in map(Path, runs):
        fold_path = run / RUN_MODEL if (run / RUN_MODEL / CONFIG_FILE).is_file() else run
        plan, stage, fold = fold_record(fold_path)
        if (stage, fold) in found:
            raise InputError(run, f"stage {stage} fold {fold} is also in {found[stage, fold][0]}")
        found[stage, fold] = (fold_path, plan)
    firsts = {}  # the plan of each stage's first fold
    for (stage, _), (path, plan) in sorted(found.items()):
        first = firsts.setdefault(stage, plan)
        difference = input_difference(next(iter(firsts.values())), plan)
        if difference is not None:
            raise InputError(path, f"its plan differs from the other runs': {difference}")
        if plan.stage(stage).network != first.stage(stage).network:
            raise InputError(path, f"its stage-{stage} network differs from the other folds'")
    missing = [stage for stage in (1, 2) if stage not in firsts]
    if missing:
        raise InputError(out, f"no stage-{missing[0]} run among the {len(runs)} runs given")
    plan = firsts[1]
    for stage, first in firsts.items():
        own = first.stage(stage)
        plan = plan.with_stage(stage, network=own.network, recipe=own.recipe)
    for (stage, fold), (path, _) in sorted(found.items()):
        target = fold_dir(out, stage, fold)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target)
    write_json_atomic(out / PLAN_FILE, plan.to_dict())
    return out
