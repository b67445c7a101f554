"""Fixtures of the data tests (helpers live in data_cases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_cases import write_kits_case


@pytest.fixture
def kits_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "kits"
    for k in range(2):
        write_kits_case(root, f"case_{k:05d}", seed=k)
    return root
