"""The sparse-tensor engine: tensors, kernel maps and nn-like modules. Knows nothing of CT.

Pure PyTorch (no compiled extension), CPU and CUDA. See ``SparseTensor`` for the coordinate
rules and ``sparsekits.sparse.kernel_map`` for how neighbour tables are built and cached.
"""

from sparsekits.sparse.kernel_map import KernelMapCache, KernelMapConfig
from sparsekits.sparse.modules import (
    PointWise,
    SparseAvgPool3d,
    SparseBatchNorm,
    SparseConv3d,
    SparseGRN,
    SparseInverseConv3d,
    SparseLayerNorm,
    SparseMaxPool3d,
    SubMConv3d,
    add,
    cat,
)
from sparsekits.sparse.tensor import SparseTensor

__all__ = [
    "KernelMapCache",
    "KernelMapConfig",
    "PointWise",
    "SparseAvgPool3d",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseGRN",
    "SparseInverseConv3d",
    "SparseLayerNorm",
    "SparseMaxPool3d",
    "SparseTensor",
    "SubMConv3d",
    "add",
    "cat",
]
