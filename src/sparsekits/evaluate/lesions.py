"""Lesion-wise detection counts: tumours and cysts found, missed and falsely predicted.

Lesions are the 26-connected components of each lesion class (tumour = label 2, cyst = label 3),
of the ground truth and of the prediction separately; touching voxels of different classes belong
to different lesions.

Matching rule. A ground-truth lesion and a predicted lesion of the same class *match* when the
Dice between the two components alone, 2|P & G| / (|P| + |G|), is at least ``MIN_DICE`` = 0.1.
A ground-truth lesion is *found* when some predicted lesion matches it, else *missed*; a predicted
lesion is *false* when it matches no ground-truth lesion. Why so:

- Detection asks whether the model pointed at the lesion, not how well it outlined it (Dice and
  Surface Dice measure that), so the threshold is low: an under- or over-segmented lesion counts.
- It is not zero: a component that merely grazes a lesion's boundary does not count, and neither
  does a blob far larger than the lesion (Dice <= 2|G| / (|G| + |P|) < 0.1 once |P| > 19|G|),
  e.g. a whole kidney painted as tumour around a small one.
- Each pair is judged on its own two components, with no one-to-one assignment: one predicted
  blob covering two lesions finds both when its Dice with each reaches 0.1, and a lesion split
  into two predicted parts is found with each part a true positive when each reaches it. The
  result never depends on the order of lesions or on ties.

Components under ``MIN_VOLUME_MM3`` = 10 mm^3 (a sphere 2.7 mm across; about 6 voxels at
0.78 x 0.78 x 3 mm) are ignored on both sides: they are specks of annotation or prediction noise,
far below the size at which a renal mass is reported, and would otherwise dominate the false
counts. The voxel volume is the product of ``spacing``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

LESION_CLASSES = {"tumours": 2, "cysts": 3}  # name -> label
LESION_OUTCOMES = ("found", "missed", "false")
MIN_DICE = 0.1
MIN_VOLUME_MM3 = 10.0
CONNECTIVITY = 26


def nonzero_box(*label_maps: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the nonzero voxels of all 3D maps (empty slices when there are none)."""
    # Project each map onto its first two axes once (no full-size temporary), then onto each axis.
    plane = np.logical_or.reduce([labels.any(axis=2) for labels in label_maps])
    last = np.logical_or.reduce([labels.any(axis=(0, 1)) for labels in label_maps])
    box = []
    for profile in (plane.any(axis=1), plane.any(axis=0), last):
        hits = np.flatnonzero(profile)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    return tuple(box)


def _lesion_map(labels: np.ndarray) -> np.ndarray:
    """uint8 copy of ``labels`` with every non-lesion voxel (kidney, other values) set to 0."""
    lesions = np.zeros(labels.shape, np.uint8)
    for label in LESION_CLASSES.values():
        lesions[labels == label] = label
    return lesions


def _components(
    lesions: np.ndarray, voxel_mm3: float, min_volume_mm3: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(component ids, label, voxel count and kept flag per id) of a lesion map; id 0 is background.

    One multi-label pass: cc3d never joins voxels of different labels.
    """
    ids, count = cc3d.connected_components(lesions, connectivity=CONNECTIVITY, return_N=True)
    inside = lesions > 0  # lesion voxels are few: gather them once, not the whole box twice
    label_of = np.zeros(count + 1, np.uint8)
    label_of[ids[inside]] = lesions[inside]
    voxels = np.bincount(ids[inside], minlength=count + 1)
    kept = voxels * voxel_mm3 >= min_volume_mm3
    kept[0] = False
    return ids, label_of, voxels, kept


def lesion_matches(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = MIN_VOLUME_MM3,
) -> dict[str, dict[str, int]]:
    """Per lesion class: {'ground_truth', 'found', 'missed', 'false'} lesion counts.

    ``pred`` and ``gt`` are label maps on the same grid, ``spacing`` the voxel size in mm along
    their axes; see the module docstring for the matching rule. Keys are ``LESION_CLASSES``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if gt.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"expected 3D maps and 3 spacings, got {gt.shape} and {tuple(spacing)}")
    box = nonzero_box(pred, gt)
    pred_lesions, gt_lesions = _lesion_map(pred[box]), _lesion_map(gt[box])
    # Lesions fill a small part of the kidneys' box: the rest works on their own box.
    box = nonzero_box(pred_lesions, gt_lesions)
    voxel_mm3 = float(np.prod(spacing))
    gt_ids, gt_label, gt_voxels, gt_kept = _components(gt_lesions[box], voxel_mm3, min_volume_mm3)
    pred_ids, pred_label, pred_voxels, pred_kept = _components(
        pred_lesions[box], voxel_mm3, min_volume_mm3
    )
    # Every overlapping (gt, pred) pair and its voxel count, from one pass over shared voxels.
    shared = (gt_ids > 0) & (pred_ids > 0)
    keys, overlap = np.unique(
        gt_ids[shared].astype(np.int64) * pred_label.size + pred_ids[shared], return_counts=True
    )
    g, p = np.divmod(keys, pred_label.size)
    dice = 2 * overlap / (gt_voxels[g] + pred_voxels[p])
    match = (dice >= MIN_DICE) & (gt_label[g] == pred_label[p]) & gt_kept[g] & pred_kept[p]
    found = np.zeros(gt_label.size, bool)
    found[g[match]] = True
    true = np.zeros(pred_label.size, bool)
    true[p[match]] = True
    counts = {}
    for name, label in LESION_CLASSES.items():
        is_gt = gt_kept & (gt_label == label)
        is_pred = pred_kept & (pred_label == label)
        total = int(np.count_nonzero(is_gt))
        hits = int(np.count_nonzero(found & is_gt))
        counts[name] = {
            "ground_truth": total,
            "found": hits,
            "missed": total - hits,
            "false": int(np.count_nonzero(is_pred & ~true)),
        }
    return counts
