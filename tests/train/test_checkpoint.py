"""Checkpoints: safe loading (weights_only), atomic writes, RNG states that resume exactly."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from sparsekits.errors import InputError
from sparsekits.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), random.gauss(0, 1)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.standard_normal()
    state = capture_rng_state()
    expected = _draw()
    path = save_checkpoint(tmp_path / "state.pt", {"rng": state, "step": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left behind
    _draw()  # move every generator on
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3
    restore_rng_state(loaded["rng"])
    assert _draw() == expected


def test_foreign_or_missing_files_are_refused_in_one_line(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"x": argparse.Namespace(a=1)}, evil)  # any pickled object is refused
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (evil, garbage):
        with pytest.raises(InputError, match="not a readable training checkpoint"):
            load_checkpoint(path)
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
