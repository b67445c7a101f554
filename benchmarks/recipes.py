"""Training recipes compared on the same phantoms and seeds: section ``recipes`` of BENCHMARKS.md.

Stage 2 (the small preset, as in the demo) trains on the demo's training phantoms with each
recipe for the same number of optimiser steps: the paper's soft Dice, Dice + BCE, each with and
without lesion oversampling. Validation on fold 0's held-out cases after every ``--val-every``
steps gives the learning curves (PNG) and the table (last validation; best mass Dice).

Command (from the repository root):
    python benchmarks/recipes.py --steps 320 --val-every 40
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from _sections import command_line, update_section
from sparsekits.bench.report import load_average, measured_on
from sparsekits.demo import FULL, write_demo_phantoms
from sparsekits.markdown import markdown_table
from sparsekits.methods.sscn_twostage import DEMO as DEMO_PLAN
from sparsekits.plan import Recipe
from sparsekits.regions import REGION_NAMES
from sparsekits.train.curves import plot_runs

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "benchmarks" / "recipes" / "stage2.png"
# (label, loss, lesion oversampling): the paper's loss and the demo's, with and without the
# demo's oversampling
_OVER = DEMO_PLAN.stage("fine").recipe.lesion_oversampling
RECIPES = (
    ("dice", "dice", 0.0),
    (f"dice, oversampling {_OVER}", "dice", _OVER),
    ("dice+bce", "dice+bce", 0.0),
    (f"dice+bce, oversampling {_OVER}", "dice+bce", _OVER),
)


def train_recipe(cache: Path, out: Path, loss: str, oversampling: float, args) -> Path:
    from sparsekits.train.trainer import TrainConfig, train

    recipe = Recipe(
        loss=loss,
        lesion_oversampling=oversampling,
        patch_vox=args.patch_vox,
        lr=args.lr,
        epochs=args.steps // args.val_every,
        samples_per_epoch=args.val_every,
        accumulation=1,
        augment=False,
    )
    train(
        TrainConfig(
            data=cache, stage="fine", fold=0, out=out, plan=DEMO_PLAN, recipe=recipe,
            seed=FULL.seed,
            num_workers=1,
        )
    )  # fmt: skip
    return out / "log.csv"


def summary_row(label: str, log: Path) -> list[str]:
    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1]
    best_mass = max(float(row["val_dice_mass"]) for row in rows)
    return [
        label,
        *(f"{float(last[f'val_dice_{name}']):.3f}" for name in REGION_NAMES),
        f"{best_mass:.3f}",
        f"{sum(float(row['seconds']) for row in rows) / int(last['step']):.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=DEMO_PLAN.stage("fine").recipe.lr)
    parser.add_argument("--patch-vox", type=int, default=DEMO_PLAN.stage("fine").recipe.patch_vox)
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        from sparsekits.data.preprocess import preprocess_dataset

        write_demo_phantoms(out, FULL)
        preprocess_dataset(out / "data", out / "cache", DEMO_PLAN, roles=("fine",), workers=2)
        logs = {
            label: train_recipe(out / "cache", out / "runs" / str(i), loss, oversampling, args)
            for i, (label, loss, oversampling) in enumerate(RECIPES)
        }
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        plot_runs(logs, FIGURE, f"Stage 2, small preset, demo phantoms, lr {args.lr}")
        rows = [summary_row(label, log) for label, log in logs.items()]
    command = command_line(__file__, args, omit=("out",))
    body = "\n".join(
        [
            "## Training recipes, stage 2 (same phantoms, same seeds)",
            "",
            f"The demo's {FULL.train_cases} training phantoms (fold 0: a fifth validates), the "
            f"`{DEMO_PLAN.stage('fine').network.name}` network, batch 1, lr {args.lr}, patches "
            f"{args.patch_vox}, {args.steps} optimiser steps, no "
            "augmentation; validation Dice (thresholded, voxels pooled) of the last "
            "validation, and the best mass Dice seen.",
            "",
            markdown_table(
                ["recipe", *(f"val {name}" for name in REGION_NAMES), "best val mass", "s/step"],
                rows,
            ),
            "",
            "![stage 2 recipes](docs/benchmarks/recipes/stage2.png)",
            "",
            *measured_on(command, load),
        ]
    )
    print(body)
    update_section("recipes", body)


if __name__ == "__main__":
    main()
