"""``sparsekits compare``: methods side by side on the same held-out phantoms, in one run.

Each method is trained on the same training phantoms (fold 0, the same seed) with its demo
preset, its training steps scaled to the budget, or taken from a model folder the user gives;
then each predicts the same held-out phantoms, one case per fresh process (so that the peak
memory is the case's own), and is scored by the KiTS23 rules:

```
OUT/data/, OUT/test/   training and held-out phantoms (the demo's), unless given
OUT/<method>/          each method's cache, runs and model (unless given), predictions,
                       evaluation.csv
OUT/compare.md         the table: Dice and Surface Dice per region, tumours and cysts found /
                       missed / false, prediction time and peak memory per case, training time
                       per step
OUT/compare.png        the same, drawn
OUT/compare.json       every figure
```
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from sparsekits.errors import InputError
from sparsekits.layout import NIFTI_OUT
from sparsekits.plan import Plan

DEFAULT_BUDGET_MIN = 15.0  # training, all methods together, on a quiet 2-core machine
# What each method's demo preset trains in (minutes, quiet 2-core machine): the budget scales it.
DEMO_PRESET_MIN = 5.0
REPORT_MD, REPORT_PNG, REPORT_JSON = "compare.md", "compare.png", "compare.json"
REGIONS = (("kidney", "kidney_and_mass"), ("masses", "masses"), ("tumor", "tumour"))
LESION_COLUMNS = tuple(
    f"{lesion}_{outcome}"
    for lesion in ("tumours", "cysts")
    for outcome in ("found", "missed", "false")
)


@dataclass
class MethodResult:
    """One method's figures in a comparison."""

    method: str
    model_dir: Path
    trained_here: bool
    scores: dict  # the evaluation's mean row (Dice, Surface Dice, lesion totals)
    cases: list[dict] = field(default_factory=list)  # per case: seconds, peak_rss_mb
    step_s: dict[str, float] = field(default_factory=dict)  # training s per step, per stage
    steps: dict[str, int] = field(default_factory=dict)  # training steps, per stage

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["model_dir"] = str(self.model_dir)
        return values


def budget_plan(plan: Plan, factor: float) -> Plan:
    """``plan`` with each stage's training epochs times ``factor`` (at least one)."""
    for stage in plan.stages:
        epochs = max(1, round(stage.recipe.epochs * factor))
        plan = plan.with_stage(stage.role, recipe=dataclasses.replace(stage.recipe, epochs=epochs))
    return plan


def parse_models(pairs: list[str]) -> dict[str, Path]:
    """``METHOD=FOLDER`` pairs (``--model``) as {method: folder}; InputError for a bad one."""
    from sparsekits.methods import method_names
    from sparsekits.models.package import resolve_model

    models = {}
    for pair in pairs:
        method, sep, folder = pair.partition("=")
        if not sep or not folder:
            raise InputError(pair, "--model takes METHOD=MODEL_FOLDER")
        if method not in method_names():
            raise InputError(
                pair, f"unknown method {method!r} (known: {', '.join(method_names())})"
            )
        models[method] = resolve_model(folder)
    return models


def run_compare(
    out: str | Path,
    methods: tuple[str, ...],
    budget_min: float = DEFAULT_BUDGET_MIN,
    models: dict[str, Path] | None = None,
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    workers: int = 2,
) -> list[MethodResult]:
    """Train (or take from ``models``), predict and score every method of ``methods`` on the
    same phantoms; write OUT/compare.{md,png,json}. ``quick``: the demo's quick phantoms and
    each method's demo-quick preset, for tests."""
    from sparsekits.demo import FULL, QUICK, write_demo_phantoms
    from sparsekits.device import check_device
    from sparsekits.predict.pipeline import load_predictor

    out, models = Path(out), dict(models or {})
    check_device(device)
    unknown = set(models) - set(methods)
    if unknown:
        raise InputError(", ".join(sorted(unknown)), "--model given for a method not compared")
    for method, folder in models.items():
        load_predictor(folder, method=method)  # refuses a folder of another method up front
    config = dataclasses.replace(QUICK if quick else FULL, seed=seed)
    write_demo_phantoms(out, config)
    to_train = [method for method in methods if method not in models]
    factor = budget_min / (DEMO_PRESET_MIN * max(1, len(to_train)))
    results = []
    for method in methods:
        model, runs = models.get(method), {}
        if model is None:
            model, runs = _train(out / method, method, config, factor, seed, workers)
        results.append(_measure(out, method, model, runs, device, workers))
    write_report(out, results, config.test_cases, budget_min if to_train else None)
    return results


def _train(out: Path, method: str, config, factor: float, seed: int, workers: int):
    from sparsekits.experiment import default_stage_trainer, train_model
    from sparsekits.methods import get_method

    plan = budget_plan(get_method(method).default_plan(config.preset), factor)
    trainer = default_stage_trainer(seed, config.loader_workers)
    return train_model(out, plan, out.parent / "data", trainer, workers)


