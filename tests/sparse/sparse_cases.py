"""Random sparse inputs and their zero-filled dense twins for the engine tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from sparsekits.sparse import SparseTensor

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.cuda),
]

# (spatial shape, occupancy, empty second sample): odd and even sizes, sparse to nearly full.
CASES = [
    ((5, 7, 6), 0.15, False),
    ((6, 5, 9), 0.5, True),
    ((8, 8, 8), 0.9, False),
]


@dataclass
class Case:
    x: SparseTensor
    volume: torch.Tensor  # [B, C, D, H, W], zeros at inactive voxels
    mask: torch.Tensor  # [B, D, H, W]

    def at_active(self, dense: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of a dense [B, C, D, H, W] result at coords (default: the input's)."""
        c = (self.x.coords if coords is None else coords).long()
        return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]

    def even_padded(self, dense: torch.Tensor) -> torch.Tensor:
        """Zero-pad spatial sizes up to even, so dense k2 s2 ops see every border child."""
        pads = []
        for size in reversed(dense.shape[2:]):
            pads += [0, size % 2]
        return F.pad(dense, pads)


def make_case(
    shape=(5, 7, 6),
    occupancy=0.3,
    empty_second=False,
    channels=4,
    device="cpu",
    dtype=torch.float32,
    seed=0,
) -> Case:
    """A batch of two with active voxels on every face (corners forced on)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((2, *shape), generator=gen) < occupancy
    mask[:, 0, 0, 0] = mask[:, -1, -1, -1] = mask[:, 0, -1, 0] = True
    if empty_second:
        mask[1] = False
    volume = torch.randn((2, channels, *shape), generator=gen, dtype=dtype) * mask[:, None]
    volume, mask = volume.to(device), mask.to(device)
    return Case(SparseTensor.from_dense(volume, mask), volume, mask)
