"""Each sparse op against its dense PyTorch twin: time and peak memory on locally dense volumes.

Command (from the repository root):

    python benchmarks/ops.py [--quick] [--device cpu|cuda]

Inputs look like CT tissue, not uniform noise: Gaussian noise on a 1/4-resolution grid,
trilinearly upsampled and thresholded at the quantile that leaves the requested occupancy
(5, 15, 30, 60 %), one sample per batch. Sparse inputs are built from that mask alone (random
features at its voxels), dense inputs are the zero-filled volume.

Each measurement runs in a fresh process (``run_in_fresh_process``): it builds its input, runs the
op once as warm-up and then three times (``time_median``); wall-clock and process CPU-time
medians are reported. Memory is the peak RSS of that process (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA), inputs included; "net" subtracts the RSS of a fresh
process that only imports torch and sparsekits. Sparse times exclude the kernel-map build,
which a network pays once per level and coordinate set; it is reported in its own table.
Dense twins do not depend on occupancy, so each is measured once per shape and channel count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparsekits.bench.measure import run_in_fresh_process, time_median
from sparsekits.bench.report import load_average, measured_on
from sparsekits.markdown import markdown_table

REPO = Path(__file__).resolve().parents[1]
TARGET = "benchmarks.ops"
SECTION = "ops"
OCCUPANCIES = (0.05, 0.15, 0.30, 0.60)
# Targets of issue 2 (30 % occupancy of 128^3 on the 2-core CPU): speed-up and memory ratio.
TARGET_SPEEDUP, TARGET_MEMORY_RATIO = 2.0, 0.5


@dataclass(frozen=True)
class Case:
    op: str  # depthwise | full | down | inverse | layernorm | grn
    size: int
    channels: int
    modes: tuple[str, ...] = ("forward", "forward+backward")
    occupancies: tuple[float, ...] = (0.30,)


def benchmark_cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("depthwise", 64, 64, ("forward",)), Case("full", 64, 32, ("forward",))]
    cases = [Case("depthwise", 128, 64, occupancies=OCCUPANCIES)]
    cases.append(Case("full", 128, 32, occupancies=OCCUPANCIES))
    cases += [Case("depthwise", 64, 16), Case("depthwise", 64, 256, ("forward",))]
    cases += [Case("full", 64, c) for c in (16, 64)]
    cases += [Case(op, 64, c) for op in ("down", "inverse", "layernorm", "grn") for c in (16, 256)]
    return cases


# -- inputs ---------------------------------------------------------------------------------------
def tissue_mask(size: int, occupancy: float, seed: int = 0) -> torch.Tensor:
    """Bool [1, D, H, W]: thresholded smooth noise, blobs a few voxels to tens of voxels across."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 1, size // 4, size // 4, size // 4), generator=gen)
    smooth = F.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=False)[0]
    threshold = torch.quantile(smooth.flatten()[::7], 1.0 - occupancy)
    return smooth > threshold


def _sparse_input(size: int, occupancy: float, channels: int, device: str, grad: bool):
    from sparsekits.sparse import SparseTensor

    coords = tissue_mask(size, occupancy).nonzero().int().to(device)
    features = torch.randn(len(coords), channels, device=device, requires_grad=grad)
    return SparseTensor(features, coords, batch_size=1)


def _dense_input(mask: torch.Tensor, channels: int, device: str, grad: bool) -> torch.Tensor:
    volume = torch.randn((1, channels, *mask.shape[1:]), device=device)
    volume.mul_(mask.to(device))  # in place: no second full-size copy
    return volume.requires_grad_(grad)


# -- the ops and their dense twins ---------------------------------------------------------------
def _sparse_op(op: str, size: int, occupancy: float, c: int, device: str, grad: bool):
    """Builds the sparse input and returns a function that runs the op on it."""
    from sparsekits import sparse as sp

    x = _sparse_input(size, occupancy, 1 if op == "inverse" else c, device, grad)
    if op in ("depthwise", "full"):
        conv = sp.SubMConv3d(c, c, 3, groups=c if op == "depthwise" else 1).to(device)
        x.kernel_maps.neighbours(3)  # built once per level in a network: timed separately
        return lambda: conv(x).features
    if op == "down":
        down = sp.SparseConv3d(c, c).to(device)
        return lambda: down(x).features
    if op == "inverse":  # from the coarse level back onto x's coordinates
        with torch.no_grad():
            coarse = sp.SparseAvgPool3d(2)(x)  # the coarse level, sharing x's child map
        coarse = coarse.replace(torch.randn(len(coarse), c, device=device, requires_grad=grad))
        up = sp.SparseInverseConv3d(c, c).to(device)
        return lambda: up(coarse, x).features
    norm = (sp.SparseLayerNorm(c) if op == "layernorm" else sp.SparseGRN(c)).to(device)
    return lambda: norm(x).features


