"""What a method is: the contract between a method module and the generic commands.

The generic code (``preprocess``, ``train``, ``model assemble``, ``predict``, ``evaluate``, the
demo and the benchmarks) knows a method only through this class. A method:

- declares its stages by role, in the order they run (``roles``), and its plans: one per
  preset (``presets``), the first the default;
- checks a plan it is given (``plan_problems``): its roles, networks and losses;
- builds each stage's training samples of one case from the image and its labels
  (``case_samples``), with the same views its predictor uses on new scans;
- gives the training step of a stage (``training_task``): the dataset of cached samples, the
  network's outputs, loss and Dice counts;
- gives the predictor of a model folder (``predictor``): all stages chained, post-processed, on
  the input's own grid.

Every method module imports no torch at import time (``Plan`` validation imports it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsekits.data.datasets import Case
    from sparsekits.data.io import Image
    from sparsekits.data.sample import Sample
    from sparsekits.plan import Plan
    from sparsekits.predict.result import Predictor
    from sparsekits.train.task import TrainingTask


class Method(ABC):
    """A segmentation method: its stages, plans, samples, training step and predictor."""

    name: str
    roles: tuple[str, ...]  # its stages in the order they run
    losses: tuple[str, ...]  # the training losses its recipes may name
    architectures: tuple[str, ...]  # the network architectures its stages accept

    @property
    @abstractmethod
    def presets(self) -> dict[str, Plan]:
        """The method's named plans, the default first."""

    def default_plan(self, preset: str | None = None) -> Plan:
        """The plan of ``preset`` (the first preset when None); ValueError for an unknown one."""
        presets = self.presets
        if preset is None:
            return next(iter(presets.values()))
        if preset not in presets:
            raise ValueError(f"{self.name} has no preset {preset!r} (known: {', '.join(presets)})")
        return presets[preset]

    def plan_problems(self, plan: Plan) -> list[str]:
        """What this method cannot run in ``plan``: its stages and their networks and losses."""
        problems = []
        if plan.roles != self.roles:
            problems.append(f"{self.name} has stages {self.roles}, the plan {plan.roles}")
        for stage in plan.stages:
            if stage.recipe.loss not in self.losses:
                problems.append(
                    f"stage {stage.role}: loss {stage.recipe.loss!r} is not one of {self.losses}"
                )
            if stage.network.architecture not in self.architectures:
                problems.append(
                    f"stage {stage.role}: network {stage.network.architecture!r} is not one of "
                    f"{self.architectures}"
                )
        return problems

    @staticmethod
    def class_problems(plan: Plan, classes: dict[str, int]) -> list[str]:
        """What is wrong with the softmax stages ``classes`` (role -> number of classes): each
        network needs that many outputs, and its recipe's class_weights (if any) one each."""
        problems = []
        for role, count in classes.items():
            stage = plan.stage(role)
            if stage.network.out_channels != count:
                problems.append(f"stage {role}: the network needs {count} output channels")
            weights = stage.recipe.class_weights
            if weights is not None and len(weights) != count:
                problems.append(f"stage {role}: class_weights needs {count} values")
        return problems

    def stage_input(self, plan: Plan, role: str) -> dict:
        """What the cached samples of stage ``role`` depend on (a cache redoes a case when it
        changes): by default that stage's input and every earlier stage's, and the ROI rule."""
        position = plan.position(role)
        earlier = [stage.input_dict() for stage in plan.stages[:position]]
        return {"method": self.name, "stages": earlier, "roi": plan.input_dict()["roi"]}

    @abstractmethod
    def case_samples(
        self, case: Case, image: Image, labels, plan: Plan, roles: Sequence[str]
    ) -> Iterator[tuple[str, str, Sample]]:
        """``(role, name, sample)`` of each training sample of ``case`` for ``roles``; ``name``
        is the sample's file name in the cache's stage folder, without suffix."""

    @abstractmethod
    def training_task(self, plan: Plan, role: str) -> TrainingTask:
        """The training step of stage ``role`` of ``plan``."""

    @abstractmethod
    def predictor(
        self, model_dir: Path, plan: Plan, device: str, folds: str | Sequence[int], tta: bool
    ) -> Predictor:
        """The predictor of a model folder holding this method's networks, trained with
        ``plan`` (its ``plan.json``)."""
