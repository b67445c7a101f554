"""A method as data: the ``Plan`` that says how a method turns a CT into labels, and how it trains.

A plan holds, per stage, the grid (isotropic spacing, body crop, crop margins), the
sparsification rule, the normalisation, the network and the training recipe; the ROI rule that
joins the stages; and the threshold of the final label map. It is saved with the preprocessing
cache (``manifest.json``) and in every model folder (``plan.json``, and in each fold's
``config.json``), and prediction reads everything from the model folder, so an old model never
silently meets a new rule. ``sparsekits plan -o plan.json`` writes the default plan to edit;
``preprocess``, ``train``, ``predict`` and ``benchmark`` take ``--plan``.

Two parts of a plan play different roles:

- its *input* (``input_dict``: stages' grids, sparsification, normalisation, margins, the ROI
  rule) defines what the networks see. A cache and a model must share it with any plan they meet.
- its networks, recipes and threshold say how a model is built, trained and read out; a
  training run may override them (``train --lr``), and the model folder records what was used.

METHOD.md's numbers are the ``sscn-twostage`` plan (``PLANS``). Sparsification rules are small
typed objects keyed by ``rule`` (``SPARSIFY_RULES``), so that other methods can add theirs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sparsekits.errors import InputError
from sparsekits.models.config import ModelConfig, resolve_config

FORMAT = "sparsekits-plan"
VERSION = 1


@dataclass(frozen=True)
class HuWindow:
    """Keep the voxels with ``low <= HU <= high`` (inclusive)."""

    low: float
    high: float
    rule: ClassVar[str] = "hu_window"

    def keep(self, hu):
        """Boolean mask of the kept voxels (numpy array or torch tensor)."""
        return (hu >= self.low) & (hu <= self.high)

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "low": self.low, "high": self.high}


SPARSIFY_RULES: dict[str, type] = {HuWindow.rule: HuWindow}


@dataclass(frozen=True)
class ZScore:
    """Feature = (HU - mean) / std."""

    mean: float
    std: float

    def __call__(self, hu):
        return (hu - self.mean) / self.std


@dataclass(frozen=True)
class Recipe:
    """How a stage's network trains (METHOD.md "Training"; options of sparsekits.train)."""

    loss: str = "dice"  # "dice" (the paper's) or "dice+bce"
    lesion_oversampling: float = 0.0  # share of draws forced onto samples holding a mass
    patch_vox: int | None = None  # train on cubes of this many voxels; None: whole samples
    lr: float = 5e-4
    epochs: int = 500
    samples_per_epoch: int | None = None  # None: one pass over the fold's training samples
    accumulation: int = 8  # samples per optimiser step (batch 1 each)
    augment: bool = True


@dataclass(frozen=True)
class StagePlan:
    """What one stage sees and how its network is built and trained.

    Arrays on a stage grid are in the canonical orientation (RAS+, axes x, y, z), so
    ``crop_margin_vox`` is (x, y, z) in voxels of ``spacing_mm``.
    """

    stage: int
    spacing_mm: float
    sparsify: HuWindow
    normalise: ZScore
    crop_margin_vox: tuple[int, int, int] = (0, 0, 0)
    body_crop: bool = False  # crop the grid to the body (the box of voxels denser than air)
    network: ModelConfig = field(default_factory=lambda: resolve_config("paper"))
    recipe: Recipe = field(default_factory=Recipe)

    def features(self, hu):
        """The network's input feature of HU (numpy array or torch tensor)."""
        return self.normalise(hu)

    def input_dict(self) -> dict:
        """The settings that define this stage's input (what a cache holds)."""
        values = _stage_dict(self)
        del values["network"], values["recipe"]
        return values

    def to_dict(self) -> dict:
        return _stage_dict(self)

    @classmethod
    def from_dict(cls, values: dict) -> StagePlan:
        values = dict(values)
        sparsify = dict(values.pop("sparsify"))
        rule = SPARSIFY_RULES.get(sparsify.pop("rule", None))
        if rule is None:
            raise ValueError(f"unknown sparsification rule (known: {sorted(SPARSIFY_RULES)})")
        return cls(
            sparsify=rule(**sparsify),
            normalise=ZScore(**values.pop("normalise")),
            crop_margin_vox=tuple(values.pop("crop_margin_vox")),
            network=ModelConfig.from_dict(values.pop("network")),
            recipe=Recipe(**values.pop("recipe")),
            **values,
        )


def _stage_dict(stage: StagePlan) -> dict:
    return {
        "stage": stage.stage,
        "spacing_mm": stage.spacing_mm,
        "sparsify": stage.sparsify.to_dict(),
        "normalise": dataclasses.asdict(stage.normalise),
        "crop_margin_vox": list(stage.crop_margin_vox),
        "body_crop": stage.body_crop,
        "network": stage.network.to_dict(),
        "recipe": dataclasses.asdict(stage.recipe),
    }


ROI_REGIONS = ("max", "kidney_and_mass")


@dataclass(frozen=True)
class RoiRule:
    """How stage-1 region probabilities become the kidney ROIs of stage 2.

    ``region``: the probability thresholded, "max" over the three regions (METHOD.md) or
    "kidney_and_mass" alone. The regions are nested, so the two agree for a network whose
    regions are; a briefly trained one may call mass everywhere outside the kidneys (the paper's
    Dice gives no gradient against it), which "max" turns into one ROI over the whole scan.
    """

    region: str = "max"
    probability_threshold: float = 0.1
    min_component_voxels: int = 50
    connectivity: int = 26
    max_components: int = 5
    dilation_mm: float = 10.0  # an 11-voxel ellipsoid at 1.99 mm


