"""What training draws: the epoch order with lesion oversampling, lesion-centred patches, and the
cache index that knows which samples hold a mass."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE
from sparsekits.train.augment import Crop
from sparsekits.train.samples import (
    Draw,
    SampleSet,
    epoch_order,
    patch_of,
    rank_draws,
    read_cache,
)

STAGE1, STAGE2 = SSCN_TWOSTAGE.stages


def test_epoch_order_without_oversampling_is_shuffled_passes():
    order = epoch_order(5, 12, seed=1, epoch=0)
    indices = [index for index, _ in order]
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:10]) == list(range(5))
    assert not any(lesion for _, lesion in order)
    assert order == epoch_order(5, 12, seed=1, epoch=0) != epoch_order(5, 12, seed=1, epoch=1)


def test_lesion_oversampling_forces_the_asked_share_of_draws_onto_lesion_samples():
    lesion_samples = [3, 7]
    order = epoch_order(10, 4000, seed=0, epoch=2, lesion_indices=lesion_samples,
                        lesion_oversampling=0.33)  # fmt: skip
    forced = np.array([lesion for _, lesion in order])
    indices = np.array([index for index, _ in order])
    assert forced.mean() == pytest.approx(0.33, abs=0.03)
    assert set(indices[forced]) == set(lesion_samples)
    # the rest are uniform passes, so lesion samples get their own share of them too
    on_lesions = np.isin(indices, lesion_samples).mean()
    assert on_lesions == pytest.approx(0.33 + 0.67 * 0.2, abs=0.03)
    draws = rank_draws(order[:6], seed=0, epoch=2, rank=1, world_size=2)
    assert [(d.index, d.lesion) for d in draws] == [tuple(order[i]) for i in (1, 3, 5)]
    assert draws[0].seed == (0, 2, 1)


def lesion_crop() -> tuple[Crop, np.ndarray]:
    """A 40^3 crop: kept voxels everywhere in a kidney band, a small tumour in one corner."""
    hu = np.full((40, 40, 40), 100, np.int16)
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[:, :, :] = 1
    labels[30:34, 30:34, 30:34] = 2
    kept = np.argwhere(np.ones((40, 40, 40), bool)).astype(np.int32)
    return Crop(hu, labels), kept


def test_lesion_patches_hold_the_lesion_and_others_are_anywhere():
    crop, kept = lesion_crop()
    with_lesion = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        patch = patch_of(crop, kept, 12, rng, lesion=True)
        assert patch.hu.shape == (12, 12, 12)
        assert (patch.labels == 2).any()
        with_lesion += (patch_of(crop, kept, 12, rng, lesion=False).labels == 2).any()
    # a random 12^3 patch of a 40^3 crop meets a 4^3 lesion in well under half the draws
    assert with_lesion < 15
    # a patch larger than the crop is the crop
    assert patch_of(crop, kept, 64, np.random.default_rng(0), lesion=True).hu.shape == (40, 40, 40)


def test_sample_set_serves_patches_from_the_cache(tiny_cache):
    index = read_cache(tiny_cache, 1)
    paths = index.paths_of(index.cases)
    # the tiny cases all hold a tumour (label 2): every stage-1 sample holds a mass
    assert set(paths) == set(index.with_mass)
    whole = SampleSet(paths, STAGE1)[Draw(0, (0, 0, 0))]
    patches = SampleSet(paths, STAGE1, patch_vox=8)
    item = patches[Draw(0, (0, 0, 1), lesion=True)]
    extent = item.coords.max(0).values - item.coords.min(0).values + 1
    assert (extent <= 8).all() and len(item.coords) < len(whole.coords)
    assert item.regions[:, 2].any()  # centred on the tumour
    again = patches[Draw(0, (0, 0, 1), lesion=True)]
    assert np.array_equal(item.coords, again.coords)


def test_a_cache_from_before_plans_is_read_with_its_implied_plan(tiny_cache, tmp_path):
    """Caches of earlier versions recorded each stage's config, not a plan."""
    import json
    import shutil

    from sparsekits.methods.sscn_twostage import SSCN_TWOSTAGE

    old = tmp_path / "old_cache"
    shutil.copytree(tiny_cache, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["plan"]
    manifest["stages"] = {
        "1": {"stage": 1, "spacing_mm": 1.99, "hu_window": [-53.4, 283.2],
              "norm_mean": 48.10007, "norm_std": 62.645897, "crop_margin_vox": [0, 0, 0]},
        "2": {"stage": 2, "spacing_mm": 0.78, "hu_window": [-300.0, 500.0],
              "norm_mean": 57.802067, "norm_std": 81.260414, "crop_margin_vox": [35, 35, 10]},
    }  # fmt: skip
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert read_cache(old, 1).plan == SSCN_TWOSTAGE
