"""A model: its plan and one trained network per stage and fold.

```
MODEL/plan.json                     the plan the model was trained with (sparsekits.plan)
MODEL/<role>/fold_<K>/              a model folder (sparsekits.models.io): config.json + weights
MODEL/training_volumes.json         volumes its training cases span (sparsekits.training_volumes)
```

``<role>`` is a stage of the plan's method (``roi``, ``fine`` for sscn-twostage). Each fold's
``config.json`` also records the whole plan of its training run and its stage and fold
(``extra``), which is what ``assemble_model`` checks when it builds MODEL from training runs:
every stage of the method present, one method, no fold twice, and plans that agree (the input
everywhere, each stage's network across its folds). ``MODEL/plan.json`` takes each stage from
that stage's runs.

Older model folders still load: those written before stages had roles (``MODEL/stage<k>/``,
``extra.stage`` a number) and those written before plans (``extra.stage`` was the stage's
config; read with their implied plan, ``sscn_twostage.legacy_plan``).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import FOLD_PREFIX, PLAN_FILE, legacy_stage_dir, stage_dir
from sparsekits.models.io import CONFIG_FILE, read_config, save_model_folder
from sparsekits.plan import Plan, input_difference
from sparsekits.training_volumes import RUN_KEY, volume_ranges, write_ranges

RUN_MODEL = "model"  # a training run's best weights: RUN/model/
# A model's fingerprint is this many hex digits of a SHA-256 (64 bits): short enough to read in
# a report, far too many for two models to share by chance.
FINGERPRINT_DIGITS = 16


def fold_record(fold_path: Path) -> tuple[Plan, str, int]:
    """(plan, stage role, fold) that a fold folder's config.json records; folders written
    before plans get their implied plan."""
    header = read_config(fold_path / CONFIG_FILE)
    extra = header["extra"]
    try:
        fold = int(extra.get("fold", 0))
        stage = extra["stage"]
        if isinstance(stage, dict):  # written before plans: a StageConfig
            from sparsekits.methods.sscn_twostage import legacy_plan

            number = int(stage["stage"])
            plan = legacy_plan({number: stage}, {number: header["config"]})
            return plan, plan.role(number), fold
        plan = Plan.from_dict(extra["plan"])
        return plan, plan.role(stage), fold
    except (KeyError, TypeError, ValueError) as error:
        problem = f"no usable plan, stage or fold ({error})"
        raise InputError(fold_path / CONFIG_FILE, problem) from error


def save_fold(model_dir: Path, plan: Plan, role: str | int, fold: int, net, extra=None) -> Path:
    """MODEL/<role>/fold_<fold> holding ``net`` (``role``: a stage's role or 1-based position),
    and MODEL/plan.json."""
    role = plan.role(role)
    record = {"plan": plan.to_dict(), "stage": role, "fold": fold, **(extra or {})}
    path = save_model_folder(fold_path(model_dir, role, fold), net, extra=record)
    write_json_atomic(Path(model_dir) / PLAN_FILE, plan.to_dict())
    return path


def model_stage_dir(model_dir: Path, plan: Plan, role: str | int) -> Path:
    """The folder of stage ``role`` (or 1-based position) in MODEL: ``MODEL/<role>``, or
    ``MODEL/stage<k>`` in a model written before stages had roles."""
    role = plan.role(role)
    folder = stage_dir(model_dir, role)
    legacy = legacy_stage_dir(model_dir, plan.position(role))
    return legacy if not folder.is_dir() and legacy.is_dir() else folder


def fold_path(model_dir: Path, role: str, fold: int, plan: Plan | None = None) -> Path:
    """MODEL's folder of stage ``role``, fold ``fold`` (legacy layouts found with ``plan``)."""
    folder = stage_dir(model_dir, role) if plan is None else model_stage_dir(model_dir, plan, role)
    return folder / f"{FOLD_PREFIX}{fold}"


def available_folds(model_dir: Path, plan: Plan, role: str) -> list[int]:
    from sparsekits.layout import fold_number

    folder = model_stage_dir(Path(model_dir), plan, role)
    folds = (fold_number(path) for path in folder.glob(f"{FOLD_PREFIX}*"))
    return sorted(
        fold
        for fold in folds
        if fold is not None and (folder / f"{FOLD_PREFIX}{fold}" / CONFIG_FILE).is_file()
    )


def require_folds(model_dir: Path, plan: Plan, role: str) -> list[int]:
    """``available_folds``; InputError when the stage has none."""
    folds = available_folds(model_dir, plan, role)
    if not folds:
        expected = stage_dir(model_dir, role) / f"{FOLD_PREFIX}K"
        raise InputError(model_dir, f"no trained {role} model (expected {expected}/)")
    return folds


def read_plan(model_dir: str | Path) -> Plan:
    """MODEL/plan.json; for a model written before plans, the plan its folds imply."""
    model_dir = Path(model_dir)
    path = model_dir / PLAN_FILE
    if path.is_file():
        from sparsekits.plan import load_plan

        return load_plan(path)
    if not model_dir.is_dir():
        raise InputError(model_dir, "no such model folder")
    from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

    plan = SSCN_TWOSTAGE  # the only method before plans
    for role in plan.roles:
        folds = require_folds(model_dir, plan, role)
        implied, _, _ = fold_record(fold_path(model_dir, role, folds[0], plan))
        plan = plan.with_stage_plan(implied.stage(role))
    return plan


def assemble_model(runs: list[str | Path], out: str | Path) -> Path:
    """MODEL folder ``out`` from training run folders (each holding RUN/model/), with the
    union of the volume ranges the runs recorded (none when any run recorded none)."""
    out = Path(out)
    found: dict[tuple[str, int], tuple[Path, Plan]] = {}
    for run in map(Path, runs):
        fold_folder = run / RUN_MODEL if (run / RUN_MODEL / CONFIG_FILE).is_file() else run
        plan, role, fold = fold_record(fold_folder)
        if (role, fold) in found:
            raise InputError(run, f"stage {role} fold {fold} is also in {found[role, fold][0]}")
        found[role, fold] = (fold_folder, plan)
    firsts: dict[str, Plan] = {}  # the plan of each stage's first fold
    for (role, _), (path, plan) in sorted(found.items()):
        first = firsts.setdefault(role, plan)
        reference = next(iter(firsts.values()))
        if plan.method != reference.method:
            raise InputError(path, f"holds a {plan.method} run, the others {reference.method}")
        difference = input_difference(reference, plan)
        if difference is not None:
            raise InputError(path, f"its plan differs from the other runs': {difference}")
        if plan.stage(role).network != first.stage(role).network:
            raise InputError(path, f"its {role} network differs from the other folds'")
    plan = next(iter(firsts.values()), None)
    missing = [role for role in (plan.roles if plan else ()) if role not in firsts]
    if plan is None or missing:
        what = missing[0] if missing else "any"
        raise InputError(out, f"no {what} stage run among the {len(runs)} runs given")
    for role, first in firsts.items():
        own = first.stage(role)
        plan = plan.with_stage(role, network=own.network, recipe=own.recipe)
    for (role, fold), (path, _) in sorted(found.items()):
        target = fold_path(out, role, fold)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target)
    write_json_atomic(out / PLAN_FILE, plan.to_dict())
    runs_ranges = [
        read_config(path / CONFIG_FILE)["extra"].get(RUN_KEY) for path, _ in found.values()
    ]
    write_ranges(out, volume_ranges(runs_ranges))
    return out


def model_fingerprint(model_dir: Path, plan: Plan, folds: dict[str, list[int]]) -> str:
    """A short name for the networks a prediction ran: the SHA-256 of MODEL/plan.json and the
    config.json of each fold in ``folds`` (role -> folds; each config pins its weights by their
    SHA-256, checked when they load), its first ``FINGERPRINT_DIGITS`` hex digits."""
    model_dir = Path(model_dir)
    paths = [model_dir / PLAN_FILE] + [
        fold_path(model_dir, role, fold, plan) / CONFIG_FILE
        for role, numbers in folds.items()
        for fold in numbers
    ]
    digest = hashlib.sha256()
    for path in paths:
        if path.is_file():  # a model written before plans has no plan.json
            digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:FINGERPRINT_DIGITS]
