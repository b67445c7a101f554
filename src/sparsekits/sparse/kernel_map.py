"""Coordinate indices and kernel maps, built once per coordinate set and cached.

Every coordinate ``(batch, z, y, x)`` is linearised into an int64 key over the batch's bounding
box, padded by ``PAD`` voxels on each side of each spatial axis. Because of the padding, the key
of a neighour at offset ``d`` (``|d| <= PAD`` per axis) is simply ``key + delta(d)``: it never
wraps into another row, plane or sample, so no bounds checks are needed and samples in a batch
can never see each other.

Keys are resolved to rows in one of two ways:

- a dense int32 lookup volume over the padded box (O(N) to build, one gather per query) when
  the box fits ``KernelMapConfig``'s memory budget, which locally dense CT data always does;
- otherwise sorting plus ``searchsorted`` on the int64 keys (O(N log N)).

A ``KernelMapCache`` belongs to one coordinate set at one stride. Tensors made by
``SparseTensor.replace`` share it, so a network builds each neighbour table and each
child -> parent map once per level.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

# Padding of the key space: supports submanifold kernels up to 2 * PAD + 1 = 7.
PAD = 3


@dataclass(frozen=True)
class KernelMapConfig:
    """Memory budget of the dense lookup volume and the size of a processing chunk."""

    # The dense lookup volume may have up to this many int32 entries per active voxel ...
    lookup_entries_per_voxel: int = 64
    # ... or this many in total, whichever is larger (small inputs always use it).
    lookup_entries_min: int = 1 << 22
    # Rows per chunk are chosen so that one gathered block [rows, K, C] has about this size:
    # cache-sized on CPU, large on CUDA where each chunk costs kernel launches.
    chunk_bytes: int = 2 << 20
    cuda_chunk_bytes: int = 256 << 20


CONFIG = KernelMapConfig()


class KeySpace:
    """Linear int64 keys of (batch, z, y, x) over a padded bounding box."""

    def __init__(self, coords: torch.Tensor, batch_size: int):
        spatial = coords[:, 1:].long()
        if len(coords):
            self.low = spatial.amin(0) - PAD
            high = spatial.amax(0) + PAD
        else:
            self.low = torch.zeros(3, dtype=torch.long, device=coords.device)
            high = self.low
        self.shape = [int(v) for v in (high - self.low + 1).tolist()]
        self.batch_size = batch_size
        depth, height, width = self.shape
        self.strides = (depth * height * width, height * width, width, 1)
        self.volume = batch_size * self.strides[0]

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Keys of coordinates inside the box (the caller guarantees they are)."""
        c = coords.long()
        s = self.strides
        shifted = c[:, 1:] - self.low
        return c[:, 0] * s[0] + shifted[:, 0] * s[1] + shifted[:, 1] * s[2] + shifted[:, 2]

    def contains(self, coords: torch.Tensor) -> torch.Tensor:
        """Which coordinates fall inside the (padded) box of this key space."""
        c = coords.long()
        shifted = c[:, 1:] - self.low
        upper = torch.tensor(self.shape, device=c.device)
        inside = ((shifted >= 0) & (shifted < upper)).all(1)
        return inside & (c[:, 0] >= 0) & (c[:, 0] < self.batch_size)

    def delta(self, offset: tuple[int, int, int]) -> int:
        return offset[0] * self.strides[1] + offset[1] * self.strides[2] + offset[2]


