"""Timing and peak memory, measured the way BENCHMARKS.md reports them.

- Time: median of several runs after warm-up (``time_median``).
- CPU memory: peak RSS of a *fresh* process that runs only the measured work
  (``run_in_fresh_process``), so nothing earlier in the benchmark inflates it.
- CUDA memory: ``torch.cuda.max_memory_allocated`` inside that process.
"""

from __future__ import annotations

import importlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_RESULT_MARK = "__SPARSEKITS_RESULT__"


def time_median(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times unmeasured, then ``repeats`` times; seconds of each run.

    Also the process CPU time of each run (all threads summed): on a shared machine it varies
    less with other people's load than the wall-clock time does.
    """
    for _ in range(warmup):
        fn()
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _sync_cuda()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "cpu_median_s": statistics.median(cpu_times),
        "cpu_times_s": cpu_times,
    }


def _sync_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM of /proc/self/status, which exec resets. ``ru_maxrss`` is not reset by exec, so
    a fresh child would report at least its parent's RSS at fork time; it is the fallback only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_in_fresh_process(
    target: str, timeout: float | None = None, python: str | None = None, **kwargs
) -> dict:
    """Call ``"package.module:function"(**kwargs)`` in a new Python process.

    The function returns a JSON-serialisable dict; this adds ``peak_rss_mb`` of that process.
    ``python`` picks another interpreter (default: this one), e.g. a separate venv whose packages
    cannot share this environment. Raises RuntimeError with the child's stderr tail if it fails.
    """
    payload = json.dumps({"target": target, "kwargs": kwargs})
    proc = subprocess.run(
        [python or sys.executable, "-m", "sparsekits.bench.measure", payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            return json.loads(line[len(_RESULT_MARK) :])
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    raise RuntimeError(f"{target} failed in a fresh process (exit {proc.returncode}):\n{tail}")


def _child_main(payload: str) -> None:
    spec = json.loads(payload)
    module_name, func_name = spec["target"].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = dict(func(**spec["kwargs"]) or {})
    result["peak_rss_mb"] = peak_rss_mb()
    print(_RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1])
