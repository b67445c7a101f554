"""The end-to-end demo of a method: phantoms, then ``sparsekits.experiment.run_experiment``
(preprocess -> train every stage -> assemble -> predict -> evaluate) and a report.

``sparsekits demo --out DIR [--method NAME]`` needs no data; with sscn-twostage it aims at 5
minutes on a quiet 2-core CPU and takes about 7 today (BENCHMARKS.md, "The end-to-end demo"). Each
method has a ``demo`` and a ``demo-quick`` preset (its networks and recipes for the demo):

```
DIR/data/        training phantoms (KiTS23 layout); fold 0 holds some out for validation
DIR/test/        held-out test phantoms (another seed), never seen in training
DIR/cache/       the preprocessing cache of DIR/data
DIR/runs/<role>/ the training run of each stage (logs, checkpoints)
DIR/model/       every stage's fold-0 networks: a model folder for ``sparsekits predict``
DIR/predictions/ label maps, volume reports, ROI masks and overlay PNGs of DIR/test
DIR/evaluation.csv, DIR/report.md
```
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sparsekits.errors import InputError
from sparsekits.experiment import default_stage_trainer, run_experiment, step, test_seed
from sparsekits.markdown import markdown_table
from sparsekits.methods import DEFAULT_METHOD
from sparsekits.phantoms import DEFAULT as DEFAULT_PHANTOM
from sparsekits.phantoms import PhantomConfig, write_phantom_dataset
from sparsekits.phantoms.tissues import R
from sparsekits.plan import Plan

# The demo's phantoms, chosen so that a CPU learns them in minutes:
# - Kidneys 0.6x the default (KiTS23's) size: a fine-stage ROI (kidney dilated by 10 mm, at
#   0.78 mm) shrinks from about 800 k to about 250 k sparse voxels. Tumours keep KiTS23's numbers
#   and their size relative to the kidney (0.6x KiTS23's diameters); cysts keep KiTS23's
#   diameters (scaled, most fell under 0.5 mL: cysts held 5 % of the mass volume, against
#   KiTS23's 15 %).
# - The arterial phase (KiTS's own: the cortex stands out from liver, spleen and muscle, so stage 1
#   finds kidneys fast), hypo-enhancing (papillary) tumours and simple cysts: masses that differ
#   from the parenchyma in HU. Clear-cell RCC (most of KiTS23) enhances like the cortex and must
#   be told apart by texture and shape: a network does not learn that in minutes (BENCHMARKS.md,
#   "recipes" and "learning").
KIDNEY_SCALE = 0.6
SMALL_KIDNEYS = dataclasses.replace(
    DEFAULT_PHANTOM.with_phase("arterial").with_kidneys_scaled(KIDNEY_SCALE),
    view="kidneys",
    kidney=dataclasses.replace(
        DEFAULT_PHANTOM.kidney,
        tumour_subtypes={R.PAPILLARY: 1.0},
        cyst_subtypes={R.SIMPLE_CYST: 1.0},
    ),
)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo generates, and the method's preset it trains (networks and recipes)."""

    train_cases: int  # phantoms in DIR/data; fold 0 validates on a fifth of them
    test_cases: int  # held-out phantoms in DIR/test
    preset: str  # the method's plan for the demo (each method has "demo" and "demo-quick")
    # Field of view (x, y, z voxels at the phantom config's spacing, 2 x 2 x 2.5 mm): the abdomen
    # around the kidneys, not the whole trunk, so stage 1 sees fewer voxels.
    phantom_shape: tuple[int, int, int]
    phantom: PhantomConfig = SMALL_KIDNEYS
    seed: int = 0
    workers: int = 2  # processes for preprocessing and evaluation
    loader_workers: int = 1  # DataLoader processes that augment while the network trains


