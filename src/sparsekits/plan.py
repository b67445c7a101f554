"""A method as data: the ``Plan`` that says how a method turns a CT into labels, and how it trains.

A plan names its method (``sparsekits.methods``: the module that owns the stages, their views,
post-processing and predictor) and holds, per stage *role* (the paper's ``roi`` and ``fine``),
the grid (isotropic spacing, body crop, crop margins), the sparsification rule, the
normalisation, the network and the training recipe; the ROI rule that joins the stages; and the
threshold of the final label map. It is saved with the preprocessing cache (``manifest.json``)
and in every model folder (``plan.json``, and in each fold's ``config.json``), and prediction
reads everything from the model folder, so an old model never silently meets a new rule.
``sparsekits plan -o plan.json`` writes a method's default plan to edit; ``preprocess``,
``train``, ``predict`` and ``benchmark`` take ``--plan``.

Two parts of a plan play different roles:

- its *input* (``input_dict``: the method, stages' grids, sparsification, normalisation,
  margins, the ROI rule) defines what the networks see. A cache and a model must share it with
  any plan they meet.
- its networks, recipes and threshold say how a model is built, trained and read out; a
  training run may override them (``train --lr``), and the model folder records what was used.

A plan is validated when it is built (``Plan(...)``, ``Plan.from_dict``): its method must be
registered and accept it, so a bad plan.json is refused by the first command that reads it.
This module imports no torch: the CLI, the registry and the method modules read plans cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sparsekits.errors import InputError
from sparsekits.layout import AIR_HU
from sparsekits.models.config import ModelConfig, resolve_config
from sparsekits.models.registry import network_config_from_dict

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


PER_VOLUME, PER_SLICE = "volume", "slice"


@dataclass(frozen=True)
class TopPercent:
    """Keep the ``percent`` % brightest voxels (seed 002's point cloud): of the whole volume
    (``per="volume"``), or of each axial slice (``per="slice"``: each z slice of a canonical
    grid). Exactly ``round(percent / 100 * voxels)`` are kept; among voxels of equal HU at the
    cut, the first in C order win, so the cache and the predictor keep the same ones."""

    percent: float
    per: str = PER_VOLUME
    rule: ClassVar[str] = "top_percent"

    def keep(self, hu):
        """Boolean mask of the kept voxels of a numpy array (slices along its last axis)."""
        import numpy as np

        hu = np.asarray(hu)
        if self.per == PER_VOLUME:
            return _top_count(hu.ravel(), self.percent).reshape(hu.shape)
        keep = np.zeros(hu.shape, bool)
        for z in range(hu.shape[-1]):
            keep[..., z] = _top_count(hu[..., z].ravel(), self.percent).reshape(hu.shape[:-1])
        return keep

    def problems(self) -> list[str]:
        problems = []
        if not 0 < self.percent <= 100:
            problems.append(f"top_percent: percent must lie in (0, 100], not {self.percent}")
        if self.per not in (PER_VOLUME, PER_SLICE):
            problems.append(f"top_percent: per must be {PER_VOLUME!r} or {PER_SLICE!r}")
        return problems

    def to_dict(self) -> dict:
        return {"rule": self.rule, "percent": self.percent, "per": self.per}


def _top_count(values, percent: float):
    """Mask of the ``round(percent / 100 * len(values))`` largest ``values`` (1-D), ties at the
    cut broken by position: O(N) with a partition, no sort."""
    import numpy as np

    count = round(percent / 100.0 * len(values))
    keep = np.zeros(len(values), bool)
    if count == 0:
        return keep
    cut = np.partition(values, len(values) - count)[len(values) - count]
    keep = values > cut
    ties = np.flatnonzero(values == cut)[: count - int(keep.sum())]
    keep[ties] = True
    return keep


SPARSIFY_RULES: dict[str, type] = {HuWindow.rule: HuWindow, TopPercent.rule: TopPercent}


@dataclass(frozen=True)
class ZScore:
    """Feature = (HU - mean) / std."""

    mean: float
    std: float
    rule: ClassVar[str] = "zscore"

    def __call__(self, hu):
        return (hu - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"rule": self.rule, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class ClipScale:
    """Feature = HU clipped to [low, high], scaled linearly to [-1, 1] (seed 004)."""

    low: float
    high: float
    rule: ClassVar[str] = "clip_scale"

    def __call__(self, hu):
        clipped = hu.clip(self.low, self.high)
        return (clipped - self.low) * (2.0 / (self.high - self.low)) - 1.0

    def to_dict(self) -> dict:
        return {"rule": self.rule, "low": self.low, "high": self.high}


# Plans written before normalisations had a rule held a z-score.
NORMALISE_RULES: dict[str, type] = {ZScore.rule: ZScore, ClipScale.rule: ClipScale}


@dataclass(frozen=True)
class Optimiser:
    """AdamW and its learning-rate schedule (METHOD.md): linear warm-up, constant, then a cosine
    to 0 over the last ``cosine_fraction`` of the run, stepped per optimiser step."""

    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-5  # on convolution and linear weights only (train.optim says why)
    eps: float = 1e-12
    warmup_epochs: float = 1.0
    cosine_fraction: float = 0.8  # 400 of 500 epochs in the paper


@dataclass(frozen=True)
class Augmentation:
    """Augmentation of a dense HU crop before sparsification (``sparsekits.train.augment``);
    each transform fires with its own probability. Rotations are (x, y, z) maxima in radians."""

    affine_p: float = 0.9
    max_rotation: tuple[float, float, float] = (math.pi / 36, math.pi / 36, math.pi / 8)
    max_scale_change: float = 0.15
    flip_p: float = 0.3  # per axis
    intensity_scale_p: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift_p: float = 0.3
    intensity_shift_hu: float = 5.0
    noise_p: float = 0.3
    noise_std_hu: float = 1.0
    smooth_p: float = 0.3
    smooth_sigma: tuple[float, float] = (0.25, 1.5)
    # What the affine brings in from outside the crop: air, outside every stage's HU window.
    pad_hu: float = AIR_HU
    rule: ClassVar[str] = "hu_crop"

    @property
    def mirrors(self) -> bool:
        """Whether it shows the network mirrored crops (what mirroring TTA feeds it)."""
        return self.flip_p > 0


@dataclass(frozen=True)
class SlabAugmentation:
    """Seed 004's augmentations of a dense slab, with MONAI's transforms
    (``sparsekits.train.dense_classes``): a random crop of 0.6-1.3x the slab's in-plane size
    resized back, brightness, contrast and gamma each in [0.6, 1.5], and an elastic deformation
    (sigma 3-5, magnitude 100-200 voxels)."""

    crop_p: float = 0.5
    crop_scale: tuple[float, float] = (0.6, 1.3)
    brightness_p: float = 0.3
    brightness: tuple[float, float] = (0.6, 1.5)
    contrast_p: float = 0.3
    contrast: tuple[float, float] = (0.6, 1.5)
    gamma_p: float = 0.3
    gamma: tuple[float, float] = (0.6, 1.5)
    elastic_p: float = 0.5
    elastic_sigma: tuple[float, float] = (3.0, 5.0)
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)
    rule: ClassVar[str] = "slab"
    mirrors: ClassVar[bool] = False  # seed 004 flips nothing


AUGMENTATIONS: dict[str, type] = {
    Augmentation.rule: Augmentation,
    SlabAugmentation.rule: SlabAugmentation,
}


@dataclass(frozen=True)
class Recipe:
    """How a stage's network trains (METHOD.md "Training"; options of sparsekits.train): every
    setting that trained a model, so that the model folder records them all."""

    loss: str = "dice"  # one of the method's losses: "dice" (the paper's) or "dice+bce"
    lesion_oversampling: float = 0.0  # share of draws forced onto samples holding a mass
    patch_vox: int | None = None  # train on cubes of this many voxels; None: whole samples
    lr: float = 5e-4
    epochs: int = 500
    samples_per_epoch: int | None = None  # None: one pass over the fold's training samples
    accumulation: int = 8  # samples per optimiser step (batch 1 each)
    augment: bool = True
    augmentation: Augmentation | SlabAugmentation = field(default_factory=Augmentation)
    optimiser: Optimiser = field(default_factory=Optimiser)
    folds: int = 5  # cross-validation folds, split by case
    split_seed: int = 42  # seed of the fold split (METHOD.md)
    # Soft Dice smoothing in numerator and denominator (nnU-Net's value): a region empty in both
    # prediction and target scores 1, as in the KiTS23 scorer.
    dice_smooth: float = 1e-5
    deep_supervision_decay: float = 0.5  # level k of the deep supervision weighs decay**k
    # Per output class weights of a softmax loss (Dice and cross-entropy); None: all equal.
    class_weights: tuple[float, ...] | None = None

    @property
    def mirrors(self) -> bool:
        """Whether training showed the network mirrored inputs."""
        return self.augment and self.augmentation.mirrors

    def problems(self) -> list[str]:
        problems = []
        for name in ("epochs", "accumulation", "folds"):
            if not _positive_int(getattr(self, name)):
                problems.append(f"{name} must be a positive int")
        if self.samples_per_epoch is not None and not _positive_int(self.samples_per_epoch):
            problems.append("samples_per_epoch must be a positive int or null")
        if self.patch_vox is not None and (not _positive_int(self.patch_vox) or self.patch_vox < 8):
            problems.append(f"patch_vox must be at least 8 voxels, not {self.patch_vox}")
        if not 0 <= self.lesion_oversampling <= 1:
            problems.append(
                f"lesion_oversampling must be in [0, 1], not {self.lesion_oversampling}"
            )
        if not self.lr > 0 or not self.dice_smooth > 0:
            problems.append("lr and dice_smooth must be positive")
        if not 0 < self.deep_supervision_decay <= 1:
            problems.append("deep_supervision_decay must be in (0, 1]")
        if self.class_weights is not None and min(self.class_weights, default=0) <= 0:
            problems.append("class_weights must be positive")
        if not 0 <= self.optimiser.cosine_fraction <= 1 or self.optimiser.warmup_epochs < 0:
            problems.append("optimiser: cosine_fraction in [0, 1], warmup_epochs >= 0")
        return problems

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["augmentation"]["rule"] = self.augmentation.rule
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """Inverse of ``to_dict``; recipes written before a setting existed get its default."""
        values = dict(values)
        if values.get("class_weights") is not None:
            values["class_weights"] = tuple(values["class_weights"])
        if "optimiser" in values:
            values["optimiser"] = Optimiser(**_tuples(values["optimiser"]))
        if "augmentation" in values:
            augmentation = _tuples(values["augmentation"])
            kind = AUGMENTATIONS.get(augmentation.pop("rule", Augmentation.rule))
            if kind is None:
                raise ValueError(f"unknown augmentation (known: {sorted(AUGMENTATIONS)})")
            values["augmentation"] = kind(**augmentation)
        return cls(**values)


def _tuples(values: dict) -> dict:
    """JSON lists back to the tuples the dataclasses hold (hashable, comparable)."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
    }


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class StagePlan:
    """What one stage sees and how its network is built and trained.

    ``role`` names the stage within its method (``roi``, ``fine``; the CLI's ``--stage``). Arrays
    on a stage grid are in the canonical orientation (RAS+, axes x, y, z), so
    ``crop_margin_vox`` is (x, y, z) in voxels of ``spacing_mm``. The grid is isotropic at
    ``spacing_mm``, or, with ``shape``, has that many voxels along each axis (None: the source's
    own spacing along it). ``sparsify`` None keeps every voxel (a dense stage).
    """

    role: str
    spacing_mm: float | None
    sparsify: HuWindow | TopPercent | None
    normalise: ZScore | ClipScale
    crop_margin_vox: tuple[int, int, int] = (0, 0, 0)
    body_crop: bool = False  # crop the grid to the body (the box of voxels denser than air)
    network: Any = field(default_factory=lambda: resolve_config("paper"))  # a network config
    recipe: Recipe = field(default_factory=Recipe)
    shape: tuple[int | None, int | None, int | None] | None = None

    def features(self, hu):
        """The network's input feature of HU (numpy array or torch tensor)."""
        return self.normalise(hu)

    def input_dict(self) -> dict:
        """The settings that define this stage's input (what a cache holds)."""
        values = self.to_dict()
        del values["network"], values["recipe"]
        return values

    def to_dict(self) -> dict:
        values = {
            "role": self.role,
            "spacing_mm": self.spacing_mm,
            "sparsify": None if self.sparsify is None else self.sparsify.to_dict(),
            "normalise": self.normalise.to_dict(),
            "crop_margin_vox": list(self.crop_margin_vox),
            "body_crop": self.body_crop,
            "network": self.network.to_dict(),
            "recipe": self.recipe.to_dict(),
        }
        if self.shape is not None:  # absent from isotropic stages, as in plans written before it
            values["shape"] = list(self.shape)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> StagePlan:
        values = dict(values)
        shape = values.pop("shape", None)
        return cls(
            sparsify=_ruled(values.pop("sparsify"), SPARSIFY_RULES, None),
            normalise=_ruled(values.pop("normalise"), NORMALISE_RULES, ZScore.rule),
            crop_margin_vox=tuple(values.pop("crop_margin_vox")),
            shape=None if shape is None else tuple(shape),
            network=network_config_from_dict(values.pop("network")),
            recipe=Recipe.from_dict(values.pop("recipe")),
            **values,
        )