class CoordinateIndex:
    """Key -> row lookup for one coordinate set; raises ValueError on duplicate coordinates.

    Rows are int32; an absent key yields ``N`` (the number of voxels, one past the last row), so
    callers find the absent ones with a single comparison.
    """

    def __init__(self, coords: torch.Tensor, batch_size: int, config: KernelMapConfig = CONFIG):
        self.space = KeySpace(coords, batch_size)
        self.keys = self.space.encode(coords)
        self.size = n = len(coords)
        budget = max(config.lookup_entries_min, config.lookup_entries_per_voxel * n)
        self.dense = self.space.volume <= budget
        rows = torch.arange(n, dtype=torch.int32, device=coords.device)
        if self.dense:
            table = torch.full((self.space.volume,), n, dtype=torch.int32, device=coords.device)
            table[self.keys] = rows
            # With duplicates, one writer wins and the others no longer find themselves.
            if not torch.equal(table[self.keys], rows):
                raise ValueError(_DUPLICATE_MESSAGE)
            self.table = table
        else:
            self.sorted_keys, order = torch.sort(self.keys)
            if n > 1 and bool((self.sorted_keys[1:] == self.sorted_keys[:-1]).any()):
                raise ValueError(_DUPLICATE_MESSAGE)
            # One extra entry so that "not found" (position n) maps to the absent row n.
            self.order = torch.cat([order.int(), rows.new_full((1,), n)])

    def rows_of_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Row (int32) of each key, which must lie in the key space; ``N`` where absent."""
        if self.dense:
            return self.table[keys]
        if self.size == 0:
            return torch.zeros_like(keys, dtype=torch.int32)
        pos = torch.searchsorted(self.sorted_keys, keys)
        found = self.sorted_keys[pos.clamp(max=self.size - 1)] == keys
        return self.order[torch.where(found, pos, self.size)]

    def rows_of(self, coords: torch.Tensor) -> torch.Tensor:
        """Row (int32) of each coordinate; ``N`` where it is not an active voxel."""
        inside = self.space.contains(coords)
        keys = torch.where(inside, self.space.encode(coords), 0)
        return torch.where(inside, self.rows_of_keys(keys), self.size)


_DUPLICATE_MESSAGE = "coords contain duplicate coordinates within one sample"


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets in nn.Conv3d weight order (kz, ky, kx) for an odd, centred kernel."""
    r = kernel_size // 2
    span = range(-r, r + 1)
    return list(itertools.product(span, span, span))


