"""Peak memory and time of the paper network's inference forward on ~1 M active voxels (CPU).

The sparse network runs on ``--voxels`` active voxels of a locally dense, CT-like mask (an
ellipsoidal body with smooth blobs of kept tissue, as a HU window leaves it); the dense twin runs
on the bounding box of those voxels. Each measurement is a fresh process (peak RSS includes the
Python interpreter, torch and the weights) under ``torch.inference_mode``; the time is the median
of ``--repeats`` forwards after ``--warmup`` ones, each including the kernel-map build (a new case
builds its maps). The dense twin is first measured on a grid 8x smaller; when its peak,
extrapolated, exceeds ``--dense-limit-gb``, the full-size dense run is skipped and the estimate
reported instead.

Command (from the repository root):
    python benchmarks/model_memory.py --voxels 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsekits.bench.measure import run_in_fresh_process, time_median
from sparsekits.bench.report import load_average, measured_on
from sparsekits.markdown import markdown_table

REPO = Path(__file__).resolve().parents[1]
TARGET = "benchmarks.model_memory:measure_forward"
KEPT_FRACTION = 0.6  # of the body's voxels, as a soft-tissue HU window keeps them
ELLIPSOID_FILL = 3.14159 / 6


def ct_like_mask(voxels: int, seed: int = 0) -> torch.Tensor:
    """Bool [1, D, H, W] with exactly ``voxels`` active voxels, cropped to their bounding box."""
    generator = torch.Generator().manual_seed(seed)
    side = (voxels / (KEPT_FRACTION * ELLIPSOID_FILL * 0.8)) ** (1 / 3)
    shape = (round(0.8 * side), round(side), round(side))
    axes = [torch.linspace(-1, 1, size) for size in shape]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    body = z**2 + y**2 + x**2 <= 1
    coarse = torch.rand((1, 1, *(size // 8 + 2 for size in shape)), generator=generator)
    blobs = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0, 0]
    score = torch.where(body, blobs, -1.0).flatten()
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    mask[score.topk(voxels).indices] = True
    mask = mask.view(shape)
    low = [int(i.min()) for i in mask.nonzero().unbind(1)]
    high = [int(i.max()) + 1 for i in mask.nonzero().unbind(1)]
    return mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]][None]


def measure_forward(
    twin: str, voxels: int, repeats: int, warmup: int = 1, scale: float = 1.0
) -> dict:
    """Run in a fresh process: forwards of the paper preset's ``twin`` ("sparse" or "dense").

    ``scale`` < 1 shrinks the dense grid's volume by about that factor (for the extrapolation).
    ``baseline_mb`` is the peak RSS before the first forward (interpreter, torch, weights, input).
    """
    from sparsekits.bench.measure import peak_rss_mb
    from sparsekits.models import build_model
    from sparsekits.sparse import SparseTensor

    torch.manual_seed(0)
    mask = ct_like_mask(voxels)
    model = build_model("paper", dense=twin == "dense").eval()
    if twin == "dense":
        shape = [max(1, round(size * scale ** (1 / 3))) for size in mask.shape[1:]]
        volume = torch.randn(1, 1, *shape)
        size = volume.numel()

        def forward():
            return model(volume)
    else:
        shape = list(mask.shape[1:])
        coords = mask.nonzero().int()
        features = torch.randn(len(coords), 1)
        size = len(coords)

        def forward():
            return model(SparseTensor(features, coords))

    del mask
    baseline = peak_rss_mb()
    with torch.inference_mode():
        timing = time_median(forward, repeats=repeats, warmup=warmup)
    return {
        "twin": twin,
        "voxels": size,
        "grid": shape,
        "threads": torch.get_num_threads(),
        "baseline_mb": baseline,
        **timing,
    }


def run(voxels: int, repeats: int, warmup: int, dense_limit_gb: float) -> dict:
    """Both twins, each in fresh processes; the dense twin at full size only if it fits."""
    os.chdir(REPO)  # the fresh process imports this file as benchmarks.model_memory
    runs = {"voxels": voxels, "repeats": repeats, "warmup": warmup}
    sparse = run_in_fresh_process(TARGET, twin="sparse", **runs)
    probe = run_in_fresh_process(TARGET, twin="dense", **{**runs, "repeats": 1}, scale=1 / 8)
    grid_voxels = sparse["grid"][0] * sparse["grid"][1] * sparse["grid"][2]
    growth = grid_voxels / probe["voxels"]
    estimate_mb = probe["baseline_mb"] + growth * (probe["peak_rss_mb"] - probe["baseline_mb"])
    results = {"sparse": sparse, "dense_probe": probe, "dense_estimate_mb": estimate_mb}
    if estimate_mb <= dense_limit_gb * 1024:
        results["dense"] = run_in_fresh_process(TARGET, twin="dense", **runs)
    return results


def report(results: dict, command: str, limit_gb: float, load_at_start: float) -> str:
    sparse, probe = results["sparse"], results["dense_probe"]
    grid = "x".join(str(size) for size in sparse["grid"])
    rows = [row("sparse (active voxels)", sparse)]
    dense = results.get("dense")
    if dense is not None:
        rows.append(row(f"dense twin (bounding box {grid})", dense))
    else:
        rows.append([f"dense twin (bounding box {grid})", "-", "skipped", "-", "-"])
    rows.append(row("dense twin, 1/8 grid (probe)", probe))
    estimate = results["dense_estimate_mb"]
    lines = [
        "## Model memory: paper network, CPU inference (`torch.inference_mode`)",
        "",
        markdown_table(["run", "voxels", "peak RSS (MiB)", "median time (s)", "times (s)"], rows),
        "",
        f"Dense twin on the bounding box, extrapolated from the 1/8 probe: {estimate:,.0f} MiB"
        + ("" if dense is not None else f" (over the {limit_gb:g} GB limit: not run)")
        + ".",
        "Peak RSS of a fresh process per row (Python, torch, the 27.5 M weights and the input "
        f"included; before the first forward: {sparse['baseline_mb']:,.0f} MiB sparse). "
        f"Threads: {sparse['threads']}. Each forward builds its kernel maps.",
        *measured_on(command, load_at_start),
    ]
    return "\n".join(lines)


def row(name: str, result: dict) -> list:
    times = ", ".join(f"{t:.1f}" for t in result["times_s"])
    return [
        name,
        f"{result['voxels']:,}",
        f"{result['peak_rss_mb']:,.0f}",
        f"{result['median_s']:.1f}",
        times,
    ]


def main() -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dense-limit-gb", type=float, default=8.0)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = command_line(__file__, args)
    start, load_at_start = time.perf_counter(), load_average()
    results = run(args.voxels, args.repeats, args.warmup, args.dense_limit_gb)
    body = report(results, command, args.dense_limit_gb, load_at_start)
    print(body)
    print(f"(benchmark wall time {time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        update_section("model_memory", body)


if __name__ == "__main__":
    main()
