"""An evaluation as markdown: scores per case and lesion counts per case, each with its summary.

``rows`` and ``mean`` are an ``EvaluationResult``'s (``sparsekits.evaluate.kits23``): the mean row
holds the mean of each score but the total of each lesion count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sparsekits.evaluate.kits23 import LESION_COLUMNS
from sparsekits.markdown import markdown_table


def score_columns(row: dict) -> list[str]:
    """A row's score columns in order: Dice, Surface Dice, and ROI recall when evaluated."""
    return [column for column in row if column != "case" and column not in LESION_COLUMNS]


def scores_table(rows: Sequence[dict], mean: dict | None = None) -> str:
    """KiTS23 Dice and Surface Dice (and stage-1 ROI recall) per case, 3 decimals; then ``mean``,
    when given, as a bold last row."""
    columns = score_columns(mean if mean is not None else rows[0])
    return _table(columns, lambda value: f"{value:.3f}", rows, mean, "mean")


def lesions_table(rows: Sequence[dict], total: dict | None = None) -> str:
    """Tumours and cysts found, missed and false per case; then ``total`` (the mean row, which
    holds the totals), when given, as a bold last row."""
    return _table(list(LESION_COLUMNS), _count, rows, total, "total")


def _table(
    columns: list[str],
    cell: Callable[[object], str],
    rows: Sequence[dict],
    summary: dict | None,
    label: str,
) -> str:
    table = [[row["case"], *(cell(row[column]) for column in columns)] for row in rows]
    if summary is not None:
        table.append([f"**{label}**", *(f"**{cell(summary[column])}**" for column in columns)])
    return markdown_table(["case", *columns], table)


def _count(value) -> str:
    """A lesion count; ``:g`` for a median over runs, which may fall halfway."""
    return str(value) if isinstance(value, int) else f"{value:g}"
