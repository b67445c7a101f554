"""Folds split by case: a partition, reproducible from the case list, shared by both stages."""

from __future__ import annotations

import json

import pytest

from sparsekits.data.preprocess import preprocess_dataset
from sparsekits.errors import InputError
from sparsekits.train.folds import case_folds, load_or_create_splits
from sparsekits.train.samples import read_cache

CASES = [f"case_{i:05d}" for i in range(23)]


def test_folds_partition_the_cases_by_case():
    folds = case_folds(CASES)
    assert len(folds) == 5
    validated = [case for fold in folds for case in fold["val"]]
    assert sorted(validated) == CASES  # each case validated exactly once
    for fold in folds:
        assert set(fold["train"]) | set(fold["val"]) == set(CASES)
        assert not set(fold["train"]) & set(fold["val"])
        assert len(fold["val"]) in (4, 5)


def test_split_is_a_function_of_the_case_set_and_seed():
    assert case_folds(list(reversed(CASES))) == case_folds(CASES)
    assert case_folds(CASES, seed=7) != case_folds(CASES)


def test_splits_file_is_reused_and_checked(tmp_path):
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, CASES)
    assert json.loads(path.read_text()) == first
    edited = [dict(fold) for fold in first]  # a hand-edited split is respected
    edited[0], edited[1] = edited[1], edited[0]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(path, CASES) == edited
    with pytest.raises(InputError, match="cases differ"):
        load_or_create_splits(path, [*CASES, "case_99999"])


def test_stage2_rois_follow_their_case_and_both_stages_split_alike(tmp_path):
    from train_data import write_tiny_dataset

    dataset = write_tiny_dataset(tmp_path / "dataset", n_cases=5)
    preprocess_dataset(dataset, tmp_path / "cache", roles=None)
    stage1 = read_cache(tmp_path / "cache", 1)
    stage2 = read_cache(tmp_path / "cache", 2)
    assert stage1.cases == stage2.cases
    assert all(len(stage2.files[case]) == 2 for case in stage2.cases)  # two kidneys each
    for fold in case_folds(stage2.cases):
        train_cases = {path.name.split("_roi")[0] for path in stage2.paths_of(fold["train"])}
        val_cases = {path.name.split("_roi")[0] for path in stage2.paths_of(fold["val"])}
        assert not train_cases & val_cases
        assert len(stage2.paths_of(fold["val"])) == 2 * len(fold["val"])
