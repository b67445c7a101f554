"""The nnU-Net baseline's plumbing that runs without nnunetv2: its input volume and interpreter."""

from __future__ import annotations

import numpy as np

from sparsekits.bench import inputs
from sparsekits.bench.nnunet import KITS_3D_FULLRES, PYTHON_ENV_VAR, find_nnunet_python
from sparsekits.bench.pipeline import BenchConfig, _Bench, _nnunet_volume
from sparsekits.data.io import read_image
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE


def test_nnunet_input_is_the_central_patch_of_the_ct_at_plan_spacing(tiny_ct, tmp_path):
    ct, _ = tiny_ct
    image = read_image(ct)
    path, full_shape = _nnunet_volume(_Bench(tmp_path, "cpu", BenchConfig(), SSCN_TWOSTAGE), image)
    volume = np.load(path)
    assert volume.shape == KITS_3D_FULLRES.patch_size
    assert volume.dtype == np.float32
    grid = inputs.plan_grid(image.grid, tuple(reversed(KITS_3D_FULLRES.spacing_mm)))
    assert full_shape == list(reversed(grid.shape))  # (z, y, x), as nnU-Net orders axes
    # 72 x 60 mm in-plane at 0.78125 mm, 48 mm at 1.0 mm.
    assert full_shape == [48, 77, 93]


def test_nnunet_python_comes_from_the_environment_variable_first(monkeypatch):
    monkeypatch.setenv(PYTHON_ENV_VAR, "/opt/other/bin/python")
    assert find_nnunet_python() == "/opt/other/bin/python"
