"""Fixtures of the prediction tests (data helpers live in predict_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from predict_data import save_random_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("model"))