# The full demo, aimed at 5 minutes on a quiet 2-core CPU with sscn-twostage (about 7 today).
# Phantoms cost seconds and training steps do not grow with them, so the networks see many
# anatomies: with 48 training phantoms instead of 12 (same steps), held-out (24 phantoms) ROI
# recall of the masses rose from 0.57 to 0.81, of the kidneys from 0.91 to 0.96, and Dice from
# 0.755 / 0.350 / 0.327 to 0.788 / 0.462 / 0.427 (kidney_and_mass / masses / tumour; one seed;
# BENCHMARKS.md, "Stage 1 and the ROIs that hold the masses").
# Its view, 22 x 16 x 16 cm centred on the kidneys, holds them whole in 58 of 60 phantoms; at
# 19 x 14 x 16 cm centred on the body it cut 39 of 54 at its sides or back, and stage 1 missed
# kidneys cut at the view's edge.
FULL = DemoConfig(train_cases=48, test_cases=6, phantom_shape=(112, 80, 64), preset="demo")
# For the end-to-end test: every step runs, nothing is trained long enough to be good (an
# untrained first stage may call the whole field of view one ROI, hence a small one). Six cases:
# a kidney may fall outside so small a view, and 5 folds need 5 cases with kidneys.
QUICK = DemoConfig(
    train_cases=6, test_cases=1, phantom_shape=(72, 56, 48), preset="demo-quick", loader_workers=0
)


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    model_dir: Path
    timings_s: dict[str, float]
    mean: dict  # the evaluation's mean row


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    method: str = DEFAULT_METHOD,
    seed: int | None = None,
) -> DemoResult:
    """Run the whole demo of ``method`` into ``out_dir`` (replacing an earlier demo there);
    ``seed`` (default: the config's) draws its phantoms and seeds its training."""
    from sparsekits.methods import get_method

    config = QUICK if quick else FULL
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    try:
        plan = get_method(method).default_plan(config.preset)
    except ValueError as error:
        raise InputError(method, f"no demo plan: {error}") from error
    out = Path(out_dir)
    for name in ("data", "test", "cache", "runs", "model", "predictions"):
        shutil.rmtree(out / name, ignore_errors=True)
    timings: dict[str, float] = {}
    with step(timings, "phantoms"):
        write_demo_phantoms(out, config)
    result = run_experiment(
        out,
        plan,
        out / "data",
        out / "test",
        default_stage_trainer(config.seed, config.loader_workers),
        workers=config.workers,
        timings=timings,
    )
    report = _write_report(out, config, plan, result.evaluation, timings, result.run_dirs)
    print(f"demo: report -> {report}; model -> {result.model_dir}")
    return DemoResult(out, report, result.model_dir, timings, result.evaluation.mean)


def write_demo_phantoms(out: Path, config: DemoConfig) -> None:
    """The training phantoms (OUT/data) and the held-out test phantoms (OUT/test)."""
    for folder, cases, seed in (
        ("data", config.train_cases, config.seed),
        ("test", config.test_cases, test_seed(config.seed)),
    ):
        write_phantom_dataset(
            out / folder, cases, seed=seed, shape=config.phantom_shape, config=config.phantom
        )


def _settings(config: DemoConfig, plan: Plan) -> dict:
    """The demo's settings: the phantom config cut to what differs from the default, and each
    stage's network and recipe (the whole plan is OUT/model/plan.json)."""
    from sparsekits import __version__

    settings = {"sparsekits": __version__, "method": plan.method}
    settings |= {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name != "phantom"
    }
    settings["phantom"] = {
        field.name: getattr(config.phantom, field.name)
        for field in dataclasses.fields(config.phantom)
        if getattr(config.phantom, field.name) != getattr(DEFAULT_PHANTOM, field.name)
    }
    for stage in plan.stages:
        settings[f"stage {stage.role}"] = f"{stage.network.name} network, {stage.recipe}"
    return settings


def _write_report(
    out: Path,
    config: DemoConfig,
    plan: Plan,
    evaluation,
    timings: dict[str, float],
    runs: dict[str, Path] | None = None,
) -> Path:
    from sparsekits.evaluate.tables import lesions_table, scores_table
    from sparsekits.fileio import write_text_atomic
    from sparsekits.train.curves import PROGRESS_PNG

    timing_rows = [[name, f"{seconds:.0f}"] for name, seconds in timings.items()]
    timing_rows.append(["**total**", f"**{sum(timings.values()):.0f}**"])
    overlays = sorted((out / "predictions").glob("*.png"))
    curves = [
        (role, run / PROGRESS_PNG)
        for role, run in (runs or {}).items()
        if (run / PROGRESS_PNG).is_file()
    ]
    network = plan.stages[0].network.name
    lines = [
        "# sparsekits demo",
        "",
        f"{config.train_cases} synthetic training phantoms (fold 0 of 5 validates on a fifth), "
        f"{config.test_cases} held-out test phantoms; {plan.method}, the `{network}` network "
        f"for every stage, trained on this machine's CPU. The demo's phantoms are in the "
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
        "## Training curves (fold 0: training and validation Dice against optimiser steps)",
        "",
        *(f"![{role}]({os.path.relpath(png, out)})" for role, png in curves),
        "",
        "## Time of each step (s)",
        "",
        markdown_table(["step", "seconds"], timing_rows),
        "",
        "## Settings",
        "",
        "```",
        *(f"{key}: {value}" for key, value in _settings(config, plan).items()),
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
