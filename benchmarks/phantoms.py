"""The phantoms' tables in docs/PHANTOMS.md: HU per tissue and phase, and KiTS23's lesions.

- Section ``tissues``: the tables of ``sparsekits.phantoms.tissues`` (the code is the one place
  the numbers live; this writes them out for reading).
- Section ``kits23_lesions``: reads every label map in ``../shared/data/kits23-labels`` (or
  ``--labels DIR``), counts the connected components of each lesion label of at least
  ``MIN_LESION_ML`` and fits their sizes. The constants ``KITS23_TUMOURS`` / ``KITS23_CYSTS``
  were copied from this output; the table says whether they still match.

Command (from the repository root):
    python benchmarks/phantoms.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _sections import command_line, update_section
from sparsekits.markdown import markdown_table
from sparsekits.phantoms.lesions import (
    KITS23_CYSTS,
    KITS23_TUMOURS,
    MIN_LESION_ML,
    LesionDistribution,
    measure_lesions,
)
from sparsekits.phantoms.tissues import BODY_TISSUES, PHASES, RENAL_TISSUES

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "PHANTOMS.md"
DEFAULT_LABELS = ROOT.parent / "shared" / "data" / "kits23-labels"


def lesion_rows(name: str, stats, constant: LesionDistribution) -> list[list[object]]:
    diameters = np.asarray(stats.diameters_mm)
    percentiles = np.percentile(diameters, [5, 25, 50, 75, 95]).round(1).tolist()
    fitted = stats.distribution(constant.diameter_limits_mm)
    counts = np.bincount(stats.counts)
    return [
        [
            name,
            len(diameters),
            f"{(np.asarray(stats.counts) > 0).mean():.0%}",
            ", ".join(f"{n}: {c}" for n, c in enumerate(counts) if c),
            " / ".join(f"{p:g}" for p in percentiles),
            f"{fitted.log_diameter_mm[0]:.2f}, {fitted.log_diameter_mm[1]:.2f}",
            "yes" if _matches(fitted, constant) else "NO: update sparsekits.phantoms.lesions",
        ]
    ]


def _matches(fitted: LesionDistribution, constant: LesionDistribution) -> bool:
    counts_match = np.allclose(
        np.pad(fitted.count_p, (0, max(0, len(constant.count_p) - len(fitted.count_p)))),
        np.pad(constant.count_p, (0, max(0, len(fitted.count_p) - len(constant.count_p)))),
        atol=0.002,
    )
    return counts_match and np.allclose(fitted.log_diameter_mm, constant.log_diameter_mm, atol=0.01)


def tissue_tables(command: str) -> str:
    """One table per tissue group: mean HU (case SD, texture) per phase."""
    lines = ["## HU per tissue and contrast phase", ""]
    lines.append(
        "Mean HU, with the SD of a case's mean and the texture amplitude in brackets; image "
        "noise comes on top. Sources: `sparsekits/phantoms/tissues.py` (a key per value) and "
        "the references below."
    )
    for title, tables in (("Kidney and lesions", RENAL_TISSUES), ("Body", BODY_TISSUES)):
        rows = []
        for tissue in tables[PHASES[0]]:
            cells = [tables[phase][tissue] for phase in PHASES]
            rows.append(
                [
                    tissue.name.lower().replace("_", " "),
                    *(f"{t.hu:g} ({t.case_sd:g}, {t.texture:g})" for t in cells),
                ]
            )
        lines += ["", f"### {title}", "", markdown_table(["tissue", *PHASES], rows)]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    args = parser.parse_args()
    files = sorted(args.labels.glob("*.nii.gz"))
    if not files:
        raise SystemExit(f"{args.labels}: no label maps")
    stats = measure_lesions(files)
    command = command_line(__file__, args)
    header = [
        "lesion",
        "lesions",
        "cases with one",
        "cases by count (lesions: cases)",
        "equivalent diameter mm, 5/25/50/75/95 %",
        "ln(diameter) mean, SD",
        "matches the constant",
    ]
    rows = lesion_rows("tumour (2)", stats[2], KITS23_TUMOURS)
    rows += lesion_rows("cyst (3)", stats[3], KITS23_CYSTS)
    body = "\n".join(
        [
            "## KiTS23 lesions: number per case and size",
            "",
            f"{len(files)} KiTS23 label maps (`{args.labels.name}`); lesions are 26-connected "
            f"components of one label of at least {MIN_LESION_ML} mL (smaller ones are "
            "annotation specks). Equivalent diameter: of the sphere of the same volume.",
            "",
            markdown_table(header, rows),
            "",
            f"Command: `{command}`",
        ]
    )
    update_section("kits23_lesions", body, REPORT)
    update_section("tissues", tissue_tables(command), REPORT)
    print(body)


if __name__ == "__main__":
    main()
