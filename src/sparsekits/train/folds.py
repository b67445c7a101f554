"""Cross-validation folds split BY CASE, so that both kidneys of a patient stay on one side.

The split is a pure function of the sorted case list and the seed (42 as in METHOD.md), so stage 1
and stage 2 recompute the identical split from the same cases; a run folder keeps it in
``splits.json`` and reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.plan import Recipe

# The recipe's defaults (METHOD.md: 5 folds, seed 42); a run takes its own recipe's.
N_FOLDS = Recipe.folds
SPLIT_SEED = Recipe.split_seed


def case_folds(
    case_ids: list[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED
) -> list[dict[str, list[str]]]:
    """``n_folds`` dicts ``{"train": [...], "val": [...]}``; each case is validated once."""
    cases = sorted(set(case_ids))
    if len(cases) < n_folds:
        raise ValueError(f"{len(cases)} cases cannot make {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(cases))
    shuffled = [cases[i] for i in order]
    val_sets = [sorted(shuffled[k::n_folds]) for k in range(n_folds)]
    return [{"train": sorted(set(cases) - set(val)), "val": val} for val in val_sets]


def load_or_create_splits(
    path: str | Path, case_ids: list[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED
) -> list[dict[str, list[str]]]:
    """Read ``path`` if it exists (it must cover exactly ``case_ids``), else write a fresh split."""
    path = Path(path)
    if not path.exists():
        splits = case_folds(case_ids, n_folds, seed)
        write_json_atomic(path, splits)
        return splits
    splits = json.loads(path.read_text())
    for fold in splits:
        if set(fold["train"]) & set(fold["val"]):
            raise InputError(path, "a case is on both sides of a fold")
    covered = {case for fold in splits for case in fold["val"]}
    if covered != set(case_ids):
        raise InputError(path, "its cases differ from the data's cases")
    return splits
