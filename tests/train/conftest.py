"""Fixtures of the training tests: tiny labelled datasets and their preprocessing caches."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_data import write_tiny_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 tiny KiTS23-layout cases (real NIfTI files)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "dataset", n_cases=8)


@pytest.fixture(scope="session")
def tiny_cache(tiny_dataset, tmp_path_factory) -> Path:
    """The stage-1 preprocessing cache of ``tiny_dataset``."""
    from sparsekits.data.preprocess import preprocess_dataset

    cache = tmp_path_factory.mktemp("tiny_cache") / "cache"
    preprocess_dataset(tiny_dataset, cache, roles=("roi",))
    return cache
