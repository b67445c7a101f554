"""Package-level promises: the version, and imports that must not pull in torch."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

import sparsekits
from cli_runner import run_python
from sparsekits.models import build_model, save_model_folder
from sparsekits.models.io import CONFIG_FILE, read_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared_version() -> str:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_version_is_the_distributions_and_the_pyprojects():
    assert sparsekits.__version__ == metadata.version("sparsekits") == declared_version()


def test_version_of_a_checkout_that_was_never_installed(monkeypatch):
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert sparsekits._version().startswith("unknown")


def test_model_folder_records_the_version(tmp_path):
    folder = save_model_folder(tmp_path / "fold_0", build_model("small"), extra={})
    assert json.loads((folder / CONFIG_FILE).read_text())["sparsekits_version"] == (
        sparsekits.__version__
    )
    assert read_config(folder / CONFIG_FILE)["sparsekits_version"] == sparsekits.__version__


@pytest.mark.parametrize(
    "module", ["sparsekits.plan", "sparsekits.models", "sparsekits.models.registry"]
)
def test_importing_plans_and_configs_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
