"""How many tumours and cysts a case has, and how big they are: measured on KiTS23 label maps.

``measure_lesions`` counts the connected components (26-connected) of each lesion label in
real label maps and fits a log-normal to their equivalent diameters (the diameter of the sphere
of the same volume). Components under ``MIN_LESION_ML`` are left out: most are annotation specks
of a few voxels, not lesions. ``benchmarks/kits23_lesions.py`` runs it on
``../shared/data/kits23-labels`` and writes the table in docs/PHANTOMS.md; the constants
``KITS23_TUMOURS`` and ``KITS23_CYSTS`` below are that run's figures (98 cases).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MIN_LESION_ML = 0.5


@dataclass(frozen=True)
class LesionDistribution:
    """Lesions of one label per case: a count distribution and log-normal diameters."""

    count_p: tuple[float, ...]  # P(n lesions in a case) for n = 0, 1, 2, ...
    log_diameter_mm: tuple[float, float]  # mean and SD of ln(equivalent diameter / mm)
    diameter_limits_mm: tuple[float, float]  # draws are clipped to this range

    def draw_count(self, rng: np.random.Generator) -> int:
        p = np.asarray(self.count_p, float)
        return int(rng.choice(len(p), p=p / p.sum()))

    def draw_diameter(self, rng: np.random.Generator) -> float:
        mean, sd = self.log_diameter_mm
        return float(np.clip(math.exp(rng.normal(mean, sd)), *self.diameter_limits_mm))

    def median_diameter_mm(self) -> float:
        return math.exp(self.log_diameter_mm[0])

    def scaled(self, factor: float) -> LesionDistribution:
        """Every diameter times ``factor``: lesions for kidneys ``factor`` times KiTS23's size."""
        mean, sd = self.log_diameter_mm
        low, high = self.diameter_limits_mm
        return replace(
            self,
            log_diameter_mm=(mean + math.log(factor), sd),
            diameter_limits_mm=(low * factor, high * factor),
        )


# Measured by benchmarks/kits23_lesions.py on the 98 KiTS23 label maps of ../shared/data
# (every fifth case): tumours 1 per case in 94 % of cases, median 37 mm (5-95 %: 14-100 mm);
# cysts in 41 % of cases, median 18 mm. Limits: about the 1st and 99th percentiles.
KITS23_TUMOURS = LesionDistribution(
    count_p=(0.0, 0.939, 0.051, 0.010), log_diameter_mm=(3.60, 0.59), diameter_limits_mm=(10, 120)
)
KITS23_CYSTS = LesionDistribution(
    count_p=(0.592, 0.184, 0.122, 0.02, 0.01, 0.041, *(0.0,) * 7, 0.01, 0.0, 0.0, 0.02),
    log_diameter_mm=(2.88, 0.49),
    diameter_limits_mm=(8, 60),
)


@dataclass(frozen=True)
class LesionStats:
    """What ``measure_lesions`` found for one label."""

    cases: int
    counts: list[int]  # lesions per case
    diameters_mm: list[float]  # equivalent diameter of every lesion

    def distribution(self, diameter_limits_mm: tuple[float, float]) -> LesionDistribution:
        histogram = np.bincount(self.counts) / max(1, self.cases)
        logs = np.log(self.diameters_mm) if self.diameters_mm else np.zeros(1)
        return LesionDistribution(
            count_p=tuple(round(float(p), 3) for p in histogram),
            log_diameter_mm=(round(float(logs.mean()), 2), round(float(logs.std()), 2)),
            diameter_limits_mm=diameter_limits_mm,
        )


def lesion_diameters_mm(labels: np.ndarray, label: int, voxel_ml: float) -> list[float]:
    """Equivalent diameters (mm) of the components of ``labels == label`` of at least
    ``MIN_LESION_ML``."""
    import cc3d

    components = cc3d.connected_components(labels == label, connectivity=26)
    volumes_ml = np.bincount(components.ravel())[1:] * voxel_ml
    kept = volumes_ml[volumes_ml >= MIN_LESION_ML]
    return [float(10 * (6 * v / math.pi) ** (1 / 3)) for v in kept]  # 1 mL = 1000 mm^3


def measure_lesions(label_maps: Iterable[Path], labels=(2, 3)) -> dict[int, LesionStats]:
    """Per lesion label: counts per case and diameters over the given label map files."""
    from sparsekits.data.io import read_label_map

    counts: dict[int, list[int]] = {label: [] for label in labels}
    diameters: dict[int, list[float]] = {label: [] for label in labels}
    cases = 0
    for path in label_maps:
        image = read_label_map(path)
        voxel_ml = float(np.prod(image.grid.spacing)) / 1000
        cases += 1
        for label in labels:
            found = lesion_diameters_mm(image.array, label, voxel_ml)
            counts[label].append(len(found))
            diameters[label] += found
    return {label: LesionStats(cases, counts[label], diameters[label]) for label in labels}
