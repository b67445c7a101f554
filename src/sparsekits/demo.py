"""The end-to-end demo: phantoms -> preprocess -> train both stages -> predict -> evaluate.

``sparsekits demo --out DIR`` needs no data and is sized for 5 minutes on a quiet 2-core CPU (a slow
day stays under 10):

```
DIR/data/        training phantoms (KiTS23 layout); fold 0 holds some out for validation
DIR/test/        held-out test phantoms (another seed), never seen in training
DIR/cache/       the preprocessing cache of DIR/data
DIR/runs/        the training runs of stage 1 and stage 2 (logs, checkpoints)
DIR/model/       both stages' fold-0 networks: a model folder for ``sparsekits predict``
DIR/predictions/ label maps, volume reports, stage-1 ROI masks and overlay PNGs of DIR/test
DIR/evaluation.csv, DIR/report.md
```
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sparsekits.markdown import markdown_table
from sparsekits.models.bundle import assemble_model
from sparsekits.phantoms import DEFAULT as DEFAULT_PHANTOM
from sparsekits.phantoms import PhantomConfig, write_phantom_dataset
from sparsekits.phantoms.tissues import R
from sparsekits.plan import COARSE_STAGE1_SPACING_MM, SSCN_TWOSTAGE, Plan, Recipe

TEST_SEED_OFFSET = 1000  # test phantoms use seed + this: no case is shared with training
# The demo's phantoms, chosen so that a CPU learns them in minutes:
# - Kidneys 0.7x the default size: a stage-2 ROI (kidney dilated by 10 mm, at 0.78 mm) shrinks
#   from about 650 k to about 250 k sparse voxels. Lesions keep KiTS23's numbers and their size
#   relative to the kidney (0.7x KiTS23's diameters).
# - The arterial phase (KiTS's own: the cortex stands out from liver, spleen and muscle, so stage 1
#   finds kidneys fast), hypo-enhancing (papillary) tumours and simple cysts: masses that differ
#   from the parenchyma in HU. Clear-cell RCC (most of KiTS23) enhances like the cortex and must
#   be told apart by texture and shape: a network does not learn that in minutes (BENCHMARKS.md,
#   "recipes" and "learning").
KIDNEY_SCALE = 0.7
SMALL_KIDNEYS = dataclasses.replace(
    DEFAULT_PHANTOM.with_phase("arterial"),
    kidney_length_mm=(70.0, 85.0),
    kidney_width_mm=(36.0, 44.0),
    kidney_thickness_mm=(28.0, 34.0),
    tumours=DEFAULT_PHANTOM.tumours.scaled(KIDNEY_SCALE),
    cysts=DEFAULT_PHANTOM.cysts.scaled(KIDNEY_SCALE),
    kidney=dataclasses.replace(
        DEFAULT_PHANTOM.kidney,
        tumour_subtypes={R.PAPILLARY: 1.0},
        cyst_subtypes={R.SIMPLE_CYST: 1.0},
    ),
)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo generates, and its plan (networks and training recipes)."""

    train_cases: int  # phantoms in DIR/data; fold 0 validates on a fifth of them
    test_cases: int  # held-out phantoms in DIR/test
    plan: Plan
    # Field of view (x, y, z voxels at the phantom config's spacing, 2 x 2 x 2.5 mm): the abdomen
    # around the kidneys, not the whole trunk, so stage 1 sees fewer voxels.
    phantom_shape: tuple[int, int, int]
    phantom: PhantomConfig = SMALL_KIDNEYS
    seed: int = 0
    workers: int = 2  # processes for preprocessing and evaluation
    loader_workers: int = 1  # DataLoader processes that augment while the network trains


# Stage 1 of the demo runs on COARSE_STAGE1_SPACING_MM (3.98 mm), twice METHOD.md's 1.99 mm:
# about 35 k sparse voxels a phantom against 280 k, so a training step takes ~0.35 s instead of
# ~2.5 s. Measured on the demo's phantoms: 144 steps at 3.98 mm reached validation kidney Dice
# 0.82 in 55 s, where 144 steps at 1.99 mm reached 0.68 in 6 minutes. The 10 mm ROI dilation is
# 2.5 voxels there.


