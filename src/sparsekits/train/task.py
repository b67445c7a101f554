"""What the trainer asks of a method's stage: the training step, whatever the network.

The trainer (``sparsekits.train.trainer``) owns the loop: folds, sample order, accumulation,
DDP, optimiser, checkpoints, logs. A method's ``training_task`` supplies the rest through this
protocol: the dataset of cached samples, the network wrapped for DDP, the batch tensors, the
outputs, the loss and the Dice counts per output class (region or label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch


class TrainingTask(Protocol):
    class_names: tuple[str, ...]  # the output classes the Dice counts are per (log columns)

    def dataset(
        self, paths: list[Path], train: bool
    ) -> torch.utils.data.Dataset:  # items of a Draw (sparsekits.train.samples)
        """The cached samples ``paths``; augmented and patched as the recipe says if ``train``."""
        ...

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """The network as DDP needs it: a module whose forward returns plain tensors."""
        ...

    def batch(self, item: Any, device: torch.device) -> tuple[Any, Any]:
        """(network input, targets) of one dataset item on ``device``."""
        ...

    def outputs(self, wrapped: torch.nn.Module, forward_result: Any) -> Any:
        """The network's outputs from what the wrapped (maybe DDP'd) module returned."""
        ...

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The recipe's loss, a scalar."""
        ...

    def counts(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Voxel counts [3, len(class_names)] of (predicted & true, predicted, true)."""
        ...
