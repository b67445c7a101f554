"""What the networks learn in a fixed CPU budget: section ``learning`` of BENCHMARKS.md.

Phantoms on real KiTS23 label maps (train and held-out test on different maps), both stages per
configuration (presets x losses) for a share of the budget each, held-out Dice / Surface Dice /
lesion counts, learning curves, and the real non-contrast CT of ../shared/data segmented by a
model trained on phantoms only (``sparsekits.bench.learning``). Takes about
``len(configs) * budget`` plus an hour of phantoms, preprocessing and prediction.

Command (from the repository root):
    python benchmarks/learning.py --out learning_out
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from _sections import command_line, update_section
from sparsekits.bench.learning import LearningConfig, run_learning
from sparsekits.bench.report import load_average, measured_on
from sparsekits.evaluate.kits23 import lesion_summary
from sparsekits.markdown import markdown_table
from sparsekits.train.curves import plot_runs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIGURES = ROOT / "docs" / "benchmarks" / "learning"
# The paper's 5-fold CV figures on real KiTS23.
GOALS = {"Dice_kidney": 0.95, "Dice_masses": 0.85, "Dice_tumor": 0.80}
TRANSFER_GOAL = {"dice": 0.8, "outside_ml": 500.0}


def report(results: dict, config: LearningConfig, out: Path, command: str, load: float) -> str:
    runs = results["runs"]
    rows = []
    for name, run in runs.items():
        mean, stages = run["test_mean"], run["stages"]
        rows.append(
            [
                name,
                *(
                    f"{stages[str(s)]['steps']} / {stages[str(s)]['seconds'] / 60:.0f}"
                    for s in (1, 2)
                ),
                *(f"{mean[c]:.3f}" for c in (*GOALS, "SD_kidney", "SD_masses", "SD_tumor")),
                lesion_summary(mean, "tumours"),
                lesion_summary(mean, "cysts"),
                f"{mean['ROI_recall']:.3f}",
            ]
        )
    header = [
        "preset_loss",
        "stage 1 steps / min",
        "stage 2 steps / min",
        *GOALS,
        "SD_kidney",
        "SD_masses",
        "SD_tumor",
        "tumours",
        "cysts",
        "ROI recall",
    ]
    best = max(runs, key=lambda name: runs[name]["test_mean"]["Dice_masses"])
    verdicts = [
        f"{column} >= {goal}: best {max(r['test_mean'][column] for r in runs.values()):.3f} -> "
        + ("met" if any(r["test_mean"][column] >= goal for r in runs.values()) else "missed")
        for column, goal in GOALS.items()
    ]
    lines = [
        "## Learning in a fixed CPU budget (phantoms on real KiTS23 geometry)",
        "",
        f"{config.train_cases} training phantoms and {config.test_cases} held-out test phantoms "
        "built on disjoint real KiTS23 label maps (real kidney, tumour and cyst shapes at their "
        f"real size and spacing), contrast phases {config.phantom.phase_p}. Per configuration "
        f"both stages train on fold 0 for {config.budget_s / 60:.0f} minutes in all "
        f"({config.stage1_share:.0%} stage 1, on a {config.stage1_spacing_mm} mm grid with "
        f"the `{config.stage1_loss}` loss; the configuration's loss is stage 2's), "
        f"lr {config.lr}, batch 1 x accumulation "
        f"{config.accumulation}, stage-2 lesion oversampling {config.lesion_oversampling} and "
        f"patches {config.patch_vox[1]}^3, augmentation on. The two-stage model then predicts "
        "the held-out phantoms (KiTS23 "
        "rules; lesion counts by `sparsekits evaluate`).",
        "",
        markdown_table(header, rows),
        "",
        "Goals (the paper's 5-fold figures on real KiTS23): " + "; ".join(verdicts) + ".",
        "",
        "Stage 2, training (dashed) and validation (solid) Dice per region:",
        "",
        "![stage 2](docs/benchmarks/learning/stage2.png)",
        "",
        "![stage 1](docs/benchmarks/learning/stage1.png)",
    ]
    transfer = [(name, run["real_ct"]) for name, run in runs.items() if "real_ct" in run]
    if transfer:
        rows = [
            [
                name,
                f"{t['dice_kidney_and_mass']:.3f}",
                f"{t['predicted_ml']:.0f}",
                f"{t['outside_kidneys_ml']:.0f}",
                f"{t['reference_ml']:.0f}",
            ]
            for name, t in transfer
        ]
        lines += [
            "",
            "### The real CT (non-contrast, 3 mm), segmented by the phantom-trained models",
            "",
            "Reference: the kidneys of its TotalSegmentator organ map (labels 2, 3). Goal: "
            f"kidney_and_mass Dice >= {TRANSFER_GOAL['dice']} with at most "
            f"{TRANSFER_GOAL['outside_ml']:.0f} mL predicted outside the kidneys.",
            "",
            markdown_table(
                ["preset_loss", "Dice", "predicted mL", "outside kidneys mL", "kidneys mL"], rows
            ),
            "",
            f"Overlays of `{best}`:",
            "",
            *(
                f"![{png.stem}](docs/benchmarks/learning/{png.name})"
                for png in sorted(FIGURES.glob("real_ct*.png"))
            ),
        ]
    lines += ["", *measured_on(command, load)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("learning_out"))
    parser.add_argument("--budget-min", type=float, default=45.0)
    parser.add_argument("--configs", default=None, help="e.g. small:dice,small:dice+bce")
    parser.add_argument("--train-cases", type=int, default=LearningConfig.train_cases)
    parser.add_argument("--test-cases", type=int, default=LearningConfig.test_cases)
    parser.add_argument("--no-report", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    config = LearningConfig(
        budget_s=args.budget_min * 60,
        train_cases=args.train_cases,
        test_cases=args.test_cases,
    )
    if args.configs:
        configs = tuple(tuple(item.split(":")) for item in args.configs.split(","))
        config = dataclasses.replace(config, configs=configs)
    load = load_average()
    ct = SHARED / "ct-samples"
    real_ct = (ct / "abdomen_ct_3mm.nii.gz", ct / "abdomen_ct_3mm_organs.nii.gz")
    results = run_learning(
        args.out, SHARED / "kits23-labels", real_ct if real_ct[0].exists() else None, config
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    for stage in (1, 2):
        plot_runs(
            {
                name: Path(run["stages"][str(stage)]["run_dir"]) / "log.csv"
                for name, run in results["runs"].items()
            },
            FIGURES / f"stage{stage}.png",
            f"Stage {stage}, phantoms on real KiTS23 geometry",
        )
    best = max(results["runs"], key=lambda n: results["runs"][n]["test_mean"]["Dice_masses"])
    for png in (args.out / "real_ct" / best).glob("*.png"):
        shutil.copy(png, FIGURES / png.name)
    command = command_line(__file__, args)
    body = report(results, config, args.out, command, load)
    print(body)
    if not args.no_report:
        update_section("learning", body)


if __name__ == "__main__":
    main()