def _ruled(values: dict | None, rules: dict[str, type], default: str | None):
    """The rule object a ``{"rule": ..., ...}`` dict names (``default`` when it names none)."""
    if values is None:
        return None
    values = dict(values)
    rule = rules.get(values.pop("rule", default))
    if rule is None:
        raise ValueError(f"unknown rule in {values} (known: {sorted(rules)})")
    return rule(**values)


HULLS = ("slice", "3d")


@dataclass(frozen=True)
class HullFill:
    """How labelled points become a label map (seed 002's post-processing): per class, DBSCAN
    clusters of the points (``eps_mm``, ``min_points``; points in no cluster are dropped), each
    cluster's convex hull filled with its class, per axial slice (``hull="slice"``, the seed's)
    or in 3D (``"3d"``)."""

    eps_mm: float = 5.0
    min_points: int = 5
    hull: str = "slice"

    def problems(self) -> list[str]:
        problems = []
        if not self.eps_mm > 0 or not _positive_int(self.min_points):
            problems.append("fill: eps_mm must be positive and min_points a positive int")
        if self.hull not in HULLS:
            problems.append(f"fill: hull must be one of {HULLS}, not {self.hull!r}")
        return problems


ROI_REGIONS = ("max", "kidney_and_mass")


@dataclass(frozen=True)
class RoiRule:
    """How an earlier stage's region probabilities become the kidney ROIs of a later one.

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

    def problems(self) -> list[str]:
        problems = []
        if self.region not in ROI_REGIONS:
            problems.append(f"roi.region must be one of {ROI_REGIONS}, not {self.region!r}")
        if self.connectivity not in (6, 18, 26):
            problems.append(f"roi.connectivity must be 6, 18 or 26, not {self.connectivity}")
        if not 0 < self.probability_threshold < 1:
            problems.append("roi.probability_threshold must lie in (0, 1)")
        return problems


@dataclass(frozen=True)
class Plan:
    """A method's stages in order, the ROI rule joining them, and the final threshold."""

    method: str
    stages: tuple[StagePlan, ...]
    roi: RoiRule = field(default_factory=RoiRule)
    region_threshold: float = 0.5  # on region probabilities, for the final label map
    # Post-processing (methods that use it): connected components of the kidney with its masses,
    # of tumour and of cyst smaller than these volumes (mL) are dropped (kidney) or become
    # kidney (lesions). Zero keeps every component.
    min_component_ml: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Points -> label map (methods that label points: sscn-pointcloud); None for the others.
    fill: HullFill | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with this plan (empty when it is valid): its own settings, then what
        its method says of it."""
        from sparsekits.methods import get_method

        problems = [*self.roi.problems(), *(self.fill.problems() if self.fill else [])]
        for stage in self.stages:
            problems += [f"stage {stage.role}: {problem}" for problem in stage.recipe.problems()]
            if isinstance(stage.sparsify, TopPercent):
                problems += [f"stage {stage.role}: {p}" for p in stage.sparsify.problems()]
        if not 0 < self.region_threshold < 1:
            problems.append("region_threshold must lie in (0, 1)")
        if len(self.min_component_ml) != 3 or min(self.min_component_ml) < 0:
            problems.append("min_component_ml: three volumes >= 0 (kidney, tumour, cyst)")
        try:
            method = get_method(self.method)
        except ValueError as error:
            return [*problems, str(error)]
        return problems + method.plan_problems(self)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(stage.role for stage in self.stages)

    def stage(self, key: str | int) -> StagePlan:
        """The stage of role ``key``, or at 1-based position ``key`` (``--stage 1`` = first)."""
        return self.stages[self.position(key) - 1]

    def position(self, key: str | int) -> int:
        """1-based position of the stage of role ``key`` (or of position ``key``)."""
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if isinstance(key, int) and 1 <= key <= len(self.stages):
            return key
        if key in self.roles:
            return self.roles.index(key) + 1
        raise InputError(
            key, f"no such stage of {self.method} (its stages: {', '.join(self.roles)})"
        )

    def role(self, key: str | int) -> str:
        return self.stage(key).role

    def input_dict(self) -> dict:
        return {
            "method": self.method,
            "stages": [stage.input_dict() for stage in self.stages],
            "roi": dataclasses.asdict(self.roi),
        }

    def with_stage(self, key: str | int, **changes) -> Plan:
        """This plan with fields of stage ``key`` replaced (``recipe=``, ``network=``...)."""
        return self.with_stage_plan(dataclasses.replace(self.stage(key), **changes))

    def with_stage_plan(self, stage: StagePlan) -> Plan:
        """This plan with ``stage`` in place of its stage of the same role."""
        stages = list(self.stages)
        stages[self.position(stage.role) - 1] = stage
        return dataclasses.replace(self, stages=tuple(stages))

    def with_network(self, network: ModelConfig | str) -> Plan:
        """Every stage with the network ``network`` (a preset name or a ModelConfig)."""
        config = resolve_config(network)
        stages = tuple(dataclasses.replace(stage, network=config) for stage in self.stages)
        return dataclasses.replace(self, stages=stages)

    def with_recipes(self, **changes) -> Plan:
        """Every stage's recipe with ``changes`` (e.g. ``epochs=1``)."""
        stages = tuple(
            dataclasses.replace(stage, recipe=dataclasses.replace(stage.recipe, **changes))
            for stage in self.stages
        )
        return dataclasses.replace(self, stages=stages)

    def to_dict(self) -> dict:
        from sparsekits import __version__

        return {
            "format": FORMAT,
            "version": VERSION,
            "sparsekits_version": __version__,
            "method": self.method,
            "stages": [stage.to_dict() for stage in self.stages],
            "roi": dataclasses.asdict(self.roi),
            "region_threshold": self.region_threshold,
            "min_component_ml": list(self.min_component_ml),
        } | ({} if self.fill is None else {"fill": dataclasses.asdict(self.fill)})

    @classmethod
    def from_dict(cls, values: dict) -> Plan:
        """Inverse of ``to_dict``. Plans written before stages had roles numbered them
        (``"stage": 1``); their roles are the method's, in order."""
        from sparsekits.methods import get_method

        if values.get("format") != FORMAT or values.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION} plan")
        method = get_method(values["method"])
        stages = []
        for position, stage in enumerate(values["stages"], start=1):
            stage = dict(stage)
            number = stage.pop("stage", None)
            if "role" not in stage:
                if number != position or position > len(method.roles):
                    raise ValueError("stages must be numbered 1, 2, ... in order")
                stage["role"] = method.roles[position - 1]
            stages.append(StagePlan.from_dict(stage))
        return cls(
            method=method.name,
            stages=tuple(stages),
            roi=RoiRule(**values["roi"]),
            region_threshold=float(values["region_threshold"]),
            min_component_ml=tuple(values.get("min_component_ml", (0.0, 0.0, 0.0))),
            fill=HullFill(**values["fill"]) if values.get("fill") is not None else None,
        )

    def save(self, path: str | Path) -> Path:
        from sparsekits.fileio import write_json_atomic

        write_json_atomic(path, self.to_dict())
        return Path(path)


def load_plan(path: str | Path) -> Plan:
    """A plan file; a missing, unreadable or invalid one raises InputError naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a plan file")
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
    """Refuse (InputError on ``where``) a ``found`` plan whose input differs from ``expected``;
    another method is named as such."""
    if expected.method != found.method:
        raise InputError(
            where, f"{found_name} belongs to method {found.method}, not {expected.method}"
        )
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


def default_plan(method: str | None = None, preset: str | None = None) -> Plan:
    """A registered method's default plan (the default method's without ``method``), with the
    method's ``preset`` when given."""
    from sparsekits.methods import DEFAULT_METHOD, get_method

    return get_method(method or DEFAULT_METHOD).default_plan(preset)
