"""The end-to-end demo (``sparsekits demo``): wall time of each step, peak RSS and held-out scores.

Issue 11 asks for the whole demo within 5 minutes on a quiet 2-core CPU (so that a slow day stays
under 10), with held-out Dice kidney_and_mass >= 0.90, masses >= 0.70 and tumour >= 0.60. Each
run is ``run_demo`` in a fresh process (its peak RSS is the figure); a run takes about 5 minutes.
``--seeds N`` runs the demo with seeds 0 .. N-1 (other phantoms, other training draws): the
times are the median over runs, the scores the mean and standard deviation over seeds, since
one seed's six held-out phantoms say little. ``--method NAME`` runs that method's demo (default:
the registry's default method); each method has its own section.

After each run, the false mass of its predictions (tumour or cyst called outside the true masses)
by the tissue of the held-out phantoms' tissue maps, in mL, and the true mass it missed
(``sparsekits.bench.tissue_errors``); read from the run's folder, after its process ended.

Command (from the repository root):
    python benchmarks/demo.py --seeds 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from sparsekits.bench.measure import run_in_fresh_process
from sparsekits.bench.report import load_average, measured_on
from sparsekits.bench.tissue_errors import COLUMNS, MISSED, false_mass_in_folders
from sparsekits.markdown import markdown_table
from sparsekits.methods import DEFAULT_METHOD, method_names

TIME_LIMIT_S = 300.0
DICE_TARGETS = {"Dice_kidney": 0.90, "Dice_masses": 0.70, "Dice_tumor": 0.60}


# Columns of the per-seed table: (mean row key, header).
SEED_COLUMNS = (
    ("Dice_kidney", "Dice kidney_and_mass"),
    ("Dice_masses", "Dice masses"),
    ("Dice_tumor", "Dice tumour"),
    ("ROI_recall_kidney", "ROI recall kidney"),
    ("ROI_recall_masses", "ROI recall masses"),
    ("tumours_found", "tumours found"),
    ("tumours_missed", "missed"),
    ("tumours_false", "false"),
    ("cysts_found", "cysts found"),
    ("cysts_missed", "missed"),
    ("cysts_false", "false"),
)


def measure_demo(out: str, method: str = DEFAULT_METHOD, seed: int | None = None) -> dict:
    """Run the full demo of ``method`` (with ``seed``) into ``out``; its step timings and the
    evaluation's mean row."""
    from sparsekits.demo import run_demo

    start = time.perf_counter()
    result = run_demo(out, method=method, seed=seed)
    return {
        "wall_s": time.perf_counter() - start,
        "timings_s": result.timings_s,
        "mean": {key: value for key, value in result.mean.items() if key != "case"},
    }


def section_key(method: str) -> str:
    """The method's section of BENCHMARKS.md; the default method keeps the original "demo"."""
    return "demo" if method == DEFAULT_METHOD else f"demo-{method}"


def report(
    runs: list[dict], command: str, load_at_start: float, method: str = DEFAULT_METHOD
) -> str:
    steps = list(runs[0]["timings_s"])
    rows = [[step, f"{_median(runs, 'timings_s', step):.0f}"] for step in steps]
    wall = _median(runs, "wall_s")
    rows.append(["**total (wall, fresh process)**", f"**{wall:.0f}**"])
    verdicts = [f"at most {TIME_LIMIT_S:.0f} s -> {_met(wall <= TIME_LIMIT_S)}"]
    for key, target in DICE_TARGETS.items():
        mean = statistics.fmean(run["mean"][key] for run in runs)
        verdicts.append(f"{key} >= {target} (mean over seeds) -> {_met(mean >= target)}")
    verdict = f"Targets (issues 11 and 22, quiet machine): {'; '.join(verdicts)}."
    false_mass = [f"{_median(runs, 'false_mass', 'ml', column):.2f}" for column in COLUMNS]
    header = [f"{column} (true mass)" if column == MISSED else column for column in COLUMNS]
    lines = [
        f"## The end-to-end demo of {method} (`sparsekits demo --method {method}`)",
        "",
        "Phantoms, preprocessing, training both stages (small preset) on CPU, prediction and "
        f"evaluation of the held-out phantoms. Median of {len(runs)} run(s) (seeds "
        f"{', '.join(str(run['seed']) for run in runs)}), each a fresh process; peak RSS "
        f"{_median(runs, 'peak_rss_mb'):,.0f} MiB.",
        "",
        markdown_table(["step", "seconds"], rows),
        "",
        "Held-out test phantoms (KiTS23 rules) of each seed: the mean over its cases of each "
        "score, the total over its cases of each lesion count; then the mean and standard "
        "deviation over seeds:",
        "",
        seeds_table(runs),
        "",
        "False mass by tissue (mL, held-out phantoms): tumour or cyst predicted outside the true "
        "masses, by the tissue the phantom painted there (kidney: the true kidney), summed over "
        f"the {_cases(runs[0]['false_mass'])}; missed: true mass predicted as neither (median "
        "over runs):",
        "",
        markdown_table(header, [false_mass]),
        "",
        verdict,
        *measured_on(command, load_at_start),
    ]
    return "\n".join(lines)


def seeds_table(runs: list[dict]) -> str:
    """One row per run (its seed, wall time and SEED_COLUMNS), then mean +- SD over runs."""
    rows = [
        [str(run["seed"]), f"{run['wall_s']:.0f}"]
        + [_score(run["mean"][key], key) for key, _ in SEED_COLUMNS]
        for run in runs
    ]
    summary = ["**mean ± SD**", f"{statistics.fmean(run['wall_s'] for run in runs):.0f}"]
    for key, _ in SEED_COLUMNS:
        values = [run["mean"][key] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(f"{_score(statistics.fmean(values), key)} ± {_score(spread, key)}")
    header = ["seed", "wall s", *(name for _, name in SEED_COLUMNS)]
    return markdown_table(header, [*rows, summary])


def _score(value: float, key: str) -> str:
    return f"{value:.3f}" if key.startswith(("Dice", "ROI")) else f"{value:.1f}"


def _cases(false_mass: dict) -> str:
    skipped = false_mass["skipped"]
    left_out = f" ({len(skipped)} without a tissue map left out)" if skipped else ""
    return f"{len(false_mass['cases'])} test cases{left_out}"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _median(runs: list[dict], *keys: str) -> float:
    """Median over runs of ``run[keys[0]][keys[1]]...``."""
    values = []
    for run in runs:
        for key in keys:
            run = run[key]
        values.append(run)
    return statistics.median(values)


def main() -> None:
    from _sections import command_line, update_section  # here, not at the top: see _sections.py

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs, with seeds 0 .. N-1")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=method_names())
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparsekits-demo-benchmark"))
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = command_line(__file__, args, omit=("work",))
    load_at_start = load_average()
    runs = []
    for seed in range(args.seeds):
        out = args.work / f"seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        run = run_in_fresh_process(
            "benchmarks.demo:measure_demo", out=str(out), method=args.method, seed=seed
        )
        # The run's folder stays until the next benchmark replaces it: read its predictions now.
        run["false_mass"] = false_mass_in_folders(out / "predictions", out / "test").to_dict()
        run["seed"] = seed
        runs.append(run)
        print(f"seed {seed} ({seed + 1}/{args.seeds}): {run['wall_s']:.0f} s", flush=True)
    body = report(runs, command, load_at_start, args.method)
    print(body)
    if not args.no_write:
        update_section(section_key(args.method), body)


if __name__ == "__main__":
    main()
