"""The benchmark's results as markdown tables and PNG plots (sparsekits.bench.pipeline)."""

from __future__ import annotations

from pathlib import Path

from sparsekits.fileio import atomic_path
from sparsekits.markdown import markdown_table


def render_markdown(results: dict) -> str:
    """All of one run's tables: twins per stage, two-stage vs nnU-Net, sweep, goals, profile."""
    parts = [
        f"Input: `{results['input']}` {tuple(results['image']['shape'])} at "
        f"{_spacing(results['image']['spacing_mm'])} mm; preset `{results['preset']}`, "
        f"device `{results['device']}`, random weights.",
        f"Machine: {results['machine']}",
    ]
    if "skipped" in results:
        parts.append(f"Not measured: {results['skipped']}.")
    for label, problem in results.get("failures", {}).items():
        parts.append(f"**Failed:** {label}: `{problem}`")
    if results.get("stages"):
        parts += ["#### Sparse vs dense twin (same weights, same voxels)", twin_table(results)]
        parts.append(kept_note(results))
    if "two_stage" in results or "nnunet" in results:
        parts += [
            "#### Full two-stage prediction vs nnU-Net v2 3d_fullres",
            baseline_table(results),
        ]
        parts.append(nnunet_note(results.get("nnunet", {})))
    if results.get("sweep"):
        shape = "x".join(map(str, results["sweep_box"]["box"]))
        parts += [
            f"#### Sparsity sweep ({shape} box of the stage-2 crop around the ROI)",
            sweep_table(results),
        ]
    if results.get("goals"):
        rows = [
            [g["goal"], g["target"], g["measured"], "met" if g["met"] else "**missed**"]
            for g in results["goals"]
        ]
        parts += ["#### Goals", markdown_table(["goal", "target", "measured", ""], rows)]
    if "stage2_profile" in results:
        parts += ["#### Profile of the sparse stage-2 forward pass", profile_table(results)]
    return "\n\n".join(part for part in parts if part) + "\n"


def twin_table(results: dict) -> str:
    cuda = any("cuda_peak_mb" in entry.get("sparse", {}) for entry in results["stages"])
    memory = "CUDA peak (MiB)" if cuda else "peak RSS (MiB)"
    header = [
        "stage",
        "box (voxels)",
        "kept",
        "sparse time (s)",
        "dense time (s)",
        "time ratio",
        "CPU-time ratio",
        f"sparse {memory}",
        f"dense {memory}",
        "memory ratio",
        "forward-pass RSS ratio",
    ]
    rows = []
    for entry in results["stages"]:
        sparse, dense = entry.get("sparse", {}), entry.get("dense", {})
        memory_key = "cuda_peak_mb" if cuda else "peak_rss_mb"
        rows.append(
            [
                f"{entry['stage']} ({entry['spacing_mm']} mm)",
                f"{'x'.join(map(str, entry['box']))} ({entry['box_voxels'] / 1e6:.2f} M)",
                f"{entry['kept_voxels'] / 1e6:.2f} M ({entry['kept_fraction']:.1%})",
                _seconds(sparse),
                _seconds(dense),
                _ratio(entry.get("time_ratio")),
                _ratio(entry.get("cpu_time_ratio")),
                _mb(sparse.get(memory_key)),
                _mb(dense.get(memory_key)),
                _ratio(entry.get("cuda_ratio" if cuda else "rss_ratio")),
                _ratio(entry.get("working_rss_ratio")),
            ]
        )
    note = (
        "Times: median wall-clock time of the runs listed in the JSON (after warm-up); the "
        "CPU-time ratio compares process CPU time (both threads), which other people's load on a "
        "shared machine disturbs less. Peak RSS: a fresh process per measurement (interpreter, "
        "torch, model and input included); the forward-pass ratio subtracts each process's RSS "
        "just before the first run."
    )
    return markdown_table(header, rows) + "\n\n" + note


def kept_note(results: dict) -> str:
    """What stage 2 keeps of its crop box: the ROI's share, and the window's share of the ROI."""
    stage2 = next((e for e in results["stages"] if e["stage"] == 2), None)
    if stage2 is None or "roi_fraction" not in stage2:
        return ""
    in_window = stage2["kept_fraction"] / max(stage2["roi_fraction"], 1e-12)
    return (
        f"Stage 2 keeps {stage2['kept_fraction']:.1%} of its crop box: the dilated kidney ROI "
        f"covers {stage2['roi_fraction']:.1%} of the box and the HU window keeps {in_window:.1%} "
        "of the ROI's voxels."
    )


