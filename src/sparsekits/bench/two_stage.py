"""The full two-stage sparse prediction of one CT, timed the way a user runs it.

The networks carry random weights, so the ROIs come from a kidney mask through the predictor's
``foreground_hook``; the stage-1 networks still run on the whole scan, so the time is honest.
Reading and writing files are left out: they are the same for any segmentation method.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsekits.bench.measure import time_median


def measure_two_stage(
    model_dir: str,
    image_path: str,
    kidney_path: str,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    tta: bool = False,
) -> dict:
    """Fresh-process target: the model's ``predict_image`` on the CT in ``image_path``.

    ``kidney_path`` is a .npy bool mask on the CT's grid that places the stage-2 ROIs.
    """
    from sparsekits.data.io import read_image
    from sparsekits.data.stage_view import mask_foreground
    from sparsekits.predict.pipeline import load_predictor

    image = read_image(image_path)
    predictor = load_predictor(model_dir, device=device, folds=[0], tta=tta)
    predictor.foreground_hook = mask_foreground(np.load(kidney_path), image.grid)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    stage_timings: list[dict] = []

    def run() -> None:
        case = predictor.predict_image(image)
        stage_timings.append({**case.timings, "rois": len(case.rois)})

    result = time_median(run, repeats=repeats, warmup=warmup)
    result["timings_of_median_run"] = _median_run(stage_timings[warmup:], result["times_s"])
    if torch.device(device).type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _median_run(timings: list[dict], times: list[float]) -> dict:
    """The step timings of the run whose total is the median."""
    order = np.argsort(times)
    return timings[int(order[len(order) // 2])]
