"""KiTS23 labels and the three hierarchical evaluation classes (HECs) the network predicts.

Labels: 0 background, 1 kidney, 2 tumour, 3 cyst. Regions are nested sets of labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported only when a tensor comes in: numpy-only users start fast
    import torch

REGION_NAMES = ("kidney_and_mass", "mass", "tumor")
REGION_LABELS = ((1, 2, 3), (2, 3), (2,))
LABEL_NAMES = {0: "background", 1: "kidney", 2: "tumor", 3: "cyst"}
# KiTS23 paints later labels over earlier ones in this order.
LABEL_AGGREGATION_ORDER = (1, 3, 2)
NUM_REGIONS = len(REGION_NAMES)


def labels_to_regions(labels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Boolean region masks stacked on a new last axis, [..., 3]; numpy in, numpy out (or torch)."""
    masks = (labels > 0, labels >= 2, labels == 2)
    if isinstance(labels, np.ndarray):
        return np.stack(masks, axis=-1)
    import torch

    return torch.stack(masks, dim=-1)


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Paint boolean region masks [..., 3] into one uint8 label map, in the KiTS23 order 1, 3, 2."""
    labels = np.zeros(regions.shape[:-1], dtype=np.uint8)
    for label in LABEL_AGGREGATION_ORDER:
        # label 1 <- kidney_and_mass, label 3 <- mass, label 2 <- tumor
        region = {1: 0, 3: 1, 2: 2}[label]
        labels[regions[..., region]] = label
    return labels
