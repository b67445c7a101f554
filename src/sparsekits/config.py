"""Typed settings of the method (METHOD.md): each number of a stage lives here once."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StageConfig:
    """What one stage sees: its isotropic spacing, HU window, normalisation and crop margin.

    Arrays on a stage grid are in the canonical orientation (RAS+, axes x, y, z), so
    ``crop_margin_vox`` is (x, y, z) in voxels of ``spacing_mm``.
    """

    stage: int
    spacing_mm: float
    hu_window: tuple[float, float]
    norm_mean: float
    norm_std: float
    crop_margin_vox: tuple[int, int, int] = (0, 0, 0)

    def normalise(self, hu):
        """Feature value of HU (numpy array or torch tensor)."""
        return (hu - self.norm_mean) / self.norm_std

    def in_window(self, hu):
        """Boolean mask of the voxels this stage keeps (inclusive bounds)."""
        low, high = self.hu_window
        return (hu >= low) & (hu <= high)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> StageConfig:
        values = dict(values)
        values["hu_window"] = tuple(values["hu_window"])
        values["crop_margin_vox"] = tuple(values["crop_margin_vox"])
        return cls(**values)


@dataclass(frozen=True)
class RoiConfig:
    """How stage-1 region probabilities become kidney ROIs."""

    probability_threshold: float = 0.1
    min_component_voxels: int = 50
    connectivity: int = 26
    max_components: int = 5
    dilation_mm: float = 10.0  # an 11-voxel ellipsoid at 1.99 mm


STAGE1 = StageConfig(
    stage=1,
    spacing_mm=1.99,
    hu_window=(-53.4, 283.2),
    norm_mean=48.10007,
    norm_std=62.645897,
)

STAGE2 = StageConfig(
    stage=2,
    spacing_mm=0.78,
    hu_window=(-300.0, 500.0),
    norm_mean=57.802067,
    norm_std=81.260414,
    crop_margin_vox=(35, 35, 10),
)

STAGES = {1: STAGE1, 2: STAGE2}

ROI = RoiConfig()

# Threshold on region probabilities for the final label map.
REGION_THRESHOLD = 0.5
