"""sparsekits: two-stage submanifold sparse ConvNeXt V2 U-Nets for kidney, tumour and cyst
segmentation in 3D CT.

Packages, one per concern:
    sparse    the sparse-tensor engine (knows nothing of CT)
    models    the networks (sparse ConvNeXt V2 U-Net and its dense twin)
    data      I/O, geometry, sparsification, datasets, phantoms, preprocessing cache
    train     losses, cross-validation training
    predict   two-stage inference, reports, overlays
    evaluate  KiTS23 metrics
    bench     measurement helpers and benchmark drivers
"""

import os
import re
from importlib import metadata
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. With spinning (the default), every parallel
# region of a small op waits for a time slice whenever another process shares the cores (a data
# loader, a second test worker, anything else on a 2-core machine): measured here, a training step
# went from 2 s to 10 s. Set before torch loads OpenMP; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _version() -> str:
    """The installed distribution's version, else (a source tree on PYTHONPATH, never installed)
    the one in its pyproject.toml: the version is written down in pyproject.toml only."""
    try:
        return metadata.version("sparsekits")
    except metadata.PackageNotFoundError:
        return _pyproject_version(Path(__file__).resolve().parents[2] / "pyproject.toml")


def _pyproject_version(pyproject: Path) -> str:
    # A regex, not tomllib: Python 3.10 has no tomllib and this runs on every import.
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


__version__ = _version()