def _measure(
    out: Path, method: str, model: Path, runs: dict[str, Path], device: str, workers: int
) -> MethodResult:
    """Predict every held-out case in a fresh process; score the predictions."""
    from sparsekits.bench.measure import run_in_fresh_process
    from sparsekits.data.datasets import find_cases
    from sparsekits.evaluate.kits23 import evaluate_folders

    predictions = out / method / "predictions"
    cases = []
    for case in find_cases(out / "test"):
        figures = run_in_fresh_process(
            "sparsekits.compare:predict_case",
            model=str(model),
            image=str(case.image),
            destination=str(predictions / f"{case.case_id}{NIFTI_OUT}"),
            device=device,
        )
        cases.append({"case": case.case_id, **figures})
    evaluation = evaluate_folders(
        predictions,
        out / "test",
        output_csv=out / method / "evaluation.csv",
        workers=workers,
    )
    steps, step_s = _training_speed(runs)
    return MethodResult(method, model, bool(runs), evaluation.mean, cases, step_s, steps)


def predict_case(model: str, image: str, destination: str, device: str = "cpu") -> dict:
    """Predict one scan as ``sparsekits predict`` does (read, predict, write); its seconds, the
    model's loading left out. Run in a fresh process, which adds its peak RSS."""
    import time

    from sparsekits.predict.pipeline import load_predictor, predict_file

    predictor = load_predictor(model, device=device)
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    predict_file(predictor, Path(image), Path(destination))
    figures = {"seconds": time.perf_counter() - start}
    if device.startswith("cuda"):
        import torch

        figures["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return figures


def _training_speed(runs: dict[str, Path]) -> tuple[dict[str, int], dict[str, float]]:
    """Steps and seconds per step of each stage's run, from its log (validation left out)."""
    from sparsekits.train.runlog import read_log

    steps, step_s = {}, {}
    for role, run in runs.items():
        rows = read_log(Path(run) / "log.csv")
        if rows:
            steps[role] = int(rows[-1]["step"])
            step_s[role] = sum(float(row["seconds"]) for row in rows) / max(1, steps[role])
    return steps, step_s


def write_report(
    out: Path, results: list[MethodResult], test_cases: int, budget_min: float | None
) -> Path:
    """OUT/compare.md, .png and .json from the methods' results."""
    from sparsekits.fileio import write_text_atomic

    write_text_atomic(
        out / REPORT_JSON, json.dumps([result.to_dict() for result in results], indent=1)
    )
    draw(results, out / REPORT_PNG)
    write_text_atomic(out / REPORT_MD, report_markdown(results, test_cases, budget_min))
    return out / REPORT_MD


def report_markdown(results: list[MethodResult], test_cases: int, budget_min: float | None) -> str:
    from sparsekits.markdown import markdown_table

    budget = (
        f"trained here in a budget of {budget_min:g} min (each method's demo preset, its steps "
        "scaled), "
        if budget_min is not None
        else ""
    )
    header = [
        "method",
        *(f"Dice {name}" for _, name in REGIONS),
        *(f"SD {name}" for _, name in REGIONS),
        "tumours found / missed / false",
        "cysts found / missed / false",
        "predict s per case, median (max)",
        "peak RSS MB, max",
        "training s per step (steps)",
    ]
    rows = [_row(result) for result in results]
    return "\n".join(
        [
            "# sparsekits compare",
            "",
            f"{test_cases} held-out phantoms, the same for every method; {budget}fold 0 of the "
            "same training phantoms. Dice and Surface Dice (SD) by the KiTS23 rules, mean over "
            "cases; lesions found when a predicted component reaches Dice >= 0.1. Each case "
            "predicted in a fresh process (read, predict, write; the model's loading left "
            "out), whose peak RSS is the memory figure.",
            "",
            markdown_table(header, rows),
            "",
            f"![compare]({REPORT_PNG})",
            "",
        ]
    )


def _row(result: MethodResult) -> list[str]:
    scores, seconds = result.scores, [case["seconds"] for case in result.cases]
    speed = ", ".join(
        f"{role} {result.step_s[role]:.2f} ({result.steps[role]})" for role in result.step_s
    )
    return [
        result.method,
        *(f"{scores[f'Dice_{key}']:.3f}" for key, _ in REGIONS),
        *(f"{scores[f'SD_{key}']:.3f}" for key, _ in REGIONS),
        *(
            " / ".join(
                str(int(scores[f"{lesion}_{outcome}"])) for outcome in ("found", "missed", "false")
            )
            for lesion in ("tumours", "cysts")
        ),
        f"{statistics.median(seconds):.1f} ({max(seconds):.1f})" if seconds else "-",
        f"{max(case['peak_rss_mb'] for case in result.cases):.0f}" if result.cases else "-",
        speed or "given",
    ]


def draw(results: list[MethodResult], path: Path) -> None:
    """Dice per region, and prediction time against peak memory, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sparsekits.fileio import atomic_path

    figure, (dice, cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(results))
    for index, result in enumerate(results):
        values = [result.scores[f"Dice_{key}"] for key, _ in REGIONS]
        dice.bar(np.arange(len(REGIONS)) + index * width, values, width, label=result.method)
        seconds = [case["seconds"] for case in result.cases]
        memory = [case["peak_rss_mb"] for case in result.cases]
        cost.scatter(seconds, memory, label=result.method, alpha=0.8)
    dice.set_xticks(np.arange(len(REGIONS)) + width * (len(results) - 1) / 2)
    dice.set_xticklabels([name for _, name in REGIONS])
    dice.set_ylim(0, 1)
    dice.set_ylabel("Dice (mean over held-out cases)")
    dice.legend(fontsize=8)
    cost.set_xlabel("prediction time per case (s)")
    cost.set_ylabel("peak RSS per case (MB)")
    cost.set_xlim(left=0)
    cost.set_ylim(bottom=0)
    cost.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