@dataclass(frozen=True)
class Plan:
    method: str
    stages: tuple[StagePlan, ...]  # stage k is stages[k - 1]
    roi: RoiRule = field(default_factory=RoiRule)
    region_threshold: float = 0.5  # on region probabilities, for the final label map

    def stage(self, number: int) -> StagePlan:
        return self.stages[number - 1]

    def input_dict(self) -> dict:
        return {
            "stages": [stage.input_dict() for stage in self.stages],
            "roi": dataclasses.asdict(self.roi),
        }

    def with_stage(self, number: int, **changes) -> Plan:
        """This plan with fields of stage ``number`` replaced (``recipe=``, ``network=``...)."""
        return self.with_stage_plan(dataclasses.replace(self.stage(number), **changes))

    def with_stage_plan(self, stage: StagePlan) -> Plan:
        """This plan with ``stage`` in place of its stage of the same number."""
        stages = list(self.stages)
        stages[stage.stage - 1] = stage
        return dataclasses.replace(self, stages=tuple(stages))

    def with_network(self, network: ModelConfig | str) -> Plan:
        """Both stages with the network ``network`` (a preset name or a ModelConfig)."""
        plan = self
        for stage in self.stages:
            plan = plan.with_stage(stage.stage, network=resolve_config(network))
        return plan

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "stages": [stage.to_dict() for stage in self.stages],
            "roi": dataclasses.asdict(self.roi),
            "region_threshold": self.region_threshold,
        }

    @classmethod
    def from_dict(cls, values: dict) -> Plan:
        if values.get("format") != FORMAT or values.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION} plan")
        stages = tuple(StagePlan.from_dict(stage) for stage in values["stages"])
        if [stage.stage for stage in stages] != list(range(1, len(stages) + 1)):
            raise ValueError("stages must be numbered 1, 2, ... in order")
        roi = RoiRule(**values["roi"])
        if roi.region not in ROI_REGIONS:
            raise ValueError(f"roi.region must be one of {ROI_REGIONS}, not {roi.region!r}")
        return cls(
            method=values["method"],
            stages=stages,
            roi=roi,
            region_threshold=float(values["region_threshold"]),
        )

    def save(self, path: str | Path) -> Path:
        from sparsekits.fileio import write_json_atomic

        write_json_atomic(path, self.to_dict())
        return Path(path)


def load_plan(path: str | Path) -> Plan:
    """A plan file; a missing, unreadable or invalid one raises InputError naming it."""
    path = Path(path)
    try:
        return Plan.from_dict(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise InputError(path, "no such plan file") from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(path, f"not a valid plan ({error})") from error


def input_difference(expected: Plan, found: Plan) -> str | None:
    """The first setting where the two plans' inputs differ, in words; None when they agree."""
    return _first_difference(expected.input_dict(), found.input_dict(), "")


def check_same_input(expected: Plan, found: Plan, where: str | Path, found_name: str) -> None:
    """Refuse (InputError on ``where``) a ``found`` plan whose input differs from ``expected``."""
    difference = input_difference(expected, found)
    if difference is not None:
        raise InputError(where, f"{found_name} was made with another plan: {difference}")


def _first_difference(a, b, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else f"{path} is {b!r}, expected {a!r}"


def legacy_plan(
    stage_configs: dict[int, dict], networks: dict[int, ModelConfig] | None = None
) -> Plan:
    """The plan implied by caches and model folders written before plans existed, which
    recorded each stage's config (spacing, HU window, normalisation, margin) and nothing else:
    METHOD.md's plan with those settings (stage 1 was cropped to the body then too)."""
    plan = SSCN_TWOSTAGE
    for stage, values in stage_configs.items():
        changes = {
            "spacing_mm": float(values["spacing_mm"]),
            "sparsify": HuWindow(*values["hu_window"]),
            "normalise": ZScore(values["norm_mean"], values["norm_std"]),
            "crop_margin_vox": tuple(values["crop_margin_vox"]),
        }
        if networks and stage in networks:
            changes["network"] = networks[stage]
        plan = plan.with_stage(int(stage), **changes)
    return plan


# METHOD.md's two stages.
SSCN_TWOSTAGE = Plan(
    method="sscn-twostage",
    stages=(
        StagePlan(
            stage=1,
            spacing_mm=1.99,
            sparsify=HuWindow(-53.4, 283.2),
            normalise=ZScore(48.10007, 62.645897),
            body_crop=True,
        ),
        StagePlan(
            stage=2,
            spacing_mm=0.78,
            sparsify=HuWindow(-300.0, 500.0),
            normalise=ZScore(57.802067, 81.260414),
            crop_margin_vox=(35, 35, 10),
        ),
    ),
)

PLANS: dict[str, Plan] = {SSCN_TWOSTAGE.method: SSCN_TWOSTAGE}
# Twice METHOD.md's stage-1 spacing, for training stage 1 on a CPU in minutes (the demo, the
# learning benchmark): eight times fewer sparse voxels. Stage 1 only has to find the kidneys.
COARSE_STAGE1_SPACING_MM = 3.98
DEFAULT_METHOD = SSCN_TWOSTAGE.method


def default_plan(method: str = DEFAULT_METHOD) -> Plan:
    if method not in PLANS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(PLANS)})")
    return PLANS[method]