def baseline_table(results: dict) -> str:
    two_stage = results.get("two_stage")
    nnunet = results.get("nnunet", {})
    reference = two_stage["median_s"] if two_stage else None
    rows = []
    if two_stage:
        steps = two_stage.get("timings_of_median_run", {})
        detail = ", ".join(
            f"{key} {value:.1f} s" for key, value in steps.items() if isinstance(value, float)
        )
        rows.append(
            [
                "sparse two-stage (stage 1 + each ROI)",
                _seconds(two_stage),
                "1.0x",
                _mb(two_stage.get("peak_rss_mb")),
                detail,
            ]
        )
    for key, name in (
        ("no_tta", "nnU-Net 3d_fullres, no TTA"),
        ("tta", "nnU-Net 3d_fullres, mirroring TTA"),
    ):
        if key not in nnunet:
            continue
        run = nnunet[key]
        full = run["full_volume_s"]
        measured_on = (
            "whole volume"
            if nnunet.get("full_volume")
            else f"{run['median_s']:.1f} s per {run['patches_per_run']}-patch run, x "
            f"{run['patches_full_volume']} patches"
        )
        slower = f"{full / reference:.1f}x" if reference else "-"
        rows.append([name, f"{full:.1f}", slower, _mb(run.get("peak_rss_mb")), measured_on])
    return markdown_table(["method", "time (s)", "time / two-stage", "peak RSS (MiB)", "how"], rows)


def nnunet_note(nnunet: dict) -> str:
    if "skipped" in nnunet:
        return f"nnU-Net not measured: {nnunet['skipped']}."
    if not nnunet:
        return ""
    run = nnunet.get("no_tta") or nnunet.get("tta") or {}
    shape = "x".join(map(str, nnunet["resampled_shape"]))
    how = (
        "on the whole resampled volume"
        if nnunet["full_volume"]
        else "on one 128^3 patch cut from the resampled CT, times nnU-Net's own patch count for "
        "the whole volume (its peak RSS is that of the one-patch run)"
    )
    missing = [name for key, name in (("no_tta", "without"), ("tta", "with")) if key not in nnunet]
    not_run = f" Not measured in this run: {' and '.join(missing)} TTA." if missing else ""
    return (
        f"nnU-Net v2 {run.get('nnunetv2', '?')} `nnUNetPredictor.predict_sliding_window_return_"
        f"logits` (torch {run.get('torch', '?')}), PlainConvUNet of the KiTS23 3d_fullres plan "
        f"({run.get('parameters', 0) / 1e6:.1f} M parameters, patch 128^3, step 0.5, Gaussian "
        f"weighting), 1 fold, random weights; the CT resampled to 1.0 x 0.78 x 0.78 mm is {shape} "
        f"(z, y, x). Measured {how}. Preprocessing (resampling, normalisation) is not included "
        "for nnU-Net; the two-stage time includes its own resampling. Mirroring TTA runs 8 "
        f"forward passes per patch.{not_run}"
    )


def sweep_table(results: dict) -> str:
    box = results["sweep_box"]
    dense = box.get("dense", {})
    rows = []
    for entry in results["sweep"]:
        sparse = entry.get("sparse", {})
        rows.append(
            [
                entry["setting"],
                f"{entry['kept_fraction']:.1%}",
                f"{entry['kept_voxels'] / 1e6:.2f} M",
                _seconds(sparse),
                _ratio(_over(sparse, dense, "median_s")),
                _mb(sparse.get("peak_rss_mb")),
                _ratio(_over(sparse, dense, "peak_rss_mb")),
            ]
        )
    rows.append(
        [
            "dense twin (the box)",
            "100%",
            f"{box['box_voxels'] / 1e6:.2f} M",
            _seconds(dense),
            "1.00x",
            _mb(dense.get("peak_rss_mb")),
            "1.00x",
        ]
    )
    return markdown_table(
        [
            "kept voxels",
            "kept fraction",
            "voxels",
            "sparse time (s)",
            "time / dense",
            "sparse peak RSS (MiB)",
            "RSS / dense",
        ],
        rows,
    )


