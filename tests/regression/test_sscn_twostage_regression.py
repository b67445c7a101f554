"""The sscn-twostage method gives the result it gave before the method plug-in refactor.

``make_reference.py`` trained the small model in ``sscn_twostage/model`` and recorded what the
two-stage predictor made of ``sscn_twostage/phantom.nii.gz`` (commit "regression reference").
Floating point may differ in its last bits between code paths, so probabilities must agree
within 1e-5 and labels exactly, except where a probability lies within 1e-4 of a threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
from make_reference import REFERENCE, reference_outputs

TOLERANCE = 1e-5
NEAR_THRESHOLD = 1e-4


@pytest.fixture(scope="module")
def outputs() -> tuple[dict, dict]:
    from sparsekits.data.io import read_image

    expected = dict(np.load(REFERENCE / "expected.npz"))
    actual = reference_outputs(read_image(REFERENCE / "phantom.nii.gz"), REFERENCE / "model")
    return expected, actual


def test_same_stage1_voxels_and_probabilities(outputs):
    expected, actual = outputs
    np.testing.assert_array_equal(actual["stage1_coords"], expected["stage1_coords"])
    np.testing.assert_allclose(actual["stage1"], expected["stage1"], rtol=0, atol=TOLERANCE)


def test_same_rois_and_stage2_probabilities(outputs):
    expected, actual = outputs
    rois = sorted(key for key in expected if key.startswith("roi") and key[3:].isdigit())
    assert rois, "the reference holds no ROI: it would not test stage 2"
    assert sorted(k for k in actual if k.startswith("roi") and k[3:].isdigit()) == rois
    for roi in rois:
        np.testing.assert_array_equal(actual[f"{roi}_rows"], expected[f"{roi}_rows"])
        np.testing.assert_array_equal(actual[f"{roi}_coords"], expected[f"{roi}_coords"])
        np.testing.assert_allclose(actual[roi], expected[roi], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(actual[f"{roi}_sum"], expected[f"{roi}_sum"], rtol=1e-5)


def test_same_label_map(outputs):
    expected, actual = outputs
    assert set(np.unique(expected["labels"])) >= {0, 1, 2}
    differ = actual["labels"] != expected["labels"]
    if differ.any():  # only where some probability sits at a threshold
        near = sum(
            int((np.abs(expected[key] - 0.5) < NEAR_THRESHOLD).sum())
            for key in expected
            if key.startswith("roi") and key[3:].isdigit()
        )
        assert near > 0, f"{differ.sum()} voxels differ with no probability near a threshold"
