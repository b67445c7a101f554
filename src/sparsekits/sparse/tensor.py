"""SparseTensor: features at active voxels of a batch of 3D grids, plus their cached kernel maps."""

from __future__ import annotations

import torch

from sparsekits.sparse.kernel_map import KernelMapCache


class SparseTensor:
    """Features ``[N, C]`` at coordinates ``[N, 4]`` = (batch, z, y, x) on the tensor's own grid.

    ``stride`` is the cumulative downsampling factor relative to the finest grid (coords of a
    stride-2 tensor are the stride-1 coords floor-divided by 2).

    Coordinates must be int32 (stored as is) or int64 (converted to int32); any other dtype,
    a shape other than ``[N, 4]``, negative values, duplicates within a sample or a length
    that differs from ``features`` raise ValueError. The duplicate check builds the coordinate
    index the convolutions need anyway (O(N) for locally dense data), so it costs nothing extra
    later; tensors derived with ``replace`` or by the layers are not re-checked.

    ``batch_size`` defaults to ``coords[:, 0].max() + 1``; pass it to keep empty trailing samples.
    The kernel-map cache (``.kernel_maps``, with counters in ``.kernel_maps.stats``) is shared
    by every tensor derived with ``replace``.
    """

    def __init__(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        stride: int = 1,
        batch_size: int | None = None,
    ):
        coords = _validated_coords(features, coords)
        if batch_size is None:
            batch_size = int(coords[:, 0].max()) + 1 if len(coords) else 0
        elif len(coords) and int(coords[:, 0].max()) >= batch_size:
            raise ValueError(f"coords name a sample >= batch_size={batch_size}")
        self.features = features
        self._cache = KernelMapCache(coords, batch_size, stride)
        _ = self._cache.index  # builds the lookup and rejects duplicate coordinates

    @classmethod
    def _on_cache(cls, features: torch.Tensor, cache: KernelMapCache) -> SparseTensor:
        """A tensor on known-good coordinates: no validation, the cache is shared."""
        tensor = cls.__new__(cls)
        tensor.features = features
        tensor._cache = cache
        return tensor

    # -- properties ---------------------------------------------------------------------------
    @property
    def coords(self) -> torch.Tensor:
        return self._cache.coords

    @property
    def stride(self) -> int:
        return self._cache.stride

    @property
    def batch_size(self) -> int:
        return self._cache.batch_size

    @property
    def kernel_maps(self) -> KernelMapCache:
        return self._cache

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    @property
    def num_channels(self) -> int:
        return self.features.shape[1]

    def __len__(self) -> int:
        return self.features.shape[0]

    def __repr__(self) -> str:
        return (
            f"SparseTensor(n={len(self)}, channels={self.num_channels}, stride={self.stride}, "
            f"batch_size={self.batch_size}, dtype={self.dtype}, device={self.device})"
        )

    # -- derivation ---------------------------------------------------------------------------
    def replace(self, features: torch.Tensor) -> SparseTensor:
        """Same coordinates and stride, new features; shares the kernel-map cache."""
        if features.dim() != 2 or features.shape[0] != len(self):
            raise ValueError(
                f"replace() needs features of shape [{len(self)}, C], got {tuple(features.shape)}"
            )
        return SparseTensor._on_cache(features, self._cache)

    def to(self, *args, **kwargs) -> SparseTensor:
        """Like Tensor.to for the features; coordinates follow a device change (new cache)."""
        features = self.features.to(*args, **kwargs)
        if features.device == self.features.device:
            return SparseTensor._on_cache(features, self._cache)
        cache = KernelMapCache(
            self.coords.to(features.device), self.batch_size, self.stride, self._cache.config
        )
        return SparseTensor._on_cache(features, cache)

    # -- dense conversion ---------------------------------------------------------------------
    @classmethod
    def from_dense(cls, volume: torch.Tensor, mask: torch.Tensor, stride: int = 1) -> SparseTensor:
        """Active voxels of ``mask [B, D, H, W]`` with features from ``volume [B, C, D, H, W]``.

        Coordinates come out in (batch, z, y, x) raster order.
        """
        if volume.dim() != 5 or mask.dim() != 4:
            raise ValueError("from_dense needs volume [B, C, D, H, W] and mask [B, D, H, W]")
        if volume.shape[:1] + volume.shape[2:] != mask.shape:
            raise ValueError(
                f"volume {tuple(volume.shape)} and mask {tuple(mask.shape)} do not match"
            )
        mask = mask.to(device=volume.device, dtype=torch.bool)
        coords = mask.nonzero().int()
        features = volume.permute(0, 2, 3, 4, 1)[mask]
        return cls._on_cache(features, KernelMapCache(coords, volume.shape[0], stride))

    def dense(
        self, spatial_shape: tuple[int, int, int], batch_size: int | None = None
    ) -> torch.Tensor:
        """Zero-filled ``[B, C, D, H, W]`` with the features at active voxels; differentiable."""
        batch_size = self.batch_size if batch_size is None else batch_size
        shape = torch.tensor([batch_size, *spatial_shape], device=self.coords.device)
        if len(self) and bool((self.coords.long() >= shape).any()):
            raise ValueError(
                f"coords do not fit batch_size={batch_size} and spatial_shape={spatial_shape}"
            )
        out = self.features.new_zeros((batch_size, *spatial_shape, self.num_channels))
        c = self.coords.long()
        out = out.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), self.features)
        return out.permute(0, 4, 1, 2, 3)


def _validated_coords(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError("features must be a tensor of shape [N, C]")
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != 4:
        shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords)
        raise ValueError(f"coords must have shape [N, 4] (batch, z, y, x), got {shape}")
    if coords.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"coords must be int32 (or int64, converted), got {coords.dtype}")
    if coords.shape[0] != features.shape[0]:
        raise ValueError(
            f"features and coords differ in length: {features.shape[0]} != {coords.shape[0]}"
        )
    if coords.device != features.device:
        raise ValueError(f"features on {features.device} but coords on {coords.device}")
    if len(coords) and bool((coords < 0).any()):
        raise ValueError("coords must not be negative")
    if coords.dtype == torch.int64:
        if len(coords) and int(coords.max()) > torch.iinfo(torch.int32).max:
            raise ValueError("coords exceed the int32 range")
        coords = coords.int()
    return coords.contiguous()
