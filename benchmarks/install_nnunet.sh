#!/usr/bin/env bash
# The nnU-Net v2 baseline of benchmarks/claims.py, in its own venv (.venv-bench, gitignored).
#
# nnunetv2 cannot go into the project's venv: its dependency chain (dynamic_network_architectures
# -> timm -> torchvision) pulls a newer, CUDA torch that replaces ours. Here torch is pinned to the
# project's CPU build first, then nnU-Net and the libraries its predictor imports are installed
# with --no-deps, so nothing can replace torch; timm and torchvision are not needed for the
# PlainConvUNet and the sliding-window predictor. Usage: bash benchmarks/install_nnunet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
# The project's torch (here the CPU build); override with e.g. TORCH_SPEC="torch==2.13.0 --index-url URL".
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q $TORCH_SPEC  # unquoted: may carry pip options
# What nnunetv2, acvl_utils, batchgenerators and dynamic_network_architectures import (not torch).
"$VENV/bin/pip" install -q numpy scipy scikit-image scikit-learn pandas SimpleITK nibabel \
    matplotlib tqdm einops blosc2 connected-components-3d threadpoolctl pillow future tifffile \
    requests yacs seaborn graphviz psutil
"$VENV/bin/pip" install -q --no-deps nnunetv2 dynamic_network_architectures acvl_utils \
    batchgenerators batchgeneratorsv2
# sparsekits itself (its measurement helpers run in that venv's fresh processes), no deps.
"$VENV/bin/pip" install -q --no-deps -e .

"$VENV/bin/python" - <<'PY'
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: F401
from dynamic_network_architectures.architectures.unet import PlainConvUNet  # noqa: F401
print(f"nnU-Net baseline ready: torch {torch.__version__}")
PY
