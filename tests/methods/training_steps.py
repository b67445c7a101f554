"""A few optimiser steps of a method's training step on one sample: the loss must fall."""

from __future__ import annotations

import torch


def step_losses(task, net: torch.nn.Module, item, steps: int, lr: float = 3e-3) -> list[float]:
    """The loss of each of ``steps`` Adam steps of ``task`` (a TrainingTask) on ``item``."""
    wrapped = task.wrap(net)
    inputs, targets = task.batch(item, torch.device("cpu"))
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.loss(task.outputs(wrapped, wrapped(inputs)), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses
