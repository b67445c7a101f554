"""``sparsekits benchmark``: the measurements behind the paper's efficiency claims, on one CT.

- Sparse against its dense twin, per stage, same weights and voxels: stage 1 on the whole scan at
  1.99 mm (dense: the body box), stage 2 on the largest kidney ROI crop at 0.78 mm (dense: the
  crop box). Time: median of ``repeats`` runs after ``warmup``; peak RSS of a fresh process per
  measurement (CUDA: max_memory_allocated).
- The full two-stage sparse prediction against nnU-Net v2's sliding-window predictor in the
  KiTS23 3d_fullres plan, with and without mirroring TTA (``sparsekits.bench.nnunet``).
- A sparsity sweep of the stage-2 crop: HU windows from narrow to everything kept.

Networks carry random weights (time and memory do not depend on them); the kidney ROI comes from
a label map (``labels``), since random stage-1 weights would place none. Results go to
``OUT/benchmark.md`` (also printed), ``OUT/overview.png``, ``OUT/sweep.png`` and optional JSON.

    sparsekits benchmark --input CT.nii.gz --labels ORGANS.nii.gz --kidney-labels 2,3 --out DIR
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sparsekits.bench import inputs
from sparsekits.bench.inputs import DEFAULT_SWEEP, BenchCase, SweepPoint
from sparsekits.bench.measure import run_in_fresh_process
from sparsekits.bench.nnunet import KITS_3D_FULLRES, find_nnunet_python
from sparsekits.bench.report import machine_summary
from sparsekits.data.sample import save_sample
from sparsekits.data.stage_view import resample_hu
from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic, write_text_atomic
from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.plan import Plan

KITS_LABELS = (1, 2, 3)

# The goals of issue 7 (the paper's figures in brackets): stage-2 sparse/dense time <= 0.25
# (0.4), peak RSS <= 0.2 (0.25); full two-stage >= 5x faster than nnU-Net without TTA.
GOAL_STAGE2_TIME_RATIO = 0.25
GOAL_STAGE2_RSS_RATIO = 0.2
GOAL_SPEEDUP_VS_NNUNET = 5.0


@dataclass(frozen=True)
class BenchConfig:
    """How much to measure. Slow runs (dense twins, nnU-Net patches) may use fewer repeats."""

    repeats: int = 3
    warmup: int = 1
    dense_repeats: int = 3
    two_stage_repeats: int = 3
    sweep: tuple[SweepPoint, ...] = DEFAULT_SWEEP
    sweep_repeats: int = 3
    # The sweep runs on this cube of the stage-2 crop around the ROI (None: the whole crop), so
    # that keeping every voxel stays affordable; its own dense twin is the reference line.
    sweep_box: int | None = 96
    nnunet: bool = True
    nnunet_repeats: int = 3
    nnunet_tta_repeats: int = 1
    nnunet_full_volume: bool = False
    profile_on_miss: bool = True
    seed: int = 0


def run_benchmark(
    input: str | Path,
    stage: str = "both",
    preset: str | None = None,
    device: str = "cpu",
    json_path: str | Path | None = None,
    out_dir: str | Path = "benchmark_out",
    labels: str | Path | None = None,
    kidney_labels: Sequence[int] = KITS_LABELS,
    config: BenchConfig = BenchConfig(),
    plan: Plan = SSCN_TWOSTAGE,
) -> dict:
    """Measure, then write ``out_dir/benchmark.md`` (printed too), the PNGs and ``json_path``.

    Stage 2, the two-stage prediction and the sweep need ``labels`` (a label map on the CT's grid
    whose ``kidney_labels`` mark the kidneys); without it only stage 1 and nnU-Net are measured.
    The stages' views and networks come from ``plan`` (``preset`` replaces its networks).
    """
    if plan.method != SSCN_TWOSTAGE.method:
        # Sparse against its dense twin, stage by stage: a comparison of this method's networks.
        raise InputError(
            input,
            f"the twin benchmark measures {SSCN_TWOSTAGE.method}'s networks, not {plan.method}'s "
            "(benchmarks/methods.py compares the methods)",
        )
    if preset is not None:
        plan = plan.with_network(preset)
    input, out_dir = Path(input), Path(out_dir)
    stages = (1, 2) if stage == "both" else (int(stage),)
    if labels is None and stage == "2":
        raise InputError(input, "stage 2 needs a kidney ROI: pass --labels LABEL_MAP")
    results: dict = {
        "input": str(input),
        "labels": None if labels is None else str(labels),
        "preset": plan.stage(1).network.name,
        "plan": plan.to_dict(),
        "device": device,
        "machine": machine_summary(),
        "config": _config_dict(config),
    }
    with tempfile.TemporaryDirectory(prefix="sparsekits-bench-") as work:
        bench = _Bench(Path(work), device, config, plan)
        if labels is None:
            from sparsekits.data.io import read_image

            case = None
            image = read_image(input)
            stages = (1,)
            results["skipped"] = "stage 2, two-stage prediction and sweep: they need --labels"
        else:
            case = BenchCase.load(input, Path(labels), kidney_labels)
            image = case.image
        results["image"] = {"shape": list(image.grid.shape), "spacing_mm": image.grid.spacing}
        bench.write_models()
        jobs = _jobs(bench, case, image, stages, results)
        for label, job in tqdm(jobs, desc="benchmark", unit="measurement"):
            tqdm.write(f"measuring {label}")
            _run_job(label, job, results)
            if json_path is not None:  # an interrupted run keeps what it measured
                write_json_atomic(Path(json_path), results)
        _maybe_profile(bench, results)
    print(write_outputs(results, out_dir, json_path))
    return results


def _run_job(label: str, job: Callable[[], None], results: dict) -> None:
    """Run one measurement; a failed one (e.g. out of memory) is reported, the others go on."""
    try:
        job()
    except (RuntimeError, OSError) as error:
        results.setdefault("failures", {})[label] = str(error).strip().splitlines()[-1]
        tqdm.write(f"sparsekits benchmark: {label} failed: {results['failures'][label]}")


def write_outputs(results: dict, out_dir: str | Path, json_path: str | Path | None = None) -> str:
    """``out_dir/benchmark.md``, the PNGs and the JSON of ``results``; returns the markdown.

    Also re-renders the outputs of a saved results JSON (``benchmarks/claims.py --from-json``).
    """
    from sparsekits.bench.render import render_markdown, write_plots

    out_dir = Path(out_dir)
    results["goals"] = goals(results)
    markdown = render_markdown(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "benchmark.md", markdown)
    results["figures"] = [str(path) for path in write_plots(results, out_dir)]
    if json_path is not None:
        write_json_atomic(Path(json_path), results)
    return markdown


class _Bench:
    """The work folder (model folders, samples) and the fresh-process measurements on it."""

    def __init__(self, work: Path, device: str, config: BenchConfig, plan: Plan):
        self.work, self.device, self.config, self.plan = work, device, config, plan
        self.model_dir = work / "models"

    def write_models(self) -> None:
        """One random-weight network per stage (seeded); both twins load the same folder."""
        import torch

        from sparsekits.models import build_model
        from sparsekits.models.bundle import save_fold

        torch.manual_seed(self.config.seed)
        for role in self.plan.roles:
            save_fold(
                self.model_dir, self.plan, role, 0, build_model(self.plan.stage(role).network)
            )

    def save(self, name: str, sample) -> Path:
        return save_sample(self.work / f"{name}.npz", sample)

    def twin(self, sample_path: Path, dense: bool, repeats: int) -> dict:
        return run_in_fresh_process(
            "sparsekits.bench.twin:measure_twin",
            model_dir=str(self.model_dir),
            sample_path=str(sample_path),
            dense=dense,
            device=self.device,
            repeats=repeats,
            warmup=self.config.warmup,
        )


# Measurement order: the headline numbers first, so that an interrupted run still has them.
_PRIORITY = {"stage2": 0, "two_stage": 1, "nnunet": 2, "stage1": 3, "sweep": 4, "nnunet_tta": 5}


def _jobs(bench: _Bench, case: BenchCase | None, image, stages, results: dict) -> list:
    """The measurements, headline first, as (label, thunk) pairs that fill ``results``."""
    config = bench.config
    jobs: list[tuple[int, str, Callable[[], None]]] = []
    results["stages"] = []
    samples = {}
    for stage in stages:
        sample = (
            inputs.stage1_sample(case, bench.plan)
            if stage == 1
            else inputs.stage2_sample(case, bench.plan)
        )
        path = bench.save(f"stage{stage}", sample)
        samples[stage] = sample
        entry = {
            "stage": stage,
            "spacing_mm": bench.plan.stage(stage).spacing_mm,
            "box": list(sample.hu.shape),
            "box_voxels": int(sample.hu.size),
            "kept_voxels": len(sample.coords),
            "kept_fraction": sample.kept_fraction,
            "sample_path": str(path),
        }
        if sample.roi_mask is not None:
            entry["roi_fraction"] = float(sample.roi_mask.mean())
        results["stages"].append(entry)
        for dense in (False, True):
            twin = "dense" if dense else "sparse"
            repeats = config.dense_repeats if dense else config.repeats
            measure = lambda p=path, d=dense, r=repeats: bench.twin(p, d, r)  # noqa: E731
            jobs.append(
                (_PRIORITY[f"stage{stage}"], f"stage {stage} {twin}", _store(entry, twin, measure))
            )
    if case is not None and 2 in samples:
        two_stage = lambda: _two_stage(bench, case, results)  # noqa: E731
        jobs.append((_PRIORITY["two_stage"], "two-stage prediction", two_stage))
        if config.sweep:
            jobs += _sweep_jobs(bench, samples[2], results)
    if config.nnunet:
        jobs += _nnunet_jobs(bench, image, results)
    return [(label, job) for _, label, job in sorted(jobs, key=lambda item: item[0])]


def _store(entry: dict, key: str, measure: Callable[[], dict]) -> Callable[[], None]:
    def job() -> None:
        entry[key] = measure()
        if "sparse" in entry and "dense" in entry:
            entry.update(_ratios(entry["sparse"], entry["dense"]))

    return job


def _ratios(sparse: dict, dense: dict) -> dict:
    """Sparse over dense: time, peak RSS, and the RSS the forward pass itself added."""
    ratios = {
        "time_ratio": sparse["median_s"] / dense["median_s"],
        "rss_ratio": sparse["peak_rss_mb"] / dense["peak_rss_mb"],
    }
    sparse_work = sparse["peak_rss_mb"] - sparse["rss_before_run_mb"]
    dense_work = dense["peak_rss_mb"] - dense["rss_before_run_mb"]
    if dense_work > 0:
        ratios["working_rss_ratio"] = sparse_work / dense_work
    if "cpu_median_s" in sparse and "cpu_median_s" in dense:
        ratios["cpu_time_ratio"] = sparse["cpu_median_s"] / dense["cpu_median_s"]
    if "cuda_peak_mb" in sparse and "cuda_peak_mb" in dense:
        ratios["cuda_ratio"] = sparse["cuda_peak_mb"] / dense["cuda_peak_mb"]
    return ratios


def _two_stage(bench: _Bench, case: BenchCase, results: dict) -> None:
    kidney_path = bench.work / "kidney.npy"
    np.save(kidney_path, case.kidney)
    results["two_stage"] = run_in_fresh_process(
        "sparsekits.bench.two_stage:measure_two_stage",
        model_dir=str(bench.model_dir),
        image_path=str(case.image.path),
        kidney_path=str(kidney_path),
        device=bench.device,
        repeats=bench.config.two_stage_repeats,
        warmup=bench.config.warmup,
    )


def _sweep_jobs(bench: _Bench, stage2, results: dict) -> list:
    config = bench.config
    box = inputs.sweep_box(stage2, config.sweep_box, bench.plan)
    dense_path = bench.save("sweep_box", box)
    reference = {"box": list(box.hu.shape), "box_voxels": int(box.hu.size)}
    results["sweep_box"] = reference
    results["sweep"] = []
    priority = _PRIORITY["sweep"]
    measure_dense = lambda: bench.twin(dense_path, True, config.dense_repeats)  # noqa: E731
    jobs = [(priority, "sweep dense twin", _store(reference, "dense", measure_dense))]
    for index, point in enumerate(config.sweep):
        sample = inputs.sweep_sample(box, point, bench.plan)
        path = bench.save(f"sweep{index}", sample)
        entry = {
            "setting": point.label,
            "hu_window": list(point.hu_window),
            "inside_roi": point.inside_roi,
            "kept_voxels": len(sample.coords),
            "kept_fraction": sample.kept_fraction,
        }
        results["sweep"].append(entry)
        measure = lambda p=path: bench.twin(p, False, config.sweep_repeats)  # noqa: E731
        jobs.append((priority, f"sweep {point.label}", _store(entry, "sparse", measure)))
    return jobs


def _nnunet_jobs(bench: _Bench, image, results: dict) -> list:
    python = find_nnunet_python()
    if python is None:
        results["nnunet"] = {
            "skipped": "nnunetv2 is not installed: run benchmarks/install_nnunet.sh "
            "(a separate venv, .venv-bench) or set SPARSEKITS_NNUNET_PYTHON"
        }
        return []
    volume_path, full_shape = _nnunet_volume(bench, image)
    results["nnunet"] = {
        "python": python,
        "resampled_shape": full_shape,
        "full_volume": bench.config.nnunet_full_volume,
        "plan": dataclasses.asdict(KITS_3D_FULLRES),
    }
    jobs = []
    for tta, repeats in (
        (False, bench.config.nnunet_repeats),
        (True, bench.config.nnunet_tta_repeats),
    ):
        if repeats < 1:
            continue
        key = "tta" if tta else "no_tta"
        priority = _PRIORITY["nnunet_tta" if tta else "nnunet"]

        def job(tta: bool = tta, repeats: int = repeats, key: str = key) -> None:
            measured = run_in_fresh_process(
                "sparsekits.bench.nnunet:measure_sliding_window",
                python=python,
                volume_path=str(volume_path),
                full_shape=full_shape,
                tta=tta,
                repeats=repeats,
                # A TTA run is 8 forward passes of the same patch: the first warms up the rest.
                warmup=0 if tta else bench.config.warmup,
                device=bench.device,
            )
            per_patch = measured["median_s"] / measured["patches_per_run"]
            measured["full_volume_s"] = per_patch * measured["patches_full_volume"]
            results["nnunet"][key] = measured

        jobs.append((priority, f"nnU-Net {'with' if tta else 'without'} TTA", job))
    return jobs


def _nnunet_volume(bench: _Bench, image) -> tuple[Path, list[int]]:
    """The CT at the plan's spacing as nnU-Net's (z, y, x) array, normalised; by default only the
    central patch of it (see sparsekits.bench.nnunet). Returns the .npy path and the full shape."""
    spacing_zyx = KITS_3D_FULLRES.spacing_mm
    grid = inputs.plan_grid(image.grid, tuple(reversed(spacing_zyx)))
    full_shape_zyx = list(reversed(grid.shape))
    if not bench.config.nnunet_full_volume:
        patch_xyz = np.asarray(tuple(reversed(KITS_3D_FULLRES.patch_size)))
        lo = (np.asarray(grid.shape) - patch_xyz) // 2
        grid = grid.crop(lo, lo + patch_xyz)
    hu = resample_hu(image, grid).astype(np.float32)
    # CTNormalization-like: clip to the stage-2 window, z-score with its statistics.
    stage2 = bench.plan.stage(2)
    volume = stage2.features(np.clip(hu, *stage2.sparsify.bounds)).transpose(2, 1, 0)
    path = bench.work / "nnunet_volume.npy"
    np.save(path, np.ascontiguousarray(volume, dtype=np.float32))
    return path, [int(n) for n in full_shape_zyx]


def _maybe_profile(bench: _Bench, results: dict) -> None:
    """Profile the sparse stage-2 forward pass when a stage-2 goal is missed."""
    stage2 = next((entry for entry in results["stages"] if entry["stage"] == 2), None)
    if not bench.config.profile_on_miss or stage2 is None or "time_ratio" not in stage2:
        return
    if (
        stage2["time_ratio"] <= GOAL_STAGE2_TIME_RATIO
        and stage2["rss_ratio"] <= GOAL_STAGE2_RSS_RATIO
    ):
        return
    tqdm.write("measuring a profile of the sparse stage-2 forward pass (a goal was missed)")
    results["stage2_profile"] = run_in_fresh_process(
        "sparsekits.bench.twin:profile_forward",
        model_dir=str(bench.model_dir),
        sample_path=stage2["sample_path"],
        dense=False,
        device=bench.device,
    )


def goals(results: dict) -> list[dict]:
    """Each goal of issue 7 that this run measured: target, measured value, met or not."""
    rows = []
    stage2 = next((e for e in results.get("stages", []) if e["stage"] == 2), None)
    if stage2 is not None and "time_ratio" in stage2:
        memory_key = "cuda_ratio" if "cuda_ratio" in stage2 else "rss_ratio"
        rows.append(
            _goal("stage-2 sparse/dense time", stage2["time_ratio"], GOAL_STAGE2_TIME_RATIO)
        )
        rows.append(
            _goal("stage-2 sparse/dense peak memory", stage2[memory_key], GOAL_STAGE2_RSS_RATIO)
        )
    nnunet = results.get("nnunet", {}).get("no_tta")
    two_stage = results.get("two_stage")
    if nnunet is not None and two_stage is not None:
        speedup = nnunet["full_volume_s"] / two_stage["median_s"]
        rows.append(
            {
                "goal": "two-stage speed-up over nnU-Net without TTA",
                "target": f">= {GOAL_SPEEDUP_VS_NNUNET:g}x",
                "measured": f"{speedup:.1f}x",
                "met": speedup >= GOAL_SPEEDUP_VS_NNUNET,
            }
        )
    return rows


def _goal(name: str, ratio: float, target: float) -> dict:
    return {
        "goal": name,
        "target": f"<= {target:g}x",
        "measured": f"{ratio:.2f}x",
        "met": ratio <= target,
    }


def _config_dict(config: BenchConfig) -> dict:
    values = dataclasses.asdict(config)
    values["sweep"] = [point.label for point in config.sweep]
    return values
