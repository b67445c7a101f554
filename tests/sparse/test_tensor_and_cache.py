"""SparseTensor validation, conversions and kernel-map cache reuse."""

from __future__ import annotations

import pytest
import torch
from sparse_cases import make_case

from sparsekits.sparse import (
    KernelMapConfig,
    SparseConv3d,
    SparseInverseConv3d,
    SparseMaxPool3d,
    SparseTensor,
    SubMConv3d,
    add,
    cat,
)
from sparsekits.sparse.kernel_map import KernelMapCache

COORDS = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)


@pytest.mark.parametrize(
    ("coords", "message"),
    [
        (COORDS.float(), "int32"),
        (COORDS.bool(), "int32"),
        (COORDS[:, :3], r"\[N, 4\]"),
        (COORDS[None], r"\[N, 4\]"),
        (COORDS * torch.tensor([1, 1, -1, 1], dtype=torch.int32), "negative"),
        (torch.cat([COORDS, COORDS[1:2]]), "duplicate"),
    ],
    ids=["float", "bool", "three-columns", "3d", "negative", "duplicate"],
)
def test_bad_coords_raise_value_error(coords, message):
    with pytest.raises(ValueError, match=message):
        SparseTensor(torch.zeros(coords.shape[-2] if coords.dim() > 1 else 3, 2), coords)


def test_features_and_coords_of_different_lengths_raise_value_error():
    with pytest.raises(ValueError, match="differ in length: 2 != 3"):
        SparseTensor(torch.zeros(2, 2), COORDS)


def test_duplicate_check_works_on_the_sorted_lookup_path_too():
    sparse_index = KernelMapConfig(lookup_entries_per_voxel=0, lookup_entries_min=0)
    coords = torch.tensor([[0, 0, 0, 0], [0, 900, 900, 900], [0, 0, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate"):
        _ = KernelMapCache(coords, 1, 1, config=sparse_index).index


def test_same_coordinates_in_another_sample_are_not_duplicates():
    x = SparseTensor(torch.zeros(2, 1), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))
    assert x.coords.dtype == torch.int32  # int64 is accepted and converted
    assert x.batch_size == 2


def test_sorted_lookup_gives_the_same_neighbours_as_the_dense_volume():
    case = make_case((7, 6, 5), 0.4, channels=1)
    dense = KernelMapCache(case.x.coords, 2, 1)
    sparse_index = KernelMapConfig(lookup_entries_per_voxel=0, lookup_entries_min=0)
    sorted_ = KernelMapCache(case.x.coords, 2, 1, config=sparse_index)
    assert dense.index.dense and not sorted_.index.dense
    assert torch.equal(dense.neighbours(3).rows, sorted_.neighbours(3).rows)
    assert torch.equal(dense.neighbours(3).missing, sorted_.neighbours(3).missing)
    assert torch.equal(dense.downsample(2).slot, sorted_.downsample(2).slot)
    assert torch.equal(dense.downsample(2).parent.coords, sorted_.downsample(2).parent.coords)


def test_neighbour_table_is_symmetric():
    case = make_case((6, 6, 6), 0.5, channels=1)
    neighbours = case.x.kernel_maps.neighbours(3)
    nbr, present = neighbours.rows.long(), neighbours.present()
    n, k = nbr.shape
    rows = torch.arange(n)[:, None].expand(n, k)
    assert 0 < int(present.sum()) < n * k
    back = nbr.flip(1)  # offset K-1-k
    assert torch.equal(back[nbr[present], torch.arange(k).expand(n, k)[present]], rows[present])


def test_chunk_bounds_count_the_missing_neighbours_before_each_chunk_and_are_kept():
    neighbours = make_case((6, 6, 6), 0.5, channels=1).x.kernel_maps.neighbours(3)
    missing_per_row = (~neighbours.present()).sum(1)
    n, step = len(missing_per_row), 7
    expected = [int(missing_per_row[:start].sum()) for start in range(0, n + step, step)]
    bounds = neighbours.chunk_bounds(step)
    assert bounds == expected and 0 < bounds[-1] == len(neighbours.missing)
    assert neighbours.chunk_bounds(step) is bounds  # asked again by every pass: computed once


def test_layers_at_the_same_coordinates_share_one_kernel_map():
    case = make_case((6, 6, 6), 0.5, channels=4)
    x = case.x
    first, second = SubMConv3d(4, 4, groups=4), SubMConv3d(4, 4)
    y = second(first(x))
    stats = x.kernel_maps.stats
    assert y.kernel_maps is x.kernel_maps
    assert stats["neighbour_builds"] == 1 and stats["neighbour_hits"] == 1

    down = SparseConv3d(4, 4)
    coarse = down(y)
    pooled = SparseMaxPool3d(2)(x)
    assert pooled.kernel_maps is coarse.kernel_maps
    SparseInverseConv3d(4, 4)(coarse, x)
    assert stats["downsample_builds"] == 1 and stats["downsample_hits"] == 2


def test_add_and_cat_require_the_same_coordinates():
    a = make_case((4, 4, 4), 0.5, channels=2, seed=1).x
    b = make_case((4, 4, 4), 0.5, channels=2, seed=2).x
    with pytest.raises(ValueError, match="same coordinates"):
        add(a, b)
    with pytest.raises(ValueError, match="same coordinates"):
        cat([a, b])
    twin = SparseTensor(torch.ones_like(a.features), a.coords.clone())  # equal, not shared
    assert torch.equal(add(a, twin).features, a.features + 1)
    assert torch.equal(cat([a, twin]).features[:, 2:], twin.features)


def test_to_keeps_the_cache_for_dtype_changes():
    x = make_case((4, 4, 4), 0.5, channels=2).x
    y = x.to(torch.float64)
    assert y.dtype == torch.float64 and y.kernel_maps is x.kernel_maps


def test_dense_rejects_a_too_small_shape():
    x = make_case((4, 4, 4), 0.5, channels=2).x
    with pytest.raises(ValueError, match="spatial_shape"):
        x.dense((3, 4, 4))


def test_inverse_conv_rejects_a_target_at_the_wrong_stride():
    x = make_case((4, 4, 4), 0.5, channels=2).x
    with pytest.raises(ValueError, match="stride"):
        SparseInverseConv3d(2, 2)(x, x)


def test_worker_threads_follow_the_callers_inference_mode():
    """The CPU chunk workers write into tensors made under torch.inference_mode()."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # test workers run single-threaded; the pool needs two
    try:
        coords = torch.cartesian_prod(*(torch.arange(20),) * 3).int()
        coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
        x = SparseTensor(torch.randn(len(coords), 16), coords)
        conv = SubMConv3d(16, 16, kernel_size=3, groups=16)
        with torch.no_grad():
            expected = conv(x).features
        with torch.inference_mode():
            got = conv(x.replace(x.features.clone())).features
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, expected)
