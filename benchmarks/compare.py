"""Every method side by side on this machine (``sparsekits compare``): the section ``compare`` of
BENCHMARKS.md.

Each method trains on the demo's training phantoms with its demo preset, its steps scaled to
``--budget-min`` minutes for all methods together, then predicts the same held-out phantoms,
one case per fresh process; the table is ``compare``'s own (compare.md), with the load, the
machine and the command. The run's folder (``--work``) keeps the models, predictions and
compare.png. A run takes about the budget plus a few minutes.

Command (from the repository root):
    python benchmarks/compare.py [--budget-min 15]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from sparsekits.bench.report import load_average, measured_on
from sparsekits.compare import DEFAULT_BUDGET_MIN, REPORT_MD, run_compare
from sparsekits.methods import method_names

SECTION = "compare"


def main() -> None:
    from _sections import command_line, update_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", nargs="+", choices=method_names(), default=list(method_names())
    )
    parser.add_argument("--budget-min", type=float, default=DEFAULT_BUDGET_MIN)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparsekits-compare-benchmark"))
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = command_line(__file__, args, omit=("work",))
    load_at_start = load_average()
    shutil.rmtree(args.work, ignore_errors=True)
    start = time.perf_counter()
    run_compare(args.work, tuple(args.methods), budget_min=args.budget_min, seed=args.seed)
    minutes = (time.perf_counter() - start) / 60
    table = (args.work / REPORT_MD).read_text().split("\n", 2)[2]  # without its title
    body = "\n".join(
        [
            "## The methods compared (`sparsekits compare`)",
            "",
            f"{table.strip()}",
            "",
            f"The whole run (phantoms, training, prediction, scoring) took {minutes:.1f} min. "
            f"The picture is {args.work}/compare.png of that run.",
            "",
            *measured_on(command, load_at_start),
        ]
    )
    body = body.replace("![compare](compare.png)\n", "")
    print(body)
    if not args.no_write:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
