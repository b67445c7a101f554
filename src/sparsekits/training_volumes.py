"""The volumes a model saw in training, so that prediction can say when a result lies outside
them (``sparsekits.predict.plausibility``).

A case's volumes (``case_volumes``) come from its ground truth, measured as the volume report
measures a prediction (``sparsekits.predict.report``, sides split at the body's midline): each
kidney (label 1, without its masses: a kidney with a large tumour is mostly tumour; one per side
that has one, left and right sharing one range since they are the same organ), and the case's
tumour and cyst totals, in mL. Preprocessing records them in
each case's manifest entry (``CASE_KEY``); a training run records their range over its fold's
training cases (``volume_ranges``) in its model folder's ``extra`` (``RUN_KEY``); ``model
assemble`` joins its runs' ranges into ``MODEL/training_volumes.json``. Caches and models written
before these were recorded hold none, and their models get no range warning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sparsekits.errors import InputError
from sparsekits.fileio import write_json_atomic
from sparsekits.layout import TRAINING_VOLUMES

if TYPE_CHECKING:
    from sparsekits.data.io import Image

CASE_KEY = "volumes_ml"  # in a cache's manifest entry: the case's volumes
RUN_KEY = "training_volumes_ml"  # in a trained fold's config.json extra: its ranges
KINDS = ("kidney", "tumor", "cyst")
LESION_KINDS = ("tumor", "cyst")

# {kind: [smallest, largest]} in mL; a kind no training case held is absent.
Ranges = dict[str, list[float]]


def measured_volumes(volumes_ml: dict) -> list[tuple[str, str, float]]:
    """``(kind, what, mL)`` of each volume a model's ranges cover, from a volume report's
    ``volumes_ml``: each side's kidney (label 1, without its masses), the tumour and cyst
    totals; those a case lacks (a side without kidney, no cyst) left out."""
    from sparsekits.predict.report import SIDES

    found = [("kidney", f"{side} kidney", volumes_ml[side]["kidney"]) for side in SIDES]
    found += [(kind, f"{kind} total", volumes_ml["total"][kind]) for kind in LESION_KINDS]
    return [(kind, what, value) for kind, what, value in found if value > 0]


def case_volumes(volumes_ml: dict) -> dict[str, list[float]]:
    """The ``measured_volumes`` of one case, by kind, rounded as reports round volumes."""
    from sparsekits.predict.report import VOLUME_DECIMALS

    volumes: dict[str, list[float]] = {}
    for kind, _, value in measured_volumes(volumes_ml):
        volumes.setdefault(kind, []).append(round(value, VOLUME_DECIMALS))
    return volumes


def ground_truth_volumes(image: Image, labels: np.ndarray) -> dict[str, list[float]]:
    """``case_volumes`` of a case's ground-truth ``labels`` on ``image``'s grid."""
    from sparsekits.data.body import find_body
    from sparsekits.predict.report import measure_labels

    body = find_body(image.array, image.grid)
    return case_volumes(measure_labels(labels, image.grid.affine, body).volumes_ml)


def volume_ranges(cases: Sequence[dict | None]) -> Ranges | None:
    """[min, max] of each kind over ``cases`` (each ``case_volumes``, or a range: the ranges of
    several runs join so); None when any case has none recorded, since a range over part of the
    training data would call the rest's volumes new."""
    if not cases or any(case is None for case in cases):
        return None
    ranges = {}
    for kind in KINDS:
        values = [value for case in cases for value in case.get(kind, ())]
        if values:
            ranges[kind] = [min(values), max(values)]
    return ranges


def write_ranges(model_dir: Path, ranges: Ranges | None) -> None:
    """MODEL/training_volumes.json holding ``ranges``; none (and no stale file) without them."""
    path = Path(model_dir) / TRAINING_VOLUMES
    if ranges is None:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, ranges)


def read_ranges(model_dir: Path) -> Ranges | None:
    """The ranges a model folder records; None for a model written before they were."""
    path = Path(model_dir) / TRAINING_VOLUMES
    if not path.is_file():
        return None
    try:
        ranges = json.loads(path.read_text())
        return {kind: [float(low), float(high)] for kind, (low, high) in ranges.items()}
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise InputError(path, f"not readable training volume ranges ({error})") from error
