"""What a benchmark report states about its run: the machine, the load average, the command.

Where a report is written is its caller's business (benchmarks/ writes BENCHMARKS.md).
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


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
    from sparsekits import __version__

    return (
        f"{cpu}, {cores} cores, {ram}, {device}; {platform.system()} {platform.release()}; "
        f"sparsekits {__version__}, Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {numpy.__version__}; "
        f"{datetime.date.today().isoformat()}"
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> float:
    """The 1-minute load average: read when a benchmark starts, and by ``load_note`` at its end."""
    return os.getloadavg()[0]


def load_note(load_at_start: float) -> str:
    """How busy the machine was: other work inflates times (not peaks), so reports state it."""
    return (
        f"Load average (1 min) on {_cores()} cores: {load_at_start:.1f} when the benchmark "
        f"started, {load_average():.1f} when it ended (its own work included). Other work "
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