def _dense_op(op: str, size: int, occupancy: float, c: int, device: str, grad: bool):
    """The twin on the zero-filled volume, with nn layers as a dense ConvNeXt uses them."""
    mask = tissue_mask(size, occupancy)
    if op == "inverse":
        coarse = _dense_input(F.max_pool3d(mask[None].float(), 2)[0] > 0, c, device, grad)
        up = torch.nn.ConvTranspose3d(c, c, 2, stride=2).to(device)
        return lambda: up(coarse)
    volume = _dense_input(mask, c, device, grad)
    if op in ("depthwise", "full"):
        conv = torch.nn.Conv3d(c, c, 3, padding=1, groups=c if op == "depthwise" else 1)
        conv = conv.to(device)
        return lambda: conv(volume)
    if op == "down":
        down = torch.nn.Conv3d(c, c, 2, stride=2).to(device)
        return lambda: down(volume)
    if op == "layernorm":
        norm = torch.nn.LayerNorm(c, eps=1e-6).to(device)
        return lambda: norm(volume.permute(0, 2, 3, 4, 1))
    gamma = torch.zeros(1, 1, 1, 1, c, device=device, requires_grad=True)
    beta = torch.zeros(1, 1, 1, 1, c, device=device, requires_grad=True)

    def grn():  # ConvNeXt V2 GRN, channels-last
        x = volume.permute(0, 2, 3, 4, 1)
        g = torch.norm(x, p=2, dim=(1, 2, 3), keepdim=True)
        return gamma * (x * (g / (g.mean(dim=-1, keepdim=True) + 1e-6))) + beta + x

    return grn


def measure_op(
    op: str, twin: str, size: int, occupancy: float, channels: int, mode: str, device: str
) -> dict:
    """Runs in a fresh process: build the input, warm up, time three runs."""
    torch.manual_seed(0)
    backward = mode == "forward+backward"
    make = _sparse_op if twin == "sparse" else _dense_op
    run = make(op, size, occupancy, channels, device, backward)
    cpu_times: list[float] = []

    def step() -> None:
        start = time.process_time()
        if backward:
            run().sum().backward()
        else:
            with torch.no_grad():
                run()
        cpu_times.append(time.process_time() - start)

    timing = time_median(step, repeats=3, warmup=1)
    result = {"median_s": timing["median_s"], "cpu_s": statistics.median(cpu_times[1:])}
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def measure_kernel_map(size: int, occupancy: float, device: str) -> dict:
    """Validation (duplicate check) + coordinate index + 3x3x3 neighbour map, median of three."""
    from sparsekits.sparse import SparseTensor

    coords = tissue_mask(size, occupancy).nonzero().int().to(device)
    features = torch.zeros(len(coords), 1, device=device)

    def build() -> None:
        SparseTensor(features, coords).kernel_maps.neighbours(3)

    return {"median_s": time_median(build, repeats=3, warmup=1)["median_s"], "voxels": len(coords)}


def baseline() -> dict:
    import sparsekits.sparse  # noqa: F401  (the imports every measurement pays)

    return {}


# -- driver --------------------------------------------------------------------------------------
def _memory(result: dict, device: str, base_mb: float) -> float:
    if device == "cuda":
        return result["cuda_peak_mb"]
    return result["peak_rss_mb"] - base_mb


