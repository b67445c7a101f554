"""Make the sscn-twostage regression reference: a small trained model, a phantom, and what
the two-stage predictor of this commit makes of it (label map and float32 probabilities).

The reference in ``sscn_twostage/`` was made at commit 54a0031, before the method plug-in
refactor, by this script as it stood then (it read the probabilities through the predictor's
internals of that time); ``reference_outputs`` now reads them through today's API, and
``test_sscn_twostage_regression.py`` checks that they are still the same. The model folder is in
the layout of that time (``stage1/``, ``stage2/``), so the test also covers reading it.
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
    from sparsekits.demo import QUICK, write_demo_phantoms
    from sparsekits.methods.sscn_twostage import demo_plan
    from sparsekits.models.bundle import assemble_model
    from sparsekits.plan import Recipe
    from sparsekits.train.trainer import TrainConfig, train

    recipe = Recipe(epochs=1, samples_per_epoch=24, accumulation=1, lr=1e-2, augment=False)
    plan = demo_plan(recipe, dataclasses.replace(recipe, patch_vox=32))
    work = Path(tempfile.mkdtemp())
    try:
        write_demo_phantoms(work, QUICK)
        preprocess_dataset(work / "data", work / "cache", plan, workers=1)
        runs = []
        for stage in plan.roles:
            run = TrainConfig(
                work / "cache", stage, 0, work / f"run{stage}", plan=plan, num_workers=0
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
    """Labels on the input grid, roi-stage and per-ROI fine-stage float32 probabilities."""
    from sparsekits.methods.sscn_twostage.chain import roi_view
    from sparsekits.predict.inference import predict_probabilities
    from sparsekits.predict.pipeline import load_predictor

    predictor = load_predictor(model_dir)
    view = roi_view(image, predictor.plan)
    (stage1,) = predict_probabilities(predictor.roi_nets, [(view.coords, view.features)])
    case = predictor.predict_image(image, keep_probabilities=True)
    arrays = {"labels": case.labels, "stage1_coords": view.coords, "stage1": stage1}
    for roi in case.rois:
        fine = roi.probabilities
        assert fine.dtype == np.float32
        rows = np.random.default_rng(roi.index).choice(len(fine), min(ROWS, len(fine)), False)
        arrays[f"roi{roi.index}_rows"] = rows
        arrays[f"roi{roi.index}_coords"] = roi.coords[rows]
        arrays[f"roi{roi.index}"] = fine[rows]
        arrays[f"roi{roi.index}_sum"] = fine.astype(np.float64).sum(axis=0)
    return arrays


if __name__ == "__main__":
    sys.exit(main())
