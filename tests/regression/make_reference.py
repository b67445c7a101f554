"""Make the sscn-twostage regression reference: a small trained model, a phantom, and what
the two-stage predictor of this commit makes of it (label map and float32 probabilities).

Run once, on the code whose output is the reference (``python tests/regression/make_reference.py``);
``test_sscn_twostage_regression.py`` then checks that later code gives the same result.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "sscn_twostage"
ROWS = 5_000  # stage-2 rows kept per ROI (a seeded sample), plus each ROI's column sums


def main() -> None:
    from sparsekits.data.io import read_image
    from sparsekits.data.preprocess import preprocess_dataset
    from sparsekits.demo import QUICK, demo_plan, write_demo_phantoms
    from sparsekits.models.bundle import assemble_model
    from sparsekits.plan import Recipe
    from sparsekits.train.trainer import TrainConfig, train

    recipe = Recipe(epochs=1, samples_per_epoch=24, accumulation=1, lr=1e-2, augment=False)
    stage2 = dataclasses.replace(recipe, samples_per_epoch=24, patch_vox=32)
    config = dataclasses.replace(QUICK, plan=demo_plan(recipe, stage2))
    work = Path(tempfile.mkdtemp())
    try:
        write_demo_phantoms(work, config)
        preprocess_dataset(work / "data", work / "cache", config.plan, workers=1)
        runs = []
        for stage in (1, 2):
            run = TrainConfig(
                work / "cache", stage, 0, work / f"run{stage}", plan=config.plan, num_workers=0
            )
            result = train(run)
            runs.append(result.run_dir)
        shutil.rmtree(REFERENCE, ignore_errors=True)
        assemble_model(runs, REFERENCE / "model")
        phantom = sorted((work / "test").glob("case_*"))[0] / "imaging.nii.gz"
        shutil.copy(phantom, REFERENCE / "phantom.nii.gz")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    arrays = reference_outputs(read_image(REFERENCE / "phantom.nii.gz"), REFERENCE / "model")
    np.savez_compressed(REFERENCE / "expected.npz", **arrays)
    print(f"reference -> {REFERENCE}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


def reference_outputs(image, model_dir: Path) -> dict[str, np.ndarray]:
    """Labels on the input grid, stage-1 and per-ROI stage-2 float32 probabilities."""
    from sparsekits.data.stage_view import stage1_view
    from sparsekits.predict.inference import predict_probabilities
    from sparsekits.predict.pipeline import TwoStagePredictor

    predictor = TwoStagePredictor(model_dir)
    view1 = stage1_view(image, predictor.plan.stage(1))
    (stage1,) = predictor_probabilities(predict_probabilities, predictor.stage1, view1)
    case = predictor.predict_image(image, keep_probabilities=True)
    arrays = {"labels": case.labels, "stage1_coords": view1.coords, "stage1": stage1}
    for roi in case.rois:
        (fine,) = predict_probabilities(
            predictor.stage2, [(roi.coords, _features(image, case, roi, predictor))]
        )
        rows = np.random.default_rng(roi.index).choice(len(fine), min(ROWS, len(fine)), False)
        arrays[f"roi{roi.index}_rows"] = rows
        arrays[f"roi{roi.index}_coords"] = roi.coords[rows]
        arrays[f"roi{roi.index}"] = fine[rows]
        arrays[f"roi{roi.index}_sum"] = fine.astype(np.float64).sum(axis=0)
    return arrays


def predictor_probabilities(function, networks, view):
    return function(networks, [(view.coords, view.features)])


def _features(image, case, roi, predictor):
    from sparsekits.data.roi import extract_roi_components
    from sparsekits.data.stage_view import stage1_view, stage2_view
    from sparsekits.predict.pipeline import _dense_mask, _roi_probability

    plan = predictor.plan
    view1 = stage1_view(image, plan.stage(1))
    from sparsekits.predict.inference import predict_probabilities

    (p1,) = predict_probabilities(predictor.stage1, [(view1.coords, view1.features)])
    kept = _roi_probability(p1, plan.roi) >= plan.roi.probability_threshold
    foreground = _dense_mask(view1.grid.shape, view1.coords, kept)
    components = extract_roi_components(foreground, plan.stage(1).spacing_mm, plan.roi)
    view2 = stage2_view(image, components[roi.index], view1.grid, plan.stage(2))
    assert np.array_equal(view2.coords, roi.coords)
    return view2.features


if __name__ == "__main__":
    sys.exit(main())
