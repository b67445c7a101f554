"""The run's records: one CSV row per epoch (RUN/log.csv) and TensorBoard events (RUN/tensorboard).

Both are keyed so that a resumed run rewrites history from where its checkpoint stood: CSV rows of
the resumed epoch and later are dropped, and TensorBoard purges events from the resumed step on.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sparsekits.fileio import write_text_atomic
from sparsekits.regions import REGION_NAMES


def log_columns(class_names: tuple[str, ...] = REGION_NAMES) -> tuple[str, ...]:
    """log.csv's columns for a network whose Dice is reported per ``class_names``."""
    return (
        "epoch",
        "step",
        "lr",
        "train_loss",
        *(f"train_dice_{name}" for name in class_names),
        "val_loss",
        *(f"val_dice_{name}" for name in class_names),
        "seconds",
    )


LOG_COLUMNS = log_columns()  # sscn-twostage's: Dice per region


class RunLog:
    def __init__(
        self,
        run_dir: Path,
        resume_epoch: int,
        resume_step: int,
        class_names: tuple[str, ...] = REGION_NAMES,
    ):
        self.columns = log_columns(class_names)
        from torch.utils.tensorboard import SummaryWriter  # heavy import, main process only

        self.csv_path = run_dir / "log.csv"
        self.rows = [row for row in read_log(self.csv_path) if int(row["epoch"]) < resume_epoch]
        self._write_csv()
        self.writer = SummaryWriter(
            str(run_dir / "tensorboard"), purge_step=resume_step if resume_step else None
        )

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/step_loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        """Record one epoch's metrics (missing columns, e.g. skipped validation, stay empty)."""
        self.rows.append({column: row.get(column, "") for column in self.columns})
        self._write_csv()
        for column in self.columns[2:-1]:
            if row.get(column, "") != "":
                self.writer.add_scalar(f"epoch/{column}", row[column], row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.csv_path, buffer.getvalue())


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
