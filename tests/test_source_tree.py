"""The library does not know where its checkout is: nothing under src/sparsekits locates files
from its own source (``__file__``) or names BENCHMARKS.md as a path; benchmarks/ writes that."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsekits"
MODULES = sorted(PACKAGE.rglob("*.py"))


def test_no_module_locates_files_from_its_own_source():
    assert len(MODULES) > 20
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name) and node.id == "__file__"
    ]
    assert offenders == []


def test_no_module_holds_a_path_to_benchmarks_md():
    # Prose may mention BENCHMARKS.md (where a figure comes from); a string that is a path to it
    # ("BENCHMARKS.md", "../BENCHMARKS.md") may not.
    path_to_report = re.compile(r"[\w./-]*BENCHMARKS\.md")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and path_to_report.fullmatch(node.value.strip())
    ]
    assert offenders == []
