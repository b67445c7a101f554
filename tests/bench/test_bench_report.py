"""Writing BENCHMARKS.md: sections replaced in place, others kept; closing lines state the load."""

from __future__ import annotations

import os

from sparsekits.bench.report import markdown_table, measured_on, update_section


def test_update_section_replaces_its_own_section_and_keeps_the_others(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    update_section("ops", "## Ops\nfirst", report)
    update_section("demo", "## Demo\n" + markdown_table(["a", "b"], [[1, 2]]), report)
    update_section("ops", "## Ops\nsecond", report)
    text = report.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "first" not in text and text.count("<!-- BEGIN ops -->") == 1
    assert text.index("second") < text.index("## Demo")  # replaced where it was
    assert "| a | b |\n|---|---|\n| 1 | 2 |" in text
    # Written atomically: no temporary file is left beside the report and its lock.
    assert sorted(path.name for path in tmp_path.iterdir()) == [".BENCHMARKS.md.lock", report.name]


def test_measured_on_states_the_load_machine_and_command():
    lines = measured_on("python benchmarks/x.py --runs 2", 3.4)
    assert lines[0].startswith(f"Load average (1 min) on {len(os.sched_getaffinity(0))} cores: 3.4")
    assert lines[2].startswith("Machine: ") and "torch" in lines[2]
    assert lines[-1] == "Command: `python benchmarks/x.py --runs 2`"
