"""Benchmark reports: sections of BENCHMARKS.md replaced in place and the command line they state
(benchmarks/_sections.py), the closing lines on load and machine (sparsekits.bench.report), and
the scripts loading both ways they are loaded."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from _sections import BENCHMARKS_MD, command_line, update_section
from cli_runner import cli_env
from sparsekits.bench.report import measured_on
from sparsekits.markdown import markdown_table

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


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


def test_the_default_report_is_the_checkouts_benchmarks_md():
    assert BENCHMARKS_MD == ROOT / "BENCHMARKS.md" and BENCHMARKS_MD.is_file()


def test_command_line_states_every_option_but_scratch_folders():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-gb", type=float, default=12.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--configs", default=None)
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--labels", type=Path, default=ROOT.parent / "shared" / "data" / "x")
    # A folder neither in nor beside the checkout (which may itself lie in /tmp): absolute.
    scratch = Path("/") / f"not-beside-{ROOT.parent.name}" / "scratch"
    parser.add_argument("--work", type=Path, default=scratch)
    args = parser.parse_args(["--quick", "--presets", "small paper"])
    assert command_line(str(ROOT / "benchmarks" / "ops.py"), args, omit=("work",)) == (
        "python benchmarks/ops.py --repeats 3 --limit-gb 12 --quick --presets 'small paper' "
        "--labels ../shared/data/x"
    )
    assert command_line("ops.py", args).endswith(f" --work {scratch}")


def test_measured_on_states_the_load_machine_and_command():
    lines = measured_on("python benchmarks/x.py --runs 2", 3.4)
    assert lines[0].startswith(f"Load average (1 min) on {len(os.sched_getaffinity(0))} cores: 3.4")
    assert lines[2].startswith("Machine: ") and "torch" in lines[2]
    assert lines[-1] == "Command: `python benchmarks/x.py --runs 2`"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_script_loads_as_a_script_with_benchmarks_on_sys_path(tmp_path):
    # ``python benchmarks/NAME.py``: the script's folder is on sys.path, the checkout is not.
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
        f"[runpy.run_path(path, run_name='loaded') for path in {list(map(str, SCRIPTS))!r}]"
    )
    run = _python(code, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]


def test_scripts_measured_in_fresh_processes_import_as_benchmarks_modules():
    # run_in_fresh_process("benchmarks.NAME:function") imports them from the checkout's root,
    # without benchmarks/ on sys.path: their own helpers (_sections) are imported in main only.
    names = [p.stem for p in SCRIPTS if f'"benchmarks.{p.stem}' in p.read_text()]
    assert {"ops", "demo", "preprocess"} <= set(names)
    imports = "; ".join(f"import benchmarks.{name}" for name in names)
    run = _python(
        f"import sys; assert not any(p.endswith('benchmarks') for p in sys.path); {imports}", ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
