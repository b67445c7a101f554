"""Writing benchmark results into BENCHMARKS.md: one marked section per benchmark."""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import re
from pathlib import Path

from sparsekits.fileio import write_text_atomic

DEFAULT_REPORT = Path(__file__).resolve().parents[3] / "BENCHMARKS.md"


def machine_summary() -> str:
    """One line: CPU model, cores, RAM, OS, and the versions that matter for the figures."""
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        ram = "RAM unknown"
    cores = _cores()
    device = "no GPU"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return (
        f"{cpu}, {cores} cores, {ram}, {device}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {numpy.__version__}; "
        f"{datetime.date.today().isoformat()}"
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_note(load_at_start: float) -> str:
    """How busy the machine was: other work inflates times (not peaks), so reports state it."""
    return (
        f"Load average (1 min) on {_cores()} cores: {load_at_start:.1f} when the benchmark "
        f"started, {os.getloadavg()[0]:.1f} when it ended (its own work included). Other work "
        "inflates times, not peaks."
    )


def measured_on(command: str, load_at_start: float) -> list[str]:
    """A report's closing lines: the load, the machine and the exact command."""
    return [
        load_note(load_at_start),
        "",
        f"Machine: {machine_summary()}",
        "",
        f"Command: `{command}`",
    ]


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def update_section(key: str, body: str, report: Path = DEFAULT_REPORT) -> Path:
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
