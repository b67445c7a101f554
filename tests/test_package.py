"""Package-level promises: imports that must not pull in torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli_runner import cli_env


@pytest.mark.parametrize(
    "module", ["sparsekits.plan", "sparsekits.models", "sparsekits.models.registry"]
)
def test_importing_plans_and_configs_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
