"""The end-to-end run of any method: preprocess -> train every stage -> assemble -> predict ->
evaluate, on a training dataset and a held-out test dataset. The demo and the learning benchmark
both run it; each makes its own data (phantoms) and may train a stage its own way.

```
OUT/cache/        the preprocessing cache of the training data
OUT/runs/<role>/  the training run of each stage (fold ``fold``)
OUT/model/        the model folder
OUT/predictions/  label maps, reports, ROI masks, probabilities and overlays of the test data
OUT/evaluation.csv
```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sparsekits.plan import Plan

# Held-out test data is generated with seed + this: no case is shared with training.
TEST_SEED_OFFSET = 1000

# Trains stage ``role`` of ``plan`` on the cache into the run folder; returns the run folder.
StageTrainer = Callable[[Path, Plan, str, Path], Path]


def test_seed(seed: int) -> int:
    """The seed of the held-out test data of a run whose training data has ``seed``."""
    return seed + TEST_SEED_OFFSET


@dataclass
class ExperimentResult:
    out_dir: Path
    model_dir: Path
    predictions: Path
    evaluation: object  # sparsekits.evaluate.kits23.EvaluationResult
    timings_s: dict[str, float] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)


def run_experiment(
    out: Path,
    plan: Plan,
    train_data: Path,
    test_data: Path,
    train_stage: StageTrainer | None = None,
    workers: int = 2,
    run_dirs: dict[str, Path] | None = None,
    timings: dict[str, float] | None = None,
    cache: Path | None = None,
) -> ExperimentResult:
    """Every step into ``out``; ``train_stage`` (default: ``default_stage_trainer()``) trains
    each stage, into ``run_dirs[role]`` when given (else OUT/runs/<role>); ``cache`` (default
    OUT/cache) may be shared by experiments on the same data and plan input."""
    from sparsekits.evaluate.kits23 import evaluate_folders
    from sparsekits.predict.pipeline import predict

    out = Path(out)
    timings = {} if timings is None else timings
    model, runs = train_model(out, plan, train_data, train_stage, workers, run_dirs, timings, cache)
    predictions = out / "predictions"
    with step(timings, "predict"):
        predict(test_data, predictions, model, save_probabilities=True, overlay=True)
    with step(timings, "evaluate"):
        evaluation = evaluate_folders(
            predictions,
            test_data,
            output_csv=out / "evaluation.csv",
            roi_dir=predictions,
            workers=workers,
        )
    return ExperimentResult(out, model, predictions, evaluation, timings, runs)


def train_model(
    out: Path,
    plan: Plan,
    train_data: Path,
    train_stage: StageTrainer | None = None,
    workers: int = 2,
    run_dirs: dict[str, Path] | None = None,
    timings: dict[str, float] | None = None,
    cache: Path | None = None,
) -> tuple[Path, dict[str, Path]]:
    """Preprocess ``train_data``, train every stage of ``plan`` and assemble OUT/model (the
    first steps of ``run_experiment``, with its arguments); the model folder and each stage's
    run folder."""
    from sparsekits.data.preprocess import preprocess_dataset
    from sparsekits.models.bundle import assemble_model

    out = Path(out)
    timings = {} if timings is None else timings
    train_stage = train_stage or default_stage_trainer()
    runs = {role: out / "runs" / role for role in plan.roles} | (run_dirs or {})
    cache = out / "cache" if cache is None else cache
    with step(timings, "preprocess"):
        preprocess_dataset(train_data, cache, plan, workers=workers)
    for role in plan.roles:
        with step(timings, f"train {role}"):
            runs[role] = train_stage(cache, plan, role, runs[role])
    return assemble_model(list(runs.values()), out / "model"), runs


# Validations of each stage's short training run: enough points for the curves to say whether a
# stage still learns. Each on at most VALIDATION_SAMPLES samples: the fine stage's whole ROIs
# take 1-2 s each, and fold 0 of the demo's 48 phantoms validates on about 19 of them.
VALIDATIONS = 4
VALIDATION_SAMPLES = 8


def default_stage_trainer(seed: int = 0, loader_workers: int = 1) -> StageTrainer:
    """Train a stage on fold 0 with its plan's recipe, validating ``VALIDATIONS`` times."""

    def train_stage(cache: Path, plan: Plan, role: str, run_dir: Path) -> Path:
        from sparsekits.train.trainer import TrainConfig, train

        epochs = plan.stage(role).recipe.epochs
        config = TrainConfig(
            data=cache,
            stage=role,
            fold=0,
            out=run_dir,
            plan=plan,
            seed=seed,
            num_workers=loader_workers,
            val_every=max(1, epochs // VALIDATIONS),
            val_samples=VALIDATION_SAMPLES,
        )
        return train(config).run_dir

    return train_stage


@contextmanager
def step(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a step into ``timings[name]``, saying when it starts and ends."""
    print(f"{name} ...", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"{name} done in {timings[name]:.0f} s", flush=True)
