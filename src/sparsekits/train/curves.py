"""Learning curves: Dice of each region (or class) against optimiser steps, train and validation.

The trainer redraws ``RUN/progress.png`` from ``RUN/log.csv`` after every epoch (as nnU-Net's
``progress.png``); ``plot_runs`` puts several runs side by side (benchmarks compare recipes).
Training Dice is that of the epoch's own samples (thresholded at 0.5, voxels pooled), validation
Dice that of the fold's held-out cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sparsekits.fileio import atomic_path
from sparsekits.train.runlog import read_log

PROGRESS_PNG = "progress.png"


def _series(rows: list[dict], column: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for row in rows:
        if row.get(column, "") not in ("", "nan"):
            steps.append(int(row["step"]))
            values.append(float(row[column]))
    return steps, values


def _class_names(logs) -> list[str]:
    """The classes (regions or labels) whose Dice the logs hold, from their column names."""
    names: list[str] = []
    for rows in logs:
        for column in rows[0] if rows else ():
            name = column.removeprefix("val_dice_")
            if column.startswith("val_dice_") and name not in names:
                names.append(name)
    return names


def plot_runs(runs: Mapping[str, Path], out_png: Path, title: str = "") -> Path:
    """One panel per region: train (dashed) and validation (solid) Dice of each run's log.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {label: read_log(Path(log)) for label, log in runs.items()}
    names = _class_names(logs.values())
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), sharey=True, squeeze=False)
    axes = axes[0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, region in zip(axes, names, strict=True):
        for index, (label, rows) in enumerate(logs.items()):
            colour = colours[index % len(colours)]
            for split, style in (("train", "--"), ("val", "-")):
                steps, values = _series(rows, f"{split}_dice_{region}")
                if steps:
                    ax.plot(steps, values, style, color=colour, label=f"{label} ({split})")
        ax.set_title(region)
        ax.set_xlabel("optimiser step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out_png


def plot_progress(run_dir: Path) -> Path:
    """``RUN/progress.png`` from ``RUN/log.csv``."""
    return plot_runs({Path(run_dir).name: Path(run_dir) / "log.csv"}, Path(run_dir) / PROGRESS_PNG)
