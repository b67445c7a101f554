"""Running ``sparsekits`` as a user does: a real subprocess of ``python -m sparsekits.cli``.

Output is decoded as UTF-8 whatever the locale (CI may run with none), and ``src`` is on the
child's PYTHONPATH so the checkout under test is what runs, installed or not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def cli_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "sparsekits.cli", *map(str, args)]


def cli_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_cli(*args: object, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``sparsekits ARGS`` to completion (never raises on a non-zero exit)."""
    return _run(cli_command(*args), timeout, env)


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -c CODE`` in a fresh interpreter on the checkout: what a fresh process imports."""
    return _run([sys.executable, "-c", code], timeout, {})


def _run(command: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=cli_env(**env),
        timeout=timeout,
        check=False,
    )
