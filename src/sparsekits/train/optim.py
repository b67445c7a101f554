"""AdamW with a recipe's settings (``sparsekits.plan.Optimiser``); warm-up, constant, then cosine,
stepped per optimiser step."""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsekits.plan import Optimiser

DEFAULT_OPTIMISER = Optimiser()


_NO_DECAY_MODULES = ("norm", "grn")
_NO_DECAY_LEAVES = ("bias", "gamma", "beta")


def _is_decayed(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay acts on convolution and linear weights only.

    Norm and GRN parameters are exempt as METHOD.md says (GRN's gamma/beta are [1, C], so the
    rule goes by name, not by rank); biases are exempt too, following ConvNeXt practice.
    """
    *modules, leaf = name.lower().split(".")
    in_norm = any(key in module for module in modules for key in _NO_DECAY_MODULES)
    return parameter.ndim > 1 and not in_norm and leaf not in _NO_DECAY_LEAVES


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decayed, exempt = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decayed if _is_decayed(name, parameter) else exempt).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, config: Optimiser = DEFAULT_OPTIMISER
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=lr,
        betas=config.betas,
        eps=config.eps,
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, cosine_steps: int) -> float:
    """Multiplier of the base learning rate before optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` (the first step already moves), then 1, then a cosine
    from 1 to 0 over the last ``cosine_steps`` steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    cosine_start = total_steps - cosine_steps
    if step < cosine_start:
        return 1.0
    progress = min(1.0, (step - cosine_start) / max(1, cosine_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: Optimiser, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    cosine = round(config.cosine_fraction * total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cosine)
    )
