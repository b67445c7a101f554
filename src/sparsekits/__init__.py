"""sparsekits: two-stage submanifold sparse ConvNeXt V2 U-Nets for kidney, tumour and cyst
segmentation in 3D CT.

Packages, one per concern:
    sparse    the sparse-tensor engine (knows nothing of CT)
    methods   the registry of methods; each method's module owns its stages and predictor
    models    the networks (sparse ConvNeXt V2 U-Net and its dense twin), model folders
    data      I/O, geometry, sparsification, datasets, stage views, preprocessing cache
    phantoms  synthetic CT
    train     losses, the training loop and its tasks, cross-validation
    predict   prediction of files and folders, reports, overlays
    evaluate  KiTS23 metrics, lesion counts
    bench     measurement helpers and benchmark drivers
"""

import os
from importlib import metadata

# Idle OpenMP threads sleep instead of spinning. With spinning (the default), every parallel
# region of a small op waits for a time slice whenever another process shares the cores (a data
# loader, a second test worker, anything else on a 2-core machine): measured here, a training step
# went from 2 s to 10 s. Set before torch loads OpenMP; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _version() -> str:
    """The installed distribution's version (pyproject.toml is where it is written down); the
    library never reads its checkout, so a source tree that was never installed says so."""
    try:
        return metadata.version("sparsekits")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


__version__ = _version()
