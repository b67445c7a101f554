"""The sparse network against its dense twin on one stage's input, same weights, same voxels.

Each measurement runs in a fresh process (``sparsekits.bench.measure.run_in_fresh_process``) that
loads one model folder and one ``Sample`` written by the parent, so its peak RSS is that of the
measured inference alone (plus the interpreter, torch and the model, reported separately as
``rss_before_run_mb``). The dense twin sees the sample's whole box (the stage-1 body crop or the
stage-2 ROI crop), holding the normalised HU of the kept voxels and zeros elsewhere, which is what
``SparseTensor.dense`` gives; the sparse network sees the kept voxels only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsekits.bench.measure import peak_rss_mb, time_median
from sparsekits.data.sample import Sample, load_sample
from sparsekits.sparse import SparseTensor


def sparse_input(sample: Sample, device: torch.device) -> SparseTensor:
    """The kept voxels of ``sample`` as a batch-of-one SparseTensor."""
    coords = torch.zeros((len(sample.coords), 4), dtype=torch.int32)
    coords[:, 1:] = torch.from_numpy(sample.coords)
    return SparseTensor(torch.from_numpy(sample.features), coords).to(device)


def dense_input(sample: Sample, device: torch.device) -> torch.Tensor:
    """``sample``'s box [1, 1, X, Y, Z]: normalised HU at the kept voxels, zeros elsewhere."""
    volume = torch.zeros((1, 1, *sample.hu.shape), dtype=torch.float32)
    index = tuple(torch.from_numpy(sample.coords.T.astype(np.int64)))
    volume[(0, 0, *index)] = torch.from_numpy(sample.features[:, 0])
    return volume.to(device)


def stage_model_folder(model_dir: str | Path, stage: int) -> Path:
    """Where the benchmark keeps the weights of the stage at 1-based ``stage`` (fold 0)."""
    from sparsekits.methods.sscn_twostage import ROLES
    from sparsekits.models.bundle import fold_path

    return fold_path(Path(model_dir), ROLES[stage - 1], 0)


def measure_twin(
    model_dir: str,
    sample_path: str,
    dense: bool,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
) -> dict:
    """Fresh-process target: time one twin's forward pass on one sample (``torch.no_grad``).

    Building the input (and so, for the sparse network, its kernel maps) is part of each run.
    ``no_grad``, as in the predictor.
    """
    from sparsekits.models import load_model_folder

    device_ = torch.device(device)
    sample = load_sample(sample_path)
    model, _config, _extra = load_model_folder(
        stage_model_folder(model_dir, sample.stage), device_, dense=dense
    )
    make_input = dense_input if dense else sparse_input
    if device_.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device_)
    rss_before = peak_rss_mb()

    @torch.no_grad()
    def run() -> None:
        model(make_input(sample, device_))

    result = time_median(run, repeats=repeats, warmup=warmup)
    result["rss_before_run_mb"] = rss_before
    if device_.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device_) / 2**20
    return result


def profile_forward(
    model_dir: str, sample_path: str, dense: bool, device: str = "cpu", top: int = 8
) -> dict:
    """Fresh-process target: torch.profiler over one forward pass after a warm-up; the ops that
    dominate time (self CPU time) and memory (self CPU memory allocated), ``top`` of each."""
    from torch.profiler import ProfilerActivity, profile

    from sparsekits.models import load_model_folder

    device_ = torch.device(device)
    sample = load_sample(sample_path)
    model, _config, _extra = load_model_folder(
        stage_model_folder(model_dir, sample.stage), device_, dense=dense
    )
    make_input = dense_input if dense else sparse_input
    activities = [ProfilerActivity.CPU]
    if device_.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch.no_grad():
        model(make_input(sample, device_))
        with profile(activities=activities, profile_memory=True) as prof:
            model(make_input(sample, device_))
    events = prof.key_averages()
    rows = [
        {
            "op": event.key,
            "calls": event.count,
            "self_cpu_s": event.self_cpu_time_total / 1e6,
            "self_cpu_memory_mb": event.self_cpu_memory_usage / 2**20,
        }
        for event in events
    ]
    total_s = sum(row["self_cpu_s"] for row in rows)
    return {
        "total_self_cpu_s": total_s,
        "by_time": sorted(rows, key=lambda row: -row["self_cpu_s"])[:top],
        "by_memory": sorted(rows, key=lambda row: -row["self_cpu_memory_mb"])[:top],
    }