def demo_plan(stage1: Recipe, stage2: Recipe) -> Plan:
    """METHOD.md's plan with the small network, stage 1 on the demo's coarser grid, the demo's
    recipes, and ROIs cut from the kidney_and_mass probability: stage 1 trains for a minute
    with the paper's Dice, which leaves its mass and tumour outputs high all over the scan (no
    gradient against them), and the paper's max over the regions then makes one ROI of the
    whole scan."""
    plan = SSCN_TWOSTAGE.with_network("small")
    plan = dataclasses.replace(plan, roi=dataclasses.replace(plan.roi, region="kidney_and_mass"))
    plan = plan.with_stage(1, spacing_mm=COARSE_STAGE1_SPACING_MM, recipe=stage1)
    return plan.with_stage(2, recipe=stage2)


# Sized from measured costs (2 cores, 2026-12-02): a stage-1 step ~0.35-0.45 s (whole samples,
# the paper's Dice: patches or Dice + BCE left stage 1 finding no kidney in 160-240 steps); a
# stage-2 step ~0.45 s on lesion-centred 48^3 patches (~2 s for a whole ROI) with Dice + BCE (the
# paper's Dice alone paints every kidney as tumour). Stage 2's validation on whole ROIs reached
# kidney_and_mass 0.85 and masses 0.31 after 240 steps, 0.82 and 0.64 after 400. Augmentation is
# off: in a few hundred steps it slows convergence more than it helps, and every phantom is a new
# random anatomy.
FULL = DemoConfig(
    train_cases=12,
    test_cases=6,
    phantom_shape=(96, 72, 64),
    plan=demo_plan(
        Recipe(lr=1e-2, epochs=24, samples_per_epoch=8, accumulation=1, augment=False),
        Recipe(
            loss="dice+bce",
            patch_vox=48,
            lesion_oversampling=0.5,
            lr=1e-2,
            epochs=8,
            samples_per_epoch=40,
            accumulation=1,
            augment=False,
        ),
    ),
)
# For the end-to-end test: every step runs, nothing is trained long enough to be good (an
# untrained stage 1 may call the whole field of view one ROI, hence a small one). Six cases: a
# kidney may fall outside so small a view, and 5 folds need 5 cases with kidneys.
_ONE_STEP = Recipe(epochs=1, samples_per_epoch=1, accumulation=1, lr=3e-3, augment=False)
QUICK = DemoConfig(
    train_cases=6,
    test_cases=1,
    phantom_shape=(72, 56, 48),
    plan=demo_plan(_ONE_STEP, _ONE_STEP),
    loader_workers=0,
)


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    model_dir: Path
    timings_s: dict[str, float]
    mean: dict  # the evaluation's mean row


def run_demo(out_dir: str | Path = "demo_out", quick: bool = False) -> DemoResult:
    """Run the whole demo into ``out_dir`` (replacing an earlier demo there)."""
    config = QUICK if quick else FULL
    out = Path(out_dir)
    for name in ("data", "test", "cache", "runs", "model", "predictions"):
        shutil.rmtree(out / name, ignore_errors=True)
    timings: dict[str, float] = {}
    with _step(timings, "phantoms"):
        write_demo_phantoms(out, config)
    with _step(timings, "preprocess"):
        from sparsekits.data.preprocess import preprocess_dataset

        preprocess_dataset(out / "data", out / "cache", config.plan, workers=config.workers)
    runs = []
    for stage in (1, 2):
        with _step(timings, f"train stage {stage}"):
            runs.append(_train_stage(out, config, stage))
    assemble_model(runs, out / "model")
    with _step(timings, "predict"):
        from sparsekits.predict.pipeline import predict

        predict(
            out / "test",
            out / "predictions",
            out / "model",
            save_probabilities=True,
            overlay=True,
        )
    with _step(timings, "evaluate"):
        from sparsekits.evaluate.kits23 import evaluate_folders

        evaluation = evaluate_folders(
            out / "predictions",
            out / "test",
            output_csv=out / "evaluation.csv",
            roi_dir=out / "predictions",
            workers=config.workers,
        )
    report = _write_report(out, config, evaluation, timings)
    print(f"demo: report -> {report}; model -> {out / 'model'}")
    return DemoResult(out, report, out / "model", timings, evaluation.mean)


