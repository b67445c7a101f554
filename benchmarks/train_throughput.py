"""Training throughput: optimiser steps per second and peak memory, sparse vs the dense twin.

One step is what training does per sample with accumulation 1: forward, deep-supervision Dice
loss, backward and an AdamW step (``sparsekits.train.optim``), batch 1, float32 on CPU and bf16
autocast on CUDA. The sample is the stage-1 view (1.99 mm, HU window) of one real-size phantom:
built around the real KiTS23 label map case_00000 (611 x 512 x 512 at 0.5 x 0.92 x 0.92 mm) when
../shared/data is present, else a synthetic phantom of a similar extent. The dense twin has the
same weights and runs on the sample's dense grid (normalised HU where the window keeps a voxel,
0 elsewhere), with the same loss on all voxels.

Each row is a fresh process (peak RSS includes Python, torch and the weights; on CUDA the peak
allocated memory is reported too). Every twin and preset is measured on a centre crop around the
kidneys first; the full-size run of a configuration is skipped, with its memory extrapolated from
the crop by voxel count, when that estimate exceeds ``--limit-gb``.

Command (from the repository root):
    python benchmarks/train_throughput.py --repeats 3 --limit-gb 7 --limit-s 600
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparsekits.bench.measure import run_in_fresh_process, time_median
from sparsekits.bench.report import load_average, measured_on
from sparsekits.markdown import markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED_LABELS = REPO.parent / "shared" / "data" / "kits23-labels" / "case_00000.nii.gz"
TARGET = "benchmarks.train_throughput:measure_steps"
CROP = (64, 96, 96)  # voxels (x, y, z) of the crop both twins run on
BASELINE_KEY = "baseline_mb"


def prepare_sample(work: Path) -> tuple[Path, str]:
    """The stage-1 cache sample of one real-size phantom (written once into ``work``)."""
    from sparsekits.data.preprocess import preprocess_dataset
    from sparsekits.phantoms import make_phantom, write_case

    sample = work / "cache" / "roi" / "case_00000.npz"
    if SHARED_LABELS.is_file():
        source = "phantom around the real KiTS23 label map case_00000"
    else:
        source = "synthetic phantom, 240 x 240 x 120 voxels at 2 x 2 x 2.5 mm"
    if sample.is_file():
        return sample, source
    if SHARED_LABELS.is_file():
        from sparsekits.data.io import read_label_map

        labels = read_label_map(SHARED_LABELS)
        phantom = make_phantom(0, labels=labels.array, affine=labels.grid.affine)
    else:
        phantom = make_phantom(0, shape=(240, 240, 120), spacing=(2.0, 2.0, 2.5))
    write_case(work / "dataset" / "case_00000", phantom)
    del phantom
    preprocess_dataset(work / "dataset", work / "cache", roles=("roi",))
    return sample, source


def measure_steps(
    sample: str, preset: str, twin: str, device: str, crop: bool, repeats: int, warmup: int = 1
) -> dict:
    """In a fresh process: the median time of one training step of ``twin`` on the sample."""
    from sparsekits.bench.measure import peak_rss_mb
    from sparsekits.models import build_model
    from sparsekits.train.optim import build_optimizer

    hu, labels, config = _load(sample, crop)
    keep = config.sparsify.keep(hu)
    torch.manual_seed(0)
    sparse_model = build_model(preset)
    model = sparse_model
    if twin == "dense":
        model = build_model(preset, dense=True)
        model.load_state_dict(sparse_model.state_dict())  # the same weights
    model = model.to(device).train()
    optimizer = build_optimizer(model, 5e-4)
    step_inputs = _dense_inputs if twin == "dense" else _sparse_inputs
    inputs, loss_of, voxels = step_inputs(hu, labels, keep, config, device)

    def step() -> None:
        with _autocast(device):
            outputs = model(inputs)
        loss = loss_of(outputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    baseline = peak_rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timing = time_median(step, repeats=repeats, warmup=warmup)
    result = {
        "voxels": voxels,
        "grid": list(hu.shape),
        "threads": torch.get_num_threads(),
        BASELINE_KEY: baseline,
        **timing,
    }
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _sparse_inputs(hu, labels, keep, config, device):
    """(network input, loss of the outputs, voxel count) of the sparse network."""
    from sparsekits.regions import labels_to_regions
    from sparsekits.sparse import SparseTensor
    from sparsekits.train.losses import deep_supervision_loss

    coords = np.argwhere(keep).astype(np.int32)
    batch = np.zeros((len(coords), 1), np.int32)
    features = config.features(hu[keep].astype(np.float32))[:, None]
    regions = labels_to_regions(labels[keep]).astype(np.float32)
    inputs = SparseTensor(
        torch.from_numpy(features).to(device),
        torch.from_numpy(np.concatenate([batch, coords], 1)).to(device),
    )
    targets = inputs.replace(torch.from_numpy(regions).to(device))
    return inputs, lambda outputs: deep_supervision_loss(outputs, targets), len(coords)


def _dense_inputs(hu, labels, keep, config, device):
    """The same soft Dice with deep supervision (1/2^k), on every voxel of the dense grid."""
    from sparsekits.regions import labels_to_regions
    from sparsekits.train.losses import DICE_SMOOTH

    volume = np.where(keep, config.features(hu.astype(np.float32)), 0.0).astype(np.float32)
    regions = labels_to_regions(labels).astype(np.float32)  # [X, Y, Z, 3]
    inputs = torch.from_numpy(volume)[None, None].to(device)
    target = torch.from_numpy(np.moveaxis(regions, -1, 0))[None].to(device)

    def loss(outputs):
        total = 0.0
        for level, logits in enumerate(outputs):
            pooled = target
            if level:
                pooled = F.avg_pool3d(target, 2**level, ceil_mode=True)
            probs = torch.sigmoid(logits.float())
            dims = (0, 2, 3, 4)
            dice = (2 * (probs * pooled).sum(dims) + DICE_SMOOTH) / (
                (probs + pooled).sum(dims) + DICE_SMOOTH
            )
            total = total + 0.5**level * (1 - dice).sum()
        return total

    return inputs, loss, int(volume.size)


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _load(sample: str, crop: bool):
    from sparsekits.data.sample import load_sample
    from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

    loaded = load_sample(sample)
    hu, labels = loaded.hu, loaded.labels
    if crop:
        window = _crop_around_kidneys(labels, CROP)
        hu, labels = hu[window], labels[window]
    return hu, labels, SSCN_TWOSTAGE.stage(1)


def _crop_around_kidneys(labels: np.ndarray, size: tuple[int, int, int]) -> tuple[slice, ...]:
    present = np.argwhere(labels > 0)
    centre = (present.min(0) + present.max(0)) // 2 if len(present) else np.array(labels.shape) // 2
    window = []
    for axis, extent in enumerate(size):
        extent = min(extent, labels.shape[axis])
        start = int(np.clip(centre[axis] - extent // 2, 0, labels.shape[axis] - extent))
        window.append(slice(start, start + extent))
    return tuple(window)


def run(
    devices: list[str],
    presets: list[str],
    repeats: int,
    limit_gb: float,
    limit_s: float,
    work: Path,
) -> dict:
    os.chdir(REPO)  # the fresh process imports this file as benchmarks.train_throughput
    sample, source = prepare_sample(work)
    results: dict = {"source": source, "rows": [], "limit_s": limit_s, "repeats": repeats}
    for device in devices:
        for preset in presets:
            for twin in ("sparse", "dense"):
                limits = (limit_gb, limit_s)
                rows = _measure_config(str(sample), preset, twin, device, repeats, *limits)
                for row in rows:  # partial results survive an interrupted run
                    print(_table_row(row), flush=True)
                results["rows"].extend(rows)
    return results


def _measure_config(sample, preset, twin, device, repeats, limit_gb, limit_s) -> list[dict]:
    """The crop run, then the full-size run if its extrapolated memory and time fit the limits."""
    base = {"sample": sample, "preset": preset, "twin": twin, "device": device}
    rows = []
    crop = run_in_fresh_process(TARGET, **base, crop=True, repeats=repeats)
    rows.append({**base, "size": "crop", **crop})
    full_voxels = _full_voxels(sample, twin)
    growth = full_voxels / crop["voxels"]
    memory_key = "cuda_peak_mb" if device == "cuda" else "peak_rss_mb"
    baseline = 0.0 if device == "cuda" else crop[BASELINE_KEY]
    estimate = baseline + growth * (crop[memory_key] - baseline)
    seconds = growth * crop["median_s"] * (repeats + 1)
    full = {**base, "size": "full", "voxels": full_voxels, "estimate_mb": estimate}
    full["estimate_s"] = seconds
    if estimate <= limit_gb * 1024 and seconds <= limit_s:
        full.update(run_in_fresh_process(TARGET, **base, crop=False, repeats=repeats))
    rows.append(full)
    return rows


def _full_voxels(sample: str, twin: str) -> int:
    from sparsekits.data.sample import load_sample

    loaded = load_sample(sample)
    return int(loaded.hu.size) if twin == "dense" else len(loaded.coords)


def report(results: dict, command: str, limit_gb: float, load_at_start: float) -> str:
    rows = [_table_row(row) for row in results["rows"]]
    header = [
        "device",
        "preset",
        "twin",
        "input",
        "voxels",
        "steps/s",
        "median step (s)",
        "CPU s/step",
        "peak RSS (MiB)",
        "CUDA peak (MiB)",
    ]
    grids = {row["size"]: row.get("grid") for row in results["rows"] if row.get("grid")}
    full_grid = "x".join(str(v) for v in grids.get("full", [])) or "see voxels"
    lines = [
        "## Training throughput: one optimiser step per sample, sparse vs dense twin",
        "",
        f"Sample: the stage-1 view (1.99 mm, HU window) of a {results['source']}; "
        f"full grid {full_grid}, crop {'x'.join(map(str, CROP))} around the kidneys. "
        "Sparse voxels are those the window keeps; the dense twin computes every grid voxel. "
        "A step is forward + deep-supervision Dice + backward + AdamW (batch 1); CPU in "
        "float32, CUDA in bf16 autocast.",
        "",
        markdown_table(header, rows),
        "",
        f"`skipped` rows: extrapolated from the crop run by voxel count, the memory exceeds "
        f"{limit_gb:g} GB or the {repeats_note(results)} runs exceed {results['limit_s']:g} s on "
        "this machine; the estimates are shown.",
        "Each row is a fresh process (peak RSS includes Python, torch and the weights).",
        *measured_on(command, load_at_start),
    ]
    return "\n".join(lines)


def repeats_note(results: dict) -> str:
    return f"{results['repeats']} + 1 warm-up"


def _table_row(row: dict) -> list:
    first = [row["device"], row["preset"], row["twin"], row["size"], f"{row['voxels']:,}"]
    if "median_s" not in row:
        key = "CUDA" if row["device"] == "cuda" else "RSS"
        memory = f"~{row['estimate_mb']:,.0f} (est., {key})"
        return [
            *first,
            "skipped",
            f"~{row['estimate_s']:,.0f} s (est., all runs)",
            "-",
            memory,
            "-",
        ]
    cuda = f"{row['cuda_peak_mb']:,.0f}" if "cuda_peak_mb" in row else "-"
    cpu = f"{row['cpu_median_s']:.2f}" if "cpu_median_s" in row else "-"
    return [
        *first,
        f"{1 / row['median_s']:.3f}",
        f"{row['median_s']:.2f}",
        cpu,
        f"{row['peak_rss_mb']:,.0f}",
        cuda,
    ]


def main() -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-gb", type=float, default=7.0)
    parser.add_argument("--limit-s", type=float, default=600.0, help="per full-size config")
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument(
        "--devices", default=None, help="comma list; default: cpu, and cuda when available"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparsekits-train-throughput"))
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"]
    if args.devices is None and torch.cuda.is_available():
        devices.append("cuda")
    args.devices = ",".join(devices)  # the command states the devices measured
    command = command_line(__file__, args, omit=("work",))
    start, load_at_start = time.perf_counter(), load_average()
    presets = args.presets.split(",")
    results = run(devices, presets, args.repeats, args.limit_gb, args.limit_s, args.work)
    body = report(results, command, args.limit_gb, load_at_start)
    print(body)
    print(f"(benchmark wall time {time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        update_section("train_throughput", body)


if __name__ == "__main__":
    main()
