"""An evaluation as markdown (report.md, BENCHMARKS.md): scores and lesion counts per case."""

from __future__ import annotations

from sparsekits.evaluate.kits23 import (
    LESION_COLUMNS,
    METRIC_COLUMNS,
    ROI_RECALL_COLUMN,
    lesion_summary,
    mean_row,
)
from sparsekits.evaluate.tables import lesions_table, score_columns, scores_table


def case(name: str, score: float, tumours_found: int, cysts_false: int) -> dict:
    counts = dict.fromkeys(LESION_COLUMNS, 0) | {
        "tumours_found": tumours_found,
        "tumours_missed": 1 - tumours_found,
        "cysts_false": cysts_false,
    }
    return {"case": name, **dict.fromkeys(METRIC_COLUMNS, score), **counts, ROI_RECALL_COLUMN: 1.0}


ROWS = [case("case_00000", 0.9, 1, 0), case("case_00001", 0.5, 0, 2)]
MEAN = mean_row(ROWS)  # means of the scores, totals of the counts


def test_scores_are_per_case_then_the_bold_mean_without_lesion_counts():
    assert score_columns(MEAN) == [*METRIC_COLUMNS, ROI_RECALL_COLUMN]
    lines = scores_table(ROWS, MEAN).splitlines()
    assert lines[0] == "| " + " | ".join(["case", *METRIC_COLUMNS, ROI_RECALL_COLUMN]) + " |"
    assert lines[2] == "| case_00000 | " + "0.900 | " * 6 + "1.000 |"
    assert lines[4] == "| **mean** | " + "**0.700** | " * 6 + "**1.000** |"
    assert len(lines) == 5


def test_lesion_counts_are_per_case_then_the_bold_totals():
    lines = lesions_table(ROWS, MEAN).splitlines()
    assert lines[0] == "| " + " | ".join(["case", *LESION_COLUMNS]) + " |"
    # tumours found, missed, false; cysts found, missed, false
    assert lines[2] == "| case_00000 | 1 | 0 | 0 | 0 | 0 | 0 |"
    assert lines[3] == "| case_00001 | 0 | 1 | 0 | 0 | 0 | 2 |"
    assert lines[4] == "| **total** | **1** | **1** | **0** | **0** | **0** | **2** |"


def test_a_summary_alone_is_one_bold_row_and_a_median_count_may_fall_halfway():
    median = {**MEAN, "tumours_found": 1.5}
    assert scores_table([], mean=median).splitlines()[2].startswith("| **mean** | **0.700** |")
    assert lesions_table([], total=median).splitlines()[2].startswith("| **total** | **1.5** |")


def test_lesion_summary_reads_found_of_ground_truth_and_false():
    assert lesion_summary(MEAN, "tumours") == "1/2 found, 0 false"
    assert lesion_summary(ROWS[1], "cysts") == "0/0 found, 2 false"