def profile_table(results: dict) -> str:
    profile = results["stage2_profile"]
    rows = [
        [
            f"`{row['op']}`",
            row["calls"],
            f"{row['self_cpu_s']:.2f}",
            f"{row['self_cpu_s'] / max(profile['total_self_cpu_s'], 1e-9):.0%}",
            f"{row['self_cpu_memory_mb']:.0f}",
        ]
        for row in profile["by_time"]
    ]
    by_memory = [
        [f"`{row['op']}`", row["calls"], f"{row['self_cpu_memory_mb']:.0f}"]
        for row in profile["by_memory"]
    ]
    return (
        "By self CPU time (one forward pass after a warm-up):\n\n"
        + markdown_table(["op", "calls", "self CPU (s)", "share", "self CPU memory (MiB)"], rows)
        + "\n\nBy memory allocated (self, summed over calls):\n\n"
        + markdown_table(["op", "calls", "self CPU memory (MiB)"], by_memory)
    )


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """``overview.png`` (per-stage twins; two-stage vs nnU-Net) and ``sweep.png``."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    if results.get("stages"):
        written.append(_save(_overview_figure(results), out_dir / "overview.png"))
    if results.get("sweep"):
        written.append(_save(_sweep_figure(results), out_dir / "sweep.png"))
    return written


def _overview_figure(results: dict):
    import matplotlib.pyplot as plt

    stages = [e for e in results["stages"] if "sparse" in e and "dense" in e]
    baseline = _baseline_bars(results)
    panels = 2 + bool(baseline)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
    labels = [f"stage {e['stage']}" for e in stages]
    for ax, key, title in (
        (axes[0], "median_s", "time (s)"),
        (axes[1], "peak_rss_mb", "peak RSS (MiB)"),
    ):
        positions = range(len(stages))
        ax.bar(
            [p - 0.2 for p in positions], [e["sparse"][key] for e in stages], 0.4, label="sparse"
        )
        ax.bar(
            [p + 0.2 for p in positions], [e["dense"][key] for e in stages], 0.4, label="dense twin"
        )
        ax.set_xticks(list(positions), labels)
        ax.set_title(title)
        ax.legend()
    if baseline:
        names, seconds = zip(*baseline, strict=True)
        axes[2].barh(range(len(names)), seconds, color=["C2"] + ["C3"] * (len(names) - 1))
        axes[2].set_yticks(range(len(names)), names)
        axes[2].set_xscale("log")
        axes[2].set_xlim(left=1, right=max(seconds) * 20)
        for row, value in enumerate(seconds):
            axes[2].annotate(
                f"{value:.0f} s",
                (value, row),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
            )
        axes[2].set_title("full prediction time (s, log)")
    fig.suptitle(f"{Path(results['input']).name}, preset {results['preset']}, {results['device']}")
    fig.tight_layout()
    return fig


def _baseline_bars(results: dict) -> list[tuple[str, float]]:
    bars = []
    if "two_stage" in results:
        bars.append(("sparse two-stage", results["two_stage"]["median_s"]))
    for key, name in (("no_tta", "nnU-Net"), ("tta", "nnU-Net + TTA")):
        if key in results.get("nnunet", {}):
            bars.append((name, results["nnunet"][key]["full_volume_s"]))
    return bars if len(bars) > 1 else []


def _sweep_figure(results: dict):
    """Sparse over dense (time, peak RSS) against the kept fraction: the sweep on its box, and
    the two stages' own inputs; the dense twin is the line at 1."""
    import matplotlib.pyplot as plt

    dense = results["sweep_box"].get("dense", {})
    points = sorted(
        (e for e in results["sweep"] if "sparse" in e), key=lambda e: e["kept_fraction"]
    )
    stages = [e for e in results.get("stages", []) if "time_ratio" in e]
    shape = "x".join(map(str, results["sweep_box"]["box"]))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for ax, key, title in (
        (axes[0], "median_s", "time, sparse / dense"),
        (axes[1], "peak_rss_mb", "peak RSS, sparse / dense"),
    ):
        ratios = [_over(e["sparse"], dense, key) for e in points]
        if all(r is not None for r in ratios):
            fractions = [e["kept_fraction"] for e in points]
            ax.plot(fractions, ratios, "o-", label=f"HU windows, {shape} box")
        for entry, marker in zip(stages, "s^", strict=False):
            ratio = _over(entry["sparse"], entry["dense"], key)
            ax.plot(entry["kept_fraction"], ratio, marker, label=f"stage {entry['stage']} input")
        ax.axhline(1.0, color="C3", linestyle="--", label="dense twin")
        ax.set_xlabel("kept fraction of the box")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(fontsize="small")
    fig.suptitle("where sparsity stops paying (below the dashed line it pays)")
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _over(sparse: dict, dense: dict, key: str) -> float | None:
    if key in sparse and key in dense:
        return sparse[key] / dense[key]
    return None


def _seconds(run: dict) -> str:
    return f"{run['median_s']:.2f}" if "median_s" in run else "-"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spacing(spacing) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)