@dataclass
class NeighbourMap:
    """Submanifold neighbour table of one kernel size.

    ``rows[i, k]`` (int32 [N, K]) is the row of voxel i's neighbour at offset k; where there is
    none it holds 0, and ``missing`` (int64, ascending) lists those entries as flat positions
    ``i * K + k``, so a gather zeroes them afterwards instead of copying the features to append
    a zero row. The offsets are symmetric (``offset[K-1-k] == -offset[k]``), so
    j = rows[i, k] implies i = rows[j, K-1-k]: backward passes are gathers with the flipped
    kernel.
    """

    rows: torch.Tensor
    missing: torch.Tensor
    _chunk_bounds: dict[int, list[int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def kernel_volume(self) -> int:
        return self.rows.shape[1]

    def chunk_bounds(self, step: int) -> list[int]:
        """Where each chunk of ``step`` rows starts in ``missing`` (one more entry: the end).

        Cached per chunk size: every forward and backward pass of every convolution on this map
        asks, and on CUDA the answer costs a host sync.
        """
        bounds = self._chunk_bounds.get(step)
        if bounds is None:
            n, k = self.rows.shape
            starts = torch.arange(0, n + step, step, device=self.missing.device)
            bounds = torch.searchsorted(self.missing, starts * k).tolist()
            self._chunk_bounds[step] = bounds
        return bounds

    def present(self) -> torch.Tensor:
        """Bool [N, K]: which neighbours exist."""
        present = torch.ones(self.rows.numel(), dtype=torch.bool, device=self.rows.device)
        present[self.missing] = False
        return present.view(self.rows.shape)


@dataclass
class DownsampleMap:
    """Children at one stride -> parents at ``factor`` times it (coords floor-divided).

    ``slot[i] = parent[i] * factor**3 + offset[i]`` where ``offset`` is the child's position
    inside its parent's cell in (z, y, x) raster order, the weight order of nn.Conv3d.
    """

    parent: KernelMapCache
    factor: int
    slot: torch.Tensor  # int64 [N_children]


@dataclass
class KernelMapCache:
    """Everything derived from one coordinate set at one stride, built lazily and kept."""

    coords: torch.Tensor  # int32 [N, 4]
    batch_size: int
    stride: int
    config: KernelMapConfig = CONFIG
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "index_builds": 0,
            "neighbour_builds": 0,
            "neighbour_hits": 0,
            "downsample_builds": 0,
            "downsample_hits": 0,
        }
    )
    _index: CoordinateIndex | None = None
    _neighbours: dict[int, NeighbourMap] = field(default_factory=dict)
    _downsample: dict[int, DownsampleMap] = field(default_factory=dict)
    _batch_index: torch.Tensor | None = None

    @property
    def index(self) -> CoordinateIndex:
        if self._index is None:
            self._index = CoordinateIndex(self.coords, self.batch_size, self.config)
            self.stats["index_builds"] += 1
        return self._index

    @property
    def batch_index(self) -> torch.Tensor:
        """Sample of each voxel, int64 [N]."""
        if self._batch_index is None:
            self._batch_index = self.coords[:, 0].long()
        return self._batch_index

    def neighbours(self, kernel_size: int) -> NeighbourMap:
        """Submanifold neighbour table for an odd ``kernel_size``, built once and kept."""
        if kernel_size % 2 == 0 or kernel_size > 2 * PAD + 1:
            raise ValueError(f"submanifold kernel_size must be odd and <= {2 * PAD + 1}")
        table = self._neighbours.get(kernel_size)
        if table is not None:
            self.stats["neighbour_hits"] += 1
            return table
        index = self.index
        offsets = kernel_offsets(kernel_size)
        rows = torch.empty((index.size, len(offsets)), dtype=torch.int32, device=index.keys.device)
        for k, offset in enumerate(offsets):  # one offset at a time: no [N, K] int64 temporary
            rows[:, k] = index.rows_of_keys(index.keys + index.space.delta(offset))
        rows = rows.view(-1)
        missing = (rows == index.size).nonzero().squeeze(1)
        table = NeighbourMap(
            rows.index_fill_(0, missing, 0).view(index.size, len(offsets)), missing
        )
        self._neighbours[kernel_size] = table
        self.stats["neighbour_builds"] += 1
        return table

    def downsample(self, factor: int) -> DownsampleMap:
        """Map to the coarser grid (coords // factor); the parent cache is shared by all users."""
        found = self._downsample.get(factor)
        if found is not None:
            self.stats["downsample_hits"] += 1
            return found
        coords = self.coords.long()
        coarse = coords.clone()
        coarse[:, 1:] = torch.div(coarse[:, 1:], factor, rounding_mode="floor")
        within = coords[:, 1:] - coarse[:, 1:] * factor
        offset = (within[:, 0] * factor + within[:, 1]) * factor + within[:, 2]
        space = KeySpace(coarse, self.batch_size)
        parent_keys, parent_of_child = _unique_keys(space.encode(coarse), space.volume, self.config)
        parent_coords = torch.empty((len(parent_keys), 4), dtype=torch.int32, device=coords.device)
        if len(parent_keys):
            parent_coords[:, 0] = parent_keys // space.strides[0]
            rest = parent_keys % space.strides[0]
            parent_coords[:, 1] = rest // space.strides[1] + space.low[0]
            rest = rest % space.strides[1]
            parent_coords[:, 2] = rest // space.strides[2] + space.low[1]
            parent_coords[:, 3] = rest % space.strides[2] + space.low[2]
        parent = KernelMapCache(
            parent_coords, self.batch_size, self.stride * factor, config=self.config
        )
        result = DownsampleMap(parent, factor, parent_of_child * factor**3 + offset)
        self._downsample[factor] = result
        self.stats["downsample_builds"] += 1
        return result


def _unique_keys(
    keys: torch.Tensor, volume: int, config: KernelMapConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and the position of each key among them (like torch.unique)."""
    budget = max(config.lookup_entries_min, config.lookup_entries_per_voxel * len(keys))
    if volume > budget:
        return torch.unique(keys, sorted=True, return_inverse=True)
    present = torch.zeros(volume, dtype=torch.bool, device=keys.device)
    present[keys] = True
    unique = present.nonzero().squeeze(1)
    rank = torch.empty(volume, dtype=torch.int32, device=keys.device)
    rank[unique] = torch.arange(len(unique), dtype=torch.int32, device=keys.device)
    return unique, rank[keys].long()
