"""Lesion geometry of KiTS23 label maps against the phantoms: how exophytic the masses are, how
big, and how far they reach beyond the kidney parenchyma's box (to size an ROI margin).

The same code measures real label maps (``--labels DIR``, default ``../shared/data/kits23-labels``)
and ``--phantoms N`` phantoms per config written to a temporary folder (the default
``PhantomConfig``, and the demo's ``SMALL_KIDNEYS`` at ``FULL.phantom_shape``; seed 0):

- kidneys: the two largest 26-connected components of labels > 0 of at least ``MIN_KIDNEY_ML``;
- masses: 26-connected components of tumour (2), and separately cyst (3), inside a kidney, of at
  least ``MIN_LESION_ML`` (as in the section ``kits23_lesions``);
- outside share of a mass: the share of its voxel centres outside the 3D convex hull (in mm, by the
  NIfTI affine) of its kidney's parenchyma (label 1) voxel centres;
- extent of a kidney: the largest distance (mm) from the axis-aligned (world) box of its label-1
  voxels to a voxel of one of its masses (0 if all lie inside); also the largest single-axis
  excess, which is the margin a box around the parenchyma needs to hold every mass;
- parenchyma share of a kidney with masses: its label-1 voxels over all its voxels (a kidney
  that a mass has all but replaced has little left for a first stage to find).

Full resolution throughout (each volume cropped to its labels' box; nothing downsampled).

Command (from the repository root):
    python benchmarks/lesion_geometry.py --phantoms 12 --out docs/PHANTOMS.md
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cc3d
import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError
from tqdm import tqdm

from _sections import command_line, update_section
from sparsekits.data.io import read_label_map
from sparsekits.markdown import markdown_table
from sparsekits.phantoms.lesions import MIN_LESION_ML

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = ROOT.parent / "shared" / "data" / "kits23-labels"
SECTION = "lesion_geometry"
TITLE = "## Lesion geometry: KiTS23 label maps against the phantoms"
MIN_KIDNEY_ML = 10.0  # KiTS23's kidneys are >= 60 mL; its other components are specks < 0.5 mL
MASS_LABELS = {2: "tumour", 3: "cyst"}
# A kidney mostly replaced by its masses: stage 1 finds no parenchyma to cut its ROI from.
LITTLE_PARENCHYMA = 0.2


@dataclass
class Mass:
    label: int  # 2 tumour, 3 cyst
    volume_ml: float
    outside: float  # share of voxels outside the parenchyma's hull; nan without a hull


@dataclass
class Kidney:
    masses: list[Mass] = field(default_factory=list)
    extent_mm: float = 0.0  # Euclidean distance of the farthest mass voxel beyond the box
    margin_mm: float = 0.0  # largest per-axis excess beyond the box (what a box margin needs)
    parenchyma_share: float = 1.0  # of the kidney's voxels (labels > 0), the parenchyma's


def parenchyma_hull(parenchyma_mm: np.ndarray) -> Delaunay | None:
    """The convex hull of the points ``parenchyma_mm`` (M, 3), tetrahedralised for point
    location; None if it is degenerate (fewer than 4 points, or all in a plane)."""
    try:
        return Delaunay(parenchyma_mm[ConvexHull(parenchyma_mm).vertices])
    except (QhullError, ValueError, IndexError):
        return None


def outside_share(hull: Delaunay | None, mass_mm: np.ndarray) -> float:
    """Share of the points ``mass_mm`` (N, 3) outside ``hull`` (points on its surface count as
    inside); nan without a hull."""
    if hull is None:
        return float("nan")
    return float((hull.find_simplex(mass_mm) < 0).mean())


def _world(voxels: np.ndarray, start: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """mm coordinates of voxel indices ``voxels`` (N, 3) of a crop that starts at ``start``."""
    return (voxels + start) @ affine[:3, :3].T + affine[:3, 3]


def extent_beyond_box(parenchyma_mm: np.ndarray, mass_mm: np.ndarray) -> tuple[float, float]:
    """(Euclidean, largest per-axis) distance in mm of the farthest point of ``mass_mm`` beyond the
    axis-aligned box of ``parenchyma_mm``; (0, 0) if every point lies in the box."""
    if len(mass_mm) == 0 or len(parenchyma_mm) == 0:
        return 0.0, 0.0
    low, high = parenchyma_mm.min(axis=0), parenchyma_mm.max(axis=0)
    excess = np.maximum(low - mass_mm, 0) + np.maximum(mass_mm - high, 0)
    return float(np.linalg.norm(excess, axis=1).max()), float(excess.max())


def measure_case(labels: np.ndarray, affine: np.ndarray) -> list[Kidney]:
    """The kidneys of one label map (values 0-3, voxel -> mm ``affine``) with their masses."""
    present = labels > 0
    if not present.any():
        return []
    box = tuple(
        slice(int(hits[0]), int(hits[-1]) + 1)
        for hits in (np.flatnonzero(present.any(axis=tuple({0, 1, 2} - {a}))) for a in range(3))
    )
    labels = labels[box]
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    components = cc3d.connected_components(labels > 0, connectivity=26)
    stats = cc3d.statistics(components)
    counts = stats["voxel_counts"][1:]
    kidneys = []
    for index in np.argsort(counts)[::-1][:2] + 1:
        if counts[index - 1] * voxel_ml < MIN_KIDNEY_ML:
            continue
        sub = stats["bounding_boxes"][index]
        start = np.array([b.start + s.start for b, s in zip(box, sub, strict=True)])
        kidney = components[sub] == index
        parenchyma = _world(np.argwhere(kidney & (labels[sub] == 1)), start, affine)
        hull = parenchyma_hull(parenchyma)
        result, mass_points = Kidney(), [np.zeros((0, 3))]
        result.parenchyma_share = len(parenchyma) / int(counts[index - 1])
        for label in MASS_LABELS:
            masses = cc3d.connected_components(kidney & (labels[sub] == label), connectivity=26)
            voxels = np.argwhere(masses)
            ids = masses[tuple(voxels.T)]
            for mass_id in np.unique(ids):
                points = _world(voxels[ids == mass_id], start, affine)
                if len(points) * voxel_ml < MIN_LESION_ML:
                    continue
                share = outside_share(hull, points)
                result.masses.append(Mass(label, len(points) * voxel_ml, share))
                mass_points.append(points)
        result.extent_mm, result.margin_mm = extent_beyond_box(
            parenchyma, np.concatenate(mass_points)
        )
        kidneys.append(result)
    return kidneys


def measure_files(files: list[Path], bar: tqdm) -> list[list[Kidney]]:
    """``measure_case`` of every label map in ``files`` (read with its affine)."""
    cases = []
    for path in files:
        image = read_label_map(path)
        cases.append(measure_case(image.array, image.grid.affine))
        bar.update()
    return cases


def _percentiles(values: list[float], at: tuple[int, ...] = (25, 50, 75), fmt: str = ".3g") -> str:
    """The percentiles ``at`` of ``values`` (nan left out), as "a / b / c"."""
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "-"
    return " / ".join(format(p, fmt) for p in np.percentile(values, at))


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def report(sources: dict[str, list[list[Kidney]]]) -> str:
    """Markdown tables: masses per label, and kidneys, one row per source."""
    mass_rows, kidney_rows = [], []
    for name, cases in sources.items():
        kidneys = [k for case in cases for k in case]
        volume = {}
        for label, mass_name in MASS_LABELS.items():
            masses = [m for k in kidneys for m in k.masses if m.label == label]
            hulled = [m for m in masses if not np.isnan(m.outside)]
            volume[label] = sum(m.volume_ml for m in masses)
            weighted = sum(m.outside * m.volume_ml for m in hulled)
            mass_rows.append(
                [
                    name,
                    mass_name,
                    len(masses),
                    _percentiles([m.volume_ml for m in masses]),
                    _percentiles([m.outside for m in hulled], fmt=".2f"),
                    _share(sum(m.outside > 0.5 for m in hulled), len(hulled)),
                    _share(weighted, sum(m.volume_ml for m in hulled)),
                ]
            )
        per_kidney = [len(k.masses) for k in kidneys]
        with_cyst = sum(any(m.label == 3 for m in k.masses) for k in kidneys)
        with_tumour = sum(any(m.label == 2 for m in k.masses) for k in kidneys)
        lesioned = [k.parenchyma_share for k in kidneys if k.masses]
        kidney_rows.append(
            [
                name,
                len(cases),
                len(kidneys),
                _share(with_tumour, len(kidneys)),
                _share(with_cyst, len(kidneys)),
                f"{np.mean(per_kidney):.2f} ({max(per_kidney, default=0)})" if kidneys else "-",
                f"{volume[3] / volume[2]:.3f}" if volume[2] else "-",
                _percentiles([k.extent_mm for k in kidneys], (50, 90, 95, 100), ".1f"),
                _percentiles([k.margin_mm for k in kidneys], (50, 90, 95, 100), ".1f"),
                _percentiles(lesioned, (5, 10, 25, 50), ".2f"),
                _share(sum(share < LITTLE_PARENCHYMA for share in lesioned), len(lesioned)),
            ]
        )
    mass_header = [
        "source",
        "mass",
        "masses",
        "volume mL, 25 / 50 / 75 %",
        "share outside the hull, 25 / 50 / 75 %",
        "masses > 50 % outside",
        "volume-weighted share outside",
    ]
    kidney_header = [
        "source",
        "cases",
        "kidneys",
        "with a tumour",
        "with a cyst",
        "masses per kidney, mean (max)",
        "cyst : tumour volume",
        "extent beyond the parenchyma box mm, 50 / 90 / 95 / 100 %",
        "largest per-axis excess mm, 50 / 90 / 95 / 100 %",
        "parenchyma share of a kidney with masses, 5 / 10 / 25 / 50 %",
        f"kidneys with masses under {LITTLE_PARENCHYMA:.0%} parenchyma",
    ]
    return "\n\n".join(
        [markdown_table(mass_header, mass_rows), markdown_table(kidney_header, kidney_rows)]
    )


def phantom_sources(folder: Path, n: int) -> dict[str, list[Path]]:
    """Write ``n`` phantoms per config under ``folder`` (seed 0); their label maps by config."""
    from sparsekits.demo import FULL, SMALL_KIDNEYS
    from sparsekits.layout import KITS_LABEL
    from sparsekits.phantoms import DEFAULT, write_phantom_dataset

    shape = "x".join(map(str, FULL.phantom_shape))
    configs = {
        f"phantoms: DEFAULT ({n})": (None, DEFAULT),
        f"phantoms: demo SMALL_KIDNEYS at {shape} ({n})": (FULL.phantom_shape, SMALL_KIDNEYS),
    }
    sources = {}
    for index, (name, (grid, config)) in enumerate(configs.items()):
        cases = write_phantom_dataset(folder / str(index), n, seed=0, shape=grid, config=config)
        sources[name] = [case / KITS_LABEL for case in cases]
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--phantoms", type=int, default=12, help="phantoms per config (0: none)")
    parser.add_argument("--out", type=Path, help="markdown file: its section is added or replaced")
    args = parser.parse_args()
    real = sorted(args.labels.glob("*.nii.gz"))
    if not real:
        raise SystemExit(f"{args.labels}: no label maps")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files = {f"KiTS23 label maps ({len(real)})": real}
        if args.phantoms > 0:
            files |= phantom_sources(Path(tmp), args.phantoms)
        with tqdm(total=sum(map(len, files.values())), desc="label maps", unit="case") as bar:
            results = {name: measure_files(paths, bar) for name, paths in files.items()}
    seconds = time.perf_counter() - started
    body = "\n".join(
        [
            TITLE,
            "",
            f"Measured {datetime.date.today().isoformat()} in {seconds / 60:.1f} min (one "
            "process, full resolution: nothing downsampled). Kidneys: the two largest "
            f"26-connected components of labels > 0 of at least {MIN_KIDNEY_ML:g} mL. Masses: "
            "26-connected components of tumour, and of cyst, of at least "
            f"{MIN_LESION_ML:g} mL. Share outside: of a mass's voxels, outside the 3D convex "
            "hull (mm) of its kidney's parenchyma (label 1). Extent: per kidney, the farthest "
            "mass voxel beyond the world-axis box of its parenchyma (0 if none); the per-axis "
            "excess is the margin a box around the parenchyma needs to hold every mass.",
            "",
            report(results),
            "",
            f"Command: `{command_line(__file__, args)}`",
        ]
    )
    print(body)
    if args.out is not None:
        if args.out.exists():
            update_section(SECTION, body, args.out)
        else:
            args.out.write_text(f"<!-- BEGIN {SECTION} -->\n{body}\n<!-- END {SECTION} -->\n")


if __name__ == "__main__":
    main()
