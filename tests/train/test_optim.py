"""AdamW settings, the parameters exempt from weight decay, and the per-step schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparsekits.models import build_model
from sparsekits.plan import Optimiser
from sparsekits.train.optim import build_optimizer, build_scheduler, lr_factor


def test_optimizer_settings_and_decay_groups_on_the_real_network():
    model = build_model("small")
    optimizer = build_optimizer(model, 5e-4)
    decayed, exempt = optimizer.param_groups
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (1e-5, 0.0)
    assert decayed["lr"] == 5e-4 and decayed["betas"] == (0.9, 0.95) and decayed["eps"] == 1e-12
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    decayed_names = [names[id(p)] for p in decayed["params"]]
    exempt_names = [names[id(p)] for p in exempt["params"]]
    assert len(decayed_names) + len(exempt_names) == len(names)
    # Every norm and GRN parameter (GRN's gamma/beta are 2-D) and every bias is exempt.
    for name in names.values():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = ".norm." in f".{name}" or ".grn." in name or leaf in ("bias", "gamma", "beta")
        assert (name in exempt_names) == is_norm, name
    assert any(".grn." in name for name in exempt_names)
    assert any("pwconv1.weight" in name for name in decayed_names)


def test_lr_factor_warms_up_holds_then_cosines_to_zero():
    total, warmup, cosine = 100, 4, 80
    factors = [lr_factor(step, total, warmup, cosine) for step in range(total)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4:21] == [1.0] * 17
    assert factors[20] == 1.0 and factors[21] < 1.0
    assert factors[60] == pytest.approx(0.5)
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 79 / 80)))
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))


def test_scheduler_steps_per_optimiser_step_and_scales_with_epochs():
    """500 epochs of 2 steps: warm-up 2 steps, cosine over the last 400 epochs (800 steps)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=5e-4)
    scheduler = build_scheduler(optimizer, Optimiser(), steps_per_epoch=2, epochs=500)
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[1] == pytest.approx(5e-4)
    assert lrs[200] == pytest.approx(5e-4) and lrs[201] < 5e-4
    assert lrs[600] == pytest.approx(2.5e-4)
    assert lrs[999] < 1e-8
    short = build_scheduler(torch.optim.AdamW([parameter], lr=1.0), Optimiser(), 10, 5)
    assert short.lr_lambdas[0](10) == 1.0 and short.lr_lambdas[0](11) < 1.0  # last 80 %
