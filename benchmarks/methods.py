"""The methods side by side, in one run on one machine: sscn-twostage (the paper's sparse
method) and dense-coarse2fine (seed 004's dense cascade).

- Prediction of a KiTS-size CT (a phantom on the real 611 x 512 x 512 KiTS23 label map
  case_00000): time (median of ``--repeats`` after a warm-up) and peak RSS of a fresh process,
  each method with its full-size preset (sscn-twostage ``paper``, dense-coarse2fine
  ``reference``) and random weights; the ROIs come from the kidney labels (each predictor's
  ``foreground_hook``), every network still runs, so each step costs what it costs trained.
  ``predict_file`` as ``sparsekits predict`` runs it (read, predict, write).
- One training step of each stage on that CT (forward, backward, optimiser step; batch 1,
  the plan's patch), median of 3 after a warm-up, in a fresh process with its peak RSS.
- The dense networks' memory format on this CPU: a forward pass of the reference kidney network
  on a 48-slice slab in contiguous and in channels_last_3d (which the predictor uses on a CPU).
- With ``--demo``, instead: each method's ``sparsekits demo`` (the same phantoms, seeds and
  fold) in a fresh process: held-out Dice per region, ROI recall, lesion counts, time and peak
  RSS (its own section of BENCHMARKS.md, ``methods_demo``: a run takes ~10 minutes).

Command (from the repository root; needs ../shared/data/kits23-labels):
    python benchmarks/methods.py [--repeats 3]
    python benchmarks/methods.py --demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsekits.demo import FULL as DEMO

REPO = Path(__file__).resolve().parents[1]
SECTION = "methods"
DEMO_SECTION = "methods_demo"
FULL_SIZE = {"sscn-twostage": "paper", "dense-coarse2fine": "reference"}
MEMORY_FORMAT_DEPTH = 16


def write_inputs(work: Path, seed: int = 0) -> dict:
    """The phantom CT, its labels and kidney mask, and a random-weight model folder per method."""
    import torch

    from predict_speed import write_kits_size_phantom
    from sparsekits.models.build import build_model
    from sparsekits.models.bundle import save_fold
    from sparsekits.plan import default_plan

    inputs = write_kits_size_phantom(work, seed)
    for method, preset in FULL_SIZE.items():
        plan = default_plan(method, preset)
        for position, role in enumerate(plan.roles, start=1):
            torch.manual_seed(seed + position)
            save_fold(work / method, plan, role, 0, build_model(plan.stage(role).network))
    return inputs


def measure_prediction(work: str, method: str, repeats: int, warmup: int = 1) -> dict:
    """Fresh-process target: ``predict_file`` of the CT with ``method``'s model folder."""
    import nibabel as nib

    from sparsekits.bench.measure import time_median
    from sparsekits.data.geometry import Grid
    from sparsekits.data.stage_view import mask_foreground
    from sparsekits.predict.pipeline import load_predictor, predict_file

    work = Path(work)
    header = nib.load(work / "ct.nii.gz")
    predictor = load_predictor(work / method)
    predictor.foreground_hook = mask_foreground(
        np.load(work / "kidney.npy"), Grid(header.shape, header.affine)
    )
    cases = []

    def run() -> None:
        cases.append(predict_file(predictor, work / "ct.nii.gz", work / "out" / f"{method}.nii.gz"))

    result = time_median(run, repeats=repeats, warmup=warmup)
    median = cases[warmup:][int(np.argsort(result["times_s"])[len(result["times_s"]) // 2])]
    result["steps_s"] = {key: round(value, 2) for key, value in median.timings.items()}
    result["rois"] = [list(roi.crop_grid.shape) for roi in median.rois]
    return result


def measure_training_step(work: str, method: str, repeats: int = 3) -> dict:
    """Fresh-process target: one optimiser step of each stage of ``method``'s full-size plan on
    the CT's samples, as its recipe draws them (a patch or slab where it trains on one, else the
    whole sample), median over ``repeats`` after a warm-up."""
    import torch

    from sparsekits.data.datasets import Case
    from sparsekits.data.io import read_image, read_label_map
    from sparsekits.data.sample import save_sample
    from sparsekits.methods import get_method
    from sparsekits.models.build import build_model
    from sparsekits.plan import default_plan
    from sparsekits.train.samples import Draw

    work = Path(work)
    plan = default_plan(method, FULL_SIZE[method])
    image = read_image(work / "ct.nii.gz")
    labels = read_label_map(work / "labels.nii.gz", like=image).array
    case = Case("ct", work / "ct.nii.gz", work / "labels.nii.gz")
    paths = {}
    for role, name, sample in get_method(method).case_samples(
        case, image, labels, plan, plan.roles
    ):
        paths.setdefault(
            role, save_sample(work / "samples" / method / f"{role}_{name}.npz", sample)
        )
    results = {}
    for role in plan.roles:
        task = get_method(method).training_task(plan, role)
        net = build_model(plan.stage(role).network)
        wrapped = task.wrap(net)
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)
        item = task.dataset([paths[role]], train=True)[Draw(0, (0, 0, 0), lesion=True)]
        inputs, targets = task.batch(item, torch.device("cpu"))
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            loss = task.loss(task.outputs(wrapped, wrapped(inputs)), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            times.append(time.perf_counter() - start)
        size = inputs.features.shape[0] if hasattr(inputs, "features") else inputs[0, 0].numel()
        results[role] = {"median_s": float(np.median(times[1:])), "input_voxels": int(size)}
    return results


def measure_memory_format(repeats: int = 3, depth: int = 16) -> dict:
    """Fresh-process target: the reference kidney network's forward pass on a 384 x 224 x
    ``depth`` slab, contiguous and channels_last_3d."""
    import torch

    from sparsekits.models.build import build_model
    from sparsekits.plan import default_plan

    net = build_model(default_plan("dense-coarse2fine", "reference").stage("kidney").network)
    net.eval()
    x = torch.randn(1, 1, 384, 224, depth)
    result = {}
    formats = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
    for name, memory_format in formats.items():
        net.to(memory_format=memory_format)
        batch = x.contiguous(memory_format=memory_format)
        times = []
        with torch.no_grad():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                net(batch)
                times.append(time.perf_counter() - start)
        result[name] = float(np.median(times[1:]))
    return result


def _report(inputs: dict, results: dict, command: str, load_at_start: float) -> str:
    from sparsekits.bench.report import measured_on
    from sparsekits.markdown import markdown_table

    methods = list(FULL_SIZE)
    prediction = [
        [
            f"{method} (`{FULL_SIZE[method]}`)",
            f"{results['predict'][method]['median_s']:.1f}",
            f"{results['predict'][method]['peak_rss_mb'] / 1024:.2f}",
            ", ".join(f"{k} {v}" for k, v in results["predict"][method]["steps_s"].items()),
        ]
        for method in methods
    ]
    training = [
        [
            method,
            role,
            f"{step['input_voxels']:,}",
            f"{step['median_s']:.2f}",
            f"{results['train'][method]['peak_rss_mb'] / 1024:.1f}",
        ]
        for method in methods
        for role, step in results["train"][method].items()
        if role != "peak_rss_mb"
    ]
    lines = [
        "## The methods side by side (sscn-twostage and dense-coarse2fine, CPU)",
        "",
        f"Input: phantom on the real KiTS23 label map case_00000, shape {inputs['shape']}, "
        f"spacing {[round(s, 3) for s in inputs['spacing']]} mm. Random weights in each "
        "method's full-size preset; ROIs from the kidney labels (each predictor's "
        "`foreground_hook`), every network runs. `predict_file` as `sparsekits predict` runs "
        f"it; median of {results['repeats']} run(s) after {results['warmup']} warm-up run(s), "
        "peak RSS of a fresh process.",
        "",
        markdown_table(["method (preset)", "seconds", "peak RSS (GiB)", "steps (s)"], prediction),
        "",
        "One training step (forward, backward, AdamW; batch 1, the recipe's patch or slab), "
        f"median of {results['train_repeats']} after a warm-up step, and the process's peak RSS:",
        "",
        markdown_table(
            ["method", "stage", "input voxels", "seconds", "process peak RSS (GiB)"], training
        ),
        "",
        "The dense networks' memory format on this CPU (reference kidney network, forward "
        f"pass on a 384 x 224 x {MEMORY_FORMAT_DEPTH} slab, median of 3): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in results["memory_format"].items())
        + ".",
    ]
    lines += [
        "",
        "Seed 004 reports, for its cascade trained on KiTS23 with the `reference` sizes (300 "
        "coarse and 600 fine epochs on four RTX A4000), Dice 0.954 / 0.792 / 0.691 on the "
        "KiTS23 test set (read as kidney_and_mass / masses / tumour: the paper labels its rows "
        "inconsistently), 20.65 s a case and 3,525 MB of GPU memory. None of it can be "
        "measured here: KiTS23's images cannot be reached from these machines (only its label "
        "maps, on which the phantoms are built), there is no GPU, and the reference recipes "
        "would take weeks of this CPU. The figures above compare the two methods on the same "
        "phantoms, machine and metrics instead.",
    ]
    return "\n".join([*lines, "", *measured_on(command, load_at_start)])


def _demo_report(demos: dict, command: str, load_at_start: float) -> str:
    from sparsekits.bench.report import measured_on
    from sparsekits.markdown import markdown_table

    rows = []
    for method, demo in demos.items():
        mean = demo["mean"]
        rows.append(
            [
                method,
                f"{demo['wall_s']:.0f}",
                f"{demo['peak_rss_mb'] / 1024:.2f}",
                *(f"{mean[key]:.3f}" for key in ("Dice_kidney", "Dice_masses", "Dice_tumor")),
                f"{mean['ROI_recall_kidney']:.3f}",
                f"{mean['ROI_recall_masses']:.3f}",
                f"{mean['tumours_found']}/{mean['tumours_found'] + mean['tumours_missed']}",
                f"{mean['tumours_false']}",
                f"{mean['cysts_found']}/{mean['cysts_found'] + mean['cysts_missed']}",
            ]
        )
    header = [
        "method",
        "seconds",
        "peak RSS (GiB)",
        "kidney_and_mass",
        "masses",
        "tumour",
        "ROI recall kidney",
        "ROI recall masses",
        "tumours found",
        "false tumours",
        "cysts found",
    ]
    lines = [
        "## The methods' demos side by side (CPU)",
        "",
        f"`sparsekits demo --method M`, one after the other (the same {DEMO.train_cases} "
        f"training and {DEMO.test_cases} held-out phantoms, fold 0, each method's `demo` "
        "preset), each in a fresh process: held-out "
        "KiTS23 Dice (mean over cases), the first stage's ROI recall, lesions found.",
        "",
        markdown_table(header, rows),
    ]
    return "\n".join([*lines, "", *measured_on(command, load_at_start)])


def main(argv: list[str] | None = None) -> None:
    # here, not at the top: the fresh processes import this file as benchmarks.methods
    from _sections import command_line, update_section
    from predict_speed import LABELS
    from sparsekits.bench.measure import run_in_fresh_process
    from sparsekits.bench.report import load_average

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed prediction runs")
    parser.add_argument("--warmup", type=int, default=1, help="prediction runs before timing")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training steps")
    parser.add_argument("--demo", action="store_true", help="instead, run each method's demo")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not LABELS.is_file():
        sys.exit(f"methods: {LABELS} not found (../shared/data is needed)")
    command = command_line(__file__, args)
    load_at_start = load_average()
    os.chdir(REPO)  # the fresh processes import this file as benchmarks.methods
    results: dict = {"predict": {}, "train": {}, "repeats": args.repeats}
    results |= {"warmup": args.warmup, "train_repeats": args.train_repeats}
    if args.demo:
        with tempfile.TemporaryDirectory(prefix="methods-demo-") as scratch:
            demos = {
                method: run_in_fresh_process(
                    "benchmarks.demo:measure_demo",
                    out=str(Path(scratch) / method),
                    method=method,
                )
                for method in FULL_SIZE
            }
        body = _demo_report(demos, command, load_at_start)
        print(body)
        if not args.no_write:
            update_section(DEMO_SECTION, body)
        return
    with tempfile.TemporaryDirectory(prefix="methods-") as scratch:
        work = Path(scratch)
        inputs = write_inputs(work)
        for method in FULL_SIZE:
            results["predict"][method] = run_in_fresh_process(
                "benchmarks.methods:measure_prediction",
                work=str(work),
                method=method,
                repeats=args.repeats,
                warmup=args.warmup,
            )
            results["train"][method] = run_in_fresh_process(
                "benchmarks.methods:measure_training_step",
                work=str(work),
                method=method,
                repeats=args.train_repeats,
            )
            print(json.dumps({method: results["predict"][method]["median_s"]}), flush=True)
        results["memory_format"] = run_in_fresh_process(
            "benchmarks.methods:measure_memory_format", depth=MEMORY_FORMAT_DEPTH
        )
        results["memory_format"].pop("peak_rss_mb", None)
    body = _report(inputs, results, command, load_at_start)
    print(body)
    if not args.no_write:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
