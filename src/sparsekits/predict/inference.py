"""One stage's networks on sparse voxels: fold ensembling, mirroring TTA and ROI batching.

Everything here works on sparse samples ``(coords [N, 3] int32, features [N, 1] float32)`` on a
stage grid and returns sigmoid region probabilities ``[N, 3]`` (or, with ``softmax``, class
probabilities ``[N, classes]``) in the same row order; it knows nothing of images, grids or files
(pipeline.py does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsekits.errors import InputError
from sparsekits.plan import Plan, StagePlan, check_same_input
from sparsekits.sparse import SparseTensor

# Stage-2 ROIs are batched into one forward pass up to this many voxels: on a GPU one larger pass
# beats several small ones; the cap keeps peak memory at the size of two kidney ROIs.
MAX_BATCH_VOXELS = 2_000_000

# The 8 mirrorings of 3 axes (identity first), as nnU-Net's test-time augmentation does.
MIRROR_AXES = tuple(axes for count in range(4) for axes in itertools.combinations((0, 1, 2), count))


@dataclass
class StageNetworks:
    """One stage's trained networks (one per fold) and the stage plan they were trained with."""

    stage: StagePlan
    models: list[torch.nn.Module]
    folds: list[int]
    device: torch.device


def parse_folds(folds: str | Sequence[int]) -> list[int] | None:
    """``"all"`` -> None (every fold found); ``"0,1"`` or ``[0, 1]`` -> ``[0, 1]``."""
    if isinstance(folds, str):
        if folds.strip().lower() == "all":
            return None
        try:
            return [int(part) for part in folds.split(",") if part.strip()]
        except ValueError as error:
            raise InputError(folds, "folds must be 'all' or a comma list such as 0,1") from error
    return [int(fold) for fold in folds]


def load_stage_networks(
    model_dir: str | Path,
    role: str | int,
    folds: str | Sequence[int],
    device: str | torch.device,
    plan: Plan,
) -> StageNetworks:
    """Load MODEL's stage ``role`` (or 1-based position) for the requested folds (all found
    ones for ``"all"``); every fold must have been trained with ``plan``'s input."""
    from sparsekits.models.bundle import fold_path, fold_record, model_stage_dir, require_folds
    from sparsekits.models.io import load_model_folder

    model_dir, role = Path(model_dir), plan.role(role)
    found = require_folds(model_dir, plan, role)
    wanted = parse_folds(folds) or found
    missing = [fold for fold in wanted if fold not in found]
    if missing:
        raise InputError(
            model_stage_dir(model_dir, plan, role),
            f"fold(s) {missing} not found (available: {', '.join(map(str, found))})",
        )
    device = torch.device(device)
    models = []
    for fold in wanted:
        path = fold_path(model_dir, role, fold, plan)
        fold_plan, fold_role, _ = fold_record(path)
        if fold_role != role:
            raise InputError(path, f"holds a {fold_role} model, not {role}")
        check_same_input(plan, fold_plan, path, "this fold")
        model, _network_config, _extra = load_model_folder(path, device)
        models.append(model.eval())
    return StageNetworks(stage=plan.stage(role), models=models, folds=wanted, device=device)


class PlanNetworks:
    """Every stage's networks of a model folder (``nets`` by role), loaded once for a run, and
    what each report records of them: every predictor's base."""

    def __init__(
        self,
        model_dir: str | Path,
        plan: Plan,
        device: str = "cpu",
        folds: str | Sequence[int] = "all",
        tta: bool = False,
    ):
        self.plan, self.model_dir, self.tta = plan, Path(model_dir), tta
        self.nets = {
            role: load_stage_networks(model_dir, role, folds, device, plan) for role in plan.roles
        }
        self.folds = {role: nets.folds for role, nets in self.nets.items()}
        self.device = str(self.nets[plan.roles[0]].device)