def run_benchmark(quick: bool, device: str) -> tuple[list[list[object]], list[list[object]]]:
    base_mb = run_in_fresh_process(f"{TARGET}:baseline")["peak_rss_mb"]
    jobs = []  # (case, mode, twin, occupancy); a dense twin is the same at every occupancy
    for case in benchmark_cases(quick):
        for mode in case.modes:
            jobs.append((case, mode, "dense", case.occupancies[0]))
            jobs += [(case, mode, "sparse", occ) for occ in case.occupancies]
    results: dict[tuple, dict] = {}
    for case, mode, twin, occ in tqdm(jobs, desc="ops", unit="run"):
        key = (case, mode, twin, occ if twin == "sparse" else None)
        results[key] = run_in_fresh_process(
            f"{TARGET}:measure_op",
            op=case.op,
            twin=twin,
            size=case.size,
            occupancy=occ,
            channels=case.channels,
            mode=mode,
            device=device,
        )
        tqdm.write(f"{case.op} {case.size}^3 C={case.channels} {mode} {twin} {occ}: {results[key]}")
    rows = []
    for case, mode, twin, occ in jobs:
        if twin != "sparse":
            continue
        sparse, dense = results[(case, mode, twin, occ)], results[(case, mode, "dense", None)]
        sparse_mb, dense_mb = _memory(sparse, device, base_mb), _memory(dense, device, base_mb)
        rows.append(
            [
                case.op,
                f"{case.size}^3",
                f"{occ:.0%}",
                case.channels,
                mode,
                f"{sparse['median_s'] * 1e3:.0f} / {dense['median_s'] * 1e3:.0f}",
                f"{sparse['cpu_s'] * 1e3:.0f} / {dense['cpu_s'] * 1e3:.0f}",
                f"{dense['median_s'] / sparse['median_s']:.2f}x",
                f"{sparse_mb:.0f} / {dense_mb:.0f}",
                f"{sparse_mb / dense_mb:.2f}",
            ]
        )
    map_rows = []
    for occ in OCCUPANCIES if not quick else (0.30,):
        size = 64 if quick else 128
        built = run_in_fresh_process(
            f"{TARGET}:measure_kernel_map", size=size, occupancy=occ, device=device
        )
        map_rows.append([f"{size}^3", f"{occ:.0%}", built["voxels"], f"{built['median_s']:.3f}"])
    return rows, map_rows


def report(rows, map_rows, device: str, command: str, load_at_start: float) -> str:
    memory = "CUDA max_memory_allocated" if device == "cuda" else "peak RSS above baseline"
    header = [
        "op",
        "grid",
        "occupancy",
        "C",
        "pass",
        "wall ms sparse / dense",
        "CPU ms sparse / dense",
        "speed-up (wall)",
        f"MiB sparse / dense ({memory})",
        "memory ratio",
    ]
    return "\n\n".join(
        [
            "## Sparse ops vs dense twins (`benchmarks/ops.py`)",
            "\n".join(measured_on(command, load_at_start)),
            "Sparse and dense are measured in separate fresh processes, so the CPU-time column "
            "(process time, both threads summed) is the steadier comparison.",
            markdown_table(header, rows),
            "Kernel-map build (validation with duplicate check, coordinate index, 3x3x3 "
            "neighbour map), paid once per coordinate set and level:",
            markdown_table(["grid", "occupancy", "voxels", "seconds"], map_rows),
            WHAT_BOUNDS_SPEED,
        ]
    )


WHAT_BOUNDS_SPEED = """\
**What bounds the speed.** The depthwise submanifold conv is bound by gather bandwidth: each
output row reads 27 neighbour rows through `index_select` into a cache-sized buffer and reduces
them (multiply and sum over the 27 offsets), i.e. about 4 passes over N x 27 x C values with no
arithmetic reuse; the dense depthwise conv is no better off per voxel but pays for every voxel of
the box. The full conv is a gather (im2col of the 27 neighbours) followed by one GEMM per chunk;
at C <= 64 the GEMM dominates and the sparse speed-up approaches 1 / occupancy. The down/inverse
convs are one scatter or gather plus one GEMM. What would lift it: a fused gather-multiply-reduce
kernel (Triton on CUDA, or a small C++/OpenMP kernel on CPU) that never materialises the gathered
block, bf16 features to halve the traffic, and (on CUDA) implicit-GEMM over the neighbour map
like spconv/TorchSparse.
"""


def main(argv: list[str] | None = None) -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (one minute)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    os.chdir(REPO)  # the fresh processes import this file as benchmarks.ops
    load_at_start = load_average()
    rows, map_rows = run_benchmark(args.quick, args.device)
    body = report(rows, map_rows, args.device, command_line(__file__, args), load_at_start)
    print(body)
    update_section(SECTION if args.device == "cpu" else f"{SECTION}_cuda", body)


if __name__ == "__main__":
    main()
