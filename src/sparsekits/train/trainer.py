"""Training one stage on one cross-validation fold (METHOD.md, "Training"); resumable, DDP-ready.

A run folder holds everything a run writes (only the main process writes):

```
RUN/config.json            the TrainConfig of the run
RUN/splits.json            the 5-fold split by case (reused when present)
RUN/log.csv                one row per epoch: losses, training and validation Dice per region, lr
RUN/progress.png           those Dice curves against optimiser steps, redrawn every epoch
RUN/tensorboard/           the same, plus loss and lr per optimiser step
RUN/checkpoint_last.pt     everything needed to resume (saved every N steps and each epoch)
RUN/checkpoint_best.pt     the same at the best validation loss
RUN/model/                 the best weights as a model folder (config.json + model.safetensors)
RUN/cache/                 the preprocessing cache, when --data was a raw dataset
```

The plan's method gives the training step of the stage (``Method.training_task``: dataset,
network outputs, loss, Dice counts; ``sparsekits.train.task``); this module owns the loop around
it. sscn-twostage's fine stage trains on the cache's ROIs around the dilated ground-truth kidney
components, not on ROIs from roi-stage predictions. An optimiser step averages the
gradients of ``accumulation`` samples (batch 1 each), split evenly over the DDP ranks, so the
global batch and the learning-rate schedule do not depend on the number of processes.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import CACHE_MANIFEST
from sparsekits.models.build import build_model
from sparsekits.models.bundle import RUN_MODEL
from sparsekits.models.config import resolve_config
from sparsekits.models.io import save_model_folder
from sparsekits.plan import Plan, Recipe, check_same_input, default_plan
from sparsekits.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from sparsekits.train.curves import plot_progress
from sparsekits.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown_distributed,
)
from sparsekits.train.folds import load_or_create_splits
from sparsekits.train.losses import pooled_dice
from sparsekits.train.optim import build_optimizer, build_scheduler
from sparsekits.train.runlog import RunLog
from sparsekits.train.samples import (
    Draw,
    cache_plan,
    epoch_order,
    per_rank_samples,
    rank_draws,
    read_cache,
)
from sparsekits.training_volumes import RUN_KEY, volume_ranges

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
MODEL_DIR = RUN_MODEL
CHECKPOINT_FORMAT = 2


@dataclass
class TrainConfig:
    """One training run: which data, stage and fold, and where; the method comes from a plan."""

    data: Path  # a preprocessing cache (has manifest.json) or a raw dataset
    stage: str | int  # the stage's role (or its 1-based position) in the plan's method
    fold: int
    out: Path
    plan: Plan | None = None  # None: the cache's plan (for a raw dataset, the default plan)
    network: str | None = None  # a preset replacing the plan's network for this stage
    recipe: Recipe | None = None  # None: the plan's recipe for this stage
    device: str = "cpu"
    resume: bool = False
    seed: int = 42
    num_workers: int = 2  # DataLoader processes that load, augment and sparsify samples
    val_every: int = 1  # epochs between validations (the last epoch is always validated)
    # At most this many validation samples, spread evenly over the fold's (None: all). Short
    # runs validate often on few samples, as nnU-Net validates on a fixed number of batches.
    val_samples: int | None = None
    checkpoint_every: int = 50  # optimiser steps between mid-epoch saves of checkpoint_last
    stop_after_steps: int | None = None  # end early (checkpoint saved) e.g. for job time limits

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["data"], values["out"] = str(self.data), str(self.out)
        values["plan"] = None if self.plan is None else self.plan.to_dict()
        values["recipe"] = None if self.recipe is None else self.recipe.to_dict()
        return values


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    model_dir: Path | None
    best_epoch: int | None
    best_val_loss: float | None
    final_metrics: dict = field(default_factory=dict)  # the last log.csv row
    completed: bool = True  # False when stop_after_steps ended the run early


@dataclass
class _Progress:
    """Where the run stands; what a checkpoint saves besides weights and optimiser."""

    epoch: int = 0
    position: int = 0  # draws of this rank's share of the epoch already trained on
    step: int = 0  # optimiser steps so far
    order: list[tuple[int, bool]] | None = None  # the epoch's (sample, lesion-forced) draws
    loss_sum: float = 0.0  # this rank's training loss over the epoch so far
    loss_count: int = 0
    # this rank's (predicted & true, predicted, true) voxel counts per class over the epoch
    dice_counts: torch.Tensor | None = None
    samples: int = 0  # samples this rank has trained on, over the whole run
    best_val_loss: float = math.inf
    best_epoch: int = -1


def base_plan(data: Path, plan: Plan | None) -> Plan:
    """The plan a run on ``data`` starts from: ``plan``, else the cache's, else the default."""
    if plan is not None:
        return plan
    if (Path(data) / CACHE_MANIFEST).is_file():
        return cache_plan(Path(data))
    return default_plan()


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.stage`` on fold ``config.fold``; see the module docstring for the outputs."""
    context = init_distributed(config.device)
    try:
        return _Trainer(config, context).run()
    finally:
        shutdown_distributed(context)


class _Trainer:
    def __init__(self, config: TrainConfig, context: DistContext):
        self.config = config
        self.context = context
        self.run_dir = Path(config.out)
        if context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        index = read_cache(self._cache_dir(), config.stage)
        if config.plan is not None:
            check_same_input(config.plan, index.plan, index.manifest, "this cache")
        self.plan = _effective_plan(config, config.plan or index.plan)
        self.role = self.plan.role(config.stage)
        self.stage_plan = self.plan.stage(self.role)
        recipe = self.recipe = self.stage_plan.recipe
        _check_config(config, recipe, context)
        from sparsekits.methods import get_method

        self.task = get_method(self.plan.method).training_task(self.plan, self.role)
        self.split = self._fold_split(index.cases)
        self.volume_ranges = volume_ranges([index.volumes[case] for case in self.split["train"]])
        train_paths = index.paths_of(self.split["train"])
        val_paths = index.paths_of(self.split["val"])
        if not train_paths or not val_paths:
            raise InputError(
                index.manifest,
                f"fold {config.fold} has no training or no "
                f"validation samples for stage {config.stage}",
            )
        self.train_set = self.task.dataset(train_paths, train=True)
        self.lesion_indices = [i for i, path in enumerate(train_paths) if path in index.with_mass]
        self.val_set = self.task.dataset(val_paths, train=False)
        self.val_indices = spread(len(self.val_set), config.val_samples)
        self.samples_per_epoch = recipe.samples_per_epoch or len(self.train_set)
        self.local_accumulation = recipe.accumulation // context.world_size
        self.local_samples = per_rank_samples(self.samples_per_epoch, context.world_size)
        self.steps_per_epoch = math.ceil(self.local_samples / self.local_accumulation)
        self.total_steps = self.steps_per_epoch * recipe.epochs

        _seed_everything(config.seed + context.rank)
        self.net = build_model(self.stage_plan.network).to(context.device)
        self.wrapped = self.task.wrap(self.net)
        self.model: torch.nn.Module = self.wrapped
        if context.enabled:
            # The network owns deep-supervision heads that forward() may not use.
            self.model = DistributedDataParallel(self.wrapped, find_unused_parameters=True)
        optimiser = recipe.optimiser
        self.optimizer = build_optimizer(self.net, recipe.lr, optimiser)
        self.scheduler = build_scheduler(
            self.optimizer, optimiser, self.steps_per_epoch, recipe.epochs
        )
        self.progress = self._resume() if config.resume else _Progress()
        if self.progress.dice_counts is None:
            self.progress.dice_counts = self._zero_counts()

    # -- setup ----------------------------------------------------------------------------------
    def _cache_dir(self) -> Path:
        """``--data`` itself when it is a cache; else a cache of it under the run folder."""
        data = Path(self.config.data)
        if (data / CACHE_MANIFEST).is_file():
            return data
        cache = self.run_dir / "cache"
        if self.context.is_main:
            from sparsekits.data.preprocess import preprocess_dataset

            plan = self.config.plan or default_plan()
            preprocess_dataset(data, cache, plan, roles=(plan.role(self.config.stage),))
        barrier(self.context)
        return cache

    def _fold_split(self, cases: list[str]) -> dict[str, list[str]]:
        path = self.run_dir / "splits.json"
        folds, seed = self.recipe.folds, self.recipe.split_seed
        if self.context.is_main:
            load_or_create_splits(path, cases, folds, seed)
        barrier(self.context)
        return load_or_create_splits(path, cases, folds, seed)[self.config.fold]

    def _resume(self) -> _Progress:
        state = load_checkpoint(self.run_dir / LAST, map_location="cpu")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise InputError(self.run_dir / LAST, "written by another sparsekits version")
        saved = state["resume"]
        changed = [key for key, value in self._resume_key().items() if saved[key] != value]
        if changed or state["world_size"] != self.context.world_size:
            raise InputError(
                self.run_dir / LAST,
                f"cannot resume with different {changed or ['number of processes']}",
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rank_state = state["ranks"][self.context.rank]
        restore_rng_state(rank_state["rng"])
        return _Progress(
            epoch=state["epoch"],
            position=state["position"],
            step=state["step"],
            order=state["order"],
            loss_sum=rank_state["loss_sum"],
            loss_count=rank_state["loss_count"],
            dice_counts=rank_state["dice_counts"],
            samples=rank_state["samples"],
            best_val_loss=state["best_val_loss"],
            best_epoch=state["best_epoch"],
        )

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config, progress = self.config, self.progress
        log = None
        if self.context.is_main:
            write_json_atomic(self.run_dir / "config.json", config.to_dict())
            log = RunLog(self.run_dir, progress.epoch, progress.step, self.task.class_names)
        bar = tqdm(
            total=self.total_steps,
            initial=progress.step,
            desc=f"stage {config.stage} fold {config.fold}",
            unit="step",
            disable=not self.context.is_main,
        )
        row: dict = {}
        try:
            while progress.epoch < self.recipe.epochs:
                started = time.perf_counter()
                if progress.order is None:
                    progress.order = epoch_order(
                        len(self.train_set),
                        self.samples_per_epoch,
                        config.seed,
                        progress.epoch,
                        self.lesion_indices,
                        self.recipe.lesion_oversampling,
                    )
                if not self._train_epoch(bar, log):
                    return self._result(row, completed=False)
                row = self._end_epoch(time.perf_counter() - started, log)
        finally:
            bar.close()
            if log is not None:
                log.close()
        return self._result(row, completed=True)

    def _train_epoch(self, bar: tqdm, log: RunLog | None) -> bool:
        """Train to the end of the epoch; False if ``stop_after_steps`` stopped it first."""
        progress, context = self.progress, self.context
        draws = rank_draws(
            progress.order, self.config.seed, progress.epoch, context.rank, context.world_size
        )
        self.model.train()
        remaining = self._loader(draws[progress.position :])
        for position, item in enumerate(remaining, progress.position):
            group_start = position - position % self.local_accumulation
            group_size = min(self.local_accumulation, len(draws) - group_start)
            steps_now = position == group_start + group_size - 1
            syncing = steps_now or not context.enabled
            with nullcontext() if syncing else self.model.no_sync():
                loss = self._loss(item)
                (loss / group_size).backward()
            progress.loss_sum += loss.item()
            progress.loss_count += 1
            progress.samples += 1
            progress.position = position + 1
            if not steps_now:
                continue
            self._optimiser_step(bar, log, loss.item())
            epoch_done = progress.position == len(draws)
            if self._stop_requested():
                self._save_last()
                return False
            if not epoch_done and progress.step % self.config.checkpoint_every == 0:
                self._save_last()
        return True

    def _optimiser_step(self, bar: tqdm, log: RunLog | None, loss: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.progress.step += 1
        bar.update()
        bar.set_postfix(epoch=self.progress.epoch, loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if log is not None:
            log.step(self.progress.step, loss, lr)

    def _stop_requested(self) -> bool:
        stop = self.config.stop_after_steps
        return stop is not None and self.progress.step >= stop

    def _end_epoch(self, seconds: float, log: RunLog | None) -> dict:
        progress, config = self.progress, self.config
        totals = all_reduce_sum(
            torch.tensor([progress.loss_sum, progress.loss_count], dtype=torch.float64),
            self.context,
        )
        row = {
            "epoch": progress.epoch,
            "step": progress.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(totals[0] / totals[1]),
        }
        dice = pooled_dice(
            all_reduce_sum(progress.dice_counts, self.context), self.task.class_names
        )
        row.update({f"train_dice_{name}": value for name, value in dice.items()})
        last_epoch = progress.epoch == self.recipe.epochs - 1
        improved = False
        if last_epoch or (progress.epoch + 1) % config.val_every == 0:
            row.update(self._validate())
            improved = row["val_loss"] < progress.best_val_loss
            if improved:
                progress.best_val_loss, progress.best_epoch = row["val_loss"], progress.epoch
        row["seconds"] = seconds
        if log is not None:
            log.epoch(row)
            plot_progress(self.run_dir)
        progress.epoch += 1
        progress.position, progress.order = 0, None
        progress.loss_sum, progress.loss_count = 0.0, 0
        progress.dice_counts = torch.zeros_like(progress.dice_counts)
        state = self._save_last()
        if improved and self.context.is_main:
            save_checkpoint(self.run_dir / BEST, state)
            save_model_folder(self.run_dir / MODEL_DIR, self.net, extra=self._model_extra(row))
        return row

    # -- computation ----------------------------------------------------------------------------
    def _loader(self, draws: list[Draw]) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=None,
            sampler=draws,
            num_workers=self.config.num_workers,
            collate_fn=_identity,
        )

    def _loss(self, item) -> torch.Tensor:
        inputs, targets = self.task.batch(item, self.context.device)
        with self._autocast():
            outputs = self.task.outputs(self.wrapped, self.model(inputs))
        self.progress.dice_counts += self.task.counts(outputs, targets)
        return self.task.loss(outputs, targets)

    def _zero_counts(self) -> torch.Tensor:
        return torch.zeros(3, len(self.task.class_names), dtype=torch.float64)

    def _autocast(self):
        """bf16 autocast on CUDA only (METHOD.md); CPU runs in float32."""
        on_cuda = self.context.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else nullcontext()

    @torch.no_grad()
    def _validate(self) -> dict:
        """Validation loss (mean per sample) and Dice per region pooled over all validation voxels.

        Runs the unwrapped network (no DDP collectives), each rank on its share of the samples;
        the sums are all-reduced.
        """
        self.net.eval()
        losses = torch.zeros(2, dtype=torch.float64)  # loss sum, sample count
        counts = self._zero_counts()
        context = self.context
        for index in self.val_indices[context.rank :: context.world_size]:
            item = self.val_set[Draw(index, (0, 0, 0))]
            inputs, targets = self.task.batch(item, context.device)
            with self._autocast():
                outputs = self.task.outputs(self.wrapped, self.wrapped(inputs))
            loss = self.task.loss(outputs, targets)
            losses += torch.tensor([float(loss), 1.0], dtype=torch.float64)
            counts += self.task.counts(outputs, targets)
        self.net.train()
        losses = all_reduce_sum(losses, context)
        dice = pooled_dice(all_reduce_sum(counts, context), self.task.class_names)
        metrics = {"val_loss": float(losses[0] / losses[1])}
        metrics.update({f"val_dice_{name}": value for name, value in dice.items()})
        return metrics

    # -- checkpoints and results ----------------------------------------------------------------
    def _save_last(self) -> dict:
        """Checkpoint the run as it stands (every rank's RNG and loss sums); main rank writes."""
        progress = self.progress
        ranks = all_gather_objects(
            {
                "rng": capture_rng_state(),
                "loss_sum": progress.loss_sum,
                "loss_count": progress.loss_count,
                "dice_counts": progress.dice_counts,
                "samples": progress.samples,
                # Equal on every rank unless DDP failed to keep the replicas in step.
                "parameter_sum": _parameter_sum(self.net),
            },
            self.context,
        )
        state = {
            "format": CHECKPOINT_FORMAT,
            "train_config": self.config.to_dict(),
            "resume": self._resume_key(),
            "world_size": self.context.world_size,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": progress.epoch,
            "position": progress.position,
            "step": progress.step,
            "order": progress.order,
            "best_val_loss": progress.best_val_loss,
            "best_epoch": progress.best_epoch,
            "ranks": ranks,
        }
        if self.context.is_main:
            save_checkpoint(self.run_dir / LAST, state)
        return state

    def _resume_key(self) -> dict:
        """What a resumed run must share with the run it continues (schedule and order)."""
        return {
            "stage": self.role,
            "fold": self.config.fold,
            "seed": self.config.seed,
            "network": self.stage_plan.network.to_dict(),
            "recipe": self.recipe.to_dict(),
        }

    def _model_extra(self, row: dict) -> dict:
        """What the model folder records besides weights: the plan (this stage's network and
        recipe as trained), stage and fold, how the model scored, and the volumes its training
        cases' ground truth spans (sparsekits.training_volumes)."""
        return {
            "plan": self.plan.to_dict(),
            "stage": self.role,
            "fold": self.config.fold,
            "epoch": row["epoch"],
            "val_loss": row["val_loss"],
            "val_dice": {name: row[f"val_dice_{name}"] for name in self.task.class_names},
            "seed": self.config.seed,
            "cases": self.split,
            RUN_KEY: self.volume_ranges,
        }

    def _result(self, row: dict, completed: bool) -> TrainResult:
        has_best = (self.run_dir / BEST).exists()
        return TrainResult(
            run_dir=self.run_dir,
            last_checkpoint=self.run_dir / LAST,
            best_checkpoint=self.run_dir / BEST if has_best else None,
            model_dir=self.run_dir / MODEL_DIR if has_best else None,
            best_epoch=self.progress.best_epoch if has_best else None,
            best_val_loss=self.progress.best_val_loss if has_best else None,
            final_metrics=row,
            completed=completed,
        )


def _effective_plan(config: TrainConfig, plan: Plan) -> Plan:
    """``plan`` with this run's network and recipe for its stage."""
    stage = plan.stage(config.stage)
    network = stage.network if config.network is None else resolve_config(config.network)
    return plan.with_stage(stage.role, network=network, recipe=config.recipe or stage.recipe)


def _check_config(config: TrainConfig, recipe: Recipe, context: DistContext) -> None:
    """What the plan cannot check: this run's fold, processes and intervals (the recipe was
    validated with its plan)."""
    if not 0 <= config.fold < recipe.folds:
        raise ValueError(f"fold must be in 0..{recipe.folds - 1}, got {config.fold}")
    if recipe.accumulation % context.world_size:
        raise ValueError(
            f"accumulation {recipe.accumulation} must be a multiple of the "
            f"{context.world_size} processes"
        )
    for name in ("val_every", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    if config.val_samples is not None and config.val_samples < 1:
        raise ValueError("val_samples must be at least 1")


def spread(count: int, at_most: int | None) -> list[int]:
    """Indices of at most ``at_most`` of ``count`` items, evenly spread (all when None)."""
    if at_most is None or at_most >= count:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, at_most).round()})


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _parameter_sum(model: torch.nn.Module) -> float:
    return float(sum(parameter.detach().double().sum() for parameter in model.parameters()))


def _identity(item: object) -> object:
    return item