def predict_probabilities(
    networks: StageNetworks,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    tta: bool = False,
    max_batch_voxels: int = MAX_BATCH_VOXELS,
    softmax: bool = False,
) -> list[np.ndarray]:
    """Mean sigmoid region probabilities ``[N_i, 3]`` (float32) of each sample; with
    ``softmax``, mean softmax class probabilities ``[N_i, classes]``.

    Samples are batched into forward passes of at most ``max_batch_voxels`` voxels (a larger
    sample runs alone). Averages over folds and, with ``tta``, over the 8 mirrorings.
    """
    results: list[np.ndarray | None] = [None] * len(samples)
    for group in batch_groups([len(coords) for coords, _ in samples], max_batch_voxels):
        probabilities = _predict_batch(networks, [samples[i] for i in group], tta, softmax)
        for index, probability in zip(group, probabilities, strict=True):
            results[index] = probability
    return results  # type: ignore[return-value]


def batch_groups(sizes: Sequence[int], max_voxels: int) -> list[list[int]]:
    """Consecutive groups of sample indices, each at most ``max_voxels`` (or one sample)."""
    groups: list[list[int]] = []
    total = 0
    for index, size in enumerate(sizes):
        if not groups or total + size > max_voxels:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups


# no_grad: the engine works under inference_mode too, but it was no faster (paper network, 300 k
# voxels: 2.4-2.8 s a forward pass either way).
@torch.no_grad()
def _predict_batch(
    networks: StageNetworks,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    tta: bool,
    softmax: bool = False,
) -> list[np.ndarray]:
    sizes = [len(coords) for coords, _ in samples]
    outputs = networks.stage.network.out_channels
    if sum(sizes) == 0:
        return [np.zeros((0, outputs), np.float32) for _ in samples]
    coords = torch.from_numpy(
        np.concatenate(
            [_with_batch_index(sample_coords, b) for b, (sample_coords, _) in enumerate(samples)]
        )
    ).to(networks.device)
    features = torch.from_numpy(
        np.concatenate([np.asarray(f, np.float32).reshape(-1, 1) for _, f in samples])
    ).to(networks.device)
    mirrorings = MIRROR_AXES if tta else MIRROR_AXES[:1]
    total = torch.zeros((len(coords), outputs), dtype=torch.float32, device=networks.device)
    activation = (lambda x: torch.softmax(x, dim=1)) if softmax else torch.sigmoid
    for axes in mirrorings:
        # One input tensor per mirroring serves every fold, so its kernel maps are built once.
        tensor = SparseTensor(features, _mirror(coords, axes))
        for model in networks.models:
            logits = _finest(model(tensor))
            total += activation(_rows_of(logits, tensor.coords).float())
    mean = (total / (len(mirrorings) * len(networks.models))).cpu().numpy()
    return np.split(mean, np.cumsum(sizes)[:-1])


def _with_batch_index(coords: np.ndarray, batch: int) -> np.ndarray:
    out = np.empty((len(coords), 4), np.int32)
    out[:, 0] = batch
    out[:, 1:] = coords
    return out


def _mirror(coords: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Mirror the spatial columns ``axes`` (0-2) of [N, 4] coords within each axis' extent."""
    if not axes:
        return coords
    mirrored = coords.clone()
    for axis in axes:
        column = coords[:, axis + 1]
        mirrored[:, axis + 1] = column.max() + column.min() - column
    return mirrored


def _finest(output) -> SparseTensor:
    """The stride-1 logits of a network's output (deep supervision returns finest first)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def _rows_of(output: SparseTensor, coords: torch.Tensor) -> torch.Tensor:
    """Features of ``output`` in the row order of ``coords`` (same voxel set)."""
    if output.coords.shape == coords.shape and torch.equal(output.coords, coords):
        return output.features
    order_out = torch.argsort(_voxel_keys(output.coords))
    order_in = torch.argsort(_voxel_keys(coords))
    rows = torch.empty_like(order_in)
    rows[order_in] = order_out
    return output.features[rows]


def _voxel_keys(coords: torch.Tensor) -> torch.Tensor:
    """One int64 per voxel, ordered like (batch, c1, c2, c3) (coords are < 2**15 per axis)."""
    c = coords.long() - coords.long().min(dim=0).values
    return ((c[:, 0] * 32768 + c[:, 1]) * 32768 + c[:, 2]) * 32768 + c[:, 3]