def write_demo_phantoms(out: Path, config: DemoConfig) -> None:
    """The training phantoms (OUT/data) and the held-out test phantoms (OUT/test)."""
    for folder, cases, seed in (
        ("data", config.train_cases, config.seed),
        ("test", config.test_cases, config.seed + TEST_SEED_OFFSET),
    ):
        write_phantom_dataset(
            out / folder, cases, seed=seed, shape=config.phantom_shape, config=config.phantom
        )


def _train_stage(out: Path, config: DemoConfig, stage: int) -> Path:
    from sparsekits.train.trainer import TrainConfig, train

    epochs = config.plan.stage(stage).recipe.epochs
    result = train(
        TrainConfig(
            data=out / "cache",
            stage=stage,
            fold=0,
            out=out / "runs" / f"stage{stage}",
            plan=config.plan,
            seed=config.seed,
            num_workers=config.loader_workers,
            val_every=epochs,  # validate once, at the end: the demo's time is short
        )
    )
    return result.run_dir


def _settings(config: DemoConfig) -> dict:
    """The demo's settings: the phantom config cut to what differs from the default, and each
    stage's network and recipe (the whole plan is OUT/model/plan.json)."""
    settings = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in ("plan", "phantom")
    }
    settings["phantom"] = {
        field.name: getattr(config.phantom, field.name)
        for field in dataclasses.fields(config.phantom)
        if getattr(config.phantom, field.name) != getattr(DEFAULT_PHANTOM, field.name)
    }
    for stage in config.plan.stages:
        settings[f"stage {stage.stage}"] = f"{stage.network.name} network, {stage.recipe}"
    return settings


@contextmanager
def _step(timings: dict[str, float], name: str) -> Iterator[None]:
    print(f"demo: {name} ...", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"demo: {name} done in {timings[name]:.0f} s", flush=True)


def _write_report(out: Path, config: DemoConfig, evaluation, timings: dict[str, float]) -> Path:
    from sparsekits.evaluate.tables import lesions_table, scores_table
    from sparsekits.fileio import write_text_atomic

    timing_rows = [[name, f"{seconds:.0f}"] for name, seconds in timings.items()]
    timing_rows.append(["**total**", f"**{sum(timings.values()):.0f}**"])
    overlays = sorted((out / "predictions").glob("*.png"))
    network = config.plan.stage(1).network.name
    lines = [
        "# sparsekits demo",
        "",
        f"{config.train_cases} synthetic training phantoms (fold 0 of 5 validates on a fifth), "
        f"{config.test_cases} held-out test phantoms; the `{network}` network for both "
        f"stages, trained on this machine's CPU. The demo's phantoms are in the "
        f"{' / '.join(config.phantom.phase_p)} phase with hypo-enhancing (papillary) tumours "
        "and simple cysts, masses that differ from the kidney in HU; clear-cell RCC, most of "
        "KiTS23, needs far longer training. These figures show that the pipeline works end to "
        "end, not how well it does on KiTS23.",
        "",
        "## Test phantoms: KiTS23 Dice and Surface Dice (and stage-1 ROI recall)",
        "",
        scores_table(evaluation.rows, evaluation.mean),
        "",
        "## Lesions found, missed and false (Dice >= 0.1 per lesion, `sparsekits evaluate`)",
        "",
        lesions_table(evaluation.rows, evaluation.mean),
        "",
        "## Time of each step (s)",
        "",
        markdown_table(["step", "seconds"], timing_rows),
        "",
        "## Settings",
        "",
        "```",
        *(f"{key}: {value}" for key, value in _settings(config).items()),
        "```",
        "",
        "## Use the trained model",
        "",
        f"`sparsekits predict -i {out / 'test'} -o predictions --model {out / 'model'}`",
        "",
        "## Overlays (test phantoms; kidney green, tumour red, cyst blue)",
        "",
        *(f"![{png.stem}](predictions/{png.name})" for png in overlays),
        "",
    ]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
