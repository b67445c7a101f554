"""Markdown tables for reports (the demo's report.md, benchmark sections); needs no torch."""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A pipe table: ``header`` then one line per row, each cell as ``str(cell)``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
