"""What the benchmark scripts share: the report they write (BENCHMARKS.md at the checkout's root),
its section writer, and the command line a section states.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``: they
import this module as ``_sections``. A script whose functions also run in fresh processes (which
import it as ``benchmarks.NAME``, without this folder on ``sys.path``) imports it inside ``main``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from sparsekits.fileio import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def update_section(key: str, body: str, report: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the section marked ``key`` in ``report``, keeping the other sections.

    A lock file serialises concurrent benchmark processes writing the same report.
    """
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    lock_path = report.with_name(f".{report.name}.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = report.read_text() if report.exists() else "# Benchmarks\n"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        write_text_atomic(report, text)
    return report


def command_line(script: str, args: argparse.Namespace, omit: Iterable[str] = ()) -> str:
    """How to run ``script`` again from the checkout's root: ``python benchmarks/NAME.py`` and
    every option it ran with, defaults included, in ``args``' order.

    Flags that are off and options that are None are left out, as are the names in ``omit``
    (scratch folders: where a run works, not what it measures). Floats are written with ``:g``,
    a path in the checkout's folder or beside it (``../shared/data``) relative to the checkout.
    """
    words = [f"python benchmarks/{Path(script).name}"]
    for name, value in vars(args).items():
        if name in omit or value is None or value is False:
            continue
        option = "--" + name.replace("_", "-")
        words.append(option if value is True else f"{option} {_shown(value)}")
    return " ".join(words)


def _shown(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path) and value.resolve().is_relative_to(ROOT.parent):
        value = os.path.relpath(value.resolve(), ROOT)
    return shlex.quote(str(value))
